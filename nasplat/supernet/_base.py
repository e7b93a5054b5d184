"""The interface every supernet family implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
from torch import nn

from ..checkpoint import load_weights
from ..registry import Registry
from ..space import Arch, SearchSpace


class Supernet(nn.Module, ABC):
    """An elastic network: ``set_active(arch)`` selects a subnet, ``extract`` copies it out."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        self.active_arch: Arch = space.max_arch()

    @abstractmethod
    def set_active(self, arch: Arch) -> None:
        """Make ``forward`` compute the subnet ``arch``."""

    @abstractmethod
    def extract(self, arch: Arch) -> nn.Module:
        """A plain static ``nn.Module`` computing ``arch`` with copied weights."""

    def sample(self, rng: np.random.Generator) -> Arch:
        return self.space.sample(rng)

    def max_arch(self) -> Arch:
        return self.space.max_arch()

    def min_arch(self) -> Arch:
        return self.space.min_arch()


SUPERNETS: Registry[type[Supernet]] = Registry("supernet family")


def build_supernet(space: SearchSpace, checkpoint: str | Path | None = None) -> Supernet:
    """The supernet of the space's family (as timm's ``create_model``), with the weights of
    ``checkpoint`` (a nasplat safetensors file of this space) when given.

    Args:
        space: the search space; its ``family`` picks the registered supernet class.
        checkpoint: weights to load; a checkpoint of another space (by hash) or with
            tensors that do not fit is a one-line :class:`~nasplat.errors.UserError`.
    """
    net = SUPERNETS.get(space.family)(space)
    if checkpoint is not None:
        load_weights(checkpoint, net, space.hash())
    return net
