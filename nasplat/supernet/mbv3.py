"""The OFA MobileNetV3 supernet (family ``mbv3``) and its static subnets."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..space import Arch, BlockSpec, MBV3Space
from ..space._mbv3 import MBV3Config
from ._base import SUPERNETS, Supernet
from ._ops import (
    ElasticBatchNorm2d,
    ElasticConv1x1,
    ElasticDepthwiseConv,
    ElasticSqueezeExcite,
    SqueezeExcite,
    act_fn,
    act_layer,
)


# -- static modules (what extract returns and ONNX export sees) ---------------------
class MBConv(nn.Module):
    """Inverted bottleneck: [1x1 expand, BN, act], depthwise kxk, BN, act, [SE], 1x1, BN."""

    def __init__(self, spec: BlockSpec):
        super().__init__()
        c_dw = spec.mid or spec.cin
        self.residual = spec.residual
        self.expand = (
            nn.Sequential(nn.Conv2d(spec.cin, spec.mid, 1, bias=False), nn.BatchNorm2d(spec.mid), act_layer(spec.act))
            if spec.mid
            else None
        )
        self.dw = nn.Sequential(
            nn.Conv2d(c_dw, c_dw, spec.kernel, spec.stride, spec.kernel // 2, groups=c_dw, bias=False),
            nn.BatchNorm2d(c_dw),
            act_layer(spec.act),
        )
        self.se = SqueezeExcite(c_dw, spec.se) if spec.se else None
        self.project = nn.Sequential(nn.Conv2d(c_dw, spec.cout, 1, bias=False), nn.BatchNorm2d(spec.cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


def conv_bn_act(cin: int, cout: int, k: int, stride: int, act: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), act_layer(act)
    )


class Head(nn.Module):
    """MobileNetV3 head: 1x1 expand + BN + h-swish, pool, 1x1 mix + h-swish, dropout, linear."""

    def __init__(self, cin: int, final_expand: int, feature_mix: int, classes: int, dropout: float):
        super().__init__()
        self.final_expand = conv_bn_act(cin, final_expand, 1, 1, "h_swish")
        self.feature_mix = nn.Sequential(nn.Conv2d(final_expand, feature_mix, 1, bias=False), nn.Hardswish())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_mix, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_expand(x).mean((2, 3), keepdim=True)
        x = self.feature_mix(x).flatten(1)
        return self.classifier(self.dropout(x))


class MBV3Net(nn.Module):
    """A static MobileNetV3 subnet; ``resolution`` is the input size it was chosen for."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, resolution: int):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# -- elastic modules ----------------------------------------------------------------
class ElasticMBConv(nn.Module):
    """MBConv with elastic kernel and expand ratio; input/output widths are fixed."""

    def __init__(self, space: MBV3Space, cin: int, cout: int, kernels: list[int], expands: list[float],
                 stride: int, se: bool, act: str):
        super().__init__()
        self.space = space
        self.cin, self.cout, self.stride, self.act = cin, cout, stride, act
        self.mid_max = space.mid_channels(cin, max(expands))
        self.residual = stride == 1 and cin == cout
        self.expand_conv = ElasticConv1x1(cin, self.mid_max)
        self.expand_bn = ElasticBatchNorm2d(self.mid_max)
        self.dw = ElasticDepthwiseConv(self.mid_max, kernels, stride)
        self.dw_bn = ElasticBatchNorm2d(self.mid_max)
        self.se = ElasticSqueezeExcite(self.mid_max, space.se_channels) if se else None
        self.project = ElasticConv1x1(self.mid_max, cout)
        self.project_bn = nn.BatchNorm2d(cout)
        self._act = act_fn(act)
        self.kernel = max(kernels)
        self.mid = self.mid_max

    def set_active(self, kernel: int, expand: float) -> None:
        self.kernel = kernel
        self.mid = self.space.mid_channels(self.cin, expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._act(self.expand_bn(self.expand_conv(x, self.mid)))
        y = self._act(self.dw_bn(self.dw(y, self.kernel)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project(y, self.cout))
        return x + y if self.residual else y

    def to_static(self) -> MBConv:
        spec = BlockSpec(self.cin, self.mid, self.cout, self.kernel, self.stride,
                         self.space.se_channels(self.mid) if self.se is not None else 0,
                         self.act, self.residual, 0)
        block = MBConv(spec)
        block.expand[0] = self.expand_conv.to_static(self.cin, self.mid)
        block.expand[1] = self.expand_bn.to_static(self.mid)
        block.dw[0] = self.dw.to_static(self.mid, self.kernel)
        block.dw[1] = self.dw_bn.to_static(self.mid)
        if self.se is not None:
            block.se = self.se.to_static(self.mid)
        block.project[0] = self.project.to_static(self.mid, self.cout)
        block.project[1] = copy.deepcopy(self.project_bn)
        return block

    def middle_tensors(self) -> list[tuple[nn.Parameter | torch.Tensor, int]]:
        """Every tensor indexed by the middle channels, with the dim that holds them
        (used by OFA's width importance sorting)."""
        ts: list[tuple[torch.Tensor, int]] = [(self.expand_conv.weight, 0)]
        for bn in (self.expand_bn, self.dw_bn):
            ts += [(bn.weight, 0), (bn.bias, 0), (bn.running_mean, 0), (bn.running_var, 0)]
        ts.append((self.dw.weight, 0))
        if self.se is not None:
            ts += [(self.se.reduce.weight, 1), (self.se.expand.weight, 0), (self.se.expand.bias, 0)]
        ts.append((self.project.weight, 1))
        return ts


@SUPERNETS.register("mbv3")
class MBV3Supernet(Supernet):
    space: MBV3Space

    def __init__(self, space: MBV3Space):
        super().__init__(space)
        c: MBV3Config = space.config
        self.stem = conv_bn_act(c.input_channels, c.stem.width, 3, c.stem.stride, c.stem.act)
        first = space.plan(space.max_arch())[0][0]
        self.first_block = MBConv(first)
        self.stages = nn.ModuleList()
        cin = c.first_block.width
        for s in c.stages:
            blocks = nn.ModuleList()
            for j in range(max(s.depths)):
                blocks.append(ElasticMBConv(space, cin, s.width, s.kernels, s.expands,
                                            s.stride if j == 0 else 1, s.se, s.act))
                cin = s.width
            self.stages.append(blocks)
        h = c.head
        self.head = Head(cin, h.final_expand, h.feature_mix, c.num_classes, h.dropout)
        self.depths = [max(s.depths) for s in c.stages]
        self.set_active(space.max_arch())

    def set_active(self, arch: Arch) -> None:
        self.active_arch = arch
        for i, blocks in enumerate(self.stages):
            self.depths[i] = int(arch[f"d{i}"])
            for j in range(self.depths[i]):
                blocks[j].set_active(int(arch[f"k{i}_{j}"]), float(arch[f"e{i}_{j}"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for blocks, d in zip(self.stages, self.depths):
            for j in range(d):
                x = blocks[j](x)
        return self.head(x)

    def extract(self, arch: Arch) -> MBV3Net:
        previous = self.active_arch
        self.set_active(arch)
        blocks: list[nn.Module] = [copy.deepcopy(self.first_block)]
        for stage, d in zip(self.stages, self.depths):
            blocks += [stage[j].to_static() for j in range(d)]
        net = MBV3Net(copy.deepcopy(self.stem), blocks, copy.deepcopy(self.head), int(arch["r"]))
        self.set_active(previous)
        return net.train(self.training)
