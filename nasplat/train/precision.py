"""Mixed precision for the training engine (``train.precision``), around strategies
that run their own forward and backward passes.

bf16 needs only ``torch.autocast``. fp16 also needs loss scaling (``torch.amp.
GradScaler``), but the strategies call ``loss.backward()`` themselves; instead of
scaling the loss, the engine scales the gradient where it enters the network: a
forward hook on the model passes each output through :class:`_ScaleGrad` (identity
forward, cast to fp32; backward multiplies by the current scale before the cast back
to fp16). For parameter gradients this is exactly loss scaling as long as every loss
term depends on the parameters only through the model's outputs, which holds for all
built-in strategies. A strategy that runs an optimizer step of its own inside
``step`` (``Strategy.steps_own_optimizer``, e.g. PC-DARTS's architecture step) would
see scaled gradients there, so fp16 is refused for it (use bf16).
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager

import torch
from torch import nn

from ..device import autocast


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.dtype = x.dtype
        ctx.save_for_backward(scale)
        return x.float()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (scale,) = ctx.saved_tensors
        return (grad * scale).to(ctx.dtype), None


def _map_tensors(out: Any, fn: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (tuple, list)):
        return type(out)(_map_tensors(o, fn) for o in out)
    return out


class MixedPrecision:
    """autocast for ``precision`` on ``device``, and for fp16 the scaler and hook."""

    def __init__(self, model: nn.Module, device: torch.device, precision: str):
        self.device, self.precision = device, precision
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self._scale: torch.Tensor | None = None
        if self.scaler is not None:
            model.register_forward_hook(self._hook)

    def autocast(self) -> ContextManager[Any]:
        return autocast(self.device, self.precision)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        scale = self._scale
        if scale is None or not torch.is_grad_enabled():
            return output
        return _map_tensors(output, lambda t: _ScaleGrad.apply(t, scale)
                            if t.requires_grad and t.is_floating_point() else t)

    def begin_step(self) -> None:
        if self.scaler is not None:  # the current scale as a tensor: no host sync per forward
            self._scale = self.scaler.scale(torch.ones((), device=self.device))

    def step(self, optimizer: torch.optim.Optimizer, clip: Callable[[], None]) -> None:
        """Unscale (fp16), clip (the strategy's ``clip_gradients``, on true gradients),
        step (the scaler skips it on inf/nan gradients)."""
        if self.scaler is None:
            clip()
            optimizer.step()
            return
        self.scaler.unscale_(optimizer)
        clip()
        self.scaler.step(optimizer)
        self.scaler.update()
        self._scale = None

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.scaler.state_dict().items()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
