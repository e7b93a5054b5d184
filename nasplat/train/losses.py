"""Losses for weight-sharing training."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_ce(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a probability distribution (OFA's KD loss)."""
    return -(soft_targets * F.log_softmax(logits, dim=1)).sum(1).mean()


def label_smoothed_ce(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits, y, label_smoothing=smoothing)


def _f_divergence(logits: torch.Tensor, p: torch.Tensor, alpha: float, iw_clip: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: (the α-divergence D_α(p‖q) with q = softmax(logits), a surrogate whose
    gradient w.r.t. the logits is the divergence's, importance ratio p/q clipped)."""
    q = torch.softmax(logits, dim=1).detach()
    log_q = F.log_softmax(logits, dim=1)  # the only path of the gradient
    ratio = p.detach() / q
    if abs(alpha) < 1e-3:
        ratio = ratio.clamp(0, iw_clip)
        f, f_base, rho = -ratio.log(), 0.0, ratio.log() - 1.0
    elif abs(alpha - 1.0) < 1e-3:
        f, f_base, rho = ratio * ratio.log(), 0.0, ratio
    else:
        iw = ratio.pow(alpha).clamp(0, iw_clip)
        f_base = 1.0 / alpha / (alpha - 1.0)
        f, rho = iw / alpha / (alpha - 1.0), iw / alpha + f_base
    return (q * (f - f_base)).sum(1), -(q * rho * log_q).sum(1)


def alpha_divergence(logits: torch.Tensor, soft_targets: torch.Tensor, alpha_min: float = -1.0,
                     alpha_max: float = 1.0, iw_clip: float = 5.0) -> torch.Tensor:
    """AlphaNet's adaptive α-divergence KD loss, as ElasticViT's ``AdaptiveLossSoft``
    (microsoft/Moonlit ``ElasticViT/util/loss_ops.py``; defaults α ∈ {−1, 1}, ratio clip 5):
    per sample, whichever of D_{α_min} and D_{α_max} is larger is minimised, through a
    surrogate whose value is ``−Σ q·ρ_f(p/q)·log q`` (the official loss value) and whose
    gradient is that divergence's. ``soft_targets`` are probabilities (no gradient)."""
    left, grad_left = _f_divergence(logits, soft_targets, alpha_min, iw_clip)
    right, grad_right = _f_divergence(logits, soft_targets, alpha_max, iw_clip)
    pick_left = (left > right).to(logits.dtype)
    return (pick_left * grad_left + (1.0 - pick_left) * grad_right).mean()
