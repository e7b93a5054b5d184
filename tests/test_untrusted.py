"""Untrusted files: the package never runs code from a file a user (or the internet)
hands it.

1. A scan of the package source (AST, not grep): no ``pickle.load(s)`` / ``marshal`` /
   ``shelve`` / ``joblib`` / ``dill`` loads, every ``pickle.Unpickler`` subclass
   overrides ``find_class``, ``torch.load`` only with ``weights_only=True``,
   ``numpy.load`` never with ``allow_pickle=True``, YAML only through ``safe_load`` (or
   ``yaml.load`` with a SafeLoader), no builtin ``eval``/``exec``/``compile``, no
   ``os.system`` / ``shell=True``, tar/zip ``extractall`` only with ``filter="data"``,
   and every ``ray.init`` that can start a local instance has the dashboard off or
   bound to loopback. The scanner is itself tested on bad snippets.
2. Behaviour: hostile files (a YAML ``!!python`` tag, a pickle disguised as a
   checkpoint, a crafted CIFAR-10 pickle, expressions in experiment strings) are
   refused with a one-line error and their payload never runs.
"""
from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "nasplat"

FORBIDDEN_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("cPickle", "load"), ("cPickle", "loads"), ("_pickle", "load"),
    ("_pickle", "loads"), ("marshal", "load"), ("marshal", "loads"), ("shelve", "open"), ("joblib", "load"),
    ("dill", "load"), ("dill", "loads"), ("pd", "read_pickle"), ("pandas", "read_pickle"),
    ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "unsafe_load_all"), ("yaml", "full_load_all"),
    ("os", "system"), ("os", "popen"),
}
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node: ast.expr | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value == value


def _dotted(node: ast.expr) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def _mentions(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def scan_source(text: str, filename: str = "<src>") -> list[str]:
    """Problems in one module's source, as ``file:line: what``."""
    tree = ast.parse(text, filename)
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    out: list[str] = []

    def bad(node: ast.AST, what: str) -> None:
        out.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = [_dotted(b) or (None, getattr(b, "id", None)) for b in node.bases]
            if any(b[1] == "Unpickler" for b in bases):
                if not any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body):
                    bad(node, f"Unpickler subclass {node.name} does not restrict find_class")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        dotted = _dotted(func)
        if isinstance(func, ast.Name) and func.id in ("eval", "exec", "compile", "__import__"):
            bad(node, f"builtin {func.id}()")
        if dotted in FORBIDDEN_CALLS:
            bad(node, f"{dotted[0]}.{dotted[1]}()")
        if dotted and dotted[1] == "Unpickler" and dotted[0] in ("pickle", "_pickle"):
            bad(node, "a bare pickle.Unpickler (no find_class restriction)")
        if dotted == ("torch", "load") and not _const(_kw(node, "weights_only"), True):
            bad(node, "torch.load without weights_only=True")
        if dotted and dotted[1] == "load" and dotted[0] in ("np", "numpy") and _const(_kw(node, "allow_pickle"), True):
            bad(node, "numpy.load(allow_pickle=True)")
        if dotted and dotted[0] == "yaml" and dotted[1] in ("load", "load_all"):
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            name = getattr(loader, "attr", None) or getattr(loader, "id", None)
            if name not in SAFE_LOADERS:
                bad(node, f"yaml.{dotted[1]} without a SafeLoader")
        if isinstance(func, ast.Attribute) and func.attr == "extractall":
            filt = _kw(node, "filter")
            if not (_const(filt, "data") or _const(filt, "tar")):
                bad(node, "extractall without filter='data'")
        if any(k.arg == "shell" and _const(k.value, True) for k in node.keywords):
            bad(node, "subprocess with shell=True")
        if dotted == ("ray", "init"):
            dash = _kw(node, "include_dashboard")
            host = _kw(node, "dashboard_host")
            if _const(dash, False) or (isinstance(host, ast.Constant) and host.value in LOOPBACK):
                continue
            # Connecting to an existing cluster (``address=`` inside ``if address``) starts
            # no dashboard here; anything else may start a local instance.
            p, connecting = parents.get(node), False
            while p is not None and not connecting:
                if isinstance(p, ast.If) and _mentions(p.test, "address") and _kw(node, "address") is not None:
                    connecting = node in ast.walk(p.body[0]) or any(node in ast.walk(s) for s in p.body)
                p = parents.get(p)
            if not connecting:
                bad(node, "ray.init may start a local Ray with its dashboard on all interfaces "
                          "(pass include_dashboard=False or dashboard_host='127.0.0.1')")
    return out


