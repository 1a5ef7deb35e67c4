"""Checkpoints as plain data: tensors in safetensors, everything else as JSON.

A family's state is a nested structure of dicts, lists, tensors and JSON scalars (model and
optimizer state dicts, RNG states). `save_checkpoint` splits it into a flat tensor table and a
JSON skeleton in which each tensor is replaced by {"__tensor__": key}; the skeleton travels in
the safetensors header metadata, so one file holds everything and is replaced atomically.
Loading parses JSON and raw tensor bytes only: no pickle, so no code from the file can run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .atomic import write_atomic

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


def save_checkpoint(path: str | os.PathLike, state: Any, meta: dict[str, Any]) -> None:
    """Write state + meta atomically to `path` (.safetensors)."""
    skeleton, tensors = flatten_state(state)
    header = {
        "format": "genstudio-checkpoint",
        "version": str(FORMAT_VERSION),
        "meta": json.dumps(meta, sort_keys=True),
        "skeleton": json.dumps(skeleton),
    }
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """Read (state, meta) from a checkpoint written by save_checkpoint."""
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
    if int(header.get("version", "0")) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer genstudio (format {header['version']})")
    try:
        skeleton = json.loads(header["skeleton"])
        meta = json.loads(header["meta"])
        return unflatten_state(skeleton, tensors), meta
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} has a damaged header ({exc})") from exc


def move_state(state: Any, device: str | torch.device) -> Any:
    """Move every tensor in nested state to `device`."""
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: move_state(v, device) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(move_state(v, device) for v in state)
    return state
