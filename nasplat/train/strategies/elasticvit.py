"""``elasticvit``: complexity-aware and performance-aware sampling (ElasticViT, Tang et
al., ICCV 2023; official code microsoft/Moonlit ``ElasticViT/models/model.py``,
``ElasticViT/process.py``, ``ElasticViT/flops_look_up_table/build_look_up_table.py``).

Complexity-aware sampling
    The space's MACs range is cut into FLOPs levels ``levels`` (millions of MACs, what
    ElasticViT and mobile NAS papers call MFLOPs; default the paper's 100, 200, 300, 400,
    500, 700, 900, 1200, for ``elasticvit.yaml``; a smaller space lists its own, or
    ``levels: auto`` spreads ``num_levels`` over the space). A subnet of level T has MACs
    in [T, T + bound] (default 20 M = the official 2 x ``flops_bound``). Each step the
    current level moves by -1, 0 or +1, each with probability 1/3; at the lowest level the
    moves are {0, 0, +1}, at the highest {-1, 0, 0} (:func:`walk`, every step as the
    official ``get_bank_id``), so consecutive steps never jump far in model size. Subnets
    come from per-level pools built once per space as the official look-up-table builder:
    every choice drawn uniformly, stage widths non-decreasing (a stage never narrower than
    the one before, the stem included), above the level's minimum subnet when
    ``min_archs`` gives one, kept when the MACs fall in the level (:func:`build_pools`,
    vectorised MACs), cached in ``<run>/supernet/pools.npz`` (written atomically, rebuilt
    when the space, levels or pool options change).

Performance-aware sampling
    Per level a memory bank of good subnets (``bank_size`` = 150 entries for levels
    below ``big_bank_from`` = 500 M, ``big_bank_size`` = 50 above), scored by the
    no-grad proxy -CE on the current minibatch. A subnet drawn from the pool is
    offered to the bank after its step: inserted while the bank is not full, else it
    replaces the worst entry if its score is better (:class:`MemoryBank`). All banks are
    re-scored on the first minibatch of each epoch (entries whose MACs left the level's
    range are dropped), the current level's bank every quarter epoch. With probability
    p_bank (0.2, +0.15 every 100 epochs: ``p_bank``, ``p_bank_step``,
    ``p_bank_every``) and a bank more than half full, a subnet is drawn from the bank
    with probability softmax(scores); otherwise up to ``candidates`` (5) subnets are
    drawn from the pool (one while the bank is less than half full, as in the official
    code) and the "wider and shallower" one is kept: for each candidate, MACs with its
    transformer-stage widths replaced by an anchor's minus MACs with its
    transformer-stage depths replaced by the anchor's, smallest wins (the official
    ``_importance_comparison``; the anchor is the best subnet of the lowest level's bank,
    or the space's minimum while that bank is empty or the current level is the lowest).

A step trains ``subnets_per_level`` (3) subnets of the level on the labels
(label-smoothed CE), then the level's own minimum subnet, which distils from the mean
softmax of the three with the official adaptive α-divergence (AlphaNet's
``AdaptiveLossSoft``, :func:`nasplat.train.losses.alpha_divergence`); gradients add up
before the one optimizer step, which follows adaptive gradient clipping with factor
``agc`` = 0.1 (timm's ``adaptive_clip_grad``, as the official ``process.py``; ``agc: null``
restores the engine's ``train.grad_clip``). The optimizer is AdamW as the official run
(``train.lr`` 5e-4 and ``train.weight_decay`` 0.05 unless the experiment sets them; no
decay on biases and norms); ``optimizer: sgd`` (a deviation) uses the engine's SGD
instead, which with AGC barely moves zero-initialised biases (AGC bounds a unit's
gradient by 0.1 x max(its norm, 1e-3), which AdamW's normalised steps do not feel).
Head dropout is 0 during supernet training
(the official ``set_regularization_mode(head_drop_prob=0)``). The minimum of level T is
``min_archs``' entry for T when given (the official config's table: the first entry with
T <= up_to + bound, else the last), otherwise the choice-wise minimum of the level's pool
(the largest subnet nested in every subnet of the level; choices in the space's order,
ascending values in mbv3 and vit_hybrid).

Distributed: every random draw comes from ``derived_rng(seed, ...)`` of the step, and
every score is all-reduced (mean) over the workers before it touches a bank, so all
workers hold identical banks and train identical subnets.

Deviations (deliberate): the bank score of a just-trained pool subnet is the CE of
that step's training forward (detached: the same minibatch and weights, train-mode BN,
so it equals the official extra no-grad forward) instead of a second forward;
re-scoring uses a no-grad forward with BN batch statistics, frozen running statistics.
The official training also distils the three level subnets from two external ImageNet
teachers (not applicable to a user's own data set); here those three learn from the
labels. MACs are
exact counts (``torch.utils.flop_counter``), so a level holds slightly different archs
than under the official ``compute_flops`` (which counts the depthwise V conv as one MAC
per output and adds softmax FLOPs). Works for every family (the space's ``macs_batch``,
vectorised in ``vit_hybrid`` and ``mbv3``); the width chain applies where the space
names one (``width_chain``).
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from timm.utils.agc import adaptive_clip_grad
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ...errors import UserError
from ...io import atomic_path
from ...space import Arch, SearchSpace
from ...supernet import resize
from ...ui import progress_bar, say
from ..losses import alpha_divergence, label_smoothed_ce
from ._base import STRATEGIES, Phase, StepInfo, StepOutput, Strategy, derived_rng

M = 1e6
_FIELD = "train.options"
PAPER_LEVELS = [100.0, 200.0, 300.0, 400.0, 500.0, 700.0, 900.0, 1200.0]  # MFLOPs (ElasticViT)
PAPER_BOUND = 20.0  # MFLOPs: the official 2 x flops_bound


class MinArch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    up_to: float = Field(gt=0)  # MMACs
    arch: dict[str, Any]


class ElasticViTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    levels: list[float] | Literal["auto"] = PAPER_LEVELS  # MMACs, ascending; auto: `num_levels` over the space
    num_levels: int = Field(6, ge=1, le=64)  # with levels: auto
    bound: float | None = Field(None, gt=0)  # MMACs; None: 20 (the paper) for listed levels, 0.2 x the smallest gap for auto
    pool_size: int = Field(150_000, ge=1)  # archs per level (ElasticViT: 150 000)
    pool_max_draws: int = Field(20_000_000, ge=1000)  # random archs tried before giving up
    bank_size: int = Field(150, ge=1)
    big_bank_size: int = Field(50, ge=1)
    big_bank_from: float = Field(500, gt=0)  # MMACs: levels at or above use big_bank_size
    p_bank: float = Field(0.2, ge=0, le=1)
    p_bank_step: float = Field(0.15, ge=0, le=1)
    p_bank_every: int = Field(100, ge=1)  # epochs
    candidates: int = Field(5, ge=1)
    subnets_per_level: int = Field(3, ge=1)
    rescores_per_epoch: int = Field(4, ge=0)  # current bank re-scored this often per epoch
    min_archs: list[MinArch] = []  # the official config's per-level minima; empty: each pool's choice-wise minimum
    agc: float | None = Field(0.1, gt=0)  # adaptive gradient clipping factor (official); null: train.grad_clip
    optimizer: Literal["adamw", "sgd"] = "adamw"  # official AdamW; sgd: the engine's SGD (train.momentum, nesterov)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[float] | str) -> list[float] | str:
        if isinstance(v, str):
            return v
        if not v:
            raise ValueError("levels must not be empty")
        if any(b <= a for a, b in zip(v, v[1:])) or v[0] <= 0:
            raise ValueError(f"levels must be positive and strictly ascending, got {v}")
        return [float(x) for x in v]


# -- the level walk ------------------------------------------------------------------
def walk(level: int, num_levels: int, rng: np.random.Generator) -> int:
    """One step of the adjacent level walk: -1/0/+1 uniformly; {0,0,+1} at the lowest
    level and {-1,0,0} at the highest (with one level: stay)."""
    if num_levels <= 1:
        return 0
    if level <= 0:
        moves = (0, 0, 1)
    elif level >= num_levels - 1:
        moves = (-1, 0, 0)
    else:
        moves = (-1, 0, 1)
    return level + moves[int(rng.integers(3))]


# -- memory banks ----------------------------------------------------------------------
class MemoryBank:
    """Up to ``capacity`` (code, score) entries; higher score = better (score = -CE)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.codes: list[tuple[int, ...]] = []
        self.scores: list[float] = []

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def half_full(self) -> bool:
        """More than half full (the official ``len(bank) > size // 2``)."""
        return len(self.codes) > self.capacity // 2

    def offer(self, code: tuple[int, ...], score: float) -> bool:
        """Insert while not full, else replace the worst if ``score`` is better; an entry
        already in the bank gets the new score. Returns whether the bank changed."""
        code = tuple(int(c) for c in code)
        if code in self.codes:
            self.scores[self.codes.index(code)] = float(score)
            return True
        if len(self.codes) < self.capacity:
            self.codes.append(code)
            self.scores.append(float(score))
            return True
        worst = int(np.argmin(self.scores))
        if self.scores[worst] < score:
            self.codes[worst], self.scores[worst] = code, float(score)
            return True
        return False

    def draw(self, rng: np.random.Generator) -> tuple[int, ...]:
        """An entry drawn with probability softmax(scores)."""
        s = np.asarray(self.scores, dtype=np.float64)
        p = np.exp(s - s.max())
        return self.codes[int(rng.choice(len(s), p=p / p.sum()))]

    def best(self) -> tuple[int, ...]:
        return self.codes[int(np.argmax(self.scores))]

    def keep(self, mask: list[bool]) -> None:
        self.codes = [c for c, k in zip(self.codes, mask) if k]
        self.scores = [s for s, k in zip(self.scores, mask) if k]

    def state(self) -> list[list[Any]]:
        return [[list(c), s] for c, s in zip(self.codes, self.scores)]

    def load(self, entries: list[list[Any]]) -> None:
        self.codes = [tuple(int(x) for x in c) for c, _ in entries][: self.capacity]
        self.scores = [float(s) for _, s in entries][: self.capacity]


