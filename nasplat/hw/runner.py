"""The device runner: times ONNX models with ONNX Runtime, needing only ``onnxruntime``
and ``numpy`` (plus the standard library).

This module is the measurement core of every profile (local, Ray node, offline
bundle), and it is self-contained on purpose: it imports nothing from nasplat, so it
works on a device where torch, pydantic or yaml are not installed, and a bundle
carries a copy of it (``python runner.py bundle.tar --out results.csv`` on a device
without nasplat). On a machine with nasplat::

    nasplat device-run BUNDLE --out CSV
    python -m nasplat.hw.runner BUNDLE --out CSV

Protocol (hw_profiles/README.md): every model gets a fresh ``InferenceSession`` created from bytes,
models run in a random (seeded) order, a warm-up of at least ``warmup_runs`` runs *and*
``warmup_seconds`` seconds, then ``timed_runs`` timed runs of batch ``batch_size``; the
row keeps the raw samples (ms) plus median, IQR, mean, std and min, and
``latency_ms`` is the profile's statistic (median by default).

A bundle is a ``.tar`` / ``.tar.gz`` (or a folder) holding ``manifest.json``,
``models/<arch-id>.onnx`` and ``runner.py``. Extraction rejects absolute paths, ``..``
components, links and special files, so a hostile bundle cannot write outside the
destination folder, and bundles that would extract to more than ``MAX_BUNDLE_BYTES``
(or the free disk space), so a small compressed one cannot fill the disk.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

import numpy as np

BUNDLE_FORMAT = "nasplat-bundle/1"

# Columns the runner writes; the profile stage adds arch, macs, params ... from the manifest.
TIMING_COLUMNS = ["latency_ms", "median_ms", "iqr_ms", "mean_ms", "std_ms", "min_ms", "runs", "samples_ms"]
RUN_COLUMNS = ["ort_version", "provider", "host", "node", "measured_at"]

_GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}

DEFAULT_SETTINGS: dict[str, Any] = {
    "provider": "CPUExecutionProvider",
    "intra_op_threads": 1,
    "inter_op_threads": 1,
    "graph_optimization": "all",
    "affinity": None,
    "batch_size": 1,
    "protocol": {"warmup_runs": 10, "warmup_seconds": 0.5, "timed_runs": 50, "statistic": "median", "seed": 0},
}


class BundleError(ValueError):
    """A bundle that is malformed or unsafe to extract."""


# -- one session, one model ------------------------------------------------------------
def make_session(data: bytes, settings: dict[str, Any]):
    """A fresh ONNX Runtime session from model bytes with the profile's settings."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(settings.get("intra_op_threads", 1))
    opts.inter_op_num_threads = int(settings.get("inter_op_threads", 1))
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                            _GRAPH_OPT[settings.get("graph_optimization", "all")])
    opts.log_severity_level = 3
    provider = settings.get("provider", "CPUExecutionProvider")
    return ort.InferenceSession(data, opts, providers=[provider])


def summarize(samples_ms: Iterable[float], statistic: str = "median") -> dict[str, Any]:
    s = np.asarray(list(samples_ms), dtype=np.float64)
    q1, med, q3 = np.percentile(s, [25, 50, 75])
    stats = {"median_ms": float(med), "iqr_ms": float(q3 - q1), "mean_ms": float(s.mean()),
             "std_ms": float(s.std()), "min_ms": float(s.min()), "runs": int(len(s))}
    stats["latency_ms"] = {"median": stats["median_ms"], "mean": stats["mean_ms"], "min": stats["min_ms"]}[statistic]
    stats["samples_ms"] = " ".join(f"{v:.5f}" for v in s)
    return stats


