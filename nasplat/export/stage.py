"""``nasplat export``: trained supernet -> chosen subnets -> ONNX files + manifest.json.

Per arch: extract -> BN recalibration (OFA's, on random training images; skipped with
``recalibrate: false``) -> validation accuracy in torch -> ONNX with a symbolic batch
axis (``onnx.checker``) -> ONNX Runtime vs torch on real images at batch 1 and 32 ->
``export/<arch-id>.onnx``, plus optional fp16 / INT8 files (INT8 calibrated on the
calibration images), each with its accuracy and its latency on ``export.latency_profile``.

``export/manifest.json`` is what a device team needs without reading nasplat: the
preprocessing from a raw image to the network's input (``preprocessing``: value scale,
resize steps and mode, mean/std, channel layout, class labels; per subnet the complete
list of steps), the input/output names, shapes and dtypes, and the checkpoint the
weights came from. ``export/preprocess.py`` (numpy only) applies those steps.
Entries are merged by id, so exporting more subnets later keeps earlier entries.
"""
from __future__ import annotations

import copy
import json
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..data import DataBundle, load_experiment_data
from ..data.preprocessing import preprocessing, raw_val, resize_step
from ..errors import UserError
from ..io import file_sha256, write_bytes, write_json
from ..onnxio import INPUT_NAME, OUTPUT_NAME, ort_session, to_onnx, verify
from ..paths import supernet_checkpoint
from ..space import Arch
from ..supernet import Supernet, build_supernet, resize
from ..supernet.bn import calibration_batches, recalibrate_bn
from ..supernet.evaluate import accuracy
from ..ui import progress_bar, say

if TYPE_CHECKING:
    from ..experiment import Experiment


MANIFEST_FORMAT = "nasplat-export/1"
VERIFY_BATCHES = (1, 32)


def weights_path(exp: Experiment, weights: str | Path | None = None) -> Path:
    """The checkpoint to export from: ``weights`` (any nasplat checkpoint of this space),
    else the run's trained supernet."""
    path = Path(weights) if weights is not None else supernet_checkpoint(exp.run_dir)
    if not path.exists():
        if weights is not None:
            raise UserError("checkpoint not found", path, "--weights")
        raise UserError("no trained supernet; train one first (nasplat's `train` command) or pass --weights", path)
    return path


def load_trained_supernet(exp: Experiment, weights: str | Path | None = None) -> Supernet:
    """The run's trained supernet, or the one in ``weights`` (a nasplat checkpoint of the
    space or an official OFA checkpoint, e.g. converted with ``nasplat convert``)."""
    path = weights_path(exp, weights)
    if weights is not None:
        from ..supernet.ofa_convert import load_any_weights

        return load_any_weights(exp.space, path).eval()
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


def _fp16(model: nn.Module) -> nn.Module:
    """fp16 weights and compute behind fp32 input/output (Cast nodes at both ends)."""

    class Half(nn.Module):
        def __init__(self, m: nn.Module):
            super().__init__()
            self.m = copy.deepcopy(m).half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x.half()).float()

    return Half(model).eval()


def ort_accuracy(data: bytes, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """Top-1 accuracy of an ONNX model in ONNX Runtime over ``(x, y)`` batches."""
    sess = ort_session(data)
    correct = total = 0
    for x, y in batches:
        pred = sess.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0].argmax(1)
        correct += int((pred == y).sum())
        total += len(y)
    return correct / max(1, total)


def _val_arrays(data: DataBundle, r: int, batch: int = 250) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(resize(x, r).numpy(), y.numpy()) for x, y, _ in data.batches("val", batch)]


def _latency(exp: Experiment, variants: dict[str, bytes], shape: list[int]) -> dict[str, float]:
    """Median latency (ms) of each variant on ``export.latency_profile``, batch 1."""
    name = exp.config.export.latency_profile
    if name is None:
        return {}
    from ..hw.measure import measure_models
    from ..hw.stage import experiment_profile

    profile = experiment_profile(exp, name)
    if profile.where == "bundle":
        return {}
    models = [{"arch_id": k, "data": v, "input_shape": [1, *shape[1:]]} for k, v in variants.items()]
    rows = measure_models(models, profile, exp.config.profile.protocol_for(profile))
    return {r["arch_id"]: float(r["latency_ms"]) for r in rows}


