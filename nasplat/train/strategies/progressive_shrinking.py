"""``progressive_shrinking`` (Once-for-All, Cai et al. 2020) for ``mbv3`` spaces.

Phases, each starting from the previous one's weights (docs/methods/ofa.md):

=========  =======  ========  =========  ===============  =====================
phase      kernel   expand    depth      subnets / step   OFA epochs, base lr
=========  =======  ========  =========  ===============  =====================
teacher    max      max       max        1                180, 2.6 (full net)
kernel     all      max       max        1                120 + 5, 0.96
depth/1    all      max       2 largest  2                25, 0.08
depth/2    all      max       all        2                120 + 5, 0.24
expand/1   all      2 largest all        4                25, 0.08
expand/2   all      all       all        4                120 + 5, 0.24
=========  =======  ========  =========  ===============  =====================

(OFA's learning rates for 32 GPUs × 64 images; its code writes them per GPU as
3e-2, 2.5e-3, 7.5e-3, ...). Resolution is elastic in every phase: one resolution
per batch, drawn from the space's list, the same on every worker.

Per step the subnets are drawn with ``derived_rng(seed, phase, epoch, step, j)``
inside the phase's restriction (taken from the space's own choice lists); each
subnet's loss is ``label-smoothed CE + kd_ratio · CE(soft targets of the teacher)``
and its gradients add up before one optimizer step. The teacher is the full network:
either a frozen copy of the supernet taken when the teacher phase ends, or the
checkpoint ``train.options.teacher`` (a nasplat checkpoint of the space or an official
OFA one, e.g. OFA's ``ofa_D4_E6_K7``), which replaces the teacher phase (it is then
skipped unless ``phases.teacher.epochs`` says otherwise). As in OFA (its teacher is
built with ``dropout_rate=0``) the teacher runs with dropout 0, in train mode
(batch-statistics BN) under ``no_grad``; it is checkpointed with the strategy state.
``kd_ratio > 0`` with neither a teacher phase nor a teacher checkpoint is refused:
distilling from a randomly initialised network is never what OFA does.
SGD Nesterov, weight decay on every weight but BN and biases (OFA's
``no_decay_keys="bn#bias"``: the kernel-transform matrices are decayed too), linear
warm-up + cosine per iteration, restarted per phase. ``train.init: CKPT`` starts
the run (or, with earlier phases skipped, any phase) from trained weights, as OFA's
phases start from the previous phase's checkpoint.
At the start of each expand phase the middle channels are sorted by importance
(:mod:`nasplat.supernet.sorting`) before the phase's optimizer is created.

Schedule defaults: ``train.epochs`` is the total over all phases, split in OFA's
ratios 180 : 125 : 25 : 125 : 25 : 125 (the "+5" warm-up epochs keep their share of
their phase); ``train.lr`` is the teacher phase's learning rate and the others keep
OFA's ratios to it (2.6 : 0.96 : 0.08 : 0.24 : 0.08 : 0.24); the teacher phase warms
up for ``train.warmup_epochs``. Every figure can be set per phase in
``train.options.phases``; ``epochs: 0`` skips a phase.

Deviations from OFA, with reasons:
- OFA ships no teacher-training recipe (it downloads a pretrained full net); the
  teacher phase here trains the full network with label-smoothed CE at elastic
  resolution so the whole method is one command (``options.teacher`` follows OFA).
- Warm-up rises from 0; OFA's rises from its per-GPU base lr to the lr scaled by the
  GPU count (lr/32 -> lr with its 32 GPUs), nearly the same at its scale.
- Options off by default: ``se_bands`` sorts the SE hidden channels within bands too
  (keeps every trained width's function, see :mod:`nasplat.supernet.sorting`);
  ``expand_min_subnet`` also trains the phase's smallest subnet every step of the
  expand phases (the smallest subnets are rarely drawn at random; measured in
  ``bench/ofa_vs_scratch``).
"""
from __future__ import annotations

