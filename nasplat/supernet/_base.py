"""The interface every supernet family implements."""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from torch import nn

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

    def choice_parameters(self, arch: Arch) -> dict:
        """Per active choice of ``arch``, the weights it uses (see ``supernet/attribution.py``)."""
        from .attribution import choice_parameters

        return choice_parameters(self, arch)

    def sample(self, rng: np.random.Generator) -> Arch:
        return self.space.sample(rng)

    def max_arch(self) -> Arch:
        return self.space.max_arch()

    def min_arch(self) -> Arch:
        return self.space.min_arch()


SUPERNETS: Registry[type[Supernet]] = Registry("supernet family")


def build_supernet(space: SearchSpace) -> Supernet:
    """The supernet class registered for the space's family."""
    return SUPERNETS.get(space.family)(space)
