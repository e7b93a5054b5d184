"""The experiment YAML: which space, data, training, hardware, search and export.

Paths inside an experiment are resolved relative to the experiment file's folder;
a bare space name (``space: ofa_mbv3_small``) refers to a shipped space in
``search_spaces/``. Each stage owns the schema of its own section.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .data import DataConfig
from .errors import UserError
from .hw.profile import ProfileStageConfig
from .predict.config import PredictorConfig
from .space import SearchSpace, load_space, read_yaml, space_from_dict, validate
from .search.config import SearchConfig
from .train.config import TrainConfig

from .paths import REPO_ROOT, SHIPPED_PROFILES, SHIPPED_SPACES  # noqa: F401  (re-exported)


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    arch: str | dict[str, Any] = "max"  # "max", "min", or an arch mapping
    opset: int = Field(18, ge=13, le=23)
    dynamo: bool = False  # exporter tried first; the other is the fallback
    calib_images: int = Field(500, ge=1)


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    output_dir: str = "runs"
    space: str | dict[str, Any]
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    # Sections owned by later stages; each validates its own mapping.
    hardware: list[str] = []  # hw profile names or paths
    profile: ProfileStageConfig = ProfileStageConfig()
    predictor: PredictorConfig = PredictorConfig()
    search: SearchConfig = SearchConfig()


class Experiment:
    """A loaded experiment: the validated config, its space and its run folder."""

    def __init__(self, config: ExperimentConfig, path: Path, space: SearchSpace):
        self.config = config
        self.path = path
        self.space = space

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir) / self.config.name

    def resolve(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else self.base_dir / q


def resolve_space(spec: str | dict[str, Any], base_dir: Path, exp_path: Path) -> SearchSpace:
    if isinstance(spec, dict):
        return space_from_dict(spec, exp_path, "space")
    p = Path(spec)
    candidates = [p if p.is_absolute() else base_dir / p]
    if not p.suffix:
        candidates.append(SHIPPED_SPACES / f"{spec}.yaml")
    for c in candidates:
        if c.is_file():
            return load_space(c)
    raise UserError(f"search space {spec!r} not found", exp_path, "space")


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    data = read_yaml(path, "experiment file")
    config: ExperimentConfig = validate(ExperimentConfig, data, path)
    space = resolve_space(config.space, path.parent, path)
    from .data import DATASETS  # validated here so a typo fails before any work
    from .train.strategies import STRATEGIES

    DATASETS.get(config.data.name, str(path), "data.name")

    STRATEGIES.get(config.train.strategy, str(path), "train.strategy").parse_options(config.train.options, path)
    from .hw.profile import load_profile  # a typo in hardware: fails before any work

    for i, spec in enumerate(config.hardware):
        load_profile(spec, path.parent, path, f"hardware.{i}")
    return Experiment(config, path, space)
