"""What every benchmark prints: the machine it ran on and when."""
from __future__ import annotations

import datetime as _dt
import os
import platform


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.1f} at the start")


def today() -> str:
    return _dt.date.today().isoformat()


def trained_experiment(path, quick: bool = False, quick_epochs: int = 2):
    """The experiment at ``path`` with its supernet trained (``nasplat train`` first when
    the run has none). ``quick``: a short training in its own run folder
    (``<name>_quick``), enough to check a bench's path, not to quote its figures."""
    import sys

    from nasplat.experiment import load_experiment
    from nasplat.paths import supernet_checkpoint

    exp = load_experiment(path)
    if quick and not supernet_checkpoint(exp.run_dir).exists():
        cfg = exp.config
        exp.config = cfg.model_copy(update={"name": cfg.name + "_quick",
                                            "train": cfg.train.model_copy(update={"epochs": quick_epochs})})
    if not supernet_checkpoint(exp.run_dir).exists():
        from nasplat.train.run import train_experiment

        print(f"training {exp.config.name} ({exp.config.train.epochs} epochs) first -> {exp.run_dir}",
              file=sys.stderr, flush=True)
        train_experiment(exp)
    return exp


def recalibrated_accuracy(net, exp, data, arch, calib, mode: str = "ofa") -> float:
    """Val accuracy of ``arch`` extracted from ``net`` after BN recalibration on the
    batches ``calib`` (``nasplat.supernet.bn.calibration_batches``)."""
    from nasplat.supernet import recalibrate_bn
    from nasplat.supernet.evaluate import accuracy

    r = exp.space.resolution(arch)
    static = net.extract(arch)
    recalibrate_bn(static, calib, r, mode=mode)
    return accuracy(static, data, "val", r)


def random_subnet_accuracies(net, exp, data, calib, n: int, rng) -> list:
    """(arch, accuracy) of ``n`` subnets drawn with ``rng``, each recalibrated on ``calib``."""
    archs = [exp.space.sample(rng) for _ in range(n)]
    return [(a, recalibrated_accuracy(net, exp, data, a, calib)) for a in archs]
