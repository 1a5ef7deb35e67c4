"""The small pretrained runs that ship with genstudio, so that the gallery, the explorer and
the inpainting canvas work before anyone has trained anything.

Each is an ordinary run folder (config.json, checkpoint.safetensors, checkpoint.json,
metrics.jsonl) made by `genstudio train` with the command recorded in pretrained/MANIFEST.json
(tools/make_pretrained.py reruns them). They are never opened where they ship: the app writes
into a run folder it opens (the explorer keeps its encodings there), and a bundle or a system
install may be read-only. So `install` copies one into the user's runs folder once, and that
copy is what is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_text_atomic
from .checkpoint import load_checkpoint, save_checkpoint
from .paths import runs_dir

MANIFEST = "MANIFEST.json"
DEFAULT = "vae-shapes"  # what the app opens at first launch
INSTALLED_PREFIX = "pretrained-"


class PretrainedError(RuntimeError):
    """A pretrained run that is missing or does not match its manifest."""


@dataclass(frozen=True)
class PretrainedRun:
    name: str                # e.g. "vae-shapes": the folder under pretrained/
    family: str
    data: str
    title: str               # one line for a menu
    command: str             # the `genstudio train` command that made it
    sha256: str              # of checkpoint.safetensors, so a damaged copy is noticed
    path: Path               # where it ships

    @property
    def installed_path(self) -> Path:
        return runs_dir() / f"{INSTALLED_PREFIX}{self.name}"


def shipped_root() -> Path:
    """Where the pretrained runs ship: GENSTUDIO_PRETRAINED, else a PyInstaller bundle's data
    folder, else the checkout's top-level pretrained/ (the package sits beside it)."""
    override = os.environ.get("GENSTUDIO_PRETRAINED")
    if override:
        return Path(override).expanduser()
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "pretrained"
    return Path(__file__).resolve().parents[3] / "pretrained"  # genstudio/core/runs/ → the checkout


def available(root: Path | None = None) -> list[PretrainedRun]:
    """The runs the manifest lists and whose folders are present, in manifest order."""
    root = root or shipped_root()
    manifest = root / MANIFEST
    if not manifest.is_file():
        return []
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["runs"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise PretrainedError(f"cannot read {manifest}: {exc}") from exc
    runs = [PretrainedRun(e["name"], e["family"], e["data"], e["title"], e["command"], e["sha256"],
                          root / e["name"]) for e in entries]
    return [r for r in runs if (r.path / "checkpoint.safetensors").is_file()]


def find(name: str, root: Path | None = None) -> PretrainedRun:
    for run in available(root):
        if run.name == name:
            return run
    raise PretrainedError(f"no pretrained run named {name!r} ships with this installation")


def install(run: PretrainedRun) -> Path:
    """The user's copy of `run`, made on first use; a copy whose checkpoint no longer matches
    the shipped one (damaged, or shipped anew) is replaced. Returns its folder."""
    target = run.installed_path
    checkpoint = target / "checkpoint.safetensors"
    if checkpoint.is_file() and file_sha256(checkpoint) == run.sha256:
        return target
    if file_sha256(run.path / "checkpoint.safetensors") != run.sha256:
        raise PretrainedError(f"the shipped {run.name} checkpoint does not match its manifest")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Copy beside the target, then swap it in: a crash mid-copy leaves no half run behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for item in run.path.iterdir():
            if item.is_file():
                shutil.copyfile(item, staging / item.name)
        (staging / "samples").mkdir()
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


SHIPPED_FILES = ("config.json", "checkpoint.safetensors", "checkpoint.json", "metrics.jsonl")


def package(run_dir: Path, root: Path, name: str, title: str, command: str) -> dict:
    """Copy a finished run into root/NAME without its optimizer state (weights, EMA and RNG
    remain: a third of the size) and return its manifest entry. The checkpoint is marked
    weights-only, so the Trainer refuses to resume it and says why."""
    state, meta = load_checkpoint(Path(run_dir) / "checkpoint.safetensors")
    state["family"]["optimizers"] = {}
    meta["weights_only"] = True
    target = root / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for file in SHIPPED_FILES:
        if file not in ("checkpoint.safetensors", "config.json"):
            shutil.copyfile(Path(run_dir) / file, target / file)
    # A run stopped by its time limit planned more steps than it made; shipped, it is finished
    # at the step it reached, as its recorded command says (else it opens looking unfinished).
    config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
    config["settings"]["steps"] = meta["step"]
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_checkpoint(target / "checkpoint.safetensors", state, meta)
    (target / "checkpoint.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return {"name": name, "family": meta["family"], "data": meta["dataset"], "title": title,
            "command": command, "sha256": file_sha256(target / "checkpoint.safetensors"),
            "bytes": (target / "checkpoint.safetensors").stat().st_size, "step": meta["step"]}


def write_manifest(root: Path, entries: list[dict]) -> None:
    write_text_atomic(root / MANIFEST, json.dumps({"runs": entries}, indent=2) + "\n")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
