"""The profile stage: measure, resume (skip measured ids), bundle round trip, import checks."""
from __future__ import annotations

import csv

from nasplat.cli import main
from nasplat.experiment import load_experiment
from nasplat.hw import MEASUREMENT_COLUMNS, read_measurements, stratified_archs
from nasplat.hw.measure import ARCH_COLUMNS
from nasplat.hw.stage import measurements_path
from nasplat.space import load_space

from _hw_helpers import REPO, write_experiment


def test_stratified_draw_is_prefix_stable_and_spread_over_macs():
    space = load_space(REPO / "search_spaces" / "ofa_mbv3_digits.yaml")
    a, b = stratified_archs(space, 10, 0), stratified_archs(space, 30, 0)
    assert [x.id for x in a] == [x.id for x in b[:10]] and len({x.id for x in b}) == 30
    macs = sorted(space.macs(x) for x in b)
    assert macs[0] == space.macs(space.min_arch()) and macs[-1] == space.macs(space.max_arch())


def test_profile_resume_and_bundle_round_trip(tmp_path, capsys):
    exp_path = write_experiment(tmp_path, "local", samples=2)
    assert main(["profile", str(exp_path), "--quiet"]) == 0
    exp = load_experiment(exp_path)
    path = measurements_path(exp.run_dir, "local-cpu")
    rows = read_measurements(path)
    assert len(rows) == 2 and all(r["latency_ms"] > 0 and r["runs"] == 10 for r in rows)
    assert list(csv.DictReader(open(path)).fieldnames) == MEASUREMENT_COLUMNS
    before = path.read_text()

    # resume: the same draw is skipped entirely; a larger one measures only the new arch
    assert main(["profile", str(exp_path), "--quiet"]) == 0
    assert path.read_text() == before
    assert main(["profile", str(exp_path), "--samples", "3", "--quiet"]) == 0
    rows3 = read_measurements(path)
    assert len(rows3) == 3 and path.read_text().startswith(before)
    assert len({r["arch_id"] for r in rows3}) == 3

    # bundle -> device runner -> import gives the same rows (up to the timings)
    exp2_path = write_experiment(tmp_path, "offline", samples=2)
    bundle, result = tmp_path / "b.tar", tmp_path / "device.csv"
    assert main(["profile", str(exp2_path), "--device", "local-cpu", "--bundle", str(bundle), "--quiet"]) == 0
    assert main(["device-run", str(bundle), "--out", str(result), "--quiet"]) == 0
    assert main(["profile", str(exp2_path), "--device", "local-cpu", "--import", str(result), "--quiet"]) == 0
    exp2 = load_experiment(exp2_path)
    imported = read_measurements(measurements_path(exp2.run_dir, "local-cpu"))
    key = lambda r: tuple(r[c] for c in ARCH_COLUMNS)  # noqa: E731
    assert sorted(map(key, imported)) == sorted(map(key, rows))
    assert all(r["latency_ms"] > 0 and len(r["samples_ms"].split()) == r["runs"] for r in imported)
    # importing again adds nothing; a tampered arch id is refused in one line
    assert main(["profile", str(exp2_path), "--device", "local-cpu", "--import", str(result), "--quiet"]) == 0
    assert len(read_measurements(measurements_path(exp2.run_dir, "local-cpu"))) == 2
    text = result.read_text().splitlines()
    text[1] = text[1].replace(imported[0]["arch_id"], "000000000000", 1).replace(
        imported[1]["arch_id"], "000000000000", 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(text) + "\n")
    capsys.readouterr()
    assert main(["profile", str(exp2_path), "--device", "local-cpu", "--import", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err and "line 2" in err


def test_bundle_profile_refuses_direct_measurement(tmp_path, capsys):
    prof = tmp_path / "phone-dev.yaml"
    prof.write_text("where: bundle\n")
    exp_path = write_experiment(tmp_path, "phone", samples=2, hardware=(str(prof),))
    assert main(["profile", str(exp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--bundle" in err and "device-run" in err
