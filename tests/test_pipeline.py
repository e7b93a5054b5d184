"""``nasplat run``: search -> export on a tiny experiment whose supernet checkpoint
exists (so the train stage takes its skip path: training has its own tests and costs
minutes here), then a second run that skips every stage."""
from __future__ import annotations

import json

import pandas as pd

from _search_helpers import write_experiment


def test_run_pipeline_end_to_end_then_skips(ray_session, tmp_path, capsys):
    from nasplat.cli import main

    p = write_experiment(tmp_path, {"searcher": "linas", "objectives": ["accuracy", "macs"], "budget": 10,
                                    "population": 5, "workers": 2, "constraints": ["macs <= 600k"],
                                    "linas": {"inner_evals": 100, "inner_population": 20}},
                         save_supernet=True)  # training has its own tests; here it is the skipped path
    assert main(["run", str(p)]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "s"
    assert (run / "supernet" / "supernet.safetensors").exists()
    front = pd.read_csv(run / "search" / "pareto.csv")
    trials = pd.read_csv(run / "search" / "trials.csv")
    assert len(trials) == 10 and trials["arch_id"].is_unique
    assert len(front) >= 1 and (front["macs"] <= 600e3).all()
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    ids = {e["id"] for e in manifest["subnets"]}
    assert ids == set(front["arch_id"])
    for e in manifest["subnets"]:
        assert (run / "export" / e["file"]).stat().st_size > 0
        assert e["search"]["macs"] == e["macs"]
    assert "Pareto front" in out and all(a in out for a in front["arch_id"])
    mtimes = {f.name: f.stat().st_mtime_ns for f in (run / "export").glob("*.onnx")}

    assert main(["run", str(p)]) == 0  # everything exists: nothing is redone
    err = capsys.readouterr().err
    assert "train: skipped" in err and "search: skipped" in err and "export: skipped" in err
    assert {f.name: f.stat().st_mtime_ns for f in (run / "export").glob("*.onnx")} == mtimes
    assert len(pd.read_csv(run / "search" / "trials.csv")) == 10
