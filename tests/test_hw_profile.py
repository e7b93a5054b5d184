"""Hardware profile schema: shipped profiles load; bad input is one line naming file and field."""
from __future__ import annotations

import pytest

from nasplat.cli import main
from nasplat.errors import UserError
from nasplat.hw import HardwareProfile, load_profile, shipped_profiles

from _hw_helpers import write_experiment


def test_shipped_profiles_load():
    assert {"local-cpu", "local-cpu-int8"} <= set(shipped_profiles())
    fp32, int8 = load_profile("local-cpu"), load_profile("local-cpu-int8")
    assert isinstance(fp32, HardwareProfile) and fp32.precision == "fp32" and fp32.where == "local"
    assert int8.precision == "int8" and int8.quantization.calib_images >= 1
    # the timing protocol of hw_profiles/README.md: warm-up >= 10 runs, >= 50 timed runs, median
    assert fp32.protocol.warmup_runs >= 10 and fp32.protocol.timed_runs >= 50 and fp32.protocol.statistic == "median"
    s = fp32.settings()
    assert s["inter_op_threads"] == 1 and s["protocol"]["timed_runs"] == fp32.protocol.timed_runs


@pytest.mark.parametrize("body, field, words", [
    ("precision: fp16\n", "precision", "fp32"),
    ("protocol: {timed_runs: 0}\n", "protocol.timed_runs", "greater"),
    ("protocol: {warmup: 3}\n", "protocol.warmup", "unknown key"),
    ("where: ray\n", None, "ray_resource"),
    ("batch_size: two\n", "batch_size", "integer"),
    ("intra_op_threads: [1\n", "line", "YAML"),
])
def test_profile_errors_are_one_line_with_file_and_field(tmp_path, body, field, words):
    p = tmp_path / "dev.yaml"
    p.write_text("name: dev\n" + body)
    with pytest.raises(UserError) as ei:
        load_profile(p)
    line = ei.value.line()
    assert "\n" not in line and str(p) in line and words in line
    if field:
        assert ei.value.field is not None and ei.value.field.startswith(field)


def test_name_defaults_to_file_stem_and_ray_profile(tmp_path):
    p = tmp_path / "pixel.yaml"
    p.write_text("where: ray\nray_resource: 'device:pixel7'\n")
    prof = load_profile(p)
    assert prof.name == "pixel" and prof.ray_resource == "device:pixel7"


def test_unknown_profile_in_experiment_is_one_line(tmp_path, capsys):
    exp = write_experiment(tmp_path, hardware=("no-such-device",))
    assert main(["profile", str(exp)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(exp) in err and "hardware.0" in err and "local-cpu" in err


def test_profile_section_errors_name_the_field(tmp_path, capsys):
    exp = write_experiment(tmp_path, extra="predictor: {test_fraction: 2}\n")
    assert main(["profile", str(exp)]) == 2
    assert "predictor.test_fraction" in capsys.readouterr().err
