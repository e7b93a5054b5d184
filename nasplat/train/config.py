"""The ``train:`` section of an experiment (strategy options are validated by the strategy)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    strategy: str = "sandwich"
    epochs: int = Field(10, ge=1)
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(3e-5, ge=0)  # not applied to BN and bias
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    warmup_epochs: float = Field(0, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)  # default: data.batch_size
    workers: int = Field(1, ge=1)  # >1: data-parallel under Ray Train (a GPU each when the device is CUDA)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # torch.autocast; fp16 adds a gradient scaler
    channels_last: bool = True  # NHWC weights and activations for conv nets (more conv than linear weights)
    checkpoint_every: int = Field(0, ge=0)  # steps between checkpoints; 0 = each epoch end
    max_failures: int = Field(2, ge=-1)  # Ray Train: restarts from the last checkpoint after a worker dies (-1: no limit)
    storage_path: str | None = None  # Ray Train checkpoints; every node must see it (NFS path or URI, e.g. s3://...)
    threads: int | None = Field(None, ge=1)  # torch intra-op threads per worker
    init: str | None = None  # start from these weights (nasplat or official OFA checkpoint; relative to the experiment)
    options: dict[str, Any] = {}  # strategy-specific, validated by the strategy
