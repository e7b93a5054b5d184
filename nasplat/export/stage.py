"""``nasplat export``: trained supernet -> chosen subnets -> ONNX files + manifest.json.

Per arch: extract -> BN recalibration on the calibration images -> validation
accuracy -> ONNX (``onnx.checker``) -> onnxruntime vs torch on real images ->
``export/<arch-id>.onnx``; ``export/manifest.json`` gathers every exported subnet
(merged by id, so exporting more subnets later keeps earlier entries).
"""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch

from .. import __version__
from ..data import load_experiment_data
from ..errors import UserError
from ..io import write_bytes, write_json
from ..paths import supernet_checkpoint
from ..space import Arch
from ..supernet import Supernet, build_supernet, resize
from ..supernet.evaluate import accuracy, extract_calibrated
from ..ui import progress_bar
from ..onnxio import to_onnx, verify

if TYPE_CHECKING:
    from ..experiment import Experiment


def load_trained_supernet(exp: Experiment, weights: str | Path | None = None) -> Supernet:
    """The run's trained supernet, or the one in ``weights`` (a nasplat checkpoint of the
    space or an official OFA checkpoint, e.g. converted with ``nasplat convert``)."""
    if weights is not None:
        from ..supernet.ofa_convert import load_any_weights

        return load_any_weights(exp.space, weights).eval()
    path = supernet_checkpoint(exp.run_dir)
    if not path.exists():
        raise UserError("no trained supernet; train one first (nasplat's `train` command) or pass --weights", path)
    return build_supernet(exp.space, checkpoint=path).eval()


def parse_arch(exp: Experiment, spec: str | dict[str, Any], source: str = "--arch") -> Arch:
    """``max``, ``min``, a JSON object, or ``@file.json``."""
    space = exp.space
    if isinstance(spec, dict):
        return space.arch(spec, str(exp.path))
    if spec == "max":
        return space.max_arch()
    if spec == "min":
        return space.min_arch()
    text = spec
    file = exp.path if source.startswith("export.") else None  # from the experiment YAML: name it
    if spec.startswith("@"):
        p = Path(spec[1:])
        if not p.is_file():
            raise UserError("arch file not found", p)
        try:
            text, source = p.read_text(), str(p)
        except UnicodeDecodeError:
            raise UserError("not a text file", p) from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"not valid JSON ({e.msg})", file, source) from None
    if not isinstance(values, dict):
        raise UserError("an arch must be a JSON object of choice -> value", file, source)
    return space.arch(values, f"{file}: {source}" if file else source)


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"nasplat": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def export_archs(exp: Experiment, archs: Iterable[Arch], out_dir: Path | None = None,
                 extra: dict[str, dict[str, Any]] | None = None, supernet: Supernet | None = None,
                 data: Any = None, weights: str | Path | None = None,
                 recalibrate: bool = True) -> list[dict[str, Any]]:
    """Export ``archs``; returns their manifest entries (also merged into manifest.json).
    ``recalibrate=False`` keeps the checkpoint's BN statistics (e.g. a pretrained OFA
    supernet's) instead of recalibrating each subnet."""
    cfg = exp.config.export
    out_dir = Path(out_dir) if out_dir is not None else exp.run_dir / "export"
    net = supernet if supernet is not None else load_trained_supernet(exp, weights)
    data = data if data is not None else load_experiment_data(exp)
    archs = list(dict.fromkeys(archs))
    entries = []
    channels = exp.space.config.input_channels
    with progress_bar("export", len(archs)) as bar:
        for arch in archs:
            r = exp.space.resolution(arch)
            static = (extract_calibrated(net, arch, data, cfg.calib_images) if recalibrate
                      else net.extract(arch).eval())
            acc = accuracy(static, data, "val", r)
            result = to_onnx(static, (1, channels, r, r), cfg.opset, cfg.dynamo)
            x = resize(next(iter(data.batches("val", 8)))[0], r)
            diff = max(verify(static, result.data, x[i : i + 1]) for i in range(len(x)))
            path = out_dir / f"{arch.id}.onnx"
            write_bytes(path, result.data)
            entry = {
                "id": arch.id, "arch": dict(arch), "file": path.name, "resolution": r,
                "input_shape": [1, channels, r, r], "accuracy": acc,
                "macs": exp.space.macs(arch), "params": exp.space.num_params(arch),
                "opset": result.opset, "exporter": result.exporter, "max_abs_diff_vs_torch": diff,
                "space": exp.space.config.name, "space_hash": exp.space.hash(), "versions": versions(),
            }
            entry.update((extra or {}).get(arch.id, {}))
            entries.append(entry)
            bar.advance(1, f"{arch.id} acc {acc:.3f}")
    manifest_path = out_dir / "manifest.json"
    old: dict[str, Any] = {}
    if manifest_path.exists():
        try:
            old = {e["id"]: e for e in json.loads(manifest_path.read_text())["subnets"]}
        except (ValueError, KeyError, TypeError):
            old = {}
    old.update({e["id"]: e for e in entries})
    write_json(manifest_path, {"experiment": exp.config.name, "subnets": list(old.values())})
    return entries


def export_standalone(exp: Experiment, out_dir: Path | None = None) -> dict[str, Any]:
    """Export the network a ``standalone`` run trained (e.g. a PC-DARTS derived net):
    no extraction or BN recalibration, its own BN statistics are final."""
    from ..supernet.standalone import load_standalone

    cfg = exp.config.export
    out_dir = Path(out_dir) if out_dir is not None else exp.run_dir / "export"
    net = load_standalone(exp.space, exp.run_dir)
    data = load_experiment_data(exp)
    r = int(getattr(net, "resolution", 0) or exp.config.data.resolution)
    acc = accuracy(net, data, "val", r)
    channels = exp.space.config.input_channels
    result = to_onnx(net, (1, channels, r, r), cfg.opset, cfg.dynamo)
    x = resize(next(iter(data.batches("val", 8)))[0], r)
    diff = max(verify(net, result.data, x[i : i + 1]) for i in range(len(x)))
    name = f"{exp.config.name}.onnx"
    write_bytes(out_dir / name, result.data)
    entry = {"id": exp.config.name, "file": name, "resolution": r, "input_shape": [1, channels, r, r],
             "accuracy": acc, "params": sum(p.numel() for p in net.parameters()), "opset": result.opset,
             "exporter": result.exporter, "max_abs_diff_vs_torch": diff, "space": exp.space.config.name,
             "space_hash": exp.space.hash(), "versions": versions()}
    write_json(out_dir / "manifest.json", {"experiment": exp.config.name, "subnets": [entry]})
    return entry


def pareto_archs(exp: Experiment) -> list[Arch]:
    """The archs in ``search/pareto.csv`` (column ``arch`` holds the JSON)."""
    import csv

    path = exp.run_dir / "search" / "pareto.csv"
    if not path.exists():
        raise UserError("no Pareto front yet; run `nasplat search` first", path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "arch" not in rows[0]:
        raise UserError("missing column", path, "arch")
    return [parse_arch(exp, r["arch"], f"{path}: arch") for r in rows]
