"""The YAML search-space language: schemas per family, ``Arch``, analytic costs."""
from ._arch import Arch
from ._base import FAMILIES, Param, SearchSpace, SpaceConfig, conv_out, make_divisible
from ._load import load_space, read_yaml, resolve_space, space_from_dict, validate
from . import _mbv3  # noqa: F401  (registers the family)
from . import _darts  # noqa: F401  (registers the darts_cell family)
from ._mbv3 import BlockSpec, MBV3Space
from . import _vit  # noqa: F401  (registers the family vit_hybrid)

__all__ = [
    "Arch", "BlockSpec", "FAMILIES", "MBV3Space", "Param", "SearchSpace", "SpaceConfig",
    "conv_out", "load_space", "make_divisible", "read_yaml", "resolve_space", "space_from_dict", "validate",
]
