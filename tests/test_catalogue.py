"""The bad-input catalogue: every case runs through the real ``nasplat`` CLI and must
give exactly one line on stderr (``nasplat: error: FILE: FIELD: message``) naming the
file and the field (or the option), exit status 2, no traceback, and leave the run
folder exactly as it was (no partial artifact).

Two kinds of cases:

* ``tests/bad_inputs/*.yaml``: one bad file each; its header names the expected
  message fragment (``# expect:``), the field (``# field:``), the command
  (``# argv:``, ``{file}`` = the case file) and, when the line must name another file
  than the case file, that file (``# file:``; empty for an option-only error);
* ``CASES`` below: inputs that must be built (binary checkpoints, data folders, tar
  bundles, predictor folders, CSVs) or that are bad CLI options.

Most cases call ``nasplat.cli.main`` in-process (a subprocess costs seconds of imports
on a small machine); ``test_real_subprocess`` runs a sample of them through
``python -m nasplat.cli`` in parallel subprocesses.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from _tiny_space import TINY_SPACE

REPO = Path(__file__).resolve().parent.parent
BAD = Path(__file__).resolve().parent / "bad_inputs"


# -- running a case -----------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with (size, mtime_ns) for files: a before/after
    comparison shows any file or folder created or removed and any file changed (a
    folder's own mtime is left out: a stage lock made and removed inside it changes it)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns) if p.is_file() else (-1, 0)
    return out


def run_inprocess(argv: list[str], capsys) -> tuple[int, str, str]:
    from nasplat.cli import main

    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def check_result(rc: int, err: str, expect: str, file: str | None, fld: str | None) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert rc == 2, f"exit status {rc}: {line}"
    assert line.startswith("nasplat: error: "), line
    assert expect.lower() in line.lower(), f"{expect!r} not in {line!r}"
    if file is not None:
        assert file in line, f"file {file!r} not named in {line!r}"
    if fld is not None:
        assert fld in line, f"field/option {fld!r} not named in {line!r}"
    return line


# -- file cases ---------------------------------------------------------------------------
def _header(path: Path) -> dict[str, str]:
    meta = {}
    for ln in path.read_text(errors="replace").splitlines():
        if not ln.startswith("# "):
            break
        k, _, v = ln[2:].partition(":")
        meta[k.strip()] = v.strip()
    return meta


FILE_CASES = sorted(p.name for p in BAD.glob("*.yaml"))


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A scratch folder holding a copy of bad_inputs/, used as the working directory
    (so ``runs/`` of every case lands here)."""
    shutil.copytree(BAD, tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", FILE_CASES)
def test_file_case(name, work, capsys):
    case = work / "in" / name
    meta = _header(case)
    assert "expect" in meta and "argv" in meta, f"{name}: header needs '# expect:' and '# argv:'"
    rel = f"in/{name}"
    argv = [a.replace("{file}", rel) for a in meta["argv"].split()]
    before = snapshot(work)
    rc, _, err = run_inprocess(argv, capsys)
    file = rel if "file" not in meta else (f"in/{meta['file']}" if meta["file"] else None)  # empty: an option case
    check_result(rc, err, meta["expect"], file, meta.get("field"))
    assert snapshot(work) == before, "the failed command changed the working folder"


# -- built cases ----------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    build: Callable[[Path], list[str]]  # writes the inputs under the folder, returns argv
    expect: str
    file: str | None  # a fragment of the path the line must name (None: an option case)
    field: str | None
    subprocess: bool = False  # also run through a real `python -m nasplat.cli`
    slow: bool = False


def write_exp(root: Path, extra: str = "", name: str = "cat") -> str:
    (root / "exp.yaml").write_text(
        f"name: {name}\nseed: 0\nspace:\n{TINY_SPACE}data: {{name: digits, resolution: 12, batch_size: 32, "
        f"calib_images: 64}}\n" + extra)
    return "exp.yaml"


def tiny_space():
    import yaml

    from nasplat.space import space_from_dict

    return space_from_dict(yaml.safe_load(textwrap.dedent(TINY_SPACE)), "tiny")


def save_supernet(path: Path, space_hash: str | None = None) -> None:
    from nasplat.supernet import build_supernet
    from nasplat.checkpoint import save_weights

    space = tiny_space()
    save_weights(path, build_supernet(space), {"space_hash": space_hash or space.hash(), "space": "tiny"})


SUPERNET = "runs/cat/supernet/supernet.safetensors"


def b_missing_experiment(root: Path) -> list[str]:
    return ["train", "nope/exp.yaml"]


def b_folder(layout: dict[str, int], **kw) -> Callable[[Path], list[str]]:
    """A folder data set: ``layout`` maps 'split/class' -> number of PNGs."""

    def build(root: Path) -> list[str]:
        from PIL import Image

        data = root / "imgs"
        (data / "train").mkdir(parents=True)
        for rel, n in layout.items():
            d = data / rel
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("L", (12, 12), color=(i * 37) % 255).save(d / f"{i}.png")
        for rel, text in kw.get("files", {}).items():
            (data / rel).write_text(text)
        return ["train", write_exp(root, "data: {name: folder, path: imgs, resolution: 12}\n")]

    return build


def b_corrupt_checkpoint(root: Path) -> list[str]:
    p = root / SUPERNET
    p.parent.mkdir(parents=True)
    p.write_bytes(b"\x00garbage, not safetensors\xff" * 10)
    return ["export", write_exp(root)]


def b_truncated_checkpoint(root: Path) -> list[str]:
    p = root / SUPERNET
    save_supernet(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return ["export", write_exp(root)]


def b_checkpoint_bad_metadata(root: Path) -> list[str]:
    import torch
    from safetensors.torch import save_file

    p = root / SUPERNET
    p.parent.mkdir(parents=True)
    save_file({"x": torch.zeros(2)}, str(p), metadata={"nasplat": "{not json"})
    return ["export", write_exp(root)]


def b_checkpoint_no_metadata(root: Path) -> list[str]:
    import torch
    from safetensors.torch import save_file

    p = root / SUPERNET
    p.parent.mkdir(parents=True)
    save_file({"x": torch.zeros(2)}, str(p))
    return ["export", write_exp(root)]


def b_checkpoint_other_space(root: Path) -> list[str]:
    save_supernet(root / SUPERNET, space_hash="0123456789abcdef")
    return ["export", write_exp(root)]


def b_checkpoint_wrong_tensors(root: Path) -> list[str]:
    """Right space hash, but the tensors of another network."""
    import torch

    from nasplat.checkpoint import save_checkpoint

    p = root / SUPERNET
    save_checkpoint(p, {"model": {"conv.weight": torch.zeros(3, 3)}}, {"space_hash": tiny_space().hash()})
    return ["export", write_exp(root)]


def b_pickle_checkpoint(root: Path) -> list[str]:
    """A torch.save (pickle) file under the checkpoint's name: refused, never unpickled."""
    import torch

    p = root / SUPERNET
    p.parent.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(2)}}, p)
    return ["export", write_exp(root)]


