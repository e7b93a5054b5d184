"""SIGKILL mid-phase, ``nasplat train EXP --resume``, and the final weights are identical,
bit for bit, to an uninterrupted run with the same seed (CPU, one worker).

The killed run is stopped twice: once inside the kernel phase (the teacher copy just
made must be restored from the checkpoint) and once inside expand/2 (after the width
sort at that phase's start, which must not be redone on resume)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from _ps_helpers import write_ps_exp

PHASES = {"teacher": {"epochs": 1}, "kernel": {"epochs": 2}, "depth/1": {"epochs": 1},
          "depth/2": {"epochs": 1}, "expand/1": {"epochs": 1}, "expand/2": {"epochs": 2}}
REPO = Path(__file__).resolve().parent.parent


def _cmd(exp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nasplat.cli", "train", str(exp), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _position(meta_path: Path) -> dict | None:
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None


def _run_until(exp: Path, meta_path: Path, phase: int, min_step: int, resume: bool) -> dict:
    """Start training, SIGKILL it once the checkpoint shows ``phase`` at step >= min_step."""
    proc = subprocess.Popen(_cmd(exp, *(["--resume"] if resume else [])), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            pos = _position(meta_path)
            if pos and (pos["phase"], pos["step"] >= min_step) == (phase, True):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
            if proc.poll() is not None:
                raise AssertionError(f"training ended before the kill point: {proc.stderr.read()[-2000:]}")
            time.sleep(0.005)
        else:
            raise AssertionError("kill point not reached in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return _position(meta_path)


def test_sigkill_mid_phase_then_resume_is_bit_exact(tmp_path):
    ref_exp = write_ps_exp(tmp_path, "ref", phases=PHASES, batch_size=256, checkpoint_every=1)
    cut_exp = write_ps_exp(tmp_path, "cut", phases=PHASES, batch_size=256, checkpoint_every=1)
    ref_dir, cut_dir = tmp_path / "runs" / "ref" / "supernet", tmp_path / "runs" / "cut" / "supernet"

    done = subprocess.run(_cmd(ref_exp), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    # phase indices: 0 teacher, 1 kernel, 2 depth/1, 3 depth/2, 4 expand/1, 5 expand/2
    at = _run_until(cut_exp, cut_dir / "last.json", phase=1, min_step=2, resume=False)
    assert at["phase"] == 1 and at["global_step"] < 35  # 8 epochs x 5 steps in all
    # without --resume a partial run is refused (one line, exit 2)
    refused = subprocess.run(_cmd(cut_exp), env=_env(), capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    at = _run_until(cut_exp, cut_dir / "last.json", phase=5, min_step=3, resume=True)
    assert at["phase"] == 5
    resumed = subprocess.run(_cmd(cut_exp, "--resume"), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and "phase 5" in resumed.stderr
    # the expand/2 width sort happened once, before the kill, not again on resume
    assert "sorted the middle channels" not in resumed.stderr

    ref, cut = load_file(str(ref_dir / "supernet.safetensors")), load_file(str(cut_dir / "supernet.safetensors"))
    assert ref.keys() == cut.keys()
    different = [k for k in ref if not torch.equal(ref[k], cut[k])]
    assert not different, different[:5]
    # every phase's weights and the whole log (losses, lrs, subnets) match too
    for f in sorted(ref_dir.glob("phase_*.safetensors")):
        a, b = load_file(str(f)), load_file(str(cut_dir / f.name))
        assert all(torch.equal(a[k], b[k]) for k in a), f.name
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    ref_log = strip(csv.DictReader(open(ref_dir / "train_log.csv")))
    cut_log = strip(csv.DictReader(open(cut_dir / "train_log.csv")))
    assert len(ref_log) == len(cut_log) and ref_log == cut_log
