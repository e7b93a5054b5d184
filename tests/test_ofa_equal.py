"""nasplat's ``mbv3`` supernet computes what the official Once-for-All code computes.

The official ``OFAMobileNetV3`` (``ofa`` package, test extra; k 3/5/7, e 3/4/6, d 2/3/4,
w1.0, 1000 classes) gets random weights (OFA's he_fout init, BN affine parameters and
kernel-transform matrices moved off their initial values) and BN statistics measured
on smooth random images and then perturbed. Its state dict goes through
``nasplat convert ofa``; then, in eval mode, nasplat's extracted subnet and OFA's
``get_active_subnet(preserve_weight=True)`` must give the same logits (max abs
difference <= 1e-4 x the largest |logit|) for 50 random subnets at random resolutions
in 128..224, through ONNX Runtime too (``nasplat export --weights --no-recalibrate``),
and ``nasplat convert --to ofa`` must give back a state dict OFA loads with
``strict=True``.

Measured: at most 1.1e-6 x the largest |logit| (median 3e-7) over the 50 subnets. The
test also shows that the check has teeth: changing one choice of one block (the first
elastic block's kernel) moves the logits by ~9% of the largest, so a wrong kernel
transform, slice, SE width or BN would not pass unseen.

Cost (one torch thread, batch 2): about 30-40 s on a loaded 2-core machine.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

ofa_nets = pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks",
                               reason="the official `ofa` package (setup.cfg test extra) is needed")
from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics  # noqa: E402
from ofa.imagenet_classification.networks import MobileNetV3Large  # noqa: E402
from ofa.utils import init_models  # noqa: E402

from nasplat.cli import main  # noqa: E402
from nasplat.errors import UserError  # noqa: E402
from nasplat.paths import SHIPPED_SPACES  # noqa: E402
from nasplat.space import load_space  # noqa: E402
from nasplat.supernet import build_supernet  # noqa: E402
from nasplat.supernet.ofa_convert import (load_any_weights, ofa_subnet_setting, ofa_to_nasplat,  # noqa: E402
                                          read_ofa_state)

N_SUBNETS = 50
TOL = 1e-4  # x the largest |logit|


def smooth_images(n: int, r: int, g: torch.Generator) -> torch.Tensor:
    """Low-frequency random images with per-image contrast (more like photos than noise)."""
    x = F.interpolate(torch.randn(n, 3, 7, 7, generator=g), size=(r, r), mode="bilinear", align_corners=False)
    return x * (0.5 + torch.rand(n, 1, 1, 1, generator=g))


@torch.no_grad()
def randomise(net: nn.Module, seed: int) -> nn.Module:
    """OFA's init, BN affine and transform matrices moved, BN statistics measured on
    images (so signals keep their scale through 20 blocks) and then perturbed. The last
    BN of each residual branch is scaled down (0.3), as trained residual branches are
    small: 20 random unit-scale branches add up, and the logits of the largest subnets
    grow to ~150, amplifying float32 rounding (SE pooling order) towards the tolerance."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    init_models(net, "he_fout")
    residual = {i for i, b in enumerate(net.blocks) if b.shortcut is not None}
    for name, p in net.named_parameters():
        if name.endswith("_matrix"):
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        elif p.ndim == 1 and name.endswith("weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            parts = name.split(".")
            if ".point_linear.bn" in name and int(parts[1]) in residual:
                p.mul_(0.3)
        elif p.ndim == 1:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    if hasattr(net, "set_max_net"):
        net.set_max_net()
    set_running_statistics(net, [(smooth_images(8, 128, g), None)])
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape, generator=g) * m.running_var.sqrt())
            m.running_var.mul_(torch.exp(0.2 * torch.randn(m.running_var.shape, generator=g)))
    return net.eval()


def ofa_setting(arch) -> dict[str, list[int]]:  # w1.0 and w1.2 share the layout
    return ofa_subnet_setting(arch, load_space(SHIPPED_SPACES / "ofa_mbv3.yaml"))


