"""Losses for weight-sharing training."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_ce(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability distribution (OFA's KD loss)."""
    return -(soft_targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def label_smoothed_ce(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits, y, label_smoothing=smoothing)