def b_corrupt_last_resume(root: Path) -> list[str]:
    p = root / "runs/cat/supernet/last.safetensors"
    p.parent.mkdir(parents=True)
    p.write_bytes(b"PK\x03\x04 a zip, not a checkpoint")
    return ["train", write_exp(root, "train: {epochs: 1}\n"), "--resume"]


def b_last_other_space_resume(root: Path) -> list[str]:
    save_supernet(root / "runs/cat/supernet/last.safetensors", space_hash="fedcba9876543210")
    return ["train", write_exp(root, "train: {epochs: 1}\n"), "--resume"]


def b_partial_training(root: Path) -> list[str]:
    save_supernet(root / "runs/cat/supernet/last.safetensors")
    return ["train", write_exp(root, "train: {epochs: 1}\n")]


def _predictor(root: Path, space_hash: str | None = None, device: str = "local-cpu",
               meta_text: str | None = None) -> None:
    from nasplat.predict import make_latency_predictor, save_predictor

    space = tiny_space()
    folder = root / "runs/cat/predictors/local-cpu"
    import numpy as np

    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(6)]
    y = [float(space.macs(a)) / 1e6 for a in archs]
    pred = make_latency_predictor("learned", space).fit(archs, y)
    save_predictor(folder, pred, archs, y, target="latency_ms", extra={"device": device})
    meta = json.loads((folder / "predictor.json").read_text())
    if space_hash:
        meta["space_hash"] = space_hash
    (folder / "predictor.json").write_text(meta_text if meta_text is not None else json.dumps(meta))