def official_subnet(ofa: nn.Module, arch) -> nn.Module:
    ofa.set_active_subnet(**ofa_setting(arch))
    return ofa.get_active_subnet(preserve_weight=True).eval()


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("ofa")
    ofa = randomise(ofa_nets.OFAMobileNetV3(n_classes=1000, width_mult=1.0, ks_list=[3, 5, 7],
                                            expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4]), 0)
    state = ofa.state_dict()
    assert len(state) == 475
    src = tmp / "ofa_mbv3_d234_e346_k357_w1.0.pth"
    torch.save(state, src)
    out = tmp / "ofa.safetensors"
    assert main(["convert", "ofa", str(src), "--space", "ofa_mbv3", "--out", str(out)]) == 0
    space = load_space(SHIPPED_SPACES / "ofa_mbv3.yaml")
    net = build_supernet(space, checkpoint=out).eval()
    return ofa, net, space, tmp, out


@torch.no_grad()
def test_extracted_subnets_equal_official_get_active_subnet(converted):
    ofa, net, space, _, _ = converted
    g = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(0)
    archs = [space.min_arch(), space.max_arch()] + [space.sample(rng) for _ in range(N_SUBNETS - 2)]
    assert len({int(a["r"]) for a in archs}) > 15 and min(int(a["r"]) for a in archs) >= 128
    worst = 0.0
    for arch in archs:
        x = smooth_images(2, int(arch["r"]), g)
        ref = official_subnet(ofa, arch)(x)
        worst = max(worst, rel_diff(ref, net.extract(arch).eval()(x)))
    assert worst <= TOL, worst
    # the check has teeth: another kernel in the first elastic block moves the logits
    arch = archs[2]
    other = space.arch({**arch, "k0_0": 7 if int(arch["k0_0"]) != 7 else 3})
    x = smooth_images(2, int(arch["r"]), g)
    assert rel_diff(official_subnet(ofa, arch)(x), net.extract(other).eval()(x)) > 20 * TOL


