"""The training engine with the sandwich strategy, checkpoints and the train/export CLI."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nasplat.experiment import load_experiment
from nasplat.checkpoint import load_checkpoint, read_meta, save_checkpoint
from nasplat.train.run import train_experiment

TINY = Path(__file__).parent / "data" / "tiny_mbv3.yaml"


def write_exp(tmp: Path, **train) -> Path:
    cfg = {
        "name": "tiny", "seed": 3, "output_dir": str(tmp / "runs"), "space": str(TINY),
        "data": {"name": "digits", "resolution": 12, "batch_size": 64, "calib_images": 200},
        "train": {"strategy": "sandwich", "epochs": 2, "lr": 0.1, **train},
        "export": {"arch": "min", "calib_images": 200},
    }
    p = tmp / "exp.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nasplat.cli", *args], capture_output=True, text=True, cwd=cwd)


def assert_onnx_matches_manifest(exp, folder: Path, entry: dict) -> None:
    """The accuracy the manifest records is what the ONNX file computes in ONNX Runtime
    on the val split (an argmax may flip on a float difference: one image at most)."""
    from nasplat.data import load_experiment_data
    from nasplat.export.stage import ort_accuracy
    from nasplat.supernet import resize

    data = load_experiment_data(exp)
    r = entry["resolution"]
    batches = [(resize(x, r).numpy(), y.numpy()) for x, y, _ in data.batches("val", 250)]
    acc = ort_accuracy((folder / entry["file"]).read_bytes(), batches)
    assert abs(acc - entry["accuracy"]) <= 1 / len(data.val) + 1e-12, (acc, entry["accuracy"])


def test_checkpoint_round_trip(tmp_path):
    state = {"model": {"w": torch.randn(3, 2)}, "opt": {"state": {0: {"m": torch.ones(2)}}, "groups": [{"lr": 0.1}]},
             "rng": torch.get_rng_state(), "list": [1, "a", torch.zeros(1)]}
    save_checkpoint(tmp_path / "c.safetensors", state, {"space_hash": "abc", "step": 4})
    back, meta = load_checkpoint(tmp_path / "c.safetensors", "abc")
    assert meta["step"] == 4 and read_meta(tmp_path / "c.safetensors")["space_hash"] == "abc"
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert torch.equal(back["opt"]["state"][0]["m"], torch.ones(2))
    assert back["opt"]["groups"] == [{"lr": 0.1}] and back["list"][:2] == [1, "a"]
    assert json.loads((tmp_path / "c.json").read_text())["step"] == 4


def test_checkpoint_of_another_space_is_refused(tmp_path):
    save_checkpoint(tmp_path / "c.safetensors", {"x": torch.zeros(1)}, {"space_hash": "abc"})
    from nasplat.errors import UserError

    with pytest.raises(UserError, match="another search space"):
        load_checkpoint(tmp_path / "c.safetensors", "def")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(UserError, match="safetensors"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_sandwich_trains_logs_and_exports(tmp_path):
    exp_path = write_exp(tmp_path)
    exp = load_experiment(exp_path)
    final = train_experiment(exp)
    assert final.exists()
    rows = list(csv.DictReader(open(exp.run_dir / "supernet" / "train_log.csv")))
    assert rows and {r["phase"] for r in rows} == {"sandwich"}
    assert [int(r["global_step"]) for r in rows] == list(range(len(rows)))
    macs = [int(m) for m in rows[0]["macs"].split(";")]
    assert len(macs) == 4 and macs[0] == exp.space.macs(exp.space.max_arch())
    assert macs[1] == exp.space.macs(exp.space.min_arch())
    losses = [float(r["loss"]) for r in rows]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # it learns
    # a second call skips: the stage is done
    assert train_experiment(exp) == final
    # export the smallest subnet through the CLI
    res = run_cli("export", str(exp_path), "--arch", "min")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((exp.run_dir / "export" / "manifest.json").read_text())
    (entry,) = manifest["subnets"]
    arch = exp.space.min_arch()
    assert entry["id"] == arch.id and entry["macs"] == exp.space.macs(arch)
    assert (exp.run_dir / "export" / f"{arch.id}.onnx").stat().st_size > 1000
    assert entry["max_abs_diff_vs_torch"] <= 1e-3
    assert_onnx_matches_manifest(exp, exp.run_dir / "export", entry)


def test_partial_run_needs_resume_or_force(tmp_path):
    exp = load_experiment(write_exp(tmp_path, epochs=1))
    last = exp.run_dir / "supernet" / "last.safetensors"
    save_checkpoint(last, {"x": torch.zeros(1)}, {"space_hash": exp.space.hash()})
    res = run_cli("train", str(tmp_path / "exp.yaml"))
    assert res.returncode == 2 and "--resume" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("patch,field", [
    ({"train": {"strategy": "nope"}}, "train.strategy"),
    ({"train": {"strategy": "sandwich", "options": {"bogus": 1}}}, "train.options.bogus"),
    ({"data": {"name": "digits", "batch_size": 0}}, "data.batch_size"),
    ({"space": "no_such_space"}, "space"),
    ({"colour": "red"}, "colour"),
])
def test_bad_experiment_is_one_line(tmp_path, patch, field):
    p = write_exp(tmp_path)
    cfg = yaml.safe_load(p.read_text())
    cfg.update(patch)
    p.write_text(yaml.safe_dump(cfg))
    res = run_cli("train", str(p))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(p) in lines[0] and field in lines[0], res.stderr
    assert not (tmp_path / "runs").exists()


def test_standalone_network_trains_and_exports(tmp_path):
    space_arch = load_experiment(write_exp(tmp_path)).space.min_arch()
    p = write_exp(tmp_path, strategy="standalone", epochs=1, options={"arch": dict(space_arch)})
    res = run_cli("train", str(p))
    assert res.returncode == 0, res.stderr
    res = run_cli("export", str(p))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "runs" / "tiny" / "export" / "manifest.json").read_text())
    (entry,) = manifest["subnets"]
    assert entry["max_abs_diff_vs_torch"] <= 1e-3
    assert_onnx_matches_manifest(load_experiment(p), tmp_path / "runs" / "tiny" / "export", entry)
