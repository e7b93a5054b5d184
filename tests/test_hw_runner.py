"""The device runner works without torch; bundles are extracted safely."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tarfile

import pytest

from nasplat.hw import runner

from _hw_helpers import REPO, tiny_onnx

BLOCKER = r"""
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'torch', 'pydantic', 'yaml', 'sklearn', 'scipy', 'pandas', 'ray', 'onnx'}:
            raise ImportError('blocked for this test: ' + name)
        return None
sys.meta_path.insert(0, _Block())
try:
    import torch
    raise SystemExit('torch import should have failed')
except ImportError:
    pass
import runpy
sys.argv = ['nasplat.hw.runner'] + sys.argv[1:]
runpy.run_module('nasplat.hw.runner', run_name='__main__')
"""


def make_bundle(path, n=2, extra_member=None):
    settings = {"profile": "tiny", "intra_op_threads": 1, "batch_size": 1,
                "protocol": {"warmup_runs": 2, "warmup_seconds": 0.0, "timed_runs": 8}}
    models = [{"arch_id": f"id{i}", "file": f"models/id{i}.onnx", "input_shape": [1, 3, 8, 8], "macs": 10 + i}
              for i in range(n)]
    manifest = {"format": runner.BUNDLE_FORMAT, "settings": settings, "models": models,
                "columns": ["profile", "arch_id", "macs"]}
    files = {"manifest.json": json.dumps(manifest).encode()}
    files.update({m["file"]: tiny_onnx(4, seed=i) for i, m in enumerate(models)})
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if extra_member is not None:
            tf.addfile(*extra_member)
    return path


def test_runner_runs_in_a_process_where_torch_cannot_be_imported(tmp_path):
    bundle = make_bundle(tmp_path / "b.tar")
    out = tmp_path / "res.csv"
    proc = subprocess.run([sys.executable, "-c", BLOCKER, str(bundle), "--out", str(out), "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out)))
    assert [r["arch_id"] for r in rows] == ["id0", "id1"]
    assert [r["macs"] for r in rows] == ["10", "11"]  # manifest columns carried through
    assert all(float(r["latency_ms"]) > 0 and len(r["samples_ms"].split()) == 8 for r in rows)


def test_runner_module_imports_nothing_heavy():
    code = ("import sys, nasplat.hw.runner; bad = [m for m in ('torch', 'pydantic', 'yaml', 'sklearn') "
            "if m in sys.modules]; print(','.join(bad))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "models/../../evil.txt"])
def test_bundle_with_path_traversal_is_rejected(tmp_path, name):
    info = tarfile.TarInfo(name)
    info.size = 4
    bundle = make_bundle(tmp_path / "b.tar", 1, (info, io.BytesIO(b"evil")))
    dest = tmp_path / "x" / "dest"
    with pytest.raises(runner.BundleError, match="unsafe"):
        runner.safe_extract(bundle, dest)
    assert not (tmp_path / "x" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not dest.exists() or not any(dest.rglob("*.onnx"))  # nothing extracted before the check


def test_bundle_with_symlink_is_rejected(tmp_path):
    info = tarfile.TarInfo("models/link")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    bundle = make_bundle(tmp_path / "b.tar", 1, (info,))
    with pytest.raises(runner.BundleError):
        runner.safe_extract(bundle, tmp_path / "d")


def test_device_run_cli_reports_bad_bundle_in_one_line(tmp_path, capsys):
    from nasplat.cli import main

    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar")
    assert main(["device-run", str(bad), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err
    assert not (tmp_path / "o.csv").exists()