def time_model(data: bytes, input_shape: list[int], settings: dict[str, Any], seed: int = 0) -> list[float]:
    """Warm up, then time ``timed_runs`` runs of one model; returns the samples in ms.
    ``input_shape`` excludes nothing: its first entry is replaced by the batch size."""
    proto = {**DEFAULT_SETTINGS["protocol"], **settings.get("protocol", {})}
    sess = make_session(data, settings)
    inp = sess.get_inputs()[0]
    shape = [int(settings.get("batch_size", 1))] + [int(d) for d in input_shape[1:]]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    feed = {inp.name: x}
    run = sess.run
    t_end = time.perf_counter() + float(proto["warmup_seconds"])
    n = 0
    while n < int(proto["warmup_runs"]) or (time.perf_counter() < t_end and n < 100_000):
        run(None, feed)
        n += 1
    samples = []
    clock = time.perf_counter
    for _ in range(int(proto["timed_runs"])):
        t0 = clock()
        run(None, feed)
        samples.append((clock() - t0) * 1e3)
    del sess
    return samples


class _Affinity:
    """Pin the process to ``cpus`` for the duration (Linux); no-op elsewhere."""

    def __init__(self, cpus: list[int] | None):
        self.cpus, self.old = cpus, None

    def __enter__(self):
        if self.cpus and hasattr(os, "sched_setaffinity"):
            self.old = os.sched_getaffinity(0)
            os.sched_setaffinity(0, set(self.cpus))
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            os.sched_setaffinity(0, self.old)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def run_info(settings: dict[str, Any], node: str = "") -> dict[str, Any]:
    import onnxruntime as ort

    return {"ort_version": ort.__version__, "provider": settings.get("provider", "CPUExecutionProvider"),
            "host": platform.node(), "node": node,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def measure_models(models: list[dict[str, Any]], settings: dict[str, Any],
                   progress: Callable[[dict[str, Any]], None] | None = None, node: str = "") -> list[dict[str, Any]]:
    """Measure each model (a dict with ``arch_id``, ``data`` bytes, ``input_shape`` and
    any extra columns to copy into its row) in a seeded random order, each in a fresh
    session. Returns rows in the input order."""
    proto = {**DEFAULT_SETTINGS["protocol"], **settings.get("protocol", {})}
    order = np.random.default_rng(int(proto.get("seed", 0)) + len(models)).permutation(len(models))
    rows: list[dict[str, Any] | None] = [None] * len(models)
    info = run_info(settings, node)
    with _Affinity(settings.get("affinity")):
        for i in order:
            m = models[int(i)]
            samples = time_model(m["data"], m["input_shape"], settings, seed=int(i))
            row = {k: v for k, v in m.items() if k not in ("data", "input_shape")}
            row.update(summarize(samples, proto.get("statistic", "median")))
            row.update(info)
            rows[int(i)] = row
            if progress is not None:
                progress(row)
    return [r for r in rows if r is not None]


# -- bundles -----------------------------------------------------------------------------
def _check_member(m: tarfile.TarInfo) -> None:
    p = PurePosixPath(m.name.replace("\\", "/"))
    if not p.parts or p.is_absolute() or ".." in p.parts or ":" in p.parts[0]:
        raise BundleError(f"unsafe path in bundle: {m.name!r}")
    if not (m.isfile() or m.isdir()):
        raise BundleError(f"bundle member {m.name!r} is not a regular file or folder")


MAX_BUNDLE_BYTES = 16 << 30  # what one bundle may extract to (a few hundred fp32 ONNX models fit)
MAX_MEMBER_BYTES = 2 << 30  # protobuf's limit: no ONNX file is larger
MAX_MEMBERS = 100_000


def safe_extract(tar_path: str | Path, dest: str | Path, max_bytes: int = MAX_BUNDLE_BYTES) -> Path:
    """Extract a bundle tar into ``dest``, refusing any member that could escape it and
    any bundle that would extract to more than ``max_bytes`` (or than the free space of
    ``dest``), checked on the members' sizes before anything is written: a small
    compressed tar cannot fill the disk."""
    dest = Path(dest).resolve()
    if not Path(tar_path).is_file():
        raise BundleError("bundle not found" if not Path(tar_path).exists() else "bundle is not a file")
    try:
        with tarfile.open(tar_path, "r:*") as tf:
            members = []
            for m in tf:
                members.append(m)
                if len(members) > MAX_MEMBERS:
                    raise BundleError(f"bundle has more than {MAX_MEMBERS} members")
            total = 0
            for m in members:
                _check_member(m)
                target = (dest / m.name).resolve()
                if target != dest and dest not in target.parents:
                    raise BundleError(f"unsafe path in bundle: {m.name!r}")
                if m.size > MAX_MEMBER_BYTES:
                    raise BundleError(f"bundle member {m.name!r} is {m.size} bytes (limit {MAX_MEMBER_BYTES})")
                total += m.size
            existing = dest
            while not existing.exists():
                existing = existing.parent
            free = shutil.disk_usage(existing).free
            if total > min(max_bytes, free):
                where = f"the limit of {max_bytes} bytes" if total > max_bytes else f"the {free} bytes free in {dest}"
                raise BundleError(f"bundle would extract to {total} bytes, more than {where}")
            for m in members:
                target = dest / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                assert src is not None
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise BundleError(f"not a readable tar bundle: {e}") from None
    return dest


def read_manifest(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise BundleError("bundle has no manifest.json")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"manifest.json is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"manifest.json is not a {BUNDLE_FORMAT} manifest")
    if not isinstance(manifest.get("models"), list) or not isinstance(manifest.get("settings"), dict):
        raise BundleError("manifest.json needs a 'models' list and a 'settings' mapping")
    root = folder.resolve()
    for entry in manifest["models"]:
        if not isinstance(entry, dict) or not {"arch_id", "file", "input_shape"} <= set(entry):
            raise BundleError("every model entry needs arch_id, file and input_shape")
        f = (folder / str(entry["file"])).resolve()
        if root not in f.parents or not f.is_file():
            raise BundleError(f"model file {entry['file']!r} is missing or outside the bundle")
    return manifest


def write_csv(path: str | Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write rows atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(buf.getvalue())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_bundle(bundle: str | Path, out: str | Path, quiet: bool = False) -> list[dict[str, Any]]:
    """Measure every model of a bundle (tar or folder) and write the result CSV."""
    bundle = Path(bundle)
    with tempfile.TemporaryDirectory(prefix="nasplat-bundle-") as tmp:
        folder = bundle if bundle.is_dir() else safe_extract(bundle, tmp)
        manifest = read_manifest(folder)
        settings = manifest["settings"]
        models = []
        for entry in manifest["models"]:
            m = {k: v for k, v in entry.items() if k != "file"}
            m["data"] = (folder / entry["file"]).read_bytes()
            models.append(m)
        done = [0]

        def tick(row: dict[str, Any]) -> None:
            done[0] += 1
            if not quiet:
                print(f"  [{done[0]}/{len(models)}] {row['arch_id']}: {row['latency_ms']:.3f} ms",
                      file=sys.stderr, flush=True)

        rows = measure_models(models, settings, tick)
    extra = [c for c in manifest.get("columns", []) if c not in TIMING_COLUMNS + RUN_COLUMNS]
    write_csv(out, rows, ["arch_id"] + [c for c in extra if c != "arch_id"] + TIMING_COLUMNS + RUN_COLUMNS)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nasplat device-run", description="Time a bundle of ONNX models "
                                "with ONNX Runtime (needs only onnxruntime and numpy).")
    p.add_argument("bundle", help="bundle .tar/.tar.gz or extracted folder")
    p.add_argument("--out", required=True, help="result CSV")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        rows = run_bundle(args.bundle, args.out, args.quiet)
    except (BundleError, OSError) as e:
        print(f"device-run: error: {args.bundle}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"{len(rows)} models measured -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
