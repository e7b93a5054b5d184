"""Data readers on small files written in each format: digits, the CIFAR-10 binary and
python-pickle folders (with malicious pickles that must be refused unexecuted), and an
ImageFolder of PNGs."""
from __future__ import annotations

import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nasplat.data import DataConfig, load_data
from nasplat.data.cifar10 import MEAN, STD, restricted_load
from nasplat.errors import UserError

N_PER_BATCH = 12  # records per CIFAR batch file in these tests


# -- writers ---------------------------------------------------------------------------
def py2_pickle(obj) -> bytes:
    """A pickle shaped like the Python-2 ones in cifar-10-batches-py: protocol 2, byte
    strings as (SHORT_)BINSTRING, numpy 1.x's ``numpy.core.multiarray`` global."""
    data = pickle.dumps(obj, protocol=3)
    ops = list(pickletools.genops(data))
    out = bytearray()
    for n, (op, _, pos) in enumerate(ops):
        chunk = data[pos: ops[n + 1][2] if n + 1 < len(ops) else len(data)]
        if op.name == "PROTO":
            chunk = b"\x80\x02"
        elif op.name in ("SHORT_BINBYTES", "SHORT_BINUNICODE"):
            chunk = b"U" + chunk[1:]
        elif op.name in ("BINBYTES", "BINUNICODE"):
            chunk = b"T" + chunk[1:]
        elif op.name == "GLOBAL":
            chunk = chunk.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        out += chunk
    return bytes(out)


def cifar_content(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Six batches (5 train + test) of random uint8 images (N, 3, 32, 32) and labels."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (N_PER_BATCH, 3, 32, 32), dtype=np.uint8),
             rng.integers(0, 10, N_PER_BATCH).astype(np.int64)) for _ in range(6)]


NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar_bin(root: Path, content) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, (x, y) in zip(NAMES, content):
        rec = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(len(y), -1)], axis=1)
        (folder / f"{name}.bin").write_bytes(rec.tobytes())
    return folder


def write_cifar_py(root: Path, content) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, (x, y) in zip(NAMES, content):
        batch = {"batch_label": f"{name} of 6", "labels": [int(v) for v in y],
                 "data": x.reshape(len(y), -1), "filenames": [f"img_{i}.png" for i in range(len(y))]}
        (folder / name).write_bytes(py2_pickle(batch))
    return folder


