"""Checkpoints as plain data: tensors in safetensors, everything else as JSON.

A family's state is a nested structure of dicts, lists, tensors and JSON scalars (model and
optimizer state dicts, RNG states). `save_checkpoint` splits it into a flat tensor table and a
JSON skeleton in which each tensor is replaced by {"__tensor__": key}; the skeleton travels in
the safetensors header metadata, so one file holds everything and is replaced atomically.
Loading parses JSON and raw tensor bytes only: no pickle, so no code from the file can run
(nothing here calls torch.load; a .pt/.pth file is never accepted).

Each save first keeps the checkpoint it replaces as `<name>.prev.safetensors` (a hard link, so
no bytes are copied), then writes the new one atomically. A crash at any moment leaves at least
one complete checkpoint, and `load_latest` falls back to the previous one when the newest is
damaged (a disk error, a copy cut short), saying so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import remove_stale_temps, write_atomic

FORMAT_VERSION = 1
_TENSOR = "__tensor__"
_TUPLE = "__tuple__"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupt or of an unknown format."""


def flatten_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split nested state into (JSON skeleton, {key: tensor})."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            key = path or "root"
            tensors[key] = node.detach().cpu().contiguous()
            return {_TENSOR: key}
        if isinstance(node, dict):
            return {str(k): walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, tuple):
            return {_TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot checkpoint a {type(node).__name__} at {path!r}")

    return walk(state, ""), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {_TENSOR}:
                return tensors[node[_TENSOR]]
            if set(node) == {_TUPLE}:
                return tuple(walk(v) for v in node[_TUPLE])
            # Optimizer state dicts key parameters by int; JSON made them strings.
            return {_int_key(k): walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(skeleton)


def _int_key(key: str) -> int | str:
    return int(key) if key.isdigit() else key


def previous_path(path: str | os.PathLike) -> Path:
    """Where the checkpoint before `path` is kept: checkpoint.prev.safetensors."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """CheckpointError naming the first tensor holding NaN or inf: such weights would only
    produce NaN samples, and saving them would overwrite the last good model."""
    bad = _first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"refusing to save a checkpoint with NaN or inf values (in {bad})")


def _first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    for key, tensor in tensors.items():
        floating = tensor.is_floating_point() or tensor.is_complex()
        if floating and not bool(torch.isfinite(tensor).all()):
            return key
    return None


def save_checkpoint(path: str | os.PathLike, state: Any, meta: dict[str, Any], *,
                    keep_previous: bool = True) -> None:
    """Write state + meta atomically to `path` (.safetensors), keeping the checkpoint it
    replaces as previous_path(path). Non-finite tensors are refused (CheckpointError) before
    anything is written."""
    skeleton, tensors = flatten_state(state)
    check_finite(tensors)
    header = {
        "format": "genstudio-checkpoint",
        "version": str(FORMAT_VERSION),
        "meta": json.dumps(meta, sort_keys=True),
        "skeleton": json.dumps(skeleton),
    }
    remove_stale_temps(path)  # left by a process killed mid-save, which could not clean up
    try:
        if keep_previous:
            _keep_as_previous(Path(path))
        write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    except (SafetensorError, OSError) as exc:  # a full disk, a folder made read-only
        kept = "the checkpoint before it is intact" if Path(path).is_file() else "nothing was written"
        raise CheckpointError(f"could not save the checkpoint of step {meta.get('step', '?')} "
                              f"({one_line(exc)}); {kept}") from exc


def _keep_as_previous(path: Path) -> None:
    """Make previous_path(path) the current checkpoint, atomically: a hard link to it under a
    temporary name, renamed over the old previous one. Where links are not possible (some
    network or FAT file systems) the bytes are copied, still atomically."""
    prev = previous_path(path)
    remove_stale_temps(prev)
    if not path.is_file() or (prev.is_file() and os.path.samefile(path, prev)):
        # Already kept (a save killed after this step). Linking again would be no help:
        # rename() between two links to one file does nothing and would leave the temp behind.
        return
    try:  # never let a damaged newest checkpoint push out the good previous one
        with safe_open(str(path), framework="pt") as handle:
            handle.metadata()
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return

    def link_or_copy(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(path, tmp)
        except OSError:
            tmp.write_bytes(path.read_bytes())

    write_atomic(prev, link_or_copy)


def load_latest(path: str | os.PathLike, device: str | torch.device = "cpu",
                apply: Callable[[Any, dict[str, Any]], Any] | None = None) -> tuple[Any, dict[str, Any], str]:
    """(state, meta, notice) from `path`, or from the previous checkpoint when `path` is
    missing, damaged or does not fit; notice says so in a sentence ("" when the newest one
    loaded). With `apply`, the first item is apply(state, meta) instead of the state: it puts
    the checkpoint to use (builds the model, loads the weights), and a checkpoint whose tensors
    do not fit (a RuntimeError, ValueError, KeyError, TypeError or IndexError from it) counts as
    damaged. When neither loads, one CheckpointError explains the newest one's problem."""
    try:
        result, meta = _load_and_apply(Path(path), device, apply)
        return result, meta, ""
    except CheckpointError as newest:
        prev = previous_path(path)
        if not prev.is_file():
            raise
        try:
            result, meta = _load_and_apply(prev, device, apply)
        except CheckpointError as previous:
            raise CheckpointError(f"{newest}; the previous one cannot be used either ({previous})") from None
        notice = (f"{newest}; loaded the previous checkpoint instead "
                  f"({prev.name}, step {meta.get('step', '?')})")
        return result, meta, notice


def _load_and_apply(path: Path, device: str | torch.device,
                    apply: Callable[[Any, dict[str, Any]], Any] | None) -> tuple[Any, dict[str, Any]]:
    state, meta = load_checkpoint(path, device)
    if apply is None:
        return state, meta
    try:
        return apply(state, meta), meta
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be used: {exc}") from None
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit the model it describes ({one_line(exc)})") from exc


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """Read (state, meta) from a checkpoint written by save_checkpoint. Anything else, including
    a damaged header and weights holding NaN or inf, is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({exc})") from exc
    if header.get("format") != "genstudio-checkpoint":
        raise CheckpointError(f"{path} is not a genstudio checkpoint")
    try:
        version = int(header.get("version", "0"))
    except ValueError:
        raise CheckpointError(f"checkpoint {path} has a damaged header (version {header['version']!r})") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer genstudio (format {header['version']})")
    try:
        skeleton = json.loads(header["skeleton"])
        meta = json.loads(header["meta"])
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not an object")
        state = unflatten_state(skeleton, tensors)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path} has a damaged header ({one_line(exc)})") from None
    bad = _first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} holds NaN or inf values (in {bad})")
    return state, meta


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (torch's state-dict errors span several)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "…"


def move_state(state: Any, device: str | torch.device) -> Any:
    """Move every tensor in nested state to `device`."""
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: move_state(v, device) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(move_state(v, device) for v in state)
    return state
