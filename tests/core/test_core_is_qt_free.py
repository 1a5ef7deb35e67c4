"""The model core stays importable without Qt, and its packages keep their layers."""

import ast
import pathlib
import subprocess
import sys

import genstudio

CORE = pathlib.Path(genstudio.__file__).parent / "core"
QT_MODULES = ("PySide6", "pyqtgraph", "shiboken6", "PyQt5", "PyQt6", "superqt")


def test_no_core_module_imports_qt_in_its_source():
    offenders = []
    for path in CORE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in QT_MODULES]
    assert offenders == []


def test_importing_every_core_module_loads_no_qt():
    modules = sorted(
        "genstudio.core." + ".".join(p.relative_to(CORE).with_suffix("").parts)
        for p in CORE.rglob("*.py") if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert len(modules) >= 10  # the check really imported the core


# The training loop and its launcher sit on top of the core: the models, data, metrics, run
# storage and the tools for trained models must be usable without them.
BELOW_THE_LOOP = ("families", "data", "metrics", "runs", "trained", "playground")
THE_LOOP = ("genstudio.core.runtime.training", "genstudio.core.runtime.launch")


def _imported_modules(path: pathlib.Path) -> list[str]:
    """Absolute names of the modules `path` imports (relative imports resolved)."""
    package = ["genstudio", *path.relative_to(CORE.parent).with_suffix("").parts][:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


def test_nothing_below_the_training_loop_imports_it():
    offenders = [f"{path.relative_to(CORE)}: {name}"
                 for layer in BELOW_THE_LOOP for path in (CORE / layer).rglob("*.py")
                 for name in _imported_modules(path) if name.startswith(THE_LOOP)]
    assert offenders == []


def test_the_core_is_laid_out_by_role():
    """Modules live in the package of their role; none is left loose beside them."""
    loose = [p.name for p in CORE.glob("*.py") if p.name != "__init__.py"]
    assert loose == []
    assert {p.name for p in CORE.iterdir() if (p / "__init__.py").exists()} == {*BELOW_THE_LOOP, "runtime"}