# -- pools -------------------------------------------------------------------------------
def macs_batch(space: SearchSpace, codes: np.ndarray) -> np.ndarray:
    """MACs of encoded archs (the space's batched cost model), int64."""
    return np.asarray(space.macs_batch(np.asarray(codes, dtype=np.int64)), dtype=np.int64)


def width_chain(space: SearchSpace) -> list[int]:
    """Indices of the width choices that must not decrease (the space's ``width_chain``
    names them in network order; none for spaces without one)."""
    fn = getattr(space, "width_chain", None)
    names = [p.name for p in space.params]
    return [names.index(n) for n in fn()] if fn is not None else []


def draw_codes(space: SearchSpace, rng: np.random.Generator, n: int, lower: np.ndarray | None = None) -> np.ndarray:
    """Up to ``n`` random encoded archs as the official look-up-table builder draws them:
    every choice uniform over its values (at or above ``lower``'s, a level's minimum
    subnet), each width of :func:`width_chain` uniform over the values not below the
    previous one's (rows where no value fits are dropped)."""
    sizes = np.array([len(p.choices) for p in space.params])
    lo = np.zeros_like(sizes) if lower is None else np.asarray(lower, dtype=np.int64)
    out = lo + (rng.random((n, len(sizes))) * (sizes - lo)).astype(np.int64)
    chain = width_chain(space)
    keep = np.ones(n, dtype=bool)
    for a, b in zip(chain, chain[1:]):
        values_a = np.asarray(space.params[a].choices, dtype=np.float64)
        values_b = np.asarray(space.params[b].choices, dtype=np.float64)
        first = np.maximum(np.searchsorted(values_b, values_a[out[:, a]], side="left"), lo[b])
        keep &= first < sizes[b]
        out[:, b] = np.minimum(first + (rng.random(n) * np.maximum(sizes[b] - first, 1)).astype(np.int64),
                               sizes[b] - 1)
    return out[keep]


