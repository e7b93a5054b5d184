"""Elastic supernets: one module per family, ``set_active``, ``extract``, BN recalibration."""
from ._base import SUPERNETS, Supernet, build_supernet
from . import mbv3  # noqa: F401  (registers the family)
from . import darts_cell  # noqa: F401  (registers the darts_cell family)
from . import vit_hybrid  # noqa: F401  (registers the family vit_hybrid)
from .bn import recalibrate_bn, resize

__all__ = ["SUPERNETS", "Supernet", "build_supernet", "recalibrate_bn", "resize"]
