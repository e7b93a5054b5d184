"""The public Python API: examples/api_quickstart.py runs on digits, results come back
as DataFrames whose columns are the CSV files', and a run folder reopens."""
from __future__ import annotations

import csv
import importlib.util
import os
import textwrap
from pathlib import Path

import pytest
import torch

import nasplat
from _tiny_space import TINY_SPACE

REPO = Path(__file__).resolve().parent.parent


def _quickstart():
    spec = importlib.util.spec_from_file_location("api_quickstart", REPO / "examples" / "api_quickstart.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("api")
    exp = root / "exp.yaml"
    exp.write_text(f"name: api\nspace:\n{TINY_SPACE}" + textwrap.dedent("""\
        data: {name: digits, resolution: 12, batch_size: 64, calib_images: 200}
        train: {strategy: sandwich, epochs: 3, lr: 0.2}
        export: {latency_profile: null}
        search: {searcher: random, objectives: [accuracy, macs], budget: 6, population: 3, workers: 1,
                 calib_images: 200}
        """))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        out = _quickstart().main(exp)
    finally:
        os.chdir(cwd)
    return root, out


def test_quickstart_results_are_dataframes_like_the_csv_files(quickstart):
    root, out = quickstart
    search = root / "runs" / "api" / "search"
    assert list(out["trials"].columns) == _header(search / "trials.csv")
    assert list(out["front"].columns) == _header(search / "pareto.csv")
    assert len(out["trials"]) == 6 and out["front"]["pareto"].all()
    assert (root / "runs" / "api" / "export" / out["entry"]["file"]).is_file()
    assert all(acc > 0.3 for acc in out["accuracies"].values())  # 3 epochs: well above chance (0.1)


def test_a_run_folder_reopens(quickstart):
    root, out = quickstart
    run = root / "runs" / "api"
    exp = nasplat.load_experiment(run)
    assert exp.space.hash() == out["experiment"].space.hash() and exp.run_dir.resolve() == run.resolve()
    cwd = os.getcwd()
    os.chdir(root)  # the experiment's output_dir ("runs") is relative to the working folder
    try:
        b = nasplat.load_supernet(out["experiment"]).state_dict()
    finally:
        os.chdir(cwd)
    a = nasplat.load_supernet(run).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = nasplat.read_train_log(run)
    assert list(log.columns) == _header(run / "supernet" / "train_log.csv") and len(log) > 0
    assert list(nasplat.read_pareto(run)["arch_id"]) == list(out["front"]["arch_id"])


def test_missing_results_are_one_line_errors(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"name: empty\noutput_dir: {tmp_path / 'runs'}\nspace:\n{TINY_SPACE}")
    with pytest.raises(nasplat.UserError, match="no trained supernet"):
        nasplat.load_supernet(exp)
    with pytest.raises(nasplat.UserError, match="no search trials yet"):
        nasplat.read_trials(exp)
    with pytest.raises(nasplat.UserError, match="not found"):
        nasplat.load_experiment(tmp_path)  # a folder that is not a run folder


def test_no_public_name_is_shadowed_by_a_subpackage():
    """``import nasplat.train`` sets the attribute ``nasplat.train``; no API function may
    share a subpackage's name (it would silently become the module)."""
    import types

    for sub in ("space", "supernet", "train", "data", "hw", "predict", "search", "export", "experiment", "api"):
        __import__(f"nasplat.{sub}")
    for name in nasplat.__all__:
        assert not isinstance(getattr(nasplat, name), types.ModuleType), name
