"""SIGKILL mid-run leaves only whole artifacts.

``nasplat train``, ``nasplat profile`` and ``nasplat search`` run as real processes
and are SIGKILLed (no exception handler, no ``finally``) once they have started
writing; then every artifact in the run folder must be whole: every ``.safetensors``
loads (with its nasplat metadata), every ``.json`` parses, every ``.csv`` parses with
the header's column count on every row, every SQLite database passes
``PRAGMA integrity_check``, every Optuna journal (``.journal``) replays, every ``.onnx``
passes ``onnx.checker``. A temp file left
by the kill (``.<name>.*.tmp``, the atomic-write convention of ``nasplat.io``) is not
a real artifact: it is reported, never read, the resumed run must complete regardless
and not trust it, and removes it. The resumed run then ends with whole, complete outputs.

(The kill tests of the stages' own resume semantics — identical weights, nothing
re-measured, no duplicate evaluation — live with each stage's tests.)
"""
from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _tiny_space import TINY_SPACE

REPO = Path(__file__).resolve().parent.parent


def is_temp(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".tmp")


def check_whole(run_dir: Path) -> dict[str, int]:
    """Open every artifact under ``run_dir``; returns counts per kind (temp files
    counted under 'temp', never opened)."""
    from safetensors.torch import load_file

    from nasplat.checkpoint import read_meta

    counts: dict[str, int] = {}
    for p in sorted(run_dir.rglob("*")):
        if not p.is_file():
            continue
        kind = "temp" if is_temp(p) else p.suffix.lstrip(".")
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "temp":
            continue
        if kind == "safetensors":
            load_file(str(p))
            assert isinstance(read_meta(p), dict), p
        elif kind == "json":
            json.loads(p.read_text())
        elif kind == "csv":
            with open(p, newline="") as f:
                rows = list(csv.reader(f))
            assert rows, f"{p} is empty"
            width = len(rows[0])
            bad = [i for i, r in enumerate(rows, 1) if len(r) != width]
            assert not bad, f"{p}: rows {bad[:5]} do not have the header's {width} columns"
        elif kind == "db":
            con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
            try:
                assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", p
            finally:
                con.close()
        elif kind == "journal":
            import optuna

            storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(p)))
            assert optuna.get_all_study_names(storage), p
        elif kind == "onnx":
            import onnx

            onnx.checker.check_model(onnx.load(str(p)))
    return counts


def write_exp(root: Path, extra: str) -> Path:
    p = root / "exp.yaml"
    p.write_text(f"name: k\nseed: 0\nspace:\n{TINY_SPACE}data: {{name: digits, resolution: 12, batch_size: 64, "
                 f"calib_images: 64}}\n" + extra)
    return p


def start(root: Path, argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nasplat.cli", *argv], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, ready, after_s: float = 0.0, timeout: float = 240) -> bool:
    """SIGKILL ``proc`` ``after_s`` seconds after ``ready()`` turns true; False when the
    process ended by itself first."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            return False
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("the run never reached the kill point")
        time.sleep(0.05)
    time.sleep(after_s)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return True


def finish(root: Path, argv: list[str]) -> str:
    p = start(root, argv)
    out, err = p.communicate(timeout=400)
    assert p.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    return out


def test_kill_train_mid_run(tmp_path):
    # several epochs: on an idle machine one epoch can end within the kill delay
    exp = write_exp(tmp_path, "train: {strategy: uniform, epochs: 6, lr: 0.05, checkpoint_every: 3}\n")
    run = tmp_path / "runs" / "k" / "supernet"
    log = run / "train_log.csv"
    proc = start(tmp_path, ["train", exp.name])
    killed = kill_when(proc, lambda: log.exists() and len(log.read_text().splitlines()) >= 3, 0.2)
    assert killed, "training finished before the kill"
    counts = check_whole(tmp_path / "runs")
    assert counts.get("safetensors", 0) >= 1 and counts.get("csv", 0) >= 1, counts
    assert not (run / "supernet.safetensors").exists()
    # a half-written temp file as a kill inside a write leaves it: never trusted
    (run / ".last.safetensors.k1ll3d.tmp").write_bytes(b"\x00half a checkpoint")
    finish(tmp_path, ["train", exp.name, "--resume"])
    counts = check_whole(tmp_path / "runs")
    assert (run / "supernet.safetensors").exists()
    assert counts.get("temp", 0) == 0, "the abandoned temp file was not cleaned by the next run"
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and int(rows[-1]["step"]) > 0, rows[-1]


def test_kill_profile_mid_run(tmp_path):
    exp = write_exp(tmp_path, "hardware: [local-cpu]\nprofile: {samples: 10, chunk: 2, protocol: "
                              "{warmup_runs: 1, warmup_seconds: 0.0, timed_runs: 3}}\n")
    csv_path = tmp_path / "runs" / "k" / "profiles" / "local-cpu" / "measurements.csv"
    proc = start(tmp_path, ["profile", exp.name, "--device", "local-cpu", "--quiet"])
    killed = kill_when(proc, csv_path.exists, 0.4)
    assert killed, "profiling finished before the kill"
    check_whole(tmp_path / "runs")
    with open(csv_path, newline="") as f:
        done = [r["arch_id"] for r in csv.DictReader(f)]
    assert 2 <= len(done) < 10 and len(set(done)) == len(done)
    (csv_path.parent / ".measurements.csv.k1ll3d.tmp").write_text("profile,arch_id\nlocal-cpu,half")
    finish(tmp_path, ["profile", exp.name, "--device", "local-cpu", "--quiet"])
    assert check_whole(tmp_path / "runs").get("temp", 0) == 0
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    ids = [r["arch_id"] for r in rows]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert ids[: len(done)] == done  # the rows written before the kill are kept as they were


def test_kill_search_mid_run(tmp_path):
    # a budget far beyond the kill point in a space too large for duplicates to slow the sampler
    # down, so the kill lands mid-search on any machine
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: k\nseed: 0\nspace: ofa_mbv3_small\n"
                   "search: {objectives: [macs, params], searcher: nsga2, budget: 150, population: 4}\n")
    out = tmp_path / "runs" / "k" / "search"
    journal = out / "study.journal"

    def started() -> bool:  # >= 4 trials told COMPLETE in the journal (op 6: state and values)
        if not journal.exists():
            return False
        done = 0
        for line in journal.read_text().splitlines():
            try:
                op = json.loads(line)
            except json.JSONDecodeError:
                continue
            done += op.get("op_code") == 6 and op.get("state") == 1
        return done >= 4

    proc = start(tmp_path, ["search", exp.name])
    killed = kill_when(proc, started, 0.2)
    assert killed, "the search finished before the kill"
    check_whole(tmp_path / "runs")
    assert not (out / "trials.csv").exists() or len((out / "trials.csv").read_text().splitlines()) < 151
    finish(tmp_path, ["search", exp.name, "--resume"])
    counts = check_whole(tmp_path / "runs")
    assert counts.get("journal") == 1 and counts.get("csv", 0) >= 2, counts
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ids = [r["arch_id"] for r in rows]
    assert len(set(ids)) == len(ids) == 150