SEARCH_LAT = "search: {objectives: [macs, latency@local-cpu], budget: 4, population: 2}\nhardware: [local-cpu]\n"


def b_predictor_other_space(root: Path) -> list[str]:
    _predictor(root, space_hash="0123456789abcdef")
    return ["search", write_exp(root, SEARCH_LAT)]


def b_predictor_other_device(root: Path) -> list[str]:
    _predictor(root, device="raspberry-pi")
    return ["search", write_exp(root, SEARCH_LAT)]


def b_predictor_bad_json(root: Path) -> list[str]:
    _predictor(root, meta_text="{\"format\": ")
    return ["search", write_exp(root, SEARCH_LAT)]


def b_predictor_missing(root: Path) -> list[str]:
    return ["search", write_exp(root, SEARCH_LAT)]


def b_predictor_bad_train_csv(root: Path) -> list[str]:
    _predictor(root)
    (root / "runs/cat/predictors/local-cpu/model.safetensors").unlink()  # a folder without fitted state: refitted
    p = root / "runs/cat/predictors/local-cpu/train.csv"
    lines = p.read_text().splitlines()
    lines[2] = 'x,"{""k0_0"": 4}",1.0'
    p.write_text("\n".join(lines) + "\n")
    return ["search", write_exp(root, SEARCH_LAT)]


def _import_csv(root: Path, text: str) -> list[str]:
    (root / "result.csv").write_text(text)
    return ["profile", write_exp(root, "hardware: [local-cpu]\n"), "--device", "local-cpu", "--import",
            "result.csv"]


def b_csv_missing_columns(root: Path) -> list[str]:
    return _import_csv(root, "arch_id,latency_ms\nabc,1.0\n")


def b_csv_bad_number(root: Path) -> list[str]:
    arch = tiny_space().min_arch()
    j = arch.to_json().replace('"', '""')
    return _import_csv(root, f'profile,arch_id,arch,macs,latency_ms,samples_ms\nlocal-cpu,{arch.id},"{j}",lots,1.0,1\n')


def b_csv_arch_not_json(root: Path) -> list[str]:
    return _import_csv(root, "profile,arch_id,arch,latency_ms,samples_ms\nlocal-cpu,abc,{k0_0: 3,1.0,1\n")


def b_csv_arch_not_in_space(root: Path) -> list[str]:
    return _import_csv(root, 'profile,arch_id,arch,latency_ms,samples_ms\nlocal-cpu,abc,"{""k0_0"": 4}",1.0,1\n')


def b_csv_binary(root: Path) -> list[str]:
    (root / "result.csv").write_bytes(b"\xff\xfe\x00\x01" * 50)
    return ["profile", write_exp(root, "hardware: [local-cpu]\n"), "--device", "local-cpu", "--import",
            "result.csv"]


def b_measurements_ragged(root: Path) -> list[str]:
    """The run's own measurements.csv edited by hand into a malformed table."""
    p = root / "runs/cat/profiles/local-cpu/measurements.csv"
    p.parent.mkdir(parents=True)
    arch = tiny_space().min_arch()
    j = arch.to_json().replace('"', '""')
    rows = [f'local-cpu,{arch.id},"{j}",12x,3,12,fp32,1,0.5' for _ in range(5)]
    p.write_text("profile,arch_id,arch,macs,params,resolution,precision,batch_size,latency_ms\n" + "\n".join(rows) + "\n")
    return ["predictor", "fit", write_exp(root, "hardware: [local-cpu]\n"), "--device", "local-cpu"]


