"""Supernet training: one engine, strategies as plug-ins, checkpoints, Ray Train."""
from .config import TrainConfig

__all__ = ["TrainConfig"]
