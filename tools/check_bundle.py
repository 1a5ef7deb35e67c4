"""Check that a built genstudio bundle starts: the command line, torch inside it, and the
desktop app opening offscreen and closing itself.

    .venv/bin/python tools/check_bundle.py [build/bundle/dist/genstudio]   # after `make bundle`
    .venv/bin/python tools/check_bundle.py --source                        # the same checks on
                                                                           # packaging/launcher.py

Every check runs the program in a fresh process with QT_QPA_PLATFORM=offscreen and its runs,
caches and preferences in a temporary folder, so no display is needed and nothing of the
user's is touched. Prints one line per check and exits 1 at the first failure.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = ROOT / "build" / "bundle" / "dist" / "genstudio"


class CheckFailed(Exception):
    pass


def expected_version() -> str:
    text = (ROOT / "genstudio" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def run(command: list[str], env: dict[str, str], timeout: float, what: str) -> subprocess.CompletedProcess:
    start = time.monotonic()
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"{what}: still running after {timeout:.0f} s") from exc
    seconds = time.monotonic() - start
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise CheckFailed(f"{what}: exit code {result.returncode} after {seconds:.1f} s\n{tail}")
    print(f"ok  {what} ({seconds:.1f} s)", flush=True)
    return result


def check(command: list[str], timeout: float, smoke_ms: int, train: bool = True) -> None:
    with tempfile.TemporaryDirectory(prefix="genstudio-check-") as tmp:
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "GENSTUDIO_HOME": f"{tmp}/home",
               "GENSTUDIO_CACHE_DIR": f"{tmp}/cache", "XDG_CONFIG_HOME": f"{tmp}/config"}
        version = run([*command, "--version"], env, timeout, "--version").stdout.strip()
        if version != f"genstudio {expected_version()}":
            raise CheckFailed(f"--version printed {version!r}, expected 'genstudio {expected_version()}'")
        print(f"    {version}")
        if train:
            check_training(command, env, timeout, Path(tmp))
        shown = run(command, {**env, "GENSTUDIO_SMOKE_QUIT_MS": str(smoke_ms)}, timeout,
                    "desktop app opens offscreen and closes").stdout
        windows = [line for line in shown.splitlines() if line.startswith("genstudio smoke: window")]
        if not windows:
            raise CheckFailed(f"the app exited without showing its window:\n{shown.strip()}")
        print(f"    {windows[0].removeprefix('genstudio smoke: ')}")


def check_training(command: list[str], env: dict[str, str], timeout: float, tmp: Path) -> None:
    """A two-step run and four samples from it: torch, the families and PNG export work."""
    run_dir, samples = tmp / "run", tmp / "samples"
    run([*command, "train", "--family", "vae", "--data", "builtin:shapes", "--size", "16",
         "--steps", "2", "--batch", "8", "--set", "base_channels=4", "--set", "latent_dim=4",
         "--set", "iw_samples=2", "--out", str(run_dir), "--quiet"], env, timeout, "train (torch inside)")
    run([*command, "sample", str(run_dir), "--n", "4", "--seed", "0", "--out", str(samples)],
        env, timeout, "sample")
    if len(list(samples.glob("sample_*.png"))) != 4:
        raise CheckFailed("sample: did not write 4 PNGs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", default=str(DEFAULT_BUNDLE),
                        help="the bundle folder (or its executable); default build/bundle/dist/genstudio")
    parser.add_argument("--source", action="store_true",
                        help="check packaging/launcher.py with this Python instead of a bundle")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per check (default 300)")
    parser.add_argument("--no-train", action="store_true",
                        help="skip the two-step training run (only --version and the app)")
    parser.add_argument("--smoke-ms", type=int, default=3000,
                        help="how long the app runs before it closes itself (default 3000 ms)")
    args = parser.parse_args(argv)
    if args.source:
        command = [sys.executable, str(ROOT / "packaging" / "launcher.py")]
        print(f"checking the source launcher with {sys.executable}")
    else:
        path = Path(args.bundle)
        exe = path / "genstudio" if path.is_dir() else path
        if not exe.is_file() or not os.access(exe, os.X_OK):
            print(f"error: no bundle executable at {exe}; build one with `make bundle`", file=sys.stderr)
            return 1
        folder = exe.parent
        print(f"checking {exe} ({folder_size(folder) / 2**20:.0f} MiB in {folder})")
        command = [str(exe)]
    try:
        check(command, args.timeout, args.smoke_ms, train=not args.no_train)
    except CheckFailed as failure:
        print(f"FAIL {failure}", file=sys.stderr)
        return 1
    print("bundle check passed" if not args.source else "source launcher check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
