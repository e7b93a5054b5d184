"""Which weights does each choice of an arch use? (PA&DA's path importance.)

PA&DA scores a choice value by the gradient norms of the weights that value used in a
step. In a weight-sharing supernet that mapping is family-specific, so each family
registers one function::

    @CHOICE_PARAMETERS.register("mbv3")
    def _mbv3(net, arch) -> dict[str, list[torch.Tensor]]: ...

returning, for each *active* choice name of ``arch``, the parameter tensors that the
choice's current value computes with. Sliced (elastic) weights are listed whole: the
parts a subnet does not use receive no gradient, so the norm of the whole tensor's
gradient is the norm over the used slice.

Parameter-free choices (``none``, skip, pooling, the input resolution) map to no
tensors and score 0, as in the official code (ShunLu91/PA-DA
``nasbench201/train_panda_201.py``: only the conv ops get a gradient norm), so they are
drawn only through the uniform floor ``(1 - τ)/n`` of ``p``.

Shared distributions. The official NAS-Bench-201 code keeps *one* op distribution for
every edge of the cell. A family that has such groups registers them::

    @CHOICE_GROUPS.register("darts_cell")
    def _groups(space) -> list[list[str]]: ...  # choice names sharing one distribution

Choices no group names get a distribution of their own (every categorical choice of an
mbv3 or vit_hybrid space: PA&DA's generalisation beyond cell spaces).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from ..registry import Registry
from ..space import Arch, SearchSpace

if TYPE_CHECKING:
    from ._base import Supernet

ChoiceParameters = Callable[["Supernet", Arch], dict[str, list[torch.Tensor]]]
ChoiceGroups = Callable[[SearchSpace], list[list[str]]]

CHOICE_PARAMETERS: Registry[ChoiceParameters] = Registry("choice attribution")
CHOICE_GROUPS: Registry[ChoiceGroups] = Registry("choice groups")


def choice_parameters(net: Supernet, arch: Arch) -> dict[str, list[torch.Tensor]]:
    """Per active choice of ``arch``: the tensors its value computed with (``[]`` for a
    parameter-free value or a family without a registered mapping)."""
    family = net.space.family
    mapped = CHOICE_PARAMETERS.get(family)(net, arch) if family in CHOICE_PARAMETERS else {}
    return {name: list(mapped.get(name, [])) for name in sorted(net.space.active(arch))}


def choice_groups(space: SearchSpace) -> list[list[str]]:
    """The space's choices partitioned into groups that share one distribution, in
    ``space.params`` order (a choice no registered group names is a group alone)."""
    registered = CHOICE_GROUPS.get(space.family)(space) if space.family in CHOICE_GROUPS else []
    group_of = {name: list(g) for g in registered for name in g}
    out: list[list[str]] = []
    for p in space.params:
        g = group_of.get(p.name, [p.name])
        if g not in out:
            out.append(g)
    return out


def gradient_norm_sums(groups: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Per group: Σ over its tensors of ‖t.grad‖₂ (the official code adds the weight's and
    the bias's norms); a tensor without a gradient adds 0. Each tensor's norm is computed
    once even when it appears in many groups."""
    tensors: dict[int, torch.Tensor] = {}
    for ts in groups.values():
        for t in ts:
            tensors.setdefault(id(t), t)
    grads = [(k, t.grad) for k, t in tensors.items() if t.grad is not None]
    norms: dict[int, float] = {}
    if grads:
        values = torch.stack([g.detach().float().norm() for _, g in grads]).tolist()
        norms = {k: v for (k, _), v in zip(grads, values)}
    return {name: float(sum(norms.get(id(t), 0.0) for t in ts)) for name, ts in groups.items()}


# -- mbv3 -----------------------------------------------------------------------------
def _params(*modules: torch.nn.Module | None) -> list[torch.Tensor]:
    return [p for m in modules if m is not None for p in m.parameters()]


@CHOICE_PARAMETERS.register("mbv3")
def _mbv3(net: Supernet, arch: Arch) -> dict[str, list[torch.Tensor]]:
    """mbv3: kernel ``k{i}_{j}`` -> the block's depthwise weight and kernel transforms;
    expand ``e{i}_{j}`` -> every middle-channel tensor of the block (expand conv + BN,
    depthwise + BN, SE, project); depth ``d{i}`` -> all weights of the stage's first d
    blocks. Resolution ``r`` is parameter-free (G = 0, as the official pooling ops)."""
    out: dict[str, list[torch.Tensor]] = {}
    for i, blocks in enumerate(net.stages):  # type: ignore[attr-defined]
        d = int(arch[f"d{i}"])
        out[f"d{i}"] = _params(*blocks[:d])
        for j in range(d):
            b = blocks[j]
            out[f"k{i}_{j}"] = _params(b.dw)
            out[f"e{i}_{j}"] = _params(b.expand_conv, b.expand_bn, b.dw, b.dw_bn, b.se, b.project)
    return out
