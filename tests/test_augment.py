"""Training augmentation: applied only when the engine asks (train batches differ across
epochs, val batches and un-augmented train batches never do), exact indices, the
presets' geometry (DARTS crop = a shift with black padding, cutout = one square),
the folder pipeline through DataLoader workers, and unreadable images named."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nasplat.data import DataConfig, load_data
from nasplat.data.augment import AugmentConfig, BatchAugment
from nasplat.errors import UserError


def digits(augment, **kw):
    return load_data(DataConfig(name="digits", resolution=16, augment=augment, **kw), 1)


def epoch(d, split, augment, order=None):
    return [(x.clone(), y.clone(), i.clone()) for x, y, i in d.batches(split, 64, order, augment=augment)]


@pytest.mark.parametrize("preset", ["ofa", {"preset": "darts", "cutout": 8}, "rand-m9-mstd0.5"])
def test_train_batches_differ_across_epochs_val_batches_do_not(preset):
    d = digits(preset)
    order = np.random.default_rng(0).permutation(len(d.train))[:192]
    a, b = epoch(d, "train", True, order), epoch(d, "train", True, order)
    plain = epoch(d, "train", False, order)
    assert torch.cat([i for _, _, i in a]).tolist() == order.tolist()  # exact indices, in order
    for (xa, ya, ia), (xb, yb, ib), (xp, yp, ip) in zip(a, b, plain):
        assert torch.equal(ia, ib) and torch.equal(ia, ip)
        assert torch.equal(ya, yp) and torch.equal(ya, d.train.y[ia])  # labels follow the exact indices
        assert xa.shape == xp.shape and torch.isfinite(xa).all()
        assert not torch.equal(xa, xb) and not torch.equal(xa, xp)
        assert torch.equal(xp, d.train.x[ip])  # un-augmented = the stored images
    assert all(torch.equal(x1, x2) for (x1, _, _), (x2, _, _) in zip(epoch(d, "val", False), epoch(d, "val", False)))
    # only the train split carries an augmentation; calibration batches never change
    assert all(torch.equal(p, q) for p, q in zip(d.calib_batches(100), d.calib_batches(100)))


def test_darts_crop_is_a_shift_with_black_padding_and_cutout_one_square():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 12, 12)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = BatchAugment(AugmentConfig(preset="darts", flip=False), mean, std)(x)
    black = (-torch.tensor(mean) / torch.tensor(std)).view(3, 1, 1)  # a zero pixel, normalised
    shifts = set()
    for xi, oi in zip(x, out):
        padded = torch.cat([black.expand(3, 12, 4), xi, black.expand(3, 12, 4)], 2)
        padded = torch.cat([black.expand(3, 4, 20), padded, black.expand(3, 4, 20)], 1)
        hits = [(dy, dx) for dy in range(9) for dx in range(9)
                if torch.allclose(padded[:, dy:dy + 12, dx:dx + 12], oi, atol=1e-5)]
        assert len(hits) == 1
        shifts.add(hits[0])
    assert len(shifts) > 3  # per-image offsets
    flipped = BatchAugment(AugmentConfig(preset="darts", padding=0), mean, std)(x)
    for xi, fi in zip(x, flipped):
        assert torch.allclose(fi, xi, atol=1e-5) or torch.allclose(fi, xi.flip(-1), atol=1e-5)
    cut = BatchAugment(AugmentConfig(preset="none", cutout=4), mean, std)(x + 10)  # no zeros before
    zeros = (cut == 0).all(1)  # (B, H, W): the hole, in every channel
    for z in zeros:
        ys, xs = torch.nonzero(z, as_tuple=True)
        assert 1 <= len(ys) <= 16 and len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert torch.equal(cut[~zeros.unsqueeze(1).expand_as(cut)], (x + 10)[~zeros.unsqueeze(1).expand_as(cut)])


def test_ofa_flip_option_and_config_errors():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, :, :4] = 1.0  # bright left edge
    keep = BatchAugment(AugmentConfig(preset="ofa", flip=False, scale=(1.0, 1.0)), (0.0,), (1.0,))(x)
    # full-area crops (aspect jitter only) without flip keep the bright band on the left
    assert (keep[:, 0, :, :3].mean((1, 2)) > keep[:, 0, :, -3:].mean((1, 2))).all()
    flip = BatchAugment(AugmentConfig(preset="ofa", scale=(1.0, 1.0)), (0.0,), (1.0,))(x)
    right = flip[:, 0, :, :3].mean((1, 2)) < flip[:, 0, :, -3:].mean((1, 2))
    assert 10 < int(right.sum()) < 54  # about half mirrored
    for bad in ("ofaa", {"preset": "originalx"}, {"preset": "ofa", "scale": [0.5, 0.2]}, {"preset": "darts", "x": 1}):
        with pytest.raises(ValueError):
            AugmentConfig.model_validate(bad)


def write_images(root, per_class=6):
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        d = root / "train" / f"c{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            img = np.zeros((20, 20, 3), np.uint8)
            img[:, : 5 + i] = colour  # asymmetric: crops and flips show
            Image.fromarray(img).save(d / f"{i}.png")


def test_folder_augments_in_loader_workers_and_names_a_bad_image(tmp_path):
    write_images(tmp_path)
    cfg = DataConfig(name="folder", path=str(tmp_path), resolution=16, val_fraction=0.25, loader_workers=1,
                     augment={"preset": "darts", "cutout": 4})
    d = load_data(cfg, 3)
    order = np.arange(len(d.train))
    a, b = epoch(d, "train", True, order), epoch(d, "train", True, order)
    plain = epoch(d, "train", False, order)
    assert torch.equal(a[0][2], torch.from_numpy(order)) and torch.equal(a[0][1], plain[0][1])
    assert not torch.equal(a[0][0], b[0][0]) and not torch.equal(a[0][0], plain[0][0])
    assert torch.equal(epoch(d, "val", False)[0][0], epoch(d, "val", False)[0][0])
    assert torch.equal(plain[0][0], epoch(d, "train", False, order)[0][0])
    # a file that breaks after the check: the loader names it (from a worker process), no substitution
    bad = Path(d.train.dataset.samples[d.train.indices[-1]][0])
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(UserError) as e:
        epoch(d, "train", True, order)
    assert e.value.file == str(bad) and e.value.field == "data.path"
    # ... and the check when the data set is opened names it before any work
    with pytest.raises(UserError) as e:
        load_data(cfg, 3)
    assert e.value.file == str(bad) and "cannot read image" in e.value.message


def test_cli_corrupt_image_is_one_line_exit_2(tmp_path, capsys):
    from nasplat.cli import main

    write_images(tmp_path / "imgs", per_class=3)
    bad = tmp_path / "imgs" / "train" / "c0" / "1.png"
    bad.write_bytes(b"not a png at all")
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: corrupt\nspace: ofa_mbv3_digits\noutput_dir: runs\n"
                   "data: {name: folder, path: imgs, resolution: 16}\n"
                   "train: {strategy: uniform, epochs: 1}\n")
    space = (tmp_path / "exp.yaml")
    assert main(["train", str(space)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "data.path" in err[0], err
    assert not (tmp_path / "runs").exists()
