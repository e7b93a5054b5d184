"""``ofa_vs_scratch``: accuracy of subnets extracted from a progressive-shrinking
supernet (BN recalibrated, no retraining) minus the same architectures trained from
scratch for as many epochs as the whole PS schedule (docs/benchmarks.md; OFA: "same level").
Goal: mean difference ≥ −0.5 pt.

Two supernets of the experiment, side by side: OFA's recipe as the experiment gives it
(the default; its ``data.augment`` applies) and the same with
``train.options.expand_min_subnet: true`` (also the smallest subnet every step of the
expand phases, not OFA's), trained to ``runs/<name>`` and ``runs/<name>_minsub``
(reused when finished).

Subnets: ``--archs`` (≥ 8) spread over the MACs range (the min and max subnets plus
evenly spaced MACs quantiles of 2000 random draws). PS accuracy: extract, BN
recalibration with OFA's ``set_running_statistics`` semantics on ``data.calib_images``
random training images drawn with the experiment's seed (all 1438 for digits), val
split. The same subnets recalibrated with the cumulative average (nasplat's former
default) are scored too, to show which recalibration measures better. From scratch: the
static network with fresh weights (kaiming fan-out conv init, BN 1/0), SGD Nesterov,
the experiment's ``train.lr`` (the teacher phase's lr), weight decay, label smoothing,
warm-up + cosine per iteration, at the subnet's own resolution, same batch size, data
and augmentation. ``--check N`` also scores N random subnets of the default supernet.

``python -m bench.ofa_vs_scratch [--experiment examples/digits_ofa_ps.yaml] [--archs 8]
[--check 20] [--no-min-subnet] [--quick]``; any ``cifar10`` / ``folder`` experiment
works the same way (its data path is resolved as in training). ``--recal-check N``
(default 40) scores N random subnets of the default supernet under both BN
recalibrations, at ``data.calib_images`` images in batches of 200 (OFA's) and at 200
images in batches of 50 (a cheap search budget). ``--quick`` trains short schedules
(6 PS epochs, 3 from scratch, 4 subnets) into a temporary folder: it checks that the
bench runs; its accuracies mean nothing (one epoch per PS phase).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench._common import machine, random_subnet_accuracies, recalibrated_accuracy, today

REPO = Path(__file__).resolve().parent.parent


def spread_archs(space, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    pool = {a.id: a for a in (space.sample(rng) for _ in range(2000))}
    pool[space.min_arch().id] = space.min_arch()
    pool[space.max_arch().id] = space.max_arch()
    ordered = sorted(pool.values(), key=space.macs)
    idx = np.unique(np.round(np.linspace(0, len(ordered) - 1, n)).astype(int))
    return [ordered[i] for i in idx]


def reinit(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def train_scratch(exp, data, arch, epochs: int, seed: int) -> nn.Module:
    from nasplat.supernet import build_supernet, resize

    torch.manual_seed(seed)
    net = reinit(build_supernet(exp.space).extract(arch)).train()
    c = exp.config.train
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": c.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=c.lr, momentum=c.momentum, nesterov=c.nesterov)
    bs = c.batch_size or exp.config.data.batch_size
    n = len(data.train)
    spe = max(1, n // bs)
    total, warm = spe * epochs, int(round(c.warmup_epochs * spe))
    r = exp.space.resolution(arch)
    it = 0
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n)[: spe * bs]
        for x, y, _ in data.batches("train", bs, order, drop_last=True, augment=True):
            f = (it + 1) / warm if warm and it < warm else 0.5 * (1 + math.cos(math.pi * min(1.0, (it - warm) / max(1, total - warm))))
            for g in opt.param_groups:
                g["lr"] = c.lr * f
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(resize(x, r)), y, label_smoothing=c.label_smoothing).backward()
            opt.step()
            it += 1
    return net.eval()


def variant(exp, suffix: str = "", output_dir: str | None = None, epochs: int | None = None,
            options: dict | None = None):
    """The experiment with another name / output folder / epochs / strategy options."""
    from nasplat.experiment import Experiment

    c = exp.config
    train = c.train.model_copy(update={"options": {**c.train.options, **(options or {})},
                                       **({"epochs": epochs} if epochs else {})})
    cfg = c.model_copy(update={"name": c.name + suffix, "train": train,
                               **({"output_dir": output_dir} if output_dir else {})})
    return Experiment(cfg, exp.path, exp.space)


def recal_compare(net, exp, data, n: int) -> None:
    """``n`` random subnets under both BN recalibrations, at OFA's budget and a cheap one."""
    from nasplat.supernet.bn import calibration_batches

    for n_img, bs in ((exp.config.data.calib_images, 200), (200, 50)):
        cal = calibration_batches(data, n_img, exp.config.seed, bs)
        rng = np.random.default_rng(99)
        pairs = []
        for _ in range(n):
            a = exp.space.sample(rng)
            pairs.append((recalibrated_accuracy(net, exp, data, a, cal, "ofa"), recalibrated_accuracy(net, exp, data, a, cal, "cumulative")))
        d = [o - c for o, c in pairs]
        print(f"BN recalibration, {n} random subnets, {sum(len(x) for x in cal)} images in batches of {bs}: "
              f"OFA's mean {statistics.mean(o for o, _ in pairs) * 100:.2f}%, cumulative "
              f"{statistics.mean(c for _, c in pairs) * 100:.2f}% (OFA's better on {sum(x > 0 for x in d)}, "
              f"worse on {sum(x < 0 for x in d)}, tied on {sum(x == 0 for x in d)})", flush=True)


