"""Devices and precision: ``device: cuda`` without CUDA is one line (exit 2); bf16 and
fp16 train on the CPU with finite losses and fp32 checkpoints; the fp16 loss scaling
the engine applies through the model's outputs gives the gradients of ordinary loss
scaling; channels_last for conv nets; fp16 refused for PC-DARTS."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from _tiny_space import TINY_SPACE
from nasplat.checkpoint import load_checkpoint
from nasplat.cli import main
from nasplat.experiment import load_experiment
from nasplat.train.precision import MixedPrecision


def write_exp(tmp_path, name="dev", device="cpu", **train):
    opts = ", ".join(f"{k}: {v}" for k, v in {"strategy": "uniform", "epochs": 1, "batch_size": 256,
                                              "checkpoint_every": 3, **train}.items())
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\nseed: 1\noutput_dir: {tmp_path / 'runs'}\ndevice: {device}\n"
                 f"space:\n{TINY_SPACE}data: {{name: digits, resolution: 12, calib_images: 100}}\ntrain: {{{opts}}}\n")
    return p


def test_cuda_without_cuda_is_one_line_exit_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for device in ("cuda", "cuda:1"):
        p = write_exp(tmp_path, device=device)
        assert main(["train", str(p)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{p}: device: device '{device}' asked for" in err[0], err
        assert not (tmp_path / "runs").exists()  # nothing written
    p = write_exp(tmp_path, device="gpu")
    assert main(["train", str(p)]) == 2
    assert "unknown device 'gpu'" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cpu_with_fp32_checkpoints(tmp_path, precision):
    from nasplat.train.run import train_experiment

    exp = load_experiment(write_exp(tmp_path, precision=precision))
    final = train_experiment(exp)
    log = (exp.run_dir / "supernet" / "train_log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[4]) for r in log]
    assert len(losses) == 1437 // 256 and all(math.isfinite(v) for v in losses)
    state, _ = load_checkpoint(final)
    assert {t.dtype for t in state["model"].values() if t.is_floating_point()} == {torch.float32}
    last, _ = load_checkpoint(exp.run_dir / "supernet" / "last.safetensors")
    if precision == "fp16":  # the scaler's state is checkpointed (resume continues its scale)
        assert float(last["grad_scaler"]["scale"]) > 0
    else:
        assert not last["grad_scaler"]


def test_fp16_output_scaling_equals_loss_scaling():
    """The engine scales the gradient at the model's outputs (strategies call backward
    themselves); after unscaling, parameter gradients equal ordinary loss scaling's."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10))
    ref = torch.nn.Sequential(*[m for m in net])  # same modules, no hook
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    mp = MixedPrecision(net, torch.device("cpu"), "fp16")
    mp.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    mp.begin_step()
    with mp.autocast():
        F.cross_entropy(net(x), y).backward()  # as a strategy does
    raw = [p.grad.clone() for p in net.parameters()]
    mp.scaler.unscale_(opt)
    got = [p.grad.clone() for p in net.parameters()]
    opt.zero_grad()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = F.cross_entropy(ref(x), y)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    want = [p.grad.clone() for p in net.parameters()]
    for r, g, w in zip(raw, got, want):
        assert torch.allclose(r, g * 2.0 ** 10, rtol=1e-3)  # the hook really scaled
        assert torch.allclose(g, w, rtol=1e-2, atol=1e-4)


def test_channels_last_for_conv_nets_and_fp16_refused_for_pcdarts(tmp_path, capsys):
    from nasplat.train.engine import build_trainer

    tr = build_trainer(load_experiment(write_exp(tmp_path)))
    w = next(p for p in tr.model.parameters() if p.dim() == 4 and p.shape[-1] > 1)
    assert tr.channels_last and w.is_contiguous(memory_format=torch.channels_last)
    off = build_trainer(load_experiment(write_exp(tmp_path, "nhwc_off", channels_last="false")))
    assert not off.channels_last
    p = tmp_path / "darts.yaml"
    p.write_text(f"name: d\noutput_dir: {tmp_path / 'runs'}\ndevice: cpu\nspace: nb201\n"
                 "data: {name: digits, resolution: 16}\ntrain: {strategy: pcdarts, precision: fp16}\n")
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.precision: fp16 is not supported with the pcdarts strategy" in err[0], err
