"""``pada``: PA&DA — path and data importance sampling (Lu et al., CVPR 2023).

Single-path training (one subnet per step, as ``uniform``) whose two samplers follow
the gradient-variance-minimising distributions of the paper:

* **Data.** During an epoch each training sample's importance is taken for free from
  the forward pass: ``g_i = ‖softmax(z_i) − onehot(y_i)‖₂`` (the norm of the loss
  gradient w.r.t. the logits, the paper's last-layer proxy). The next epoch's indices
  are drawn *with replacement* from ``q_i = τ·g_i/Σg + (1−τ)/N`` with
  ``τ = epoch/epochs`` (epoch 0 is the ordinary shuffled pass, τ = 0). Samples not
  drawn in an epoch keep their last value; samples never seen get the mean of the
  seen ones (the official code keeps a stale table too).
* **Path.** For every categorical choice of the space (kernel, expand, depth,
  resolution, an edge's op ... — whatever ``space.params`` lists) and each of its
  values ``o``, ``G_o`` is the mean over the epoch's steps that used ``o`` (as an
  *active* choice) of the gradient norm of the weights ``o`` used
  (:mod:`nasplat.supernet.attribution` maps choices to weights per family). At each
  epoch start ``p_o = τ·G_o/ΣG + (1−τ)/|choices|`` within each choice; a subnet is
  drawn choice by choice from these, seeded by ``derived_rng(seed, phase, epoch,
  step)``. Values not used in an epoch keep their last ``G``; values never used get
  their choice's mean.
* **Importance weights** ``1/(N·q_i)`` per sample times ``Π_c 1/(n_c·p_c(o_c))`` for
  the path make the gradient estimate unbiased; off by default because the official
  code trains with a plain mean loss (``importance_weights: true`` turns them on).

Deviations from the paper / official code, and why:

* Parameter-free choices (the official code gives skip/pool G = 0): here they are
  scored by the gradient norm of the weights their output is routed through (the whole
  active subnet in a feed-forward net), see :mod:`nasplat.supernet.attribution`, so
  e.g. a resolution choice is importance-sampled too instead of staying uniform.
* The paper's search space (NAS-Bench-201) has one op per edge with its own weights;
  here weights are shared across values (a 3×3 kernel is a transformed crop of the
  7×7), so a value's "weights" are the tensors it computes with; the unused slices get
  no gradient, so the norm is over what the value used.
* Distributed: each worker measures gradient norms on its local gradients (before the
  engine averages them) and ``g`` on its own shard; the per-epoch sums and counts are
  all-reduced (``ctx.dist``) at the epoch end, so every worker holds identical
  statistics, hence identical ``p``, ``q``, subnets and next-epoch indices.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from ...errors import UserError
from ...space import Arch
from ...supernet.attribution import ROUTES_THROUGH_ALL, choice_parameters, gradient_norms
from ._base import STRATEGIES, Phase, StepInfo, derived_rng
from .uniform import SinglePath

def _sha(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


_STATE_KEYS = ("g", "g_known", "g_sum", "g_cnt", "G", "G_known", "G_sum", "G_cnt")


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

    def __init__(self, ctx, options):  # type: ignore[no-untyped-def]
        super().__init__(ctx, options)
        self.params = ctx.space.params
        self.offset: dict[str, int] = {}
        k = 0
        for p in self.params:
            self.offset[p.name] = k
            k += len(p.choices)
        self.n_values = k
        self.n_data = len(ctx.data.train)
        f64 = dict(dtype=torch.float64)
        self.g = torch.zeros(self.n_data, **f64)
        self.g_known = torch.zeros(self.n_data, **f64)
        self.g_sum = torch.zeros(self.n_data, **f64)
        self.g_cnt = torch.zeros(self.n_data, **f64)
        self.G = torch.zeros(self.n_values, **f64)
        self.G_known = torch.zeros(self.n_values, **f64)
        self.G_sum = torch.zeros(self.n_values, **f64)
        self.G_cnt = torch.zeros(self.n_values, **f64)
        self.epochs = ctx.cfg.epochs
        self.tau = 0.0
        self.q = np.full(self.n_data, 1.0 / self.n_data)
        self.p = self._path_probs(0.0)
        self._trace: list[str] = []
        self._trace_epoch: dict[str, Any] = {}

    # -- distributions ----------------------------------------------------------------
    def _fill(self, values: torch.Tensor, known: torch.Tensor) -> np.ndarray:
        v, m = values.numpy().copy(), known.numpy() > 0
        v[~m] = v[m].mean() if m.any() else 1.0
        return v

    def _path_probs(self, tau: float) -> np.ndarray:
        p = np.empty(self.n_values)
        for prm in self.params:
            s = slice(self.offset[prm.name], self.offset[prm.name] + len(prm.choices))
            n = len(prm.choices)
            G = self._fill(self.G[s], self.G_known[s])
            total = G.sum()
            p[s] = (tau * G / total + (1 - tau) / n) if (self.options.path_sampling and total > 0) else 1.0 / n
        return p

    def _data_probs(self, tau: float) -> np.ndarray:
        if not self.options.data_sampling or tau == 0 or not (self.g_known > 0).any():
            return np.full(self.n_data, 1.0 / self.n_data)
        g = self._fill(self.g, self.g_known)
        q = tau * g / g.sum() + (1 - tau) / self.n_data
        return q / q.sum()

    def path_distribution(self, name: str) -> dict[Any, float]:
        """The current ``p`` of one choice, value -> probability."""
        prm = self.ctx.space.param(name)
        o = self.offset[name]
        return {v: float(self.p[o + i]) for i, v in enumerate(prm.choices)}

    def path_importance(self, name: str) -> dict[Any, float]:
        """The current ``G`` of one choice, value -> mean gradient norm (0 = never used)."""
        prm = self.ctx.space.param(name)
        o = self.offset[name]
        return {v: float(self.G[o + i]) for i, v in enumerate(prm.choices)}

    # -- engine hooks -------------------------------------------------------------------
    def begin_phase(self, index: int, phase: Phase) -> None:
        self.epochs = phase.epochs

    def begin_epoch(self, phase: int, epoch: int) -> None:
        self.tau = epoch / max(1, self.epochs)
        self.q = self._data_probs(self.tau)
        self.p = self._path_probs(self.tau)

    def epoch_order(self, phase: int, epoch: int, n: int) -> np.ndarray:
        if n != self.n_data:
            raise ValueError(f"epoch_order for {n} samples, the strategy holds {self.n_data}")
        if not self.options.data_sampling or self.tau == 0:
            order = super().epoch_order(phase, epoch, n)
        else:
            order = derived_rng(self.ctx.seed, 102, phase, epoch).choice(n, size=n, replace=True, p=self.q)
        if self.options.trace:
            self._trace_epoch = {"phase": phase, "epoch": epoch, "order": _sha(order), "q": _sha(self.q),
                                 "p": _sha(self.p), "archs": []}
        return order

    def draw(self, info: StepInfo) -> Arch:
        if not self.options.path_sampling:
            return super().draw(info)
        rng = derived_rng(self.ctx.seed, info.phase, info.epoch, info.step)
        values = {}
        for prm in self.params:
            o = self.offset[prm.name]
            pr = self.p[o : o + len(prm.choices)]
            values[prm.name] = prm.choices[int(rng.choice(len(prm.choices), p=pr / pr.sum()))]
        arch = self.ctx.space.arch(values)
        if self.options.trace and self._trace_epoch:
            self._trace_epoch["archs"].append(arch.id)
        return arch

    def loss(self, out: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, arch: Arch) -> torch.Tensor:
        if not self.options.importance_weights:
            return super().loss(out, y, idx, arch)
        per = F.cross_entropy(out, y, label_smoothing=self.ctx.cfg.label_smoothing, reduction="none")
        w = torch.as_tensor(1.0 / (self.n_data * self.q[idx.numpy()]), dtype=per.dtype, device=per.device)
        path_w = 1.0
        for name in self.ctx.space.active(arch):
            prm = self.ctx.space.param(name)
            path_w /= len(prm.choices) * float(self.p[self.offset[name] + prm.choices.index(arch[name])])
        return (per * w).mean() * path_w

    def after_backward(self, arch: Arch, out: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            r = torch.softmax(out.float(), dim=1)
            r[torch.arange(len(y)), y] -= 1.0
            g = r.norm(dim=1).double().cpu()
            self.g_sum.index_add_(0, idx, g)
            self.g_cnt.index_add_(0, idx, torch.ones_like(g))
        norms = gradient_norms(choice_parameters(self.supernet, arch))
        for name, v in norms.items():
            if name == ROUTES_THROUGH_ALL:
                continue
            k = self.offset[name] + self.ctx.space.param(name).choices.index(arch[name])
            self.G_sum[k] += v
            self.G_cnt[k] += 1
        return {"grad_norm": norms.get(ROUTES_THROUGH_ALL, 0.0)}

    def end_epoch(self, phase: int, epoch: int) -> dict[str, float]:
        """All-reduce the epoch's sums and counts and fold them into ``g`` and ``G``."""
        dist = self.ctx.dist
        flat = dist.all_reduce_sum(torch.cat([self.g_sum, self.g_cnt, self.G_sum, self.G_cnt]))
        nd, nv = self.n_data, self.n_values
        g_sum, g_cnt = flat[:nd], flat[nd : 2 * nd]
        G_sum, G_cnt = flat[2 * nd : 2 * nd + nv], flat[2 * nd + nv :]
        seen = g_cnt > 0
        self.g[seen] = g_sum[seen] / g_cnt[seen]
        self.g_known[seen] = 1.0
        used = G_cnt > 0
        self.G[used] = G_sum[used] / G_cnt[used]
        self.G_known[used] = 1.0
        for t in (self.g_sum, self.g_cnt, self.G_sum, self.G_cnt):
            t.zero_()
        tau_next = (epoch + 1) / max(1, self.epochs)
        q = self._data_probs(tau_next)
        if self.options.trace:
            self._write_trace(float(seen.double().mean()))
        return {"g_mean": float(self.g[self.g_known > 0].mean()) if seen.any() else 0.0,
                "seen_frac": float(seen.double().mean()),
                "q_max_x_N": float(q.max() * self.n_data)}

    def _write_trace(self, seen_frac: float) -> None:
        import json

        from ...io import write_text

        rank = self.ctx.dist.rank
        self._trace.append(json.dumps({**self._trace_epoch, "rank": rank, "seen_frac": seen_frac,
                                       "g": _sha(self.g.numpy()), "G": _sha(self.G.numpy())}))
        self._trace_epoch = {}
        write_text(self.ctx.run_dir / "supernet" / "pada_trace" / f"rank{rank}.jsonl", "\n".join(self._trace) + "\n")

    # -- checkpoint ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).clone() for k in _STATE_KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        for k in _STATE_KEYS:
            t = state[k]
            cur = getattr(self, k)
            if t.shape != cur.shape:
                raise UserError(f"PA&DA state {k!r} has shape {tuple(t.shape)}, this run needs "
                                f"{tuple(cur.shape)} (different data set or space)", None, "train.strategy")
            cur.copy_(t.to(cur.dtype))
