"""Training strategies, registered by the name used in ``train.strategy``."""
from ._base import STRATEGIES, NoOptions, Phase, StepInfo, StepOutput, Strategy, TrainContext, derived_rng
from . import sandwich  # noqa: F401
from . import pcdarts, standalone  # noqa: F401  (darts_cell: PC-DARTS search, fixed-network training)
from . import progressive_shrinking  # noqa: F401
from . import uniform, pada  # noqa: F401
from . import elasticvit  # noqa: F401

__all__ = ["STRATEGIES", "NoOptions", "Phase", "StepInfo", "StepOutput", "Strategy", "TrainContext", "derived_rng"]