def normalised(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x).float() / 255.0
    return (t - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def cfg(**kw) -> DataConfig:
    return DataConfig(**{"name": "cifar10", "resolution": 32, "calib_images": 7, **kw})


# -- digits ------------------------------------------------------------------------------
def test_digits_split_shapes_and_calib_subset():
    d = load_data(DataConfig(name="digits", resolution=12, calib_images=50), 1)
    assert d.num_classes == 10 and d.channels == 1
    assert len(d.train) + len(d.val) == 1797
    assert len(d.val) == round(1797 * 0.2) and len(d.calib) == 50
    assert d.train.x.shape[1:] == (1, 12, 12)
    # calib images are training images (held out of val)
    tr = d.train.x.flatten(1)
    for img in d.calib.x[:5].flatten(1):
        assert (tr - img).abs().amax(1).min() == 0
    x, y, idx = next(d.batches("val", 16))
    assert x.shape == (16, 1, 12, 12) and y.dtype == torch.int64 and idx.tolist() == list(range(16))
    d3 = load_data(DataConfig(name="digits", resolution=12), 3)
    assert d3.train.x.shape[1] == 3 and torch.equal(d3.train.x[:, 0], d3.train.x[:, 2])


def test_unknown_dataset_name():
    with pytest.raises(UserError) as e:
        load_data(DataConfig(name="imagenet22k"), 3)
    assert e.value.field == "data.name" and "cifar10" in str(e.value) and "folder" in str(e.value)


# -- CIFAR-10 ------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["bin", "py"])
@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_cifar_reads_both_layouts(tmp_path, layout, point_at):
    content = cifar_content()
    folder = (write_cifar_bin if layout == "bin" else write_cifar_py)(tmp_path, content)
    path = tmp_path if point_at == "parent" else folder
    d = load_data(cfg(path=str(path)), 3)
    assert d.num_classes == 10 and len(d.train) == 5 * N_PER_BATCH and len(d.val) == N_PER_BATCH
    assert len(d.calib) == 7
    x_train = np.concatenate([c[0] for c in content[:5]])
    y_train = np.concatenate([c[1] for c in content[:5]])
    x, y, idx = next(d.batches("train", 5 * N_PER_BATCH))
    assert x.shape == (60, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x, normalised(x_train), atol=1e-6)
    assert torch.equal(y, torch.from_numpy(y_train))
    xv, yv, _ = next(d.batches("val", 100))
    assert torch.allclose(xv, normalised(content[5][0]), atol=1e-6)
    assert torch.equal(yv, torch.from_numpy(content[5][1]))
    # calib is a subset of train, returned the same on every call
    cal = d.calib_batches(batch_size=4)
    assert len(cal) == 2 and sum(len(c) for c in cal) == 7
    for img in torch.cat(cal).flatten(1):
        assert (x.flatten(1) - img).abs().amax(1).min() < 1e-6
    assert all(torch.equal(a, b) for a, b in zip(cal, d.calib_batches(batch_size=4)))
    # single-item access (Dataset protocol) matches batch access
    img, label = d.train[3]
    assert torch.allclose(img, x[3]) and label == int(y_train[3])


def test_cifar_binary_and_pickle_agree_resized_and_grayscale(tmp_path):
    content = cifar_content(1)
    write_cifar_bin(tmp_path / "a", content)
    write_cifar_py(tmp_path / "b", content)
    for channels in (3, 1):
        a = load_data(cfg(path=str(tmp_path / "a"), resolution=20), channels)
        b = load_data(cfg(path="b", resolution=20), channels, base_dir=tmp_path)  # relative path
        xa, ya, _ = next(a.batches("train", 64))
        xb, yb, _ = next(b.batches("train", 64))
        assert xa.shape == (60, channels, 20, 20)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # grayscale is the luma of the RGB image: the 3 channels of a gray image agree
    gray = np.repeat(content[0][0][:, :1], 3, axis=1)
    content[0] = (gray, content[0][1])
    write_cifar_bin(tmp_path / "c", content)
    g = load_data(cfg(path=str(tmp_path / "c")), 1)
    x, _, _ = next(g.batches("train", 4))
    expect = torch.from_numpy(gray[:4, :1]).float() / 255.0
    assert torch.allclose(x * g.train.x.std + g.train.x.mean, expect, atol=1e-5)


class _Exploit:
    """Unpickling this runs a shell command (it must never be unpickled)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_malicious_pickle_is_refused_without_executing(tmp_path):
    content = cifar_content()
    folder = write_cifar_py(tmp_path, content)
    marker = tmp_path / "pwned"
    # the exploit hides inside an otherwise well-formed batch
    batch = {"data": content[0][0].reshape(N_PER_BATCH, -1), "labels": [0] * N_PER_BATCH,
             "payload": _Exploit(marker)}
    (folder / "data_batch_1").write_bytes(py2_pickle(batch))
    with pytest.raises(UserError) as e:
        load_data(cfg(path=str(tmp_path)), 3)
    assert not marker.exists()
    assert e.value.file == str(folder / "data_batch_1") and e.value.field == "data.path"
    assert "refusing global" in str(e.value) and "system" in str(e.value)
    # the same payload through the plain unpickler really would execute (the test is meaningful)
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists()


@pytest.mark.parametrize("module,name", [
    ("os", "system"), ("builtins", "eval"), ("builtins", "getattr"), ("subprocess", "Popen"),
    ("numpy", "load"), ("numpy.testing._private.utils", "runstring"), ("numpy.core.multiarray", "scalar"),
    ("numpy", "frombuffer"), ("copyreg", "_reconstructor"), ("torch", "load"),
])
def test_restricted_unpickler_refuses_every_other_global(module, name):
    data = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."
    with pytest.raises(pickle.UnpicklingError, match="refusing global"):
        restricted_load(data)


def test_restricted_unpickler_admits_numpy_arrays():
    a = np.arange(24, dtype=np.uint8).reshape(4, 6)
    for blob in (pickle.dumps(a, protocol=3), pickle.dumps(a, protocol=4), py2_pickle({"data": a})):
        out = restricted_load(blob)
        out = out[b"data"] if isinstance(out, dict) else out
        assert isinstance(out, np.ndarray) and np.array_equal(out, a)


def test_cifar_errors_name_file_and_field(tmp_path):
    with pytest.raises(UserError) as e:
        load_data(cfg(path=None), 3)
    assert e.value.field == "data.path"
    with pytest.raises(UserError) as e:
        load_data(cfg(path=str(tmp_path / "nowhere")), 3)
    assert e.value.file == str(tmp_path / "nowhere") and e.value.field == "data.path"
    with pytest.raises(UserError) as e:  # folder without batches
        load_data(cfg(path=str(tmp_path)), 3)
    assert e.value.file == str(tmp_path) and "data_batch_1" in str(e.value)
    folder = write_cifar_bin(tmp_path / "x", cifar_content())
    (folder / "test_batch.bin").unlink()
    with pytest.raises(UserError) as e:
        load_data(cfg(path=str(folder)), 3)
    assert e.value.file == str(folder / "test_batch.bin")
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3000)  # truncated record
    with pytest.raises(UserError) as e:
        load_data(cfg(path=str(folder)), 3)
    assert e.value.file == str(folder / "test_batch.bin") and "3073" in str(e.value)
    (folder / "test_batch.bin").write_bytes(bytes([10]) + b"\x00" * 3072)  # label 10
    with pytest.raises(UserError) as e:
        load_data(cfg(path=str(folder)), 3)
    assert e.value.file == str(folder / "test_batch.bin") and "0..9" in str(e.value)
    py = write_cifar_py(tmp_path / "y", cifar_content())
    (py / "data_batch_3").write_bytes(py2_pickle({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(UserError) as e:
        load_data(cfg(path=str(py)), 3)
    assert e.value.file == str(py / "data_batch_3") and "3072" in str(e.value)
    (py / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(UserError) as e:
        load_data(cfg(path=str(py)), 3)
    assert e.value.file == str(py / "data_batch_3")


# -- ImageFolder ------------------------------------------------------------------------
COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}


def write_folder(root: Path, split: str, classes=COLOURS, per_class: int = 4) -> None:
    for cls, rgb in classes.items():
        d = root / split / cls
        d.mkdir(parents=True)
        for i in range(per_class):
            img = Image.new("RGB", (20 + 4 * i, 24), rgb)  # varied sizes: the transform resizes
            if i == 0:
                img = img.convert("L")  # a grayscale file among RGB ones
            img.save(d / f"{cls}_{i}.png")


def test_folder_with_val(tmp_path):
    write_folder(tmp_path, "train")
    write_folder(tmp_path, "val", per_class=2)
    d = load_data(DataConfig(name="folder", path=str(tmp_path), resolution=16, calib_images=5), 3)
    assert d.num_classes == 3 and len(d.train) == 12 and len(d.val) == 6 and len(d.calib) == 5
    x, y, idx = next(d.batches("train", 100))
    assert x.shape == (12, 3, 16, 16) and x.dtype == torch.float32
    assert y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and idx.tolist() == list(range(12))
    # classes map to the folder names: the RGB images' dominant channel is the class colour
    for img, label, i in zip(x, y, range(12)):
        if i % 4:  # not the grayscale file
            assert int(img.mean((1, 2)).argmax()) == int(label)
    xv, yv, _ = next(d.batches("val", 100))
    assert xv.shape == (6, 3, 16, 16) and yv.tolist() == [0, 0, 1, 1, 2, 2]
    assert sum(len(c) for c in d.calib_batches(batch_size=2)) == 5
    g = load_data(DataConfig(name="folder", path=str(tmp_path), resolution=12), 1)
    xg, _, _ = next(g.batches("val", 100))
    assert xg.shape == (6, 1, 12, 12)


def test_folder_without_val_is_a_fixed_split(tmp_path):
    write_folder(tmp_path / "ds", "train", per_class=5)
    c = DataConfig(name="folder", path="ds", resolution=8, val_fraction=0.2, calib_images=4)
    a = load_data(c, 1, base_dir=tmp_path)
    b = load_data(c, 1, base_dir=tmp_path)
    assert len(a.train) == 12 and len(a.val) == 3 and len(a.calib) == 4
    assert a.val.indices == b.val.indices and a.calib.indices == b.calib.indices
    assert not set(a.val.indices) & set(a.train.indices)
    assert set(a.calib.indices) <= set(a.train.indices)
    x, y, _ = next(a.batches("val", 10))
    assert x.shape == (3, 1, 8, 8)


def test_folder_errors_name_file_and_field(tmp_path):
    def err(path, **kw):
        with pytest.raises(UserError) as e:
            load_data(DataConfig(name="folder", path=str(path), resolution=8, **kw), 3)
        assert e.value.field == "data.path"
        return e.value

    assert err(tmp_path / "missing").file == str(tmp_path / "missing")
    assert err(tmp_path).file == str(tmp_path / "train")  # no train/ folder
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("no images here")
    e = err(tmp_path)
    assert e.file == str(tmp_path / "train") and "no images" in e.message
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "loose.png")
    e = err(tmp_path)
    assert e.file == str(tmp_path / "train" / "loose.png") and "class folder" in e.message
    (tmp_path / "train" / "loose.png").unlink()
    write_folder(tmp_path / "two", "train")
    write_folder(tmp_path / "two", "val", classes={"cat": (1, 2, 3), "yak": (3, 2, 1)}, per_class=1)
    e = err(tmp_path / "two")
    assert e.file == str(tmp_path / "two" / "val") and "yak" in e.message