def export_subnet(exp: Experiment, static: nn.Module, resolution: int, out_dir: Path, stem: str,
                  data: DataBundle, pre: dict[str, Any]) -> dict[str, Any]:
    """Write ``static`` (eval mode, BN final) as ``<stem>.onnx`` (+ ``<stem>.fp16.onnx``,
    ``<stem>.int8.onnx``); returns its manifest entry (accuracy, files, latency...)."""
    cfg = exp.config.export
    channels, r = exp.space.config.input_channels, resolution
    shape = [1, channels, r, r]
    val = _val_arrays(data, r)
    acc = accuracy(static, data, "val", r)
    result = to_onnx(static, tuple(shape), cfg.opset, cfg.dynamo, dynamic_batch=cfg.dynamic_batch)
    x = resize(next(iter(data.batches("val", max(VERIFY_BATCHES))))[0], r)
    diff = 0.0
    for n in (VERIFY_BATCHES if cfg.dynamic_batch else (1,)):
        diff = max(diff, verify(static, result.data, x[:n]))
    files = {"fp32": result.data}
    if "fp16" in cfg.precisions:
        files["fp16"] = to_onnx(_fp16(static), tuple(shape), cfg.opset, cfg.dynamo,
                                dynamic_batch=cfg.dynamic_batch).data
    if "int8" in cfg.precisions:
        from ..hw.profile import Quantization
        from ..hw.quantize import quantize_int8

        q = Quantization()
        calib = torch.cat(calibration_batches(data, q.calib_images, exp.config.seed))
        files["int8"] = quantize_int8(result.data, resize(calib, r).numpy(), q)
    latency = _latency(exp, files, shape)
    variants: dict[str, Any] = {}
    for prec, blob in files.items():
        name = f"{stem}.onnx" if prec == "fp32" else f"{stem}.{prec}.onnx"
        write_bytes(out_dir / name, blob)
        variants[prec] = {"file": name, "accuracy": acc if prec == "fp32" else ort_accuracy(blob, val),
                          "latency_ms": latency.get(prec), "bytes": len(blob)}
    steps = pre["steps"] + ([resize_step(r)] if r != exp.config.data.resolution else [])
    return {"file": variants["fp32"]["file"], "resolution": r, "accuracy": acc,
            "input": {"name": INPUT_NAME, "dtype": "float32", "layout": "NCHW",
                      "shape": ["batch" if cfg.dynamic_batch else 1, channels, r, r]},
            "output": {"name": OUTPUT_NAME, "dtype": "float32",
                       "shape": ["batch" if cfg.dynamic_batch else 1, exp.space.config.num_classes]},
            "preprocessing": steps, "variants": variants, "latency_profile": cfg.latency_profile if latency else None,
            "opset": result.opset, "exporter": result.exporter, "max_abs_diff_vs_torch": diff,
            "verified_batches": list(VERIFY_BATCHES if cfg.dynamic_batch else (1,)),
            "space": exp.space.config.name, "space_hash": exp.space.hash(), "versions": versions()}


def _write_manifest(exp: Experiment, out_dir: Path, entries: list[dict[str, Any]], pre: dict[str, Any],
                    replace: bool = False) -> Path:
    """Merge ``entries`` (by id) into ``manifest.json`` and copy the numpy preprocessing."""
    path = out_dir / "manifest.json"
    old: dict[str, Any] = {}
    if path.exists() and not replace:
        try:
            old = {e["id"]: e for e in json.loads(path.read_text())["subnets"]}
        except (ValueError, KeyError, TypeError):
            old = {}
    old.update({e["id"]: e for e in entries})
    write_json(path, {"format": MANIFEST_FORMAT, "experiment": exp.config.name,
                      "preprocessing": {k: pre[k] for k in ("raw", "steps", "labels")},
                      "subnets": list(old.values())})
    shutil.copyfile(Path(__file__).with_name("preprocess.py"), out_dir / "preprocess.py")
    return path


def export_inputs(exp: Experiment, weights: str | Path | None = None, supernet: Supernet | None = None,
                  recalibrate: bool | None = None) -> dict[str, Any]:
    """What an export is made from (:mod:`nasplat.provenance`): the settings and the checkpoint."""
    from .. import provenance

    return {**provenance.export_inputs(exp, weights_path(exp, weights) if supernet is None else None),
            "export.recalibrate": exp.config.export.recalibrate if recalibrate is None else recalibrate}


def export_archs(exp: Experiment, archs: Iterable[Arch], out_dir: Path | None = None,
                 extra: dict[str, dict[str, Any]] | None = None, supernet: Supernet | None = None,
                 data: Any = None, weights: str | Path | None = None,
                 recalibrate: bool | None = None, force: bool = False) -> list[dict[str, Any]]:
    """Export ``archs``; returns their manifest entries (also merged into manifest.json).

    Args:
        weights: the checkpoint (default: the run's trained supernet).
        recalibrate: recompute BN statistics per subnet (default: ``export.recalibrate``);
            False keeps the checkpoint's, e.g. for a pretrained OFA supernet.
        force: discard the folder's earlier exports; without it, a folder exported from
            other weights or settings is refused in one line (:mod:`nasplat.provenance`).
    """
    from .. import provenance
    from ..lock import clear_folder, folder_lock

    out = Path(out_dir) if out_dir is not None else exp.run_dir / "export"
    inputs = export_inputs(exp, weights, supernet, recalibrate)
    with folder_lock(out), provenance.fresh_outputs(out, "export", inputs, (out / "manifest.json").exists,
                                                    force=force, file=exp.path, discard=lambda: clear_folder(out)):
        return _export_archs(exp, archs, out, extra, supernet, data, weights, recalibrate)