import copy
import re
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ...errors import UserError
from ...space import Arch
from ...supernet import resize
from ...supernet.sorting import sort_middle_channels
from ...ui import say
from ..losses import label_smoothed_ce, soft_target_ce
from ._base import STRATEGIES, Phase, StepInfo, StepOutput, Strategy, derived_rng

PhaseName = Literal["teacher", "kernel", "depth/1", "depth/2", "expand/1", "expand/2"]

# name, OFA epochs, OFA warm-up epochs, OFA lr (32 GPUs), subnets per step,
# how many of the largest choices are open: kernel, depth, expand (0 = all)
OFA_SCHEDULE: list[tuple[str, int, int, float, int, int, int, int]] = [
    ("teacher", 180, 0, 2.60, 1, 1, 1, 1),
    ("kernel", 120, 5, 0.96, 1, 0, 1, 1),
    ("depth/1", 25, 0, 0.08, 2, 0, 2, 1),
    ("depth/2", 120, 5, 0.24, 2, 0, 0, 1),
    ("expand/1", 25, 0, 0.08, 4, 0, 0, 2),
    ("expand/2", 120, 5, 0.24, 4, 0, 0, 0),
]
_TOTAL = sum(e + w for _, e, w, *_ in OFA_SCHEDULE)
_KINDS = {"kernel": re.compile(r"^k\d+_\d+$"), "depth": re.compile(r"^d\d+$"),
          "expand": re.compile(r"^e\d+_\d+$"), "resolution": re.compile(r"^r$")}
_RES_KEY = 0x5253  # separates the resolution draw from the subnet draws


class PhaseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: int | None = Field(None, ge=0)  # 0 skips the phase
    lr: float | None = Field(None, gt=0)
    warmup_epochs: float | None = Field(None, ge=0)
    subnets: int | None = Field(None, ge=1)  # subnets per step


class ProgressiveShrinkingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    phases: dict[PhaseName, PhaseOptions] = {}
    kd_ratio: float = Field(1.0, ge=0)  # OFA's default
    teacher: str | None = None  # full-net checkpoint (nasplat or OFA) instead of the teacher phase
    sort_channels: bool = True  # width importance sorting at each expand phase start
    se_bands: bool = False  # not OFA's: keep the trained SE widths nested when sorting
    expand_min_subnet: bool = False  # not OFA's: also train the smallest subnet each expand step
    channels_last: bool = True  # NHWC activations/weights: ~2x faster depthwise convs on CPU

    @model_validator(mode="after")
    def _teacher_exists(self) -> "ProgressiveShrinkingOptions":
        t = self.phases.get("teacher")
        if self.kd_ratio > 0 and self.teacher is None and t is not None and t.epochs == 0:
            raise ValueError("kd_ratio > 0 distils from a teacher, but the teacher phase is skipped and no "
                             "teacher checkpoint is given: set teacher: CKPT, keep the teacher phase or set "
                             "kd_ratio: 0")
        return self


def choice_kind(name: str) -> str:
    for kind, pat in _KINDS.items():
        if pat.match(name):
            return kind
    return "other"