@torch.no_grad()
def test_training_forward_equals_official_dynamic_net(converted):
    """The elastic forward itself (train mode: batch-statistics BN, sliced weights,
    transformed kernels) with dropout off, subnet active inside both supernets."""
    ofa, net, space, _, _ = converted
    ofa, net = copy.deepcopy(ofa).train(), copy.deepcopy(net).train()  # train mode moves BN statistics
    g = torch.Generator().manual_seed(2)
    rng = np.random.default_rng(1)
    drops = [m for m in list(ofa.modules()) + list(net.modules()) if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(m.p == 0.1 for m in drops)
    for m in drops:
        m.p = 0.0
    for _ in range(2):
        arch = space.sample(rng)
        x = smooth_images(2, int(arch["r"]), g)
        ofa.set_active_subnet(**ofa_setting(arch))
        net.set_active(arch)
        assert rel_diff(ofa(x), net(x)) <= TOL


def test_onnx_export_equals_official_subnet(converted, tmp_path):
    """``nasplat export --weights CKPT --no-recalibrate --arch JSON`` in ONNX Runtime."""
    import onnxruntime as ort
    from PIL import Image

    ofa, _, space, _, ckpt = converted
    data = tmp_path / "imgs"
    rng = np.random.default_rng(3)
    for c in range(1000):  # the 1000 classes the space's head has, one tiny image each
        d = data / "train" / f"c{c:04d}"
        d.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / "0.png")
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "ofa_pretrained", "output_dir": str(tmp_path / "runs"), "space": "ofa_mbv3",
        "data": {"name": "folder", "path": str(data), "resolution": 8, "val_fraction": 0.005}}))
    arch = space.sample(np.random.default_rng(7))
    assert main(["export", str(exp), "--weights", str(ckpt), "--no-recalibrate",
                 "--arch", json.dumps(dict(arch)), "--out", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    onnx_file = tmp_path / "out" / manifest["subnets"][0]["file"]
    x = smooth_images(2, int(arch["r"]), torch.Generator().manual_seed(4))
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    got = np.concatenate([sess.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(len(x))])
    with torch.no_grad():
        ref = official_subnet(ofa, arch)(x)
    assert rel_diff(ref, torch.from_numpy(got)) <= TOL


def test_round_trip_to_ofa_loads_strictly_and_gives_the_same_logits(converted):
    ofa, _, space, tmp, ckpt = converted
    back = tmp / "back.pth"
    assert main(["convert", "--to", "ofa", str(ckpt), "--out", str(back)]) == 0
    loaded = torch.load(back, map_location="cpu", weights_only=True)["state_dict"]
    fresh = ofa_nets.OFAMobileNetV3(n_classes=1000, width_mult=1.0, ks_list=[3, 5, 7],
                                    expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    nn.Module.load_state_dict(fresh, loaded, strict=True)
    original = ofa.state_dict()
    assert loaded.keys() == original.keys() and all(torch.equal(loaded[k], original[k]) for k in original)
    arch = space.sample(np.random.default_rng(11))
    x = smooth_images(2, int(arch["r"]), torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(official_subnet(fresh.eval(), arch)(x), official_subnet(ofa, arch)(x),
                                   rtol=0, atol=0)


@torch.no_grad()
def test_w12_and_teacher_checkpoints_and_shape_errors(converted, tmp_path):
    ofa, _, space, _, _ = converted
    g = torch.Generator().manual_seed(6)
    # w1.2: its own space YAML
    w12 = randomise(ofa_nets.OFAMobileNetV3(n_classes=1000, width_mult=1.2, ks_list=[3, 5, 7],
                                            expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4]), 2)
    sp12 = load_space(SHIPPED_SPACES / "ofa_mbv3_w12.yaml")
    net12 = build_supernet(sp12)
    net12.load_state_dict(ofa_to_nasplat(w12.state_dict(), sp12))
    arch = sp12.sample(np.random.default_rng(2))
    x = smooth_images(2, int(arch["r"]), g)
    assert rel_diff(official_subnet(w12, arch)(x), net12.extract(arch).eval()(x)) <= TOL
    # OFA's full-network teacher (a static MobileNetV3Large, flat keys, no transform matrices)
    teacher = randomise(MobileNetV3Large(n_classes=1000, dropout_rate=0, width_mult=1.0, ks=7, expand_ratio=6,
                                         depth_param=4), 3)
    path = tmp_path / "ofa_D4_E6_K7"
    torch.save({"state_dict": teacher.state_dict(), "epoch": 0}, path)
    full = load_any_weights(space, path).eval()
    x = smooth_images(2, 160, g)
    assert rel_diff(teacher(x), full.extract(space.arch({**space.max_arch(), "r": 160})).eval()(x)) <= TOL
    # shapes of another width: one line naming the first tensor that does not fit
    with pytest.raises(UserError, match=r"'first_conv.conv.weight' has shape \[24, 3, 3, 3\].*needs \[16, 3, 3, 3\]"):
        ofa_to_nasplat(w12.state_dict(), space)
    bad = tmp_path / "bad.pth"
    torch.save({**ofa.state_dict(), "blocks.21.conv.point_linear.bn.bn.bias": torch.zeros(3)}, bad)
    with pytest.raises(UserError, match="blocks.21.conv.point_linear.bn.bn.bias' has no place"):
        ofa_to_nasplat(read_ofa_state(bad), space, bad)
    partial = dict(ofa.state_dict())
    del partial["classifier.linear.bias"]
    with pytest.raises(UserError, match="'classifier.linear.bias' of space 'ofa_mbv3' is missing"):
        ofa_to_nasplat(partial, space)