def test_package_has_no_unsafe_loading():
    problems = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    for path in files:
        problems += scan_source(path.read_text(), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("snippet, what", [
    ("import pickle\npickle.loads(b)", "pickle.loads"),
    ("import pickle\nwith open(p, 'rb') as f: pickle.load(f)", "pickle.load"),
    ("import torch\ntorch.load(p)", "weights_only"),
    ("import torch\ntorch.load(p, weights_only=False)", "weights_only"),
    ("import yaml\nyaml.load(text)", "SafeLoader"),
    ("import yaml\nyaml.load(text, Loader=yaml.FullLoader)", "SafeLoader"),
    ("import yaml\nyaml.unsafe_load(text)", "unsafe_load"),
    ("eval(cfg['expr'])", "eval"),
    ("exec(code)", "exec"),
    ("import numpy as np\nnp.load(p, allow_pickle=True)", "allow_pickle"),
    ("import tarfile\ntarfile.open(p).extractall(d)", "extractall"),
    ("import subprocess\nsubprocess.run(cmd, shell=True)", "shell=True"),
    ("import pickle\nclass U(pickle.Unpickler):\n    pass", "find_class"),
    ("import ray\nray.init()", "dashboard"),
    ("import ray\nray.init(address=address)", "dashboard"),
    ("import ray\nif address:\n    pass\nray.init(num_cpus=2)", "dashboard"),
])
def test_scanner_flags(snippet, what):
    found = scan_source(snippet)
    assert found and what in found[0], found


@pytest.mark.parametrize("snippet", [
    "import yaml\nyaml.safe_load(text)",
    "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "import torch\ntorch.load(p, weights_only=True)",
    "import tarfile\ntarfile.open(p).extractall(d, filter='data')",
    "import ray\nray.init(include_dashboard=False)",
    "import ray\nray.init(dashboard_host='127.0.0.1')",
    "import ray\nif address:\n    ray.init(address=address)\nelse:\n    ray.init(include_dashboard=False)",
    "import pickle\nclass U(pickle.Unpickler):\n    def find_class(self, m, n):\n        raise ValueError",
    "model.eval()",
])
def test_scanner_accepts(snippet):
    assert scan_source(snippet) == []


# -- behaviour on hostile files -----------------------------------------------------------------
class _Payload:
    """Pickles to a call that creates ``marker`` when (and only when) it is unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def _cli(argv, capsys) -> tuple[int, str]:
    from nasplat.cli import main

    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err


def test_yaml_python_tag_is_not_executed(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    (tmp_path / "space.yaml").write_text(f"family: !!python/object/apply:os.makedirs ['{marker}']\n")
    monkeypatch.chdir(tmp_path)
    rc, err = _cli(["space", "info", "space.yaml"], capsys)
    assert rc == 2 and "space.yaml" in err and "invalid YAML" in err
    assert not marker.exists()


def test_pickle_checkpoint_is_not_unpickled(tmp_path, monkeypatch, capsys):
    """A torch.save file with a code payload under the supernet's name: refused as not
    safetensors, and the payload never runs (nothing calls pickle on it)."""
    import torch

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "runs" / "evil" / "supernet" / "supernet.safetensors"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": _Payload(marker)}, ckpt)
    (tmp_path / "exp.yaml").write_text("name: evil\nspace: ofa_mbv3_digits\ndata: {resolution: 16}\n")
    monkeypatch.chdir(tmp_path)
    rc, err = _cli(["export", "exp.yaml"], capsys)
    assert rc == 2 and "not a readable safetensors checkpoint" in err
    assert not marker.exists()


def test_cifar_pickle_payload_is_refused(tmp_path):
    """The CIFAR-10 python-folder reader resolves numpy array globals only."""
    from nasplat.data.cifar10 import restricted_load

    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match="refusing global"):
        restricted_load(pickle.dumps({b"data": _Payload(marker), b"labels": [0]}, protocol=2))
    assert not marker.exists()


def test_cifar_folder_with_payload_is_a_user_error(tmp_path):
    from nasplat.data import DataConfig, load_data
    from nasplat.errors import UserError

    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": _Payload(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(UserError) as e:
        load_data(DataConfig(name="cifar10", path=str(folder)), 3)
    assert "data_batch_1" in e.value.line() and "\n" not in e.value.line()
    assert not marker.exists()


@pytest.mark.parametrize("section", [
    "search: {objectives: [macs], constraints: [\"__import__('os').makedirs('MARK') <= 1\"]}",
    "search: {objectives: [\"__import__('os').makedirs('MARK')\"]}",
    "export: {arch: \"__import__('os').makedirs('MARK')\"}",
])
def test_experiment_strings_are_not_evaluated(section, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "MARK"
    cmd = "export" if section.startswith("export") else "search"
    (tmp_path / "exp.yaml").write_text("name: evil\nspace: ofa_mbv3_digits\n" + section + "\n")
    monkeypatch.chdir(tmp_path)
    rc, err = _cli([cmd, "exp.yaml"], capsys)
    assert rc == 2 and "exp.yaml" in err
    assert not marker.exists()


def test_bundle_hardlink_and_device_members_are_refused(tmp_path):
    import io
    import tarfile

    from nasplat.hw.runner import BundleError, safe_extract

    for kind in (tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE):
        tar = tmp_path / f"b{kind!r}.tar"
        with tarfile.open(tar, "w") as tf:
            info = tarfile.TarInfo("manifest.json")
            info.size = 2
            tf.addfile(info, io.BytesIO(b"{}"))
            evil = tarfile.TarInfo("models/x.onnx")
            evil.type, evil.linkname = kind, "/etc/shadow"
            tf.addfile(evil)
        dest = tmp_path / f"out{kind!r}"
        with pytest.raises(BundleError):
            safe_extract(tar, dest)
        assert not (dest / "models" / "x.onnx").exists()
