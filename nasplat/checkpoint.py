"""Checkpoints and weights: tensors in safetensors, everything else as JSON in the
file's metadata (one file, written atomically) plus a human-readable JSON sidecar.

The safetensors file is the source of truth: nasplat reads only it. The sidecar
(``<name>.json``: the metadata and the file's ``sha256``) is removed before the
checkpoint is replaced and written after, so it is either absent or describes the
checkpoint next to it, never an older one.

This module sits below every stage: training writes checkpoints, and the supernet
factory (:func:`nasplat.supernet.build_supernet`), profiling, prediction, search and
export read weights through it without importing the training package.

Nothing is ever unpickled: a checkpoint from the internet cannot run code.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from .errors import UserError
from .io import write_bytes, write_json

_META_KEY = "nasplat"


def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move tensors out of a nested structure into ``tensors``; leave placeholders."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), _split(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _key(k: Any) -> Any:
    return {"__int__": k} if isinstance(k, int) else k


def _unkey(k: Any) -> Any:
    return k["__int__"] if isinstance(k, dict) else k


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {_unkey(k): _join(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    return obj


def save_checkpoint(path: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """Save ``state`` (nested dicts of tensors and JSON values) with ``meta`` (JSON)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, "s", tensors)
    header = {"meta": meta, "skeleton": skeleton}
    data = save(tensors, metadata={_META_KEY: json.dumps(header)})  # bytes: a full disk is an OSError
    sidecar = path.with_suffix(".json")
    sidecar.unlink(missing_ok=True)
    write_bytes(path, data)
    write_json(sidecar, {**meta, "sha256": hashlib.sha256(data).hexdigest()})


def read_meta(path: str | Path) -> dict[str, Any]:
    return _read_header(Path(path))["meta"]


def _read_header(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError("checkpoint not found", path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"not a readable safetensors checkpoint ({type(e).__name__})", path) from None
    if raw is None:
        raise UserError("not a nasplat checkpoint (no nasplat metadata)", path)
    try:
        header = json.loads(raw)
    except ValueError:
        header = None
    if not (isinstance(header, dict) and isinstance(header.get("meta"), dict) and "skeleton" in header):
        raise UserError("corrupt checkpoint: its nasplat metadata is not the expected JSON", path)
    return header


def load_checkpoint(path: str | Path, space_hash: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(state, meta)``; with ``space_hash``, refuse a checkpoint of another space."""
    path = Path(path)
    header = _read_header(path)
    meta = header["meta"]
    if space_hash is not None and meta.get("space_hash") != space_hash:
        raise UserError(
            f"checkpoint is for another search space (space hash {meta.get('space_hash')}, "
            f"this space {space_hash})", path, "space_hash")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"corrupt checkpoint ({type(e).__name__})", path) from None
    return _join(header["skeleton"], tensors), meta


def save_weights(path: str | Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    save_checkpoint(path, {"model": model.state_dict()}, meta)


def load_weights(path: str | Path, model: torch.nn.Module, space_hash: str | None = None) -> dict[str, Any]:
    state, meta = load_checkpoint(path, space_hash)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"weights do not fit this supernet: {str(e).splitlines()[0]}", path) from None
    return meta


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every tensor of the state dict (names, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
