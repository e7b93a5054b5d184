"""Elastic building blocks: each computes its active subnet from the first channels
of one shared weight, and can copy itself out as a plain static module."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "h_swish": nn.Hardswish, "gelu": nn.GELU}


def act_layer(name: str) -> nn.Module:
    return ACTS[name]()


def act_fn(name: str):
    return {"relu": F.relu, "h_swish": F.hardswish, "gelu": F.gelu}[name]


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the first ``x.shape[1]`` channels (running stats updated in place)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c],
            self.bias[:c],
            use_batch,
            factor,
            self.eps,
        )

    def to_static(self, c: int) -> nn.BatchNorm2d:
        bn = nn.BatchNorm2d(c, eps=self.eps, momentum=self.momentum)
        with torch.no_grad():
            bn.weight.copy_(self.weight[:c])
            bn.bias.copy_(self.bias[:c])
            bn.running_mean.copy_(self.running_mean[:c])
            bn.running_var.copy_(self.running_var[:c])
            bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn


class ElasticDepthwiseConv(nn.Module):
    """OFA's elastic-kernel depthwise conv.

    One weight of the largest kernel; a smaller kernel is the centre crop of the
    next larger (transformed) kernel, multiplied by a learnable per-layer matrix
    shared across channels and initialised to identity (7 -> 5 -> 3).
    """

    def __init__(self, channels: int, kernels: list[int], stride: int):
        super().__init__()
        self.kernels = sorted(kernels)
        kmax = self.kernels[-1]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(channels, 1, kmax, kmax))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict(
            {f"{a}to{b}": nn.Parameter(torch.eye(b * b)) for a, b in zip(self.kernels[1:], self.kernels[:-1])}
        )

    def active_weight(self, channels: int, kernel: int) -> torch.Tensor:
        w = self.weight[:channels]
        k_cur = self.kernels[-1]
        for k_next in reversed(self.kernels[:-1]):
            if k_next < kernel:
                break
            s = (k_cur - k_next) // 2
            w = w[:, :, s : s + k_next, s : s + k_next].reshape(channels, k_next * k_next)
            w = F.linear(w, self.transforms[f"{k_cur}to{k_next}"]).view(channels, 1, k_next, k_next)
            k_cur = k_next
        return w

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.active_weight(c, kernel), None, self.stride, kernel // 2, 1, c)

    def to_static(self, channels: int, kernel: int) -> nn.Conv2d:
        conv = nn.Conv2d(channels, channels, kernel, self.stride, kernel // 2, groups=channels, bias=False)
        with torch.no_grad():
            conv.weight.copy_(self.active_weight(channels, kernel))
        return conv


class ElasticConv1x1(nn.Module):
    """A 1x1 conv whose active part is ``weight[:out, :in]``; ``in`` comes from the input."""

    def __init__(self, cin: int, cout: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

    def forward(self, x: torch.Tensor, cout: int) -> torch.Tensor:
        cin = x.shape[1]
        w = self.weight
        if cout != w.shape[0] or cin != w.shape[1]:
            w = w[:cout, :cin]
        b = self.bias[:cout] if self.bias is not None else None
        return F.conv2d(x, w, b)

    def to_static(self, cin: int, cout: int) -> nn.Conv2d:
        conv = nn.Conv2d(cin, cout, 1, bias=self.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(self.weight[:cout, :cin])
            if self.bias is not None:
                conv.bias.copy_(self.bias[:cout])
        return conv


class SqueezeExcite(nn.Module):
    """Static SE: avg-pool, reduce, ReLU, expand, hard-sigmoid gate (MobileNetV3)."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3), keepdim=True)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(y))))


class ElasticSqueezeExcite(nn.Module):
    """SE over the first channels; reduced width follows the active channels."""

    def __init__(self, channels: int, reduced_fn):
        super().__init__()
        self.reduced_fn = reduced_fn
        r = reduced_fn(channels)
        self.reduce = ElasticConv1x1(channels, r, bias=True)
        self.expand = ElasticConv1x1(r, channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        y = x.mean((2, 3), keepdim=True)
        y = F.relu(self.reduce(y, self.reduced_fn(c)))
        return x * F.hardsigmoid(self.expand(y, c))

    def to_static(self, c: int) -> SqueezeExcite:
        r = self.reduced_fn(c)
        se = SqueezeExcite(c, r)
        se.reduce = self.reduce.to_static(c, r)
        se.expand = self.expand.to_static(r, c)
        return se
