"""The ``nasplat profile`` stage: draw archs stratified over MACs, export, measure,
append to ``runs/<name>/profiles/<device>/measurements.csv``.

Resumable: the draw is deterministic (experiment seed), archs whose id is already in
the CSV are skipped, and rows are appended chunk by chunk, so a killed run loses at
most one chunk. One writer per device folder; measurements made with other profile
settings are refused in one line (``--force`` measures again), see :mod:`nasplat.provenance`. The supernet's trained weights are used when
``runs/<name>/supernet/supernet.safetensors`` exists; otherwise a randomly
initialised supernet is exported — latency does not depend on the weights (INT8
calibration ranges do, but only accuracy depends on those).

Offline devices: ``--bundle OUT.tar`` writes the models + manifest + a copy of the
torch-free runner instead of measuring; ``--import CSV`` appends the runner's rows.
"""
from __future__ import annotations

import csv
import io
import json
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import UserError
from ..io import append_csv_rows, atomic_path
from ..space import Arch, SearchSpace
from ..ui import progress_bar, say
from . import runner
from .measure import MEASUREMENT_COLUMNS, export_arch, measure_models
from .profile import HardwareProfile, load_profile


def profile_dir(run_dir: Path, device: str) -> Path:
    return Path(run_dir) / "profiles" / device


def measurements_path(run_dir: Path, device: str) -> Path:
    return profile_dir(run_dir, device) / "measurements.csv"