def level_ranges(levels: list[float], bound: float) -> list[tuple[float, float]]:
    """[T, T + bound] in MACs per level."""
    return [(t * M, (t + bound) * M) for t in levels]


def auto_levels(space: SearchSpace, num_levels: int, seed: int) -> list[float]:
    """``num_levels`` levels evenly spread between the 1st and 99th percentile of the
    MACs of random archs (MMACs, rounded to 3 significant digits)."""
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 4242])
    macs = macs_batch(space, draw_codes(space, rng, 20_000)) / M
    lo, hi = np.quantile(macs, [0.01, 0.99])
    if num_levels == 1:
        vals = [lo]
    else:
        gap = (hi - lo) / num_levels
        vals = [lo + gap * i for i in range(num_levels)]
    return [float(f"{v:.3g}") for v in vals]


def default_bound(levels: list[float]) -> float:
    gaps = [b - a for a, b in zip(levels, levels[1:])]
    return 0.2 * (min(gaps) if gaps else levels[0])


def build_pools(space: SearchSpace, levels: list[float], bound: float, pool_size: int, seed: int,
                max_draws: int = 20_000_000, batch: int | None = None, show: bool = True,
                lower: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Per level up to ``pool_size`` distinct networks (canonical codes) with MACs in
    [T, T + bound], from random draws (:func:`draw_codes`, at or above ``lower[i]`` for
    level i when given), deterministic in ``seed``."""
    batch = batch or 20_000
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 9090])
    ranges = level_ranges(levels, bound)
    chunks: list[list[np.ndarray]] = [[] for _ in levels]
    raw = np.zeros(len(levels), dtype=np.int64)  # rows collected (with duplicates)
    done = np.zeros(len(levels), dtype=bool)
    drawn = 0
    keys = [None if lower is None else tuple(int(c) for c in lower[i]) for i in range(len(levels))]
    with progress_bar("elasticvit pools", len(levels), show) as bar:
        while drawn < max_draws and not done.all():
            drawn += batch
            batches = {}  # one batch of draws per distinct lower bound still needed
            for i, key in enumerate(keys):
                if not done[i] and key not in batches:
                    codes = space.canonical(draw_codes(space, rng, batch, None if key is None else np.array(key)))
                    batches[key] = (codes, macs_batch(space, codes))
            for i, (lo, hi) in enumerate(ranges):
                if done[i]:
                    continue
                codes, macs = batches[keys[i]]
                sel = codes[(macs >= lo) & (macs <= hi)]
                if not len(sel):
                    continue
                chunks[i].append(sel)
                raw[i] += len(sel)
                if raw[i] >= pool_size:  # deduplicate only when there may be enough
                    merged = np.unique(np.concatenate(chunks[i]), axis=0)
                    chunks[i], raw[i] = [merged], len(merged)
                    if len(merged) >= pool_size:
                        done[i] = True
                        bar.advance(1)
    found = []
    for i, f in enumerate(chunks):
        if f:
            merged = np.unique(np.concatenate(f), axis=0)
            if len(merged) > pool_size:
                merged = merged[np.sort(rng.choice(len(merged), pool_size, replace=False))]
            f = [merged]
        found.append(f)
    pools = []
    for i, (t, f) in enumerate(zip(levels, found)):
        if not f:
            raise UserError(f"no subnet of the space has MACs in [{t:g}, {t + bound:g}] M "
                            f"({drawn} random archs tried); change the levels or the bound", None,
                            f"{_FIELD}.levels")
        pools.append(f[0])  # np.unique sorts rows: a canonical order
    return pools


def save_pools(path: Path, pools: list[np.ndarray], meta: dict[str, Any]) -> None:
    arrays = {f"level_{i}": p.astype(np.int16 if p.max() < 32767 else np.int64) for i, p in enumerate(pools)}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_pools(path: Path, meta: dict[str, Any]) -> list[np.ndarray] | None:
    """The cached pools if ``path`` holds pools built with the same ``meta``."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["meta"])) != json.loads(json.dumps(meta, sort_keys=True)):
                return None
            return [z[f"level_{i}"].astype(np.int64) for i in range(len(meta["levels"]))]
    except (OSError, ValueError, KeyError):
        return None


# -- the "wider and shallower" preference -------------------------------------------------
def preference_names(space: SearchSpace) -> tuple[list[int], list[int]]:
    """Indices of the width and depth choices the preference compares."""
    names = [p.name for p in space.params]
    fn = getattr(space, "preference_names", None)
    if fn is not None:
        widths, depths = fn()
    else:
        depths = [n for n in names if re.fullmatch(r"d\d+", n)]
        widths = [n for n in names if re.match(r"w\d", n)] or [n for n in names if re.match(r"e\d", n)]
    return [names.index(n) for n in widths], [names.index(n) for n in depths]


def preference_scores(space: SearchSpace, cands: np.ndarray, anchor: np.ndarray,
                      widths: list[int], depths: list[int]) -> np.ndarray:
    """Official ``_importance_comparison``: MACs with the anchor's widths minus MACs with
    the anchor's depths; the smallest is the widest and shallowest candidate."""
    a_w, a_d = cands.copy(), cands.copy()
    a_w[:, widths] = anchor[widths]
    a_d[:, depths] = anchor[depths]
    return macs_batch(space, a_w) - macs_batch(space, a_d)


@contextmanager
def scoring_mode(model: nn.Module) -> Iterator[None]:
    """No grad, BN on batch statistics without touching running stats, dropout off."""
    saved = []
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            saved.append((m, m.momentum, m.training))
            m.momentum = 0.0
            m.train()
        elif isinstance(m, nn.Dropout):
            saved.append((m, None, m.training))
            m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mom, tr in saved:
            if isinstance(m, _BatchNorm):
                m.momentum = mom
            m.train(tr)


# -- the strategy -----------------------------------------------------------------------------
@STRATEGIES.register("elasticvit")
class ElasticViT(Strategy):
    Options = ElasticViTOptions
    options: ElasticViTOptions

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        o = self.options
        space = ctx.space
        auto = o.levels == "auto"
        self.levels: list[float] = auto_levels(space, o.num_levels, ctx.seed) if auto else list(o.levels)
        self.bound: float = o.bound if o.bound is not None else (default_bound(self.levels) if auto else PAPER_BOUND)
        self.ranges = level_ranges(self.levels, self.bound)
        self.banks = [MemoryBank(o.bank_size if t < o.big_bank_from else o.big_bank_size) for t in self.levels]
        self.level = 0
        self.pools: list[np.ndarray] | None = None
        self.widths, self.depths = preference_names(space)
        self.given_min = [space.encode(a) for a in self._min_archs()] if o.min_archs else None
        self.min_codes: list[np.ndarray] = list(self.given_min or [])  # per level; from the pools when not given

    @classmethod
    def train_defaults(cls, options: BaseModel, space: Any) -> dict[str, Any]:
        """The official AdamW's learning rate and weight decay (config ``final_3min_space.yaml``)."""
        return {"lr": 5e-4, "weight_decay": 0.05} if getattr(options, "optimizer", "adamw") == "adamw" else {}

    def make_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        """AdamW as the official training (no decay on biases and norms, as timm's
        ``create_optimizer``); ``optimizer: sgd`` keeps the engine's SGD."""
        if self.options.optimizer == "sgd":
            return super().make_optimizer(phase)
        return torch.optim.AdamW(self.parameter_groups(), lr=phase.lr)

    def build_model(self) -> nn.Module:
        """The supernet with dropout off: the official supernet training sets the head
        dropout to 0 (``set_regularization_mode(head_drop_prob=0)``)."""
        net = super().build_model()
        for m in net.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        return net

    # -- setup --------------------------------------------------------------------------
    def _min_archs(self) -> list[Arch]:
        """Per level, ``min_archs``' entry: the first with T <= up_to + bound, else the last."""
        space = self.ctx.space
        entries = sorted(enumerate(self.options.min_archs), key=lambda e: e[1].up_to)
        out = []
        for t in self.levels:
            j, e = next(((j, e) for j, e in entries if t <= e.up_to + self.bound), entries[-1])
            try:
                out.append(space.arch(e.arch))
            except UserError as err:
                raise UserError(err.message, None, f"{_FIELD}.min_archs.{j}.{err.field}") from None
        return out

    def pool_meta(self) -> dict[str, Any]:
        o = self.options
        return {"space_hash": self.ctx.space.hash(), "levels": self.levels, "bound": self.bound,
                "pool_size": o.pool_size, "max_draws": o.pool_max_draws, "seed": self.ctx.seed,
                "min_archs": [m.model_dump() for m in o.min_archs], "version": 2}

    @property
    def pools_path(self) -> Path:
        return Path(self.ctx.run_dir) / "supernet" / "pools.npz"

    def ensure_pools(self) -> list[np.ndarray]:
        if self.pools is None:
            meta = self.pool_meta()
            pools = load_pools(self.pools_path, meta)
            if pools is None:
                main = self.ctx.dist.is_main
                say(f"elasticvit: building arch pools for levels {self.levels} M MACs (bound {self.bound:g} M)", main)
                pools = build_pools(self.ctx.space, self.levels, self.bound, self.options.pool_size, self.ctx.seed,
                                    self.options.pool_max_draws, show=main, lower=self.given_min)
                if main:
                    save_pools(self.pools_path, pools, meta)
            self.pools = pools
            if self.given_min is None:  # the largest subnet nested in every subnet of the level
                self.min_codes = [pool.min(axis=0) for pool in pools]
        return self.pools

    def phases(self) -> list[Phase]:
        c = self.ctx.cfg
        return [Phase("elasticvit", c.epochs, c.lr, c.warmup_epochs,
                      f"{len(self.levels)} FLOPs levels {self.levels} M MACs",
                      self.options.subnets_per_level + 1)]

    def begin_phase(self, index: int, phase: Phase) -> None:
        self.ensure_pools()

    def p_bank(self, epoch: int) -> float:
        o = self.options
        return min(1.0, o.p_bank + o.p_bank_step * (epoch // o.p_bank_every))

    def clip_gradients(self) -> None:
        """Adaptive gradient clipping (official: ``adaptive_clip_grad(params, 0.1)``)."""
        if self.options.agc is None:
            return super().clip_gradients()
        adaptive_clip_grad([p for p in self.model.parameters() if p.grad is not None], self.options.agc)

    # -- scoring ---------------------------------------------------------------------------
    def _forward(self, code, x: torch.Tensor) -> torch.Tensor:
        space = self.ctx.space
        arch = space.decode(code)
        self.supernet.set_active(arch)
        return self.model(resize(x, space.resolution(arch)))

    def rescore(self, levels: list[int], x: torch.Tensor, y: torch.Tensor, drop_out_of_range: bool) -> None:
        """Re-score the banks of ``levels`` on (x, y); scores are all-reduced (mean)."""
        space = self.ctx.space
        for li in levels:
            bank = self.banks[li]
            if drop_out_of_range and len(bank):
                macs = macs_batch(space, np.array(bank.codes, dtype=np.int64))
                lo, hi = self.ranges[li]
                bank.keep(list((macs >= lo) & (macs <= hi)))
            if not len(bank):
                continue
            scores = torch.empty(len(bank), dtype=torch.float64, device=self.ctx.device)
            with scoring_mode(self.model):
                for j, code in enumerate(bank.codes):
                    scores[j] = -float(F.cross_entropy(self._forward(code, x), y))
            self.ctx.dist.all_reduce_mean(scores)
            bank.scores = [float(s) for s in scores]

    # -- sampling --------------------------------------------------------------------------
    def anchor(self) -> np.ndarray:
        """The best subnet of the lowest level's bank; the space's minimum at the lowest
        level or while that bank is empty (official ``arch_sampling(mode='min')``)."""
        if self.level > 0 and len(self.banks[0]):
            return np.array(self.banks[0].best(), dtype=np.int64)
        return self.ctx.space.encode(self.ctx.space.min_arch())

    def draw(self, rng: np.random.Generator, epoch: int) -> tuple[np.ndarray, bool]:
        """One subnet of the current level: (code, drawn from the bank)."""
        bank, pool = self.banks[self.level], self.ensure_pools()[self.level]
        if rng.random() < self.p_bank(epoch) and bank.half_full:
            return np.array(bank.draw(rng), dtype=np.int64), True
        n = 1 if len(bank) < bank.capacity // 2 else self.options.candidates
        cands = pool[rng.integers(len(pool), size=n)]
        if n == 1:
            return cands[0], False
        diffs = preference_scores(self.ctx.space, cands, self.anchor(), self.widths, self.depths)
        return cands[int(np.argmin(diffs))], False

    # -- the step ----------------------------------------------------------------------------
    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, info: StepInfo) -> StepOutput:
        ctx, space, net = self.ctx, self.ctx.space, self.supernet
        self.ensure_pools()
        steps = max(1, len(ctx.data.train) // (x.shape[0] * ctx.dist.world_size))
        every = max(1, steps // self.options.rescores_per_epoch) if self.options.rescores_per_epoch else 0
        if info.step == 0:
            self.rescore(list(range(len(self.levels))), x, y, drop_out_of_range=True)
        rng = derived_rng(ctx.seed, 0xE7A5, info.phase, info.epoch, info.step)
        self.level = walk(self.level, len(self.levels), rng)
        if every and info.step > 0 and info.step % every == 0:
            self.rescore([self.level], x, y, drop_out_of_range=False)

        archs: list[Arch] = []
        probs, total, offered = [], 0.0, []
        for _ in range(self.options.subnets_per_level):
            code, from_bank = self.draw(rng, info.epoch)
            arch = space.decode(code)
            net.set_active(arch)
            out = net(resize(x, space.resolution(arch)))
            loss = label_smoothed_ce(out, y, ctx.cfg.label_smoothing)
            loss.backward()
            total += loss.item()
            probs.append(torch.softmax(out.detach(), dim=1))
            archs.append(arch)
            if not from_bank:
                offered.append((tuple(int(c) for c in code), -float(F.cross_entropy(out.detach(), y))))
        if offered:
            scores = ctx.dist.all_reduce_mean(torch.tensor([s for _, s in offered], dtype=torch.float64,
                                                             device=ctx.device))
            for (code, _), s in zip(offered, scores.tolist()):
                self.banks[self.level].offer(code, s)

        soft = torch.stack(probs).mean(0)  # the level's mean softmax
        arch = space.decode(self.min_codes[self.level])
        net.set_active(arch)
        loss = alpha_divergence(net(resize(x, space.resolution(arch))), soft)
        loss.backward()
        total += loss.item()
        archs.append(arch)
        return StepOutput(total / len(archs), archs, None,
                          {"level": float(self.level), "bank": float(len(self.banks[self.level]))})

    def end_epoch(self, phase: int, epoch: int) -> dict[str, float]:
        filled = sum(len(b) for b in self.banks)
        return {"level": float(self.level), "bank_entries": float(filled), "p_bank": self.p_bank(epoch)}

    # -- resume -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"level": self.level, "levels": self.levels, "banks": [b.state() for b in self.banks]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.level = min(int(state.get("level", 0)), len(self.levels) - 1)
        if [float(t) for t in state.get("levels", [])] == self.levels:
            for bank, entries in zip(self.banks, state.get("banks", [])):
                bank.load(entries)
