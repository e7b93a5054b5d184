"""The experiment YAML: which space, data, training, hardware, search and export.

Paths inside an experiment are resolved relative to the experiment file's folder;
a bare space name (``space: ofa_mbv3_small``) refers to a shipped space in
``search_spaces/``. Each stage owns the schema of its own section.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .data import DataConfig
from .device import check_device_spec
from .errors import UserError
from .export.config import ExportConfig
from .hw.profile import ProfileStageConfig
from .predict.config import PredictorConfig
from .space import SearchSpace, read_yaml, resolve_space, space_from_dict, validate
from .search.config import SearchConfig
from .train.config import TrainConfig

from .paths import REPO_ROOT, SHIPPED_PROFILES, SHIPPED_SPACES  # noqa: F401  (re-exported)


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    output_dir: str = "runs"
    # auto | cpu | cuda | cuda:N, for every stage that runs a network (auto: CUDA when present)
    device: str = "auto"
    space: str | dict[str, Any]
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    # Sections owned by later stages; each validates its own mapping.
    hardware: list[str] = []  # hw profile names or paths
    profile: ProfileStageConfig = ProfileStageConfig()
    predictor: PredictorConfig = PredictorConfig()
    search: SearchConfig = SearchConfig()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # `.` or `..` would make the run folder runs/ itself or the folder above it
        if set(v) == {"."}:
            raise ValueError(f"{v!r} is not a run folder name ('.' is runs/ itself, '..' the folder above it)")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device_spec(v)


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

    def resolved(self) -> dict[str, Any]:
        """The config as plain data that means the same from any folder or machine: the
        space inlined, the run folder, data path and profile paths absolute."""
        cfg = self.config.model_dump(mode="json")
        cfg["space"] = self.space.config.model_dump(mode="json")
        cfg["output_dir"] = str(self.run_dir.resolve().parent)
        if cfg["data"].get("path"):
            cfg["data"]["path"] = str(self.resolve(cfg["data"]["path"]).resolve())
        cfg["hardware"] = [str(self.resolve(h).resolve()) if Path(h).suffix or len(Path(h).parts) > 1 else h
                           for h in cfg["hardware"]]
        return cfg

    def write_config(self) -> Path:
        """Write the resolved config to ``runs/<name>/config.yaml`` (what a run folder is
        reopened from: ``load_experiment("runs/<name>")``)."""
        import yaml

        from .io import write_text

        path = self.run_dir / RESOLVED_CONFIG
        write_text(path, "# written by nasplat: the resolved experiment of this run folder\n"
                   + yaml.safe_dump(self.resolved(), sort_keys=False))
        return path


RESOLVED_CONFIG = "config.yaml"


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML file, or reopen a run folder (its
    ``config.yaml``). Every problem is a one-line :class:`~nasplat.errors.UserError`
    naming the file and the field.

    Args:
        path: an experiment YAML (e.g. ``examples/digits_ofa.yaml``) or a run folder
            (``runs/<name>``) written by any stage.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / RESOLVED_CONFIG).is_file():
            raise UserError(f"experiment file not found: a folder without {RESOLVED_CONFIG} (pass an experiment "
                            f"YAML file or a run folder)", path)
        path = path / RESOLVED_CONFIG
    data = read_yaml(path, "experiment file")
    config: ExperimentConfig = validate(ExperimentConfig, data, path)
    space = resolve_space(config.space, path.parent, path, "space")
    from .data import DATASETS  # validated here so a typo fails before any work
    from .train.strategies import STRATEGIES

    DATASETS.get(config.data.name, str(path), "data.name")

    STRATEGIES.get(config.train.strategy, str(path), "train.strategy").parse_options(config.train.options, path)
    from .hw.profile import load_profile  # a typo in hardware: fails before any work

    for i, spec in enumerate(config.hardware):
        load_profile(spec, path.parent, path, f"hardware.{i}")
    return Experiment(config, path, space)