def read_measurements(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a measurements CSV (numbers converted); [] when absent."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"not a readable measurements CSV ({type(e).__name__})", path) from None
    for i, r in enumerate(rows, start=2):
        for k, conv in [(k, lambda v: int(float(v))) for k in ("macs", "params", "resolution", "batch_size", "runs")] \
                + [(k, float) for k in ("latency_ms", "median_ms", "iqr_ms", "mean_ms", "std_ms", "min_ms")]:
            if r.get(k) not in (None, ""):
                try:
                    r[k] = conv(r[k])
                except (TypeError, ValueError):
                    raise UserError(f"column {k} is not a number: {r[k]!r}", path, f"line {i}") from None
    return rows


def latency_target(rows: list[dict], statistic: str = "profile") -> np.ndarray:
    """Per-row latency: the profile's statistic (``latency_ms``) or one recomputed from
    the raw samples (``median``, ``mean``, ``min``, ``p10``, ``p25``)."""
    if statistic == "profile":
        return np.array([r["latency_ms"] for r in rows], dtype=np.float64)
    fn = {"median": np.median, "mean": np.mean, "min": np.min,
          "p10": lambda s: np.percentile(s, 10), "p25": lambda s: np.percentile(s, 25)}[statistic]
    return np.array([fn(np.array(r["samples_ms"].split(), dtype=np.float64)) for r in rows])


def stratified_archs(space: SearchSpace, n: int, seed: int = 0, pool: int = 4000) -> list[Arch]:
    """``n`` distinct archs spread evenly over MACs, prefix-stable (the first ``m`` of
    ``n`` are the ``m`` drawn for ``n = m``, so raising ``--samples`` keeps earlier
    measurements): the min and max arch, then archs at MACs quantiles
    ``frac(k * golden ratio)`` of a fixed seeded pool of random archs."""
    rng = np.random.default_rng(seed)
    out: dict[str, Arch] = {}
    for a in (space.min_arch(), space.max_arch()):
        out.setdefault(a.id, a)
    cand: dict[str, Arch] = {}
    for _ in range(max(pool, 2 * n)):
        a = space.sample(rng)
        cand.setdefault(a.id, a)
    ranked = sorted(cand.values(), key=lambda a: (space.macs(a), a.id))
    phi, k = (5 ** 0.5 - 1) / 2, 0
    while len(out) < n and k < 50 * max(n, 1) + len(ranked):
        a = ranked[int(((k + 0.5) * phi) % 1.0 * len(ranked))]
        out.setdefault(a.id, a)
        k += 1
    return list(out.values())[:n]


def load_profiling_supernet(exp, weights=None):
    """The experiment's supernet, with the weights of ``weights`` (a nasplat or official
    OFA checkpoint) or else its trained weights when they exist."""
    from ..paths import supernet_checkpoint
    from ..supernet import build_supernet

    if weights is not None:
        from ..supernet.ofa_convert import load_any_weights

        say(f"exporting subnets of the supernet in {weights}")
        return load_any_weights(exp.space, weights).eval()
    final = supernet_checkpoint(exp.run_dir)
    if final.exists():
        say(f"exporting subnets of the trained supernet {final}")
        return build_supernet(exp.space, checkpoint=final).eval()
    say("no trained supernet yet: exporting a randomly initialised one (latency does not depend on weights)")
    return build_supernet(exp.space).eval()


def calibration_images(exp, n: int) -> np.ndarray:
    """``n`` real images of the experiment's calibration split (for INT8)."""
    from ..data import load_experiment_data

    data = load_experiment_data(exp)
    xs = data.calib_batches(min(n, 100), n)
    return np.concatenate([x.numpy() for x in xs])[:n]


def experiment_profile(exp, device: str) -> HardwareProfile:
    """Resolve ``device`` (a name in the experiment's ``hardware:`` list, a shipped
    profile name or a path)."""
    for i, spec in enumerate(exp.config.hardware):
        prof = load_profile(spec, exp.base_dir, exp.path, f"hardware.{i}")
        if device in (spec, prof.name):
            return prof
    return load_profile(device, exp.base_dir, None, "--device")


def _todo(exp, profile: HardwareProfile, samples: int | None) -> tuple[list[Arch], Path, int]:
    n = samples or exp.config.profile.samples
    path = measurements_path(exp.run_dir, profile.name)
    done = {r["arch_id"] for r in read_measurements(path)}
    archs = stratified_archs(exp.space, n, exp.config.seed)
    return [a for a in archs if a.id not in done], path, len(archs)


@contextmanager
def _profile_folder(exp, profile: HardwareProfile, force: bool) -> Iterator[Path]:
    """The device's profile folder, locked (one writer), its measurements checked against
    the profile they were made with (:mod:`nasplat.provenance`); ``force`` discards them."""
    from .. import provenance
    from ..lock import clear_folder, stage_lock

    with stage_lock(exp.run_dir, f"profiles/{profile.name}") as folder:
        path = measurements_path(exp.run_dir, profile.name)
        with provenance.fresh_outputs(folder, "profile", provenance.profile_inputs(exp, profile), path.exists,
                                      force=force, file=exp.path, discard=lambda: clear_folder(folder)):
            yield path


def profile_experiment(exp, device: str, samples: int | None = None, address: str | None = None,
                       quiet: bool = False, weights: str | Path | None = None, force: bool = False) -> Path:
    """Measure the experiment's archs on ``device``; returns the measurements CSV.
    ``force`` discards the device's earlier measurements."""
    profile = experiment_profile(exp, device)
    with _profile_folder(exp, profile, force):
        return _measure(exp, profile, samples, address, quiet, weights)


def _measure(exp, profile: HardwareProfile, samples: int | None, address: str | None, quiet: bool,
             weights: str | Path | None) -> Path:
    todo, path, n = _todo(exp, profile, samples)
    if not todo:
        say(f"{profile.name}: all {n} archs already measured ({path})", not quiet)
        return path
    say(f"{profile.name}: measuring {len(todo)} of {n} archs ({profile.precision}, "
        f"{profile.intra_op_threads} thread(s), where: {profile.where})", not quiet)
    if profile.where == "bundle":
        measure_models([], profile)  # raises the explanatory UserError
    net = load_profiling_supernet(exp, weights)
    calib = calibration_images(exp, profile.quantization.calib_images) if profile.precision == "int8" else None
    protocol = exp.config.profile.protocol_for(profile)
    chunk = exp.config.profile.chunk
    exp.write_config()
    with progress_bar(f"profile {profile.name}", len(todo), not quiet) as bar:
        for s in range(0, len(todo), chunk):
            models = [export_arch(net, exp.space, a, profile, calib) for a in todo[s:s + chunk]]
            rows = measure_models(models, profile, protocol, address)
            append_csv_rows(path, rows, MEASUREMENT_COLUMNS)
            bar.advance(len(rows), f"{rows[-1]['latency_ms']:.3f} ms")
    return path


# -- offline bundles --------------------------------------------------------------------
def write_bundle(exp, device: str, out: str | Path, samples: int | None = None, quiet: bool = False,
                 weights: str | Path | None = None) -> Path:
    """Export the not-yet-measured archs into a bundle tar for ``nasplat device-run``."""
    profile = experiment_profile(exp, device)
    todo, _, n = _todo(exp, profile, samples)
    if not todo:
        raise UserError(f"all {n} archs are already measured for {profile.name}; nothing to bundle", None, "--bundle")
    net = load_profiling_supernet(exp, weights)
    calib = calibration_images(exp, profile.quantization.calib_images) if profile.precision == "int8" else None
    protocol = exp.config.profile.protocol_for(profile)
    entries, files = [], {}
    with progress_bar(f"bundle {profile.name}", len(todo), not quiet) as bar:
        for a in todo:
            m = export_arch(net, exp.space, a, profile, calib)
            name = f"models/{a.id}.onnx"
            files[name] = m.pop("data")
            entries.append({**m, "file": name})
            bar.advance()
    manifest = {"format": runner.BUNDLE_FORMAT, "experiment": exp.config.name, "space": exp.space.config.name,
                "space_hash": exp.space.hash(), "profile": profile.model_dump(mode="json"),
                "settings": profile.settings(protocol), "columns": MEASUREMENT_COLUMNS,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "models": entries}
    files["manifest.json"] = (json.dumps(manifest, indent=1) + "\n").encode()
    files["runner.py"] = Path(runner.__file__).read_bytes()
    out = Path(out)
    with atomic_path(out) as tmp:
        with tarfile.open(tmp, "w:gz" if out.name.endswith(("gz", ".tgz")) else "w") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tf.addfile(info, io.BytesIO(data))
    say(f"bundle with {len(entries)} models -> {out}; on the device: "
        f"`python runner.py {out.name} --out results.csv` (or `nasplat device-run`)", not quiet)
    return out


def import_results(exp, device: str, csv_path: str | Path, quiet: bool = False) -> int:
    """Append a device runner's CSV to the device's measurements (skipping known ids)."""
    profile = experiment_profile(exp, device)
    src = Path(csv_path)
    if not src.is_file():
        raise UserError("result CSV not found", src)
    with _profile_folder(exp, profile, False):
        return _import(exp, profile, src, quiet)


def _import(exp, profile: HardwareProfile, src: Path, quiet: bool) -> int:
    try:
        rows = read_measurements(src)
    except (ValueError, csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"not a device-run result CSV ({type(e).__name__}: {e})", src) from None
    need = {"arch_id", "arch", "latency_ms", "samples_ms"}
    if not rows or not need <= set(rows[0]):
        raise UserError(f"not a device-run result CSV (needs columns {sorted(need)})", src)
    path = measurements_path(exp.run_dir, profile.name)
    done = {r["arch_id"] for r in read_measurements(path)}
    new = []
    for i, r in enumerate(rows, start=2):
        if r.get("profile") not in (None, "", profile.name):
            raise UserError(f"row measured with profile {r['profile']!r}, not {profile.name!r}", src, f"line {i}")
        try:
            arch = exp.space.arch(json.loads(r["arch"]), str(src))
        except json.JSONDecodeError:
            raise UserError("arch is not JSON", src, f"line {i}") from None
        if arch.id != r["arch_id"]:
            raise UserError(f"arch_id {r['arch_id']} does not match its arch (id {arch.id})", src, f"line {i}")
        if r["arch_id"] not in done:
            new.append(r)
            done.add(r["arch_id"])
    append_csv_rows(path, new, MEASUREMENT_COLUMNS)
    say(f"{profile.name}: imported {len(new)} rows ({len(rows) - len(new)} already known) -> {path}", not quiet)
    return len(new)