@STRATEGIES.register("progressive_shrinking")
class ProgressiveShrinking(Strategy):
    Options = ProgressiveShrinkingOptions
    options: ProgressiveShrinkingOptions

    def __init__(self, ctx, options):
        super().__init__(ctx, options)
        self.teacher: nn.Module | None = None
        self.teacher_path = None
        if self.options.teacher is not None:
            self.teacher_path = ctx.base_dir / self.options.teacher
            if not self.teacher_path.is_file():
                raise UserError("teacher checkpoint not found", self.teacher_path, "train.options.teacher")
        self.sorted_phases: list[str] = []  # expand phases whose channels are sorted
        self._phases = self._build_phases()
        self._current: Phase | None = None
        self._allowed: dict[str, tuple] = {}

    @classmethod
    def train_defaults(cls, options: BaseModel, space: Any) -> dict[str, Any]:
        """OFA's optimiser settings (``train_ofa_net.py``) for the ``train:`` fields the
        experiment leaves unset."""
        return {"momentum": 0.9, "nesterov": True, "weight_decay": 3e-5, "label_smoothing": 0.1,
                "grad_clip": None}

    def build_model(self) -> nn.Module:
        model = super().build_model()
        return model.to(memory_format=torch.channels_last) if self.options.channels_last else model

    # -- schedule -------------------------------------------------------------------
    def _build_phases(self) -> list[Phase]:
        c = self.ctx.cfg
        teacher_lr = OFA_SCHEDULE[0][3]
        phases = []
        for name, ep, wu, lr, subnets, ko, do, eo in OFA_SCHEDULE:
            o = self.options.phases.get(name, PhaseOptions())  # type: ignore[call-overload]
            epochs = o.epochs if o.epochs is not None else max(1, round(c.epochs * (ep + wu) / _TOTAL))
            if name == "teacher" and o.epochs is None and self.options.teacher is not None:
                epochs = 0  # the teacher checkpoint replaces the teacher phase
            if o.warmup_epochs is not None:
                warm = o.warmup_epochs
            elif name == "teacher":
                warm = c.warmup_epochs
            else:
                warm = epochs * wu / (ep + wu)
            phase_lr = o.lr if o.lr is not None else c.lr * lr / teacher_lr
            if epochs == 0:
                continue
            phase = Phase(name, epochs, phase_lr, min(warm, float(epochs)), "", o.subnets or subnets)
            phase.restriction = self._describe(self._allowed_choices(name))
            phases.append(phase)
        return phases

    def phases(self) -> list[Phase]:
        return self._phases

    def _allowed_choices(self, phase_name: str) -> dict[str, tuple]:
        """Per choice of the space, the values this phase may draw (OFA's order:
        the largest value first opens up to the n largest)."""
        row = next(r for r in OFA_SCHEDULE if r[0] == phase_name)
        open_n = {"kernel": row[5], "depth": row[6], "expand": row[7], "resolution": 0,
                  "other": 0 if phase_name == "expand/2" else 1}
        out = {}
        for p in self.ctx.space.params:
            n = open_n[choice_kind(p.name)]
            vals = tuple(sorted(p.choices, reverse=True))
            out[p.name] = vals if n == 0 else vals[:n]
        return out

    def _describe(self, allowed: dict[str, tuple]) -> str:
        parts = []
        for kind in ("kernel", "expand", "depth", "resolution", "other"):
            vals = sorted({v for n, vs in allowed.items() if choice_kind(n) == kind for v in vs})
            if vals:
                parts.append(f"{kind} {{{','.join(str(v) for v in vals)}}}")
        return ", ".join(parts)

    # -- hooks ------------------------------------------------------------------------
    def begin_phase(self, index: int, phase: Phase) -> None:
        self._current = phase
        self._allowed = self._allowed_choices(phase.name)
        if phase.name != "teacher" and self.teacher is None and self.options.kd_ratio > 0:
            self.teacher = self._make_teacher()
        if (phase.name.startswith("expand") and self.options.sort_channels
                and phase.name not in self.sorted_phases):
            # widths trained so far = the expand choices the previous phase opened
            prev = self._phases[index - 1].name if index > 0 else "teacher"
            trained = next(r[7] for r in OFA_SCHEDULE if r[0] == prev) or 1_000
            n = sort_middle_channels(self.supernet, trained, self.options.se_bands)
            self.sorted_phases.append(phase.name)
            say(f"  sorted the middle channels of {n} blocks by importance "
                f"(keeping the trained widths nested)", self.ctx.dist.is_main)

    def _make_teacher(self) -> nn.Module:
        """The full network, frozen, with dropout 0 (OFA's teacher: ``dropout_rate=0``):
        the teacher checkpoint's weights when given, else the supernet's current ones."""
        teacher = copy.deepcopy(self.model)
        if self.teacher_path is not None:
            from ...supernet.ofa_convert import load_weights_into

            load_weights_into(teacher, self.ctx.space, self.teacher_path, "train.options.teacher")
        teacher.set_active(self.ctx.space.max_arch())
        teacher.requires_grad_(False)
        for m in teacher.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.p = 0.0
        return teacher.train()

    def parameter_groups(self) -> list[dict[str, Any]]:
        """OFA's groups: weight decay on every weight tensor (the kernel-transform
        matrices included), none on BN parameters and biases (``no_decay_keys='bn#bias'``)."""
        decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.requires_grad and p.ndim <= 1]
        return [{"params": decay, "weight_decay": self.ctx.cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0}]

    def sample(self, info: StepInfo, j: int, resolution: int) -> Arch:
        """Subnet ``j`` of a step, drawn within the phase's restriction."""
        rng = derived_rng(self.ctx.seed, info.phase, info.epoch, info.step, j)
        values = {}
        for p in self.ctx.space.params:
            vals = self._allowed[p.name]
            values[p.name] = vals[int(rng.integers(len(vals)))]
        if "r" in values:
            values["r"] = resolution
        return self.ctx.space.arch(values)

    def smallest(self, resolution: int) -> Arch:
        """The smallest subnet the current phase allows, at ``resolution``."""
        values = {name: min(vals) for name, vals in self._allowed.items()}
        if "r" in values:
            values["r"] = resolution
        return self.ctx.space.arch(values)

    def step_archs(self, info: StepInfo, resolution: int) -> list[Arch]:
        """The subnets of one step: the phase's random draws (and, with
        ``expand_min_subnet`` in an expand phase, the smallest subnet too)."""
        assert self._current is not None, "begin_phase was not called"
        archs = [self.sample(info, j, resolution) for j in range(self._current.subnets_per_step)]
        if self.options.expand_min_subnet and self._current.name.startswith("expand"):
            archs.append(self.smallest(resolution))
        return archs

    def resolution(self, info: StepInfo) -> int:
        res = self.ctx.space.resolutions()
        rng = derived_rng(self.ctx.seed, _RES_KEY, info.phase, info.epoch, info.step)
        return int(res[int(rng.integers(len(res)))])

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, info: StepInfo) -> StepOutput:
        assert self._current is not None, "begin_phase was not called"
        net, smoothing = self.supernet, self.ctx.cfg.label_smoothing
        r = self.resolution(info)
        xr = resize(x, r)
        if self.options.channels_last:
            xr = xr.contiguous(memory_format=torch.channels_last)
        soft = None
        if self.teacher is not None and self._current.name != "teacher":
            self.teacher.train()
            with torch.no_grad():
                soft = torch.softmax(self.teacher(xr), dim=1)
        archs = self.step_archs(info, r)
        total = 0.0
        for arch in archs:
            net.set_active(arch)
            out = net(xr)
            loss = label_smoothed_ce(out, y, smoothing)
            if soft is not None:
                loss = loss + self.options.kd_ratio * soft_target_ce(out, soft)
            loss.backward()
            total += float(loss.detach())
        net.set_active(self.ctx.space.max_arch())
        return StepOutput(total / len(archs), archs, r)

    def finish(self) -> None:
        self.supernet.set_active(self.ctx.space.max_arch())

    # -- checkpointed state ----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"sorted_phases": list(self.sorted_phases)}
        if self.teacher is not None:
            state["teacher"] = self.teacher.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sorted_phases = list(state.get("sorted_phases", []))
        if "teacher" in state:
            self.teacher = self._make_teacher()
            self.teacher.load_state_dict(state["teacher"])
        else:
            self.teacher = None
