"""Bad search-space YAML through the real CLI in a subprocess
(``python -m nasplat.cli space info FILE``): exactly one line on stderr naming the file
and the field, exit status 2, no traceback."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BASE = yaml.safe_load((REPO / "search_spaces" / "ofa_mbv3_small.yaml").read_text())


def _edit(fn):
    def make(path: Path) -> None:
        data = copy.deepcopy(BASE)
        fn(data)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return make


def _text(text: str):
    def make(path: Path) -> None:
        path.write_text(text)
    return make


def _set(dotted: str, value):
    def fn(data):
        *parents, last = dotted.split(".")
        node = data
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(last) if isinstance(node, list) else last] = value
    return _edit(fn)


# case -> (writer or None for a missing file, field the message must name, words it must contain)
CASES = {
    "unknown_key": (_set("colour", "blue"), "colour", "unknown key"),
    "wrong_type": (_set("stages.0.width", "wide"), "stages.0.width", "integer"),
    "empty_choice_list": (_set("stages.2.kernels", []), "stages.2.kernels", "empty"),
    "duplicate_choices": (_set("stages.0.expands", [3, 4, 3]), "stages.0.expands", "duplicate"),
    "even_kernel": (_set("stages.3.kernels", [3, 4]), "stages.3.kernels", "odd"),
    "depth_below_one": (_set("stages.4.depths", [0, 2]), "stages.4.depths", ">= 1"),
    "resolution_out_of_range": (_set("resolutions", [4, 32]), "resolutions", "[8, 1024]"),
    "unknown_family": (_set("family", "resnet"), "family", "resnet"),
    "yaml_syntax": (_text("family: mbv3\nstages: [\n  {width: 16, stride: 1\nresolutions: [32]\n"), "line 4",
                    "invalid YAML"),
    "missing_file": (None, None, "not found"),
}
GOOD = "good"  # control: stage 0 kernels {3, 5}
# more cases, checked in-process through the same ``main`` (a subprocess costs a torch import)
MORE = {
    "unknown_nested_key": (_set("stages.1.kernal", [3]), "stages.1.kernal", "unknown key"),
    "wrong_type_list": (_set("resolutions", 32), "resolutions", "list"),
    "missing_field": (_edit(lambda d: d.pop("stages")), "stages", "missing"),
    "not_a_mapping": (_text("- just\n- a list\n"), None, "mapping"),
    "empty_file": (_text(""), None, "empty"),
    "bad_activation": (_set("stages.0.act", "swish"), "stages.0.act", "relu"),
    "bad_stride": (_set("stages.0.stride", 3), "stages.0.stride", "1"),
    "no_stages": (_set("stages", []), "stages", "empty"),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run every case's CLI at once (each is a fresh interpreter importing torch)."""
    tmp = tmp_path_factory.mktemp("spaces")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = {}
    writers = {name: w for name, (w, _, _) in CASES.items()}
    writers[GOOD] = _set("stages.0.kernels", [3, 5])
    for name, writer in writers.items():
        path = tmp / f"{name}.yaml"
        if writer is not None:
            writer(path)
        extra = ["--json"] if name == GOOD else []
        procs[name] = (path, subprocess.Popen([sys.executable, "-m", "nasplat.cli", "space", "info", str(path)] + extra,
                                              cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                              text=True))
    out = {}
    for name, (path, p) in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        out[name] = (path, p.returncode, stdout, stderr)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_space_gives_one_line(results, case):
    path, rc, stdout, stderr = results[case]
    _, field, words = CASES[case]
    assert "Traceback" not in stderr
    assert rc == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("nasplat: error: ")
    assert str(path) in line
    if field is not None:
        assert f": {field}: " in line, line
    assert words in line, line
    assert stdout == ""


def test_good_space_passes_the_same_cli(results):
    """The control: a valid edit of the same file is accepted by the same command."""
    _, rc, stdout, stderr = results[GOOD]
    assert rc == 0 and stderr == ""
    info = json.loads(stdout)
    assert info["family"] == "mbv3"
    assert info["archs_per_resolution"] == (6**2 + 6**3 + 6**4) * (9**2 + 9**3 + 9**4) ** 4


@pytest.mark.parametrize("case", sorted(MORE))
def test_more_bad_spaces_in_process(tmp_path, capsys, case):
    from nasplat.cli import main

    writer, field, words = MORE[case]
    path = tmp_path / f"{case}.yaml"
    writer(path)
    assert main(["space", "info", str(path)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1, err
    assert str(path) in lines[0] and words in lines[0], lines[0]
    if field is not None:
        assert f": {field}: " in lines[0], lines[0]
