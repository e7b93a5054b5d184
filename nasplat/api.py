"""The Python API: what the ``nasplat`` command does, as plain functions for notebooks
and scripts (in the manner of timm's ``create_model`` and Optuna's ``create_study``).

Everything a stage writes lives in the run folder ``runs/<name>/``; the functions that
read results accept an :class:`~nasplat.experiment.Experiment`, an experiment YAML path
or that run folder, and return pandas DataFrames whose columns are those of the CSV
files. Stable API (0.x: may still change between minor versions).

Example::

    import nasplat

    exp = nasplat.load_experiment("examples/digits_ofa.yaml")
    nasplat.train_supernet(exp)                     # runs/digits_ofa/supernet/
    net = nasplat.load_supernet(exp)                # the trained supernet
    arch = exp.space.max_arch()
    sub = nasplat.extract_subnet(net, arch, nasplat.load_data(exp))   # + BN recalibration
    acc = nasplat.evaluate(sub, nasplat.load_data(exp), resolution=exp.space.resolution(arch))
    nasplat.run_search(exp)
    front = nasplat.read_pareto(exp)                # a DataFrame, as search/pareto.csv
    nasplat.export_onnx(sub, "sub.onnx", input_shape=(1, 1, 16, 16))
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import UserError
from .paths import supernet_checkpoint

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from .data import DataBundle
    from .experiment import Experiment
    from .search.runner import SearchResult
    from .space import Arch, SearchSpace
    from .supernet import Supernet



# -- loading -------------------------------------------------------------------------------
def load_experiment(path: str | Path) -> Experiment:
    """An experiment from its YAML file, or reopened from a run folder (``runs/<name>``,
    whose ``config.yaml`` every stage writes). Errors are one-line ``UserError``s."""
    from .experiment import load_experiment as _load

    return _load(path)


def load_space(spec: str | Path | dict[str, Any]) -> SearchSpace:
    """A search space from a YAML path, a shipped space name (``ofa_mbv3_small``) or an
    inline mapping."""
    from .space import resolve_space

    return resolve_space(spec, None, None, None)


def _experiment(run: Experiment | str | Path) -> Experiment:
    from .experiment import Experiment as _Experiment

    return run if isinstance(run, _Experiment) else load_experiment(run)


def load_data(run: Experiment | str | Path) -> DataBundle:
    """The experiment's data set (train / val / calibration splits, un-augmented batches
    by default)."""
    from .data import load_experiment_data

    return load_experiment_data(_experiment(run))


def load_supernet(run: Experiment | str | Path | None = None, *, space: SearchSpace | str | None = None,
                  checkpoint: str | Path | None = None) -> Supernet:
    """A supernet with weights, in eval mode.

    Args:
        run: an experiment (or its YAML, or its run folder): its trained
            ``supernet/supernet.safetensors`` is loaded (or ``checkpoint`` if given).
        space: without ``run``: the space (object, path or shipped name) of ``checkpoint``.
        checkpoint: a nasplat safetensors checkpoint of the same space; with neither
            ``run`` nor ``checkpoint``, the supernet has random weights.
    """
    from .supernet import build_supernet

    if run is not None:
        exp = _experiment(run)
        sp, ckpt = exp.space, checkpoint or supernet_checkpoint(exp.run_dir)
        if checkpoint is None and not Path(ckpt).is_file():
            raise UserError("no trained supernet in this run folder; train one first (nasplat.train_supernet)", ckpt)
    elif space is not None:
        sp = space if not isinstance(space, (str, Path)) else load_space(space)
        ckpt = checkpoint
    else:
        raise UserError("load_supernet needs a run (experiment, YAML or run folder) or a space", None, "space")
    return build_supernet(sp, checkpoint=ckpt).eval()


def raw_val_images(run: Experiment | str | Path) -> tuple[Any, Any]:
    """The val split before any preprocessing (digits / CIFAR-10: a uint8 (N, C, H, W)
    array; folder data: image file paths) and its labels: what an export manifest's
    ``preprocessing`` starts from."""
    from .data import load_experiment_data
    from .data.preprocessing import raw_val

    exp = _experiment(run)
    return raw_val(load_experiment_data(exp), exp.config.data)


# -- subnets -------------------------------------------------------------------------------
def extract_subnet(supernet: Supernet, arch: Arch | dict[str, Any], data: DataBundle | None = None, *,
                   calib_images: int | None = None, seed: int = 0) -> nn.Module:
    """The static network of ``arch`` with copied weights, eval mode. With ``data``, its
    BN statistics are recalibrated first (OFA's ``set_running_statistics`` on
    ``calib_images`` random training images drawn with ``seed``; default 2000 or the
    whole training split) — needed before evaluating any subnet of a supernet."""
    from .supernet.bn import calibration_batches, recalibrate_bn

    space = supernet.space
    a = space.arch(arch) if not hasattr(arch, "id") else arch
    static = supernet.extract(a)  # type: ignore[arg-type]
    if data is not None:
        recalibrate_bn(static, calibration_batches(data, calib_images, seed), space.resolution(a))  # type: ignore[arg-type]
    return static.eval()


def evaluate(model: nn.Module, data: DataBundle, *, resolution: int | None = None, split: str = "val") -> float:
    """Top-1 accuracy of ``model`` on a split (inputs resized to ``resolution``)."""
    from .supernet.evaluate import accuracy

    return accuracy(model, data, split, resolution)  # type: ignore[arg-type]


# -- stages --------------------------------------------------------------------------------
def train_supernet(run: Experiment | str | Path, *, resume: bool = False, force: bool = False,
          address: str | None = None) -> Path:
    """Train the experiment's supernet (``nasplat train``); returns the weights' path."""
    from .train.run import train_experiment

    return train_experiment(_experiment(run), resume=resume, force=force, address=address)


def run_search(run: Experiment | str | Path, *, resume: bool = True, force: bool = False, address: str | None = None,
           storage: str | None = None, quiet: bool = False) -> SearchResult:
    """Run (or continue) the experiment's search (``nasplat search``); the result's
    records are also written to ``search/trials.csv`` and ``search/pareto.csv``."""
    from .search.stage import run_search

    return run_search(_experiment(run), resume=resume, force=force, address=address, storage=storage,
                      quiet=quiet, print_table=False)


def export_subnets(run: Experiment | str | Path, archs: Sequence[Arch | dict[str, Any]], *,
                   weights: str | Path | None = None, recalibrate: bool | None = None) -> list[dict[str, Any]]:
    """Export subnets as ``nasplat export`` does (ONNX files, manifest with preprocessing,
    accuracy and latency); returns their manifest entries."""
    from .export.stage import export_archs

    exp = _experiment(run)
    return export_archs(exp, [a if hasattr(a, "id") else exp.space.arch(a) for a in archs],  # type: ignore[misc]
                        weights=weights, recalibrate=recalibrate)


def export_onnx(model: nn.Module, path: str | Path, *, input_shape: Sequence[int], opset: int = 18,
                dynamic_batch: bool = True) -> Path:
    """Write ``model`` (eval mode) to an ONNX file, checked with ``onnx.checker`` and
    against torch in ONNX Runtime (batch 1, and batch 2 with a dynamic batch axis)."""
    import torch

    from .io import write_bytes
    from .onnxio import to_onnx, verify

    result = to_onnx(model, tuple(input_shape), opset, dynamic_batch=dynamic_batch)
    for n in ((1, 2) if dynamic_batch else (input_shape[0],)):
        verify(model, result.data, torch.randn(n, *input_shape[1:]))
    write_bytes(path, result.data)
    return Path(path)


# -- results as DataFrames -----------------------------------------------------------------
def _run_dir(run: Experiment | str | Path) -> Path:
    return _experiment(run).run_dir


def _csv(path: Path, what: str) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise UserError(f"no {what} yet", path)
    return pd.read_csv(path)


def read_trials(run: Experiment | str | Path) -> pd.DataFrame:
    """Every distinct evaluated arch of the search (``search/trials.csv``)."""
    return _csv(_run_dir(run) / "search" / "trials.csv", "search trials")


def read_pareto(run: Experiment | str | Path) -> pd.DataFrame:
    """The Pareto front of the search (``search/pareto.csv``)."""
    return _csv(_run_dir(run) / "search" / "pareto.csv", "Pareto front")


def read_measurements(run: Experiment | str | Path, device: str) -> pd.DataFrame:
    """Latency measurements of one hardware profile (``profiles/<device>/measurements.csv``)."""
    from .hw.stage import measurements_path

    return _csv(measurements_path(_run_dir(run), device), f"measurements for {device!r}")


def read_train_log(run: Experiment | str | Path) -> pd.DataFrame:
    """The training log, one row per step (``supernet/train_log.csv``)."""
    from .paths import supernet_dir

    return _csv(supernet_dir(_run_dir(run)) / "train_log.csv", "training log")