def _tar(root: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> str:
    with tarfile.open(root / "bundle.tar", "w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return "bundle.tar"


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def b_bundle_traversal(root: Path) -> list[str]:
    (root / "dev").mkdir()
    name = _tar(root, [_file("manifest.json", b"{}"), _file("../../escaped.txt", b"owned")])
    return ["device-run", name, "--out", "dev/out.csv"]


def b_bundle_absolute(root: Path) -> list[str]:
    name = _tar(root, [_file("/tmp/nasplat_escaped_abs.txt", b"owned")])
    return ["device-run", name, "--out", "out.csv"]


def b_bundle_symlink(root: Path) -> list[str]:
    link = tarfile.TarInfo("models/evil.onnx")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    name = _tar(root, [_file("manifest.json", b"{}"), (link, None)])
    return ["device-run", name, "--out", "out.csv"]


def b_bundle_not_tar(root: Path) -> list[str]:
    (root / "bundle.tar").write_bytes(b"this is not a tar file at all" * 40)
    return ["device-run", "bundle.tar", "--out", "out.csv"]


def b_bundle_no_manifest(root: Path) -> list[str]:
    name = _tar(root, [_file("models/a.onnx", b"\x08\x01")])
    return ["device-run", name, "--out", "out.csv"]


def b_bundle_missing(root: Path) -> list[str]:
    return ["device-run", "no_such_bundle.tar", "--out", "out.csv"]


def b_shipped_predictor_other_machine(root: Path) -> list[str]:
    """latency@ a profile with 2 threads, no predictor of the run's own: the shipped one
    (measured with 1 thread) is refused, not used silently."""
    (root / "two.yaml").write_text("name: local-cpu\nintra_op_threads: 2\n")
    (root / "exp.yaml").write_text("name: cat\nspace: ofa_mbv3_small\nhardware: [two.yaml]\n"
                                   "search: {objectives: [macs, latency@local-cpu], budget: 4, population: 2}\n")
    return ["search", "exp.yaml"]


def b_arch_bad_value(root: Path) -> list[str]:
    return ["export", write_exp(root), "--arch", '{"k0_0": 4}']


def b_arch_unknown_choice(root: Path) -> list[str]:
    return ["export", write_exp(root), "--arch", '{"kernel_size": 3}']


def b_arch_not_json(root: Path) -> list[str]:
    return ["export", write_exp(root), "--arch", "{k0_0: 3"]


def b_arch_file_not_in_space(root: Path) -> list[str]:
    arch = dict(tiny_space().max_arch())
    arch["r"] = 224
    (root / "arch.json").write_text(json.dumps(arch))
    return ["export", write_exp(root), "--arch", "@arch.json"]


def b_arch_file_missing(root: Path) -> list[str]:
    return ["export", write_exp(root), "--arch", "@no_such_arch.json"]


def b_export_arch_in_yaml(root: Path) -> list[str]:
    return ["export", write_exp(root, "export: {arch: {k0_0: 9}}\n")]


def b_ray_unreachable(root: Path) -> list[str]:
    return ["train", write_exp(root, "train: {epochs: 1, workers: 2}\n"), "--address", "127.0.0.1:9"]


def b_ray_bad_address(root: Path) -> list[str]:
    return ["search", write_exp(root), "--address", "ray://:notaport"]


def b_storage_bad_url(root: Path) -> list[str]:
    return ["search", write_exp(root, "search: {objectives: [macs, params], budget: 4, population: 2}\n"),
            "--storage", "nosuchdb://x/y"]


def b_profile_samples_zero(root: Path) -> list[str]:
    return ["profile", write_exp(root, "hardware: [local-cpu]\n"), "--samples", "0"]


def b_profile_unknown_device(root: Path) -> list[str]:
    return ["profile", write_exp(root), "--device", "toaster"]


def b_predictor_options_not_object(root: Path) -> list[str]:
    return ["predictor", "fit", write_exp(root, "hardware: [local-cpu]\n"), "--options", "[1, 2]"]


def b_bench_unknown(root: Path) -> list[str]:
    return ["bench", "no_such_benchmark"]


def b_space_info_missing(root: Path) -> list[str]:
    return ["space", "info", "spaces/nothing.yaml"]


def b_space_binary(root: Path) -> list[str]:
    (root / "space.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 20)
    return ["space", "info", "space.yaml"]


def b_experiment_is_folder(root: Path) -> list[str]:
    (root / "exp.yaml").mkdir()
    return ["train", "exp.yaml"]


CASES = [
    Case("missing_experiment", b_missing_experiment, "experiment file not found", "nope/exp.yaml", None, True),
    Case("experiment_is_folder", b_experiment_is_folder, "not found", "exp.yaml", None),
    Case("space_info_missing", b_space_info_missing, "search space file not found", "spaces/nothing.yaml", None),
    Case("space_binary", b_space_binary, "not a text file", "space.yaml", None),
    Case("data_folder_empty", b_folder({"train/a": 0, "train/b": 0}), "no images found", "imgs/train",
         "data.path"),
    Case("data_folder_loose_images", b_folder({"train": 3}), "image outside a class folder", "imgs/train",
         "data.path"),
    Case("data_folder_mislabelled_val", b_folder({"train/cat": 2, "train/dog": 2, "val/cat": 1, "val/dgo": 1}),
         "val classes differ from train", "imgs/val", "data.path"),
    Case("data_folder_class_count", b_folder({"train/a": 2, "train/b": 2, "train/c": 2}),
         "the space has 10 classes", "exp.yaml", "num_classes"),
    Case("checkpoint_corrupt", b_corrupt_checkpoint, "not a readable safetensors checkpoint", SUPERNET, None, True),
    Case("checkpoint_truncated", b_truncated_checkpoint, "checkpoint", SUPERNET, None),
    Case("checkpoint_bad_metadata", b_checkpoint_bad_metadata, "metadata", SUPERNET, None),
    Case("checkpoint_no_metadata", b_checkpoint_no_metadata, "not a nasplat checkpoint", SUPERNET, None),
    Case("checkpoint_other_space", b_checkpoint_other_space, "checkpoint is for another search space", SUPERNET,
         "space_hash"),
    Case("checkpoint_wrong_tensors", b_checkpoint_wrong_tensors, "weights do not fit this supernet", SUPERNET,
         None),
    Case("checkpoint_is_pickle", b_pickle_checkpoint, "not a readable safetensors checkpoint", SUPERNET, None),
    Case("resume_corrupt_last", b_corrupt_last_resume, "not a readable safetensors checkpoint",
         "runs/cat/supernet/last.safetensors", None),
    Case("resume_other_space", b_last_other_space_resume, "checkpoint is for another search space",
         "runs/cat/supernet/last.safetensors", "space_hash"),
    Case("partial_training_no_resume", b_partial_training, "pass --resume", "runs/cat/supernet/last.safetensors",
         None),
    Case("predictor_other_space", b_predictor_other_space, "fitted on another search space",
         "predictors/local-cpu/predictor.json", "space_hash"),
    Case("predictor_other_device", b_predictor_other_device, "fitted for device 'raspberry-pi'",
         "predictors/local-cpu/predictor.json", "device"),
    Case("predictor_bad_json", b_predictor_bad_json, "not valid JSON", "predictors/local-cpu/predictor.json", None),
    Case("predictor_missing", b_predictor_missing, "no latency predictor for device 'local-cpu'", "exp.yaml",
         "search.objectives"),
    Case("predictor_train_csv_not_in_space", b_predictor_bad_train_csv, "4 is not one of [3, 5]",
         "predictors/local-cpu/train.csv", "arch.k0_0"),
    Case("csv_missing_columns", b_csv_missing_columns, "not a device-run result CSV", "result.csv", None),
    Case("csv_bad_number", b_csv_bad_number, "'lots'", "result.csv", "line 2"),
    Case("csv_arch_not_json", b_csv_arch_not_json, "arch is not JSON", "result.csv", "line 2"),
    Case("csv_arch_not_in_space", b_csv_arch_not_in_space, "4 is not one of", "result.csv", "arch.k0_0"),
    Case("csv_binary", b_csv_binary, "not a readable measurements CSV", "result.csv", None),
    Case("measurements_malformed", b_measurements_ragged, "'12x'", "profiles/local-cpu/measurements.csv",
         "line 2"),
    Case("bundle_path_traversal", b_bundle_traversal, "unsafe path in bundle", "bundle.tar", None, True),
    Case("bundle_absolute_path", b_bundle_absolute, "unsafe path in bundle", "bundle.tar", None),
    Case("bundle_symlink", b_bundle_symlink, "is not a regular file", "bundle.tar", None),
    Case("bundle_not_tar", b_bundle_not_tar, "not a readable tar bundle", "bundle.tar", None),
    Case("bundle_no_manifest", b_bundle_no_manifest, "bundle has no manifest.json", "bundle.tar", None),
    Case("bundle_missing", b_bundle_missing, "bundle not found", "no_such_bundle.tar", None, True),
    Case("shipped_predictor_other_machine", b_shipped_predictor_other_machine,
         "intra_op_threads 1 there, 2 here", None, "device"),
    Case("arch_bad_value", b_arch_bad_value, "4 is not one of [3, 5]", None, "--arch"),
    Case("arch_unknown_choice", b_arch_unknown_choice, "choice 'kernel_size' is not in space", None, "--arch"),
    Case("arch_not_json", b_arch_not_json, "not valid JSON", None, "--arch"),
    Case("arch_file_not_in_space", b_arch_file_not_in_space, "224 is not one of [10, 12]", "arch.json", "arch.r",
         True),
    Case("arch_file_missing", b_arch_file_missing, "arch file not found", "no_such_arch.json", None),
    Case("export_arch_in_yaml", b_export_arch_in_yaml, "9 is not one of [3, 5]", "exp.yaml", "k0_0"),
    Case("ray_unreachable", b_ray_unreachable, "cannot reach a Ray cluster at '127.0.0.1:9'", None, "--address",
         True),
    Case("ray_bad_address", b_ray_bad_address, "not a Ray address", None, "--address"),
    Case("search_storage_bad_url", b_storage_bad_url, "cannot open the study storage", None, "--storage"),
    Case("profile_samples_zero", b_profile_samples_zero, "must be >= 1", None, "--samples"),
    Case("profile_unknown_device", b_profile_unknown_device, "hardware profile 'toaster' not found", None,
         "--device"),
    Case("predictor_options_not_object", b_predictor_options_not_object, "must be a JSON object", None,
         "--options"),
    Case("bench_unknown", b_bench_unknown, "unknown benchmark 'no_such_benchmark'", None, "NAME"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_built_case(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = case.build(tmp_path)
    before = snapshot(tmp_path)
    rc, _, err = run_inprocess(argv, capsys)
    check_result(rc, err, case.expect, case.file, case.field)
    assert snapshot(tmp_path) == before, "the failed command changed the working folder"


def test_catalogue_size():
    assert len(FILE_CASES) + len(CASES) >= 40


def test_bundle_traversal_writes_nothing_outside(tmp_path, monkeypatch, capsys):
    """The traversal member is refused before anything is extracted anywhere."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    argv = b_bundle_traversal(work)
    rc, _, err = run_inprocess(argv, capsys)
    assert rc == 2 and "unsafe path" in err
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "a" / "escaped.txt").exists()
    assert not Path("/tmp/nasplat_escaped_abs.txt").exists()


def test_real_subprocess(tmp_path):
    """A sample of the catalogue through ``python -m nasplat.cli`` (real process: the
    exit status, stderr and the absence of a traceback as a user sees them). File
    cases and built cases run side by side to share the import cost."""
    picks = [c for c in CASES if c.subprocess]
    file_picks = ["space_yaml_syntax.yaml", "space_even_kernel.yaml", "exp_unknown_train_key.yaml",
                  "space_vit_width_not_divisible.yaml"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = []
    for c in picks:
        d = tmp_path / c.name
        d.mkdir()
        argv = c.build(d)
        procs.append((c.name, d, snapshot(d), c.expect, c.file, c.field, subprocess.Popen(
            [sys.executable, "-m", "nasplat.cli", *argv], cwd=d, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)))
    d = tmp_path / "files"
    shutil.copytree(BAD, d)
    for name in file_picks:
        meta = _header(d / name)
        argv = [a.replace("{file}", name) for a in meta["argv"].split()]
        procs.append((name, d, None, meta["expect"], name, meta.get("field"), subprocess.Popen(
            [sys.executable, "-m", "nasplat.cli", *argv], cwd=d, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)))
    file_before = snapshot(d)
    for name, folder, before, expect, file, fld, p in procs:
        _, err = p.communicate(timeout=300)
        check_result(p.returncode, err, expect, file, fld)
        if before is not None:
            assert snapshot(folder) == before, name
    assert snapshot(d) == file_before
