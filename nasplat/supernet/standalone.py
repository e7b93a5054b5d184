"""Fixed (stand-alone) networks: a DARTS genotype's derived network or one arch of any
family built as a static network with fresh weights, and the trained one read back.

The ``standalone`` training strategy builds its network here and records what it built
in ``runs/<name>/supernet/derived.json``; export rebuilds it from that record without
importing the training package.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..checkpoint import load_weights
from ..errors import UserError
from ..paths import supernet_checkpoint, supernet_dir
from ..space import SearchSpace
from ._base import build_supernet

DERIVED_FILE = "derived.json"


def build_standalone(space: SearchSpace, *, genotype: str | Path | Mapping[str, Any] | None = None,
                     arch: Mapping[str, Any] | None = None, auxiliary: bool = False,
                     drop_path: float = 0.0, aux_pool: str = "darts") -> nn.Module:
    """The fixed network of ``genotype`` (darts_cell spaces: a JSON file or a mapping) or
    of ``arch`` (any family), with fresh weights. ``auxiliary``, ``drop_path`` and
    ``aux_pool`` apply to darts_cell networks (DARTS' auxiliary head and drop-path)."""
    if genotype is not None or space.family == "darts_cell":
        from .darts_cell import build_derived

        geno = genotype if genotype is not None else \
            space.genotype_of(space.arch(arch or {}, "train.options.arch"))  # type: ignore[attr-defined]
        return build_derived(space, geno, auxiliary, drop_path, aux_pool)  # type: ignore[arg-type]
    a = space.arch(arch or {}, "train.options.arch")
    net = build_supernet(space).extract(a)
    for m in net.modules():  # fresh weights: the supernet was never trained
        if hasattr(m, "reset_parameters") and m is not net:
            m.reset_parameters()
    return net


def load_standalone(space: SearchSpace, run_dir: str | Path) -> nn.Module:
    """The network a ``standalone`` run trained in ``run_dir``, weights loaded, eval mode."""
    info_path = supernet_dir(run_dir) / DERIVED_FILE
    if not info_path.is_file():
        raise UserError("no stand-alone network here (train it with strategy 'standalone' first)", info_path)
    info = json.loads(info_path.read_text())
    genotype = info.get("genotype")
    net = build_standalone(space, genotype=genotype, arch=None if genotype is not None else info.get("arch"),
                           auxiliary=bool(info.get("auxiliary", False)), aux_pool=info.get("auxiliary_pool", "darts"))
    load_weights(supernet_checkpoint(run_dir), net, space.hash())
    return net.eval()
