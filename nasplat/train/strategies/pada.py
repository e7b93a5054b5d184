"""``pada``: PA&DA — path and data importance sampling (Lu et al., CVPR 2023; official
code ShunLu91/PA-DA ``nasbench201/train_panda_201.py``).

Single-path training (one subnet per step, as ``uniform``) whose two samplers follow
the gradient-variance-minimising distributions of the paper, as the official code
computes them:

* **Data.** Each drawn sample's importance comes free from the forward pass:
  ``g_i = ‖softmax(z_i) − onehot(y_i)‖₂`` (the norm of the loss gradient w.r.t. the
  logits). The scores are reset to 0 at each epoch start and filled by the samples
  drawn in the epoch (a sample drawn again: the running average ``(g_i + new)/2``);
  samples not drawn keep 0. At the epoch's end ``q_i = τ·g_i/Σg + (1−τ)/N`` with
  ``τ = epoch/epochs`` of the epoch just finished, and the next epoch's N indices are
  drawn *with replacement* from ``q`` (epoch 0 is a plain shuffled pass; epoch 1 draws
  from ``q`` at τ = 0, i.e. uniformly with replacement, as the official code does).
* **Path.** One op distribution is shared by the choices of a group
  (:func:`nasplat.supernet.attribution.choice_groups`: the edges of a cell type in a
  ``darts_cell`` space, as the official NAS-Bench-201 code; every other categorical
  choice — kernel, expand, depth, width, resolution of mbv3 / vit_hybrid spaces — is a
  group alone, the stated generalisation beyond cell spaces). After the gradients are
  clipped (``train.grad_clip``, default 5 as the official code), each value ``o`` used in
  the step scores ``v_o = Σ ‖∇t‖`` over the tensors it computed with, summed over the
  group's choices that took ``o`` and divided by their number; parameter-free values
  (none, skip, pooling, resolution) score 0. ``G_o`` is a running average with weight
  ½ (``G_o ← (G_o + v_o)/2`` when ``v_o ≠ 0``), reset to 0 at each epoch start. At the
  epoch's end ``p_o = τ·G_o/ΣG + (1−τ)/n`` within the group (uniform while ΣG = 0),
  used through the next epoch; a subnet is drawn choice by choice from its group's
  ``p``, seeded by ``derived_rng(seed, phase, epoch, step)``.
* **Importance weights** ``1/(N·q_i)`` per sample times ``Π_c 1/(n_c·p_c(o_c))`` for
  the path make the gradient estimate unbiased; off by default because the official
  code trains with a plain mean loss (``importance_weights: true`` turns them on).

Differences from the official code, and why:

* The official code reads the gradient norms of an op's conv weight and conv bias (its
  ops have affine-free BN); here the tensors are every parameter the value computed
  with (:mod:`nasplat.supernet.attribution` maps choices to weights per family), so a
  conv op with affine BN counts the BN's γ and β too. In mbv3 / vit spaces weights are
  shared across values (a 3×3 kernel is a transformed crop of the 7×7): the unused
  slices get no gradient, so a norm covers what the value used.
* The optimizer and schedule are the engine's (``train:``): the official run uses SGD
  lr 0.05, momentum 0.9, wd 2.5e-4, cosine over 250 epochs, batch 256; set them in the
  experiment. Only ``grad_clip`` gets the official 5 when the experiment leaves it unset.
* Distributed: the path scores are read after the engine's all-reduce (identical on
  every worker); each worker scores the samples of its own shard, and at the epoch's
  end the per-sample scores are averaged over the workers that drew a sample
  (all-reduce of sums and counts), so every worker holds identical ``q`` and ``p``.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from ...errors import UserError
from ...io import write_text
from ...space import Arch
from ...supernet.attribution import choice_groups, choice_parameters, gradient_norm_sums
from ._base import STRATEGIES, Phase, StepInfo, derived_rng
from .uniform import SinglePath


def _sha(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


_STATE_KEYS = ("g", "G", "q", "p")


class PADAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    data_sampling: bool = True  # draw next epoch's indices from q (else: plain shuffles)
    path_sampling: bool = True  # draw subnets from p (else: uniform)
    importance_weights: bool = False  # 1/(N q) and 1/(n p) loss weights (official code: off)
    trace: bool = False  # each worker writes supernet/pada_trace/rank<r>.jsonl (what it drew, per epoch)


@STRATEGIES.register("pada")
class PADA(SinglePath):
    Options = PADAOptions
    options: PADAOptions

    @classmethod
    def train_defaults(cls, options: BaseModel, space: Any) -> dict[str, Any]:
        return {"grad_clip": 5.0}  # the official code clips at 5 and reads the clipped gradients

    def __init__(self, ctx, options):  # type: ignore[no-untyped-def]
        super().__init__(ctx, options)
        space = ctx.space
        self.groups = choice_groups(space)
        self.values: list[tuple[Any, ...]] = []
        for g in self.groups:
            choices = {space.param(n).choices for n in g}
            if len(choices) != 1:
                raise ValueError(f"choices {g} share a distribution but not their values")
            self.values.append(choices.pop())
        self.group_of = {n: k for k, g in enumerate(self.groups) for n in g}
        self.offset = np.cumsum([0] + [len(v) for v in self.values])
        self.n_data = len(ctx.data.train)
        self.epochs = ctx.cfg.epochs
        f64 = dict(dtype=torch.float64)
        self.g = torch.zeros(self.n_data, **f64)  # this epoch's per-sample scores (0 = not drawn)
        self.G = torch.zeros(int(self.offset[-1]), **f64)  # this epoch's running path importance
        self.q = torch.full((self.n_data,), 1.0 / self.n_data, **f64)  # in force this epoch
        self.p = torch.as_tensor(np.concatenate([np.full(len(v), 1.0 / len(v)) for v in self.values]), **f64)
        self._arch: Arch | None = None
        self._trace: list[str] = []
        self._trace_epoch: dict[str, Any] = {}

    # -- distributions ----------------------------------------------------------------
    def _slice(self, k: int) -> slice:
        return slice(int(self.offset[k]), int(self.offset[k + 1]))

    def path_probs(self, G: torch.Tensor, tau: float) -> torch.Tensor:
        """``p_o = τ·G_o/ΣG + (1−τ)/n`` per group (uniform where ΣG = 0 or sampling is off)."""
        p = torch.empty_like(G)
        for k, vals in enumerate(self.values):
            s, n = self._slice(k), len(vals)
            total = float(G[s].sum())
            p[s] = tau * G[s] / total + (1 - tau) / n if (self.options.path_sampling and total > 0) else 1.0 / n
        return p

    def data_probs(self, g: torch.Tensor, tau: float) -> torch.Tensor:
        """``q_i = τ·g_i/Σg + (1−τ)/N`` (uniform where Σg = 0 or sampling is off)."""
        total = float(g.sum())
        if not self.options.data_sampling or total <= 0:
            return torch.full_like(g, 1.0 / self.n_data)
        q = tau * g / total + (1 - tau) / self.n_data
        return q / q.sum()

    def path_distribution(self, name: str) -> dict[Any, float]:
        """The ``p`` in force for choice ``name`` (shared by its group), value -> probability."""
        k = self.group_of[name]
        return {v: float(x) for v, x in zip(self.values[k], self.p[self._slice(k)])}

    def path_importance(self, name: str) -> dict[Any, float]:
        """The running ``G`` of choice ``name``'s group this epoch, value -> score (0 = not
        scored: unused or parameter-free)."""
        k = self.group_of[name]
        return {v: float(x) for v, x in zip(self.values[k], self.G[self._slice(k)])}

    def _p_of(self, name: str, value: Any) -> float:
        k = self.group_of[name]
        return float(self.p[int(self.offset[k]) + self.values[k].index(value)])

    # -- engine hooks -------------------------------------------------------------------
    def begin_phase(self, index: int, phase: Phase) -> None:
        self.epochs = phase.epochs

    def epoch_order(self, phase: int, epoch: int, n: int) -> np.ndarray:
        if n != self.n_data:
            raise ValueError(f"epoch_order for {n} samples, the strategy holds {self.n_data}")
        if not self.options.data_sampling or epoch == 0:
            order = super().epoch_order(phase, epoch, n)
        else:
            q = self.q.numpy()
            order = derived_rng(self.ctx.seed, 102, phase, epoch).choice(n, size=n, replace=True, p=q / q.sum())
        if self.options.trace:
            self._trace_epoch = {"phase": phase, "epoch": epoch, "order": _sha(order), "q": _sha(self.q.numpy()),
                                 "p": _sha(self.p.numpy()), "archs": []}
        return order

    def draw(self, info: StepInfo) -> Arch:
        if not self.options.path_sampling:
            return super().draw(info)
        rng = derived_rng(self.ctx.seed, info.phase, info.epoch, info.step)
        values = {}
        for prm in self.ctx.space.params:
            k = self.group_of[prm.name]
            pr = self.p[self._slice(k)].numpy()
            values[prm.name] = self.values[k][int(rng.choice(len(pr), p=pr / pr.sum()))]
        arch = self.ctx.space.arch(values)
        if self.options.trace and self._trace_epoch:
            self._trace_epoch["archs"].append(arch.id)
        return arch

    def loss(self, out: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, arch: Arch) -> torch.Tensor:
        if not self.options.importance_weights:
            return super().loss(out, y, idx, arch)
        per = F.cross_entropy(out, y, label_smoothing=self.ctx.cfg.label_smoothing, reduction="none")
        w = (1.0 / (self.n_data * self.q[idx])).to(per.dtype).to(per.device)
        path_w = 1.0
        for name in self.ctx.space.active(arch):
            path_w /= len(self.values[self.group_of[name]]) * self._p_of(name, arch[name])
        return (per * w).mean() * path_w

    def after_backward(self, arch: Arch, out: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> dict[str, float]:
        """Per-sample scores of this batch (running average ½ for a sample drawn again)."""
        with torch.no_grad():
            r = torch.softmax(out.float(), dim=1)
            r[torch.arange(len(y)), y] -= 1.0
            new = r.norm(dim=1).double().cpu().numpy()
        g = self.g.numpy()
        for i, v in zip(idx.tolist(), new):
            g[i] = v if g[i] == 0 else 0.5 * (g[i] + v)
        self._arch = arch
        return {}

    def clip_gradients(self) -> None:
        """Clip (the engine's rule), then score the step's path on the clipped gradients."""
        super().clip_gradients()
        arch, self._arch = self._arch, None
        if arch is None:
            return
        scores = gradient_norm_sums(choice_parameters(self.supernet, arch))
        per_value: dict[int, list[float]] = {}  # index into G -> scores of the choices that took it
        for name, v in scores.items():
            k = self.group_of[name]
            per_value.setdefault(int(self.offset[k]) + self.values[k].index(arch[name]), []).append(v)
        for j, vs in per_value.items():
            v = sum(vs) / len(vs)
            if v != 0.0:
                self.G[j] = 0.5 * (self.G[j] + v)

    def end_epoch(self, phase: int, epoch: int) -> dict[str, float]:
        """Next epoch's ``q`` and ``p`` from this epoch's scores (τ of this epoch), then
        reset the scores."""
        dist = self.ctx.dist
        drawn = (self.g > 0).double()
        flat = dist.all_reduce_sum(torch.cat([self.g, drawn]))
        g_sum, g_cnt = flat[: self.n_data], flat[self.n_data :]
        g = torch.where(g_cnt > 0, g_sum / g_cnt.clamp(min=1), torch.zeros_like(g_sum))
        tau = epoch / max(1, self.epochs)
        self.q = self.data_probs(g, tau)
        self.p = self.path_probs(self.G, tau)
        seen = float((g_cnt > 0).double().mean())
        out = {"g_mean": float(g[g_cnt > 0].mean()) if seen else 0.0, "seen_frac": seen,
               "q_max_x_N": float(self.q.max() * self.n_data)}
        if self.options.trace:
            self._write_trace(seen, g)
        self.g.zero_()
        self.G.zero_()
        return out

    def _write_trace(self, seen_frac: float, g: torch.Tensor) -> None:
        rank = self.ctx.dist.rank
        self._trace.append(json.dumps({**self._trace_epoch, "rank": rank, "seen_frac": seen_frac,
                                       "g": _sha(g.numpy()), "G": _sha(self.G.numpy())}))
        self._trace_epoch = {}
        write_text(self.ctx.run_dir / "supernet" / "pada_trace" / f"rank{rank}.jsonl", "\n".join(self._trace) + "\n")

    # -- checkpoint ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).clone() for k in _STATE_KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        for k in _STATE_KEYS:
            t = state.get(k)
            cur = getattr(self, k)
            if t is None or t.shape != cur.shape:
                raise UserError(f"PA&DA state {k!r} does not fit this run (shape {tuple(cur.shape)}; a checkpoint "
                                "of another data set, space or nasplat version)", None, "train.strategy")
            cur.copy_(t.to(cur.dtype))