def trained_supernet(exp):
    from nasplat.supernet import build_supernet
    from nasplat.train.run import train_experiment

    t0 = time.perf_counter()
    final = train_experiment(exp)  # reuses a finished run
    print(f"  supernet {exp.config.name}: {final} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return build_supernet(exp.space, checkpoint=final).eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.ofa_vs_scratch", description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default=str(REPO / "examples" / "digits_ofa_ps.yaml"))
    ap.add_argument("--archs", type=int, default=8)
    ap.add_argument("--check", type=int, default=20, help="also score N random subnets (0: skip)")
    ap.add_argument("--scratch-epochs", type=int, default=None, help="default: the PS schedule's total")
    ap.add_argument("--no-min-subnet", action="store_true", help="skip the expand_min_subnet supernet")
    ap.add_argument("--recal-check", type=int, default=40,
                    help="N random subnets scored under both BN recalibrations at two budgets (0: skip)")
    ap.add_argument("--quick", action="store_true",
                    help="short schedules in a temporary folder, 4 subnets, no random check (checks the bench runs)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--check-only", action="store_true", help="only the random-subnet check")
    args = ap.parse_args(argv)
    from nasplat.data import load_experiment_data
    from nasplat.experiment import load_experiment
    from nasplat.supernet.bn import calibration_batches
    from nasplat.supernet.evaluate import accuracy
    from nasplat.train.run import build_trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    exp = load_experiment(args.experiment)
    if args.quick:
        import tempfile

        args.archs, args.check, args.recal_check = 4, 0, 0
        args.scratch_epochs = args.scratch_epochs or 3
        exp = variant(exp, output_dir=tempfile.mkdtemp(prefix="ofa_vs_scratch_"), epochs=6)
    data = load_experiment_data(exp)
    phases = build_trainer(exp, data).strategy.phases()
    if args.threads:
        torch.set_num_threads(args.threads)
    epochs = args.scratch_epochs or sum(p.epochs for p in phases)
    print(f"# ofa_vs_scratch — {machine()}, {today()}")
    print(f"experiment {args.experiment}: PS phases " + ", ".join(f"{p.name} {p.epochs}" for p in phases)
          + f" = {sum(p.epochs for p in phases)} epochs; augmentation {exp.config.data.augment.model_dump()}; "
          f"from scratch: {epochs} epochs", flush=True)
    t0 = time.perf_counter()
    archs = spread_archs(exp.space, args.archs, exp.config.seed)
    scratch = []
    if not args.check_only:
        for i, arch in enumerate(archs):
            static = train_scratch(exp, data, arch, epochs, exp.config.seed + i)
            scratch.append(accuracy(static, data, "val", exp.space.resolution(arch)))
            print(f"  scratch {arch.id} {exp.space.macs(arch) / 1e6:.2f} MMACs: {scratch[-1] * 100:.2f}% "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    calib = calibration_batches(data, exp.config.data.calib_images, exp.config.seed)
    print(f"BN recalibration: {sum(len(x) for x in calib)} random training images (seed {exp.config.seed})")
    supernets = {"PS (OFA recipe)": trained_supernet(exp)}
    if not args.no_min_subnet and not args.check_only:
        supernets["PS + expand_min_subnet"] = trained_supernet(variant(exp, "_minsub",
                                                                       options={"expand_min_subnet": True}))
    if scratch:
        default = supernets["PS (OFA recipe)"]
        acc = {k: [recalibrated_accuracy(n, exp, data, a, calib, "ofa") for a in archs] for k, n in supernets.items()}
        cumulative = [recalibrated_accuracy(default, exp, data, a, calib, "cumulative") for a in archs]
        names = list(acc)
        print("| arch | r | MMACs | " + " | ".join(names) + " | from scratch | "
              + " | ".join(f"diff {k} (pt)" for k in names) + " |")
        print("|---" * (4 + 2 * len(names)) + "|")
        for i, arch in enumerate(archs):
            print(f"| {arch.id} | {exp.space.resolution(arch)} | {exp.space.macs(arch) / 1e6:.2f} | "
                  + " | ".join(f"{acc[k][i] * 100:.2f}" for k in names) + f" | {scratch[i] * 100:.2f} | "
                  + " | ".join(f"{(acc[k][i] - scratch[i]) * 100:+.2f}" for k in names) + " |")
        for k in names:
            diff = statistics.mean((a - b) * 100 for a, b in zip(acc[k], scratch))
            print(f"{k}: mean difference {diff:+.2f} pt (goal ≥ −0.5 pt: {'met' if diff >= -0.5 else 'missed'})")
        print(f"BN recalibration of the default supernet's subnets: OFA's set_running_statistics mean "
              f"{statistics.mean(acc[names[0]]) * 100:.2f}%, cumulative average mean "
              f"{statistics.mean(cumulative) * 100:.2f}%")
    if args.recal_check and not args.check_only:
        recal_compare(supernets["PS (OFA recipe)"], exp, data, args.recal_check)
    if args.check:
        drawn = random_subnet_accuracies(supernets["PS (OFA recipe)"], exp, data, calib, args.check,
                                         np.random.default_rng(12345))
        accs = [acc * 100 for _, acc in drawn]
        print(f"{args.check} random subnets after BN recalibration: min {min(accs):.2f}%, "
              f"mean {statistics.mean(accs):.2f}%, max {max(accs):.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
