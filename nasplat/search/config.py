"""The ``search:`` section of an experiment.

Objectives are strings: ``accuracy`` (maximised), ``latency@<profile>`` (ms), ``macs``
and ``params`` (minimised). Constraints are strings such as ``latency@local-cpu <= 5ms``,
``macs <= 50M`` or ``accuracy >= 90%``; they are parsed by :mod:`.constraints`.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LinasConfig(BaseModel):
    """LINAS (DyNAS-T) options: the predictor-driven inner NSGA-II."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    inner_evals: int = Field(10_000, ge=10)  # predictor evaluations of the inner NSGA-II per round
    inner_population: int = Field(50, ge=4)  # its population (DyNAS-T: the outer population, 50)


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    searcher: str = "nsga2"  # a name in SEARCHERS: nsga2, tpe, gp, random, pymoo_nsga2, linas
    objectives: list[str] = ["accuracy", "macs"]
    constraints: list[str] = []
    accuracy: Literal["supernet", "predictor"] = "supernet"  # how accuracy is obtained
    latency: Literal["predictor", "measured"] = "predictor"  # how latency@<profile> is obtained
    budget: int = Field(100, ge=1)  # distinct archs evaluated (real evaluations)
    population: int = Field(20, ge=2)  # NSGA-II population / LINAS validation population
    batch: int | None = Field(None, ge=1)  # archs asked per round (default: population)
    workers: int = Field(1, ge=1)  # Ray evaluator actors for supernet accuracy
    cpus_per_worker: float = Field(1.0, gt=0)
    # GPU share per evaluator (0.25: four evaluators per GPU); None: 0.25 when the experiment's
    # device is not cpu and the Ray cluster has GPUs, else 0 (evaluators on the CPU)
    gpus_per_worker: float | None = Field(None, ge=0)
    eval_timeout: float | None = Field(3600.0, gt=0)  # seconds per evaluation; past it the trial FAILs
    calib_images: int | None = Field(None, ge=1)  # BN recalibration images (default: data.calib_images)
    calib_batch: int = Field(250, ge=1)
    val_images: int | None = Field(None, ge=1)  # validation images (default: the whole val split)
    channels_last: bool = True  # evaluate subnets in NHWC layout (faster on CPU: bench eval_cost)
    validation: Literal["torch", "onnxruntime"] = "torch"  # how the validation set is run
    max_restarts: int = Field(3, ge=0)  # evaluator actor restarts; its archs are re-evaluated
    storage: str | None = None  # RDB URL or journal file (default: runs/<name>/search/study.journal)
    seed: int | None = None  # default: the experiment's seed
    linas: LinasConfig = LinasConfig()
    options: dict[str, Any] = {}  # extra keyword arguments for the Optuna sampler

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one objective is required")
        if len(set(v)) != len(v):
            raise ValueError("objectives must be distinct")
        return v