def _export_archs(exp: Experiment, archs: Iterable[Arch], out_dir: Path, extra: dict[str, dict[str, Any]] | None,
                  supernet: Supernet | None, data: Any, weights: str | Path | None,
                  recalibrate: bool | None) -> list[dict[str, Any]]:
    cfg = exp.config.export
    out_dir = Path(out_dir) if out_dir is not None else exp.run_dir / "export"
    ckpt = weights_path(exp, weights) if supernet is None else None
    net = supernet if supernet is not None else load_trained_supernet(exp, weights)
    data = data if data is not None else load_experiment_data(exp)
    recal = cfg.recalibrate if recalibrate is None else recalibrate
    pre = preprocessing(exp.config.data, exp.space.config.input_channels, exp.base_dir)
    source = {"checkpoint": str(ckpt), "checkpoint_sha256": file_sha256(ckpt)} if ckpt is not None else {}
    calib = calibration_batches(data, cfg.calib_images or exp.config.data.calib_images, exp.config.seed) \
        if recal else None
    entries = []
    with progress_bar("export", len(archs := list(dict.fromkeys(archs)))) as bar:
        for arch in archs:
            r = exp.space.resolution(arch)
            static = net.extract(arch)
            if calib is not None:
                recalibrate_bn(static, calib, r)
            entry = {"id": arch.id, "arch": dict(arch), "macs": exp.space.macs(arch),
                     "params": exp.space.num_params(arch), "bn_recalibrated": recal, **source,
                     **export_subnet(exp, static.eval(), r, out_dir, arch.id, data, pre)}
            entry.update((extra or {}).get(arch.id, {}))
            entries.append(entry)
            bar.advance(1, f"{arch.id} acc {entry['accuracy']:.3f}")
    _write_manifest(exp, out_dir, entries, pre)
    if cfg.check:
        check_exports(exp, out_dir, data)
    return entries


def check_exports(exp: Experiment, out_dir: Path | None = None, data: DataBundle | None = None) -> list[dict[str, Any]]:
    """Re-evaluate every file of ``manifest.json`` in ONNX Runtime from the raw val
    images through the manifest's own preprocessing (numpy, ``export/preprocess.py``),
    record each file's ``check_accuracy`` and return the entries. A file whose accuracy
    differs from the recorded one is reported."""
    import importlib.util

    out_dir = Path(out_dir) if out_dir is not None else exp.run_dir / "export"
    path = out_dir / "manifest.json"
    if not path.is_file():
        raise UserError("no export manifest yet; run `nasplat export` first", path)
    manifest = json.loads(path.read_text())
    spec = importlib.util.spec_from_file_location("_nasplat_preprocess", Path(__file__).with_name("preprocess.py"))
    prep = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(prep)  # type: ignore[union-attr]
    data = data if data is not None else load_experiment_data(exp)
    raw, labels = raw_val(data, exp.config.data)
    for e in manifest["subnets"]:
        batches = []
        for s in range(0, len(labels), 250):
            chunk = raw[s:s + 250]
            batches.append((prep.preprocess(chunk, e["preprocessing"]), labels[s:s + 250]))
        for prec, v in e.get("variants", {"fp32": {"file": e["file"], "accuracy": e["accuracy"]}}).items():
            acc = ort_accuracy((out_dir / v["file"]).read_bytes(), batches)
            v["check_accuracy"] = acc
            same = abs(acc - v["accuracy"]) < 0.5 / max(1, len(labels))
            say(f"check {e['id']} {prec}: ONNX Runtime {acc * 100:.2f}% from raw images, recorded "
                f"{v['accuracy'] * 100:.2f}%{'' if same else '  <-- differs'}")
    write_json(path, manifest)
    return manifest["subnets"]


def export_standalone(exp: Experiment, out_dir: Path | None = None) -> dict[str, Any]:
    """Export the network a ``standalone`` run trained (e.g. a PC-DARTS derived net): no
    extraction or BN recalibration, its own BN statistics are final."""
    from ..paths import supernet_dir
    from ..supernet.standalone import load_standalone

    out_dir = Path(out_dir) if out_dir is not None else exp.run_dir / "export"
    net = load_standalone(exp.space, exp.run_dir)
    data = load_experiment_data(exp)
    r = int(getattr(net, "resolution", 0) or exp.config.data.resolution)
    pre = preprocessing(exp.config.data, exp.space.config.input_channels, exp.base_dir)
    ckpt = supernet_dir(exp.run_dir) / "supernet.safetensors"
    entry = {"id": exp.config.name, "params": sum(p.numel() for n, p in net.named_parameters()
                                                  if not n.startswith("aux_head")),
             "checkpoint": str(ckpt), "checkpoint_sha256": file_sha256(ckpt),
             **export_subnet(exp, net, r, out_dir, exp.config.name, data, pre)}
    _write_manifest(exp, out_dir, [entry], pre, replace=True)
    if exp.config.export.check:
        check_exports(exp, out_dir, data)
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
