"""Which weights does each choice of an arch use? (PA&DA's path importance.)

PA&DA scores every categorical choice value by the gradient norm of the weights that
value used in a step. In a weight-sharing supernet that mapping is family-specific,
so each family registers one function here::

    @CHOICE_PARAMETERS.register("mbv3")
    def _mbv3(net, arch) -> dict[str, list[torch.Tensor]]: ...

returning, for each *active* choice name of ``arch``, the parameter tensors that the
choice's current value computes with. Sliced (elastic) weights are listed whole: the
parts a subnet does not use receive no gradient, so the norm of the whole tensor's
gradient is the norm over the used slice.

Parameter-free choices. The official PA&DA code gives parameter-free ops (skip,
pooling) G = 0, so they are only ever drawn through the uniform floor. Here a choice
that a family leaves out of its mapping (or maps to no tensors), e.g. the input
resolution, is attributed the gradient norm of *every weight its output is routed
through*: in a feed-forward supernet that is the whole active subnet (a choice's
output feeds every later layer, and the earlier layers' gradients pass through it).
Every value of such a choice is scored the same way, so its values stay comparable
among themselves, which is all ``p_o = τ·G_o/ΣG + (1−τ)/n`` needs (values are only
normalised within their own choice). :data:`ROUTES_THROUGH_ALL` names that fallback.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from ..registry import Registry
from ..space import Arch

if TYPE_CHECKING:
    from ._base import Supernet

ChoiceParameters = Callable[["Supernet", Arch], dict[str, list[torch.Tensor]]]

CHOICE_PARAMETERS: Registry[ChoiceParameters] = Registry("choice attribution")

ROUTES_THROUGH_ALL = "__all__"
"""Key of the whole active subnet's parameters in :func:`choice_parameters`' result."""


def choice_parameters(net: Supernet, arch: Arch) -> dict[str, list[torch.Tensor]]:
    """Per active choice of ``arch``: the tensors whose gradient scores it.

    Choices the family does not map (or a family with no registered mapping) get every
    parameter of the network (see the module docstring); the result also holds
    :data:`ROUTES_THROUGH_ALL`.
    """
    family = net.space.family
    mapped = CHOICE_PARAMETERS.get(family)(net, arch) if family in CHOICE_PARAMETERS else {}
    everything = [p for p in net.parameters() if p.requires_grad]
    out: dict[str, list[torch.Tensor]] = {}
    for name in sorted(net.space.active(arch)):
        ts = mapped.get(name)
        out[name] = list(ts) if ts else everything
    out[ROUTES_THROUGH_ALL] = everything
    return out


def gradient_norms(groups: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """L2 norm of the current ``.grad`` of each group's tensors (None grads count 0).

    Each tensor's squared norm is computed once even when it appears in many groups.
    """
    sq: dict[int, float] = {}
    tensors: dict[int, torch.Tensor] = {}
    for ts in groups.values():
        for t in ts:
            tensors.setdefault(id(t), t)
    grads = [(k, t.grad) for k, t in tensors.items() if t.grad is not None]
    if grads:
        norms = torch.stack([g.detach().float().pow(2).sum() for _, g in grads]).tolist()
        sq = {k: v for (k, _), v in zip(grads, norms)}
    return {name: sum(sq.get(id(t), 0.0) for t in ts) ** 0.5 for name, ts in groups.items()}


# -- mbv3 -----------------------------------------------------------------------------
def _params(*modules: torch.nn.Module | None) -> list[torch.Tensor]:
    return [p for m in modules if m is not None for p in m.parameters()]


@CHOICE_PARAMETERS.register("mbv3")
def _mbv3(net: Supernet, arch: Arch) -> dict[str, list[torch.Tensor]]:
    """mbv3: kernel ``k{i}_{j}`` -> the block's depthwise weight and kernel transforms;
    expand ``e{i}_{j}`` -> every middle-channel tensor of the block (expand conv + BN,
    depthwise + BN, SE, project); depth ``d{i}`` -> all weights of the stage's first d
    blocks. Resolution ``r`` is parameter-free: it falls back to the whole subnet."""
    out: dict[str, list[torch.Tensor]] = {}
    for i, blocks in enumerate(net.stages):  # type: ignore[attr-defined]
        d = int(arch[f"d{i}"])
        out[f"d{i}"] = _params(*blocks[:d])
        for j in range(d):
            b = blocks[j]
            out[f"k{i}_{j}"] = _params(b.dw)
            out[f"e{i}_{j}"] = _params(b.expand_conv, b.expand_bn, b.dw, b.dw_bn, b.se, b.project)
    return out
