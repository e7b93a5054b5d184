"""The ElasticViT hybrid supernet (family ``vit_hybrid``) and its static subnets.

Elastic ops: MBConv with elastic input/output width, kernel (OFA kernel transform,
``_ops.ElasticDepthwiseConv``) and expand ratio; layer norm and linear layers over the
first features; multi-head attention with elastic width, number of heads
(= width / head_dim) and V dim per head (v_scale * head_dim). Every elastic weight is
sliced from the front (the first heads, the first V dims of each head, the first
channels), so a subnet's weights are nested in every larger subnet's.

``extract`` copies the active weights into plain ``nn.Conv2d`` / ``nn.Linear`` /
``nn.LayerNorm`` modules (static MBConv and head classes shared with ``mbv3``), which
export to ONNX with the TorchScript or dynamo exporter.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..space import Arch
from ..space._base import make_divisible
from ..space._mbv3 import BlockSpec
from ..space._vit import ConvStageConfig, VitHybridConfig, VitHybridSpace
from ._base import SUPERNETS, Supernet
from ._ops import ElasticBatchNorm2d, ElasticConv1x1, ElasticDepthwiseConv, ElasticSqueezeExcite, act_fn, act_layer
from .mbv3 import Head, MBConv


def _mid(cin: int, expand: float) -> int:
    return make_divisible(round(cin * expand), 8)


def _se(mid: int) -> int:
    return make_divisible(mid // 4, 8)


# -- static modules --------------------------------------------------------------------
class Attention(nn.Module):
    """ElasticViT's global multi-head self-attention on tokens (B, N, C) of an H x W grid:
    bias-free q, k, v; a depthwise 3x3 conv on V over the grid; the activation before the
    output projection. q/k dim per head ``head_dim``, V dim per head ``v_dim``."""

    def __init__(self, width: int, heads: int, head_dim: int, v_dim: int, act: str):
        super().__init__()
        self.heads, self.head_dim, self.v_dim = heads, head_dim, v_dim
        self.scale = head_dim ** -0.5
        self.q = nn.Linear(width, heads * head_dim, bias=False)
        self.k = nn.Linear(width, heads * head_dim, bias=False)
        self.v = nn.Linear(width, heads * v_dim, bias=False)
        self.v_conv = nn.Conv2d(heads * v_dim, heads * v_dim, 3, 1, 1, groups=heads * v_dim, bias=False)
        self.act = act_layer(act)
        self.proj = nn.Linear(heads * v_dim, width)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.heads
        q = self.q(x).reshape(b, n, h, self.head_dim).transpose(1, 2)
        k = self.k(x).reshape(b, n, h, self.head_dim).transpose(1, 2)
        v = _grid_conv(self.v(x), hw, self.v_conv).reshape(b, n, h, self.v_dim).transpose(1, 2)
        attn = torch.softmax(torch.matmul(q * self.scale, k.transpose(-2, -1)), dim=-1)
        o = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, h * self.v_dim)
        return self.proj(self.act(o))


def _grid_conv(t: torch.Tensor, hw: tuple[int, int], conv: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply an image conv to tokens (B, N, L) laid out on the H x W grid ``hw``."""
    b, n, c = t.shape
    return conv(t.transpose(1, 2).reshape(b, c, hw[0], hw[1])).flatten(2).transpose(1, 2)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, head_dim: int, v_dim: int, hidden: int, act: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, head_dim, v_dim, act)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.act = act_layer(act)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TransformerStage(nn.Module):
    """Transition MBConv, then transformer blocks on the flattened feature map."""

    def __init__(self, down: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.down = down
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        for blk in self.blocks:
            t = blk(t, (h, w))
        return t.transpose(1, 2).reshape(b, c, h, w)


class ShortcutMBConv(nn.Module):
    """An MBConv whose input and output shapes differ, plus the official ElasticViT
    shortcut: 2x2 average pooling when strided, a 1x1 projection when widths differ."""

    def __init__(self, block: MBConv, stride: int, proj: nn.Module | None):
        super().__init__()
        self.block, self.stride, self.proj = block, stride, proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + shortcut(x, self.stride, self.proj)


def shortcut(x: torch.Tensor, stride: int, proj) -> torch.Tensor:
    if stride > 1:
        x = F.avg_pool2d(x, stride, padding=0 if x.shape[-1] % 2 == 0 else 1)
    return proj(x) if proj is not None else x


class VitHybridNet(nn.Module):
    """A static hybrid subnet; ``resolution`` is the input size it was chosen for."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], head: nn.Module, resolution: int):
        super().__init__()
        self.stem = stem
        self.stages = nn.Sequential(*stages)
        self.head = head
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


# -- elastic modules ---------------------------------------------------------------------
class ElasticLinear(nn.Module):
    """A linear layer whose active part is ``weight[:out, :in]`` (``in`` from the input)."""

    def __init__(self, fin: int, fout: int, bias: bool = True):
        super().__init__()
        ref = nn.Linear(fin, fout, bias=bias)
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone()) if bias else None

    def forward(self, x: torch.Tensor, fout: int) -> torch.Tensor:
        fin = x.shape[-1]
        w = self.weight
        if fout != w.shape[0] or fin != w.shape[1]:
            w = w[:fout, :fin]
        b = self.bias[:fout] if self.bias is not None else None
        return F.linear(x, w, b)

    def to_static(self, fin: int, fout: int) -> nn.Linear:
        lin = nn.Linear(fin, fout, bias=self.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(self.weight[:fout, :fin])
            if self.bias is not None:
                lin.bias.copy_(self.bias[:fout])
        return lin


class ElasticLayerNorm(nn.LayerNorm):
    """LayerNorm over the first ``x.shape[-1]`` features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        if c == self.normalized_shape[0]:
            return super().forward(x)
        return F.layer_norm(x, (c,), self.weight[:c], self.bias[:c], self.eps)

    def to_static(self, c: int) -> nn.LayerNorm:
        ln = nn.LayerNorm(c, eps=self.eps)
        with torch.no_grad():
            ln.weight.copy_(self.weight[:c])
            ln.bias.copy_(self.bias[:c])
        return ln


class ElasticAttention(nn.Module):
    """:class:`Attention` with elastic width, heads (width / head_dim) and V dim per head.

    Weights are stored per head: q/k ``(heads_max * head_dim, C_max)``, v
    ``(heads_max, v_max, C_max)``, the depthwise V conv ``(heads_max, v_max, 3, 3)``, proj
    ``(C_max, heads_max, v_max)``; a subnet takes the first heads and, within each head,
    the first ``v_scale * head_dim`` V features."""

    def __init__(self, width: int, head_dim: int, v_scale_max: int, act: str):
        super().__init__()
        self.head_dim = head_dim
        self.heads_max = width // head_dim
        self.v_max = v_scale_max * head_dim
        self.q = ElasticLinear(width, self.heads_max * head_dim, bias=False)
        self.k = ElasticLinear(width, self.heads_max * head_dim, bias=False)
        ref = Attention(width, self.heads_max, head_dim, self.v_max, act)  # PyTorch's default init
        hv = (self.heads_max, self.v_max)
        self.v_weight = nn.Parameter(ref.v.weight.detach().view(*hv, width).clone())
        self.v_conv = nn.Parameter(ref.v_conv.weight.detach().view(*hv, 3, 3).clone())
        self.proj_weight = nn.Parameter(ref.proj.weight.detach().view(width, *hv).clone())
        self.proj_bias = nn.Parameter(ref.proj.bias.detach().clone())
        self.act_name = act
        self._act = act_fn(act)
        self.v_scale = v_scale_max

    def _active(self, c: int, h: int, vd: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(v weight, depthwise V conv weight, proj weight) of the first h heads, vd V dims each."""
        vw = self.v_weight[:h, :vd, :c].reshape(h * vd, c)
        cw = self.v_conv[:h, :vd].reshape(h * vd, 1, 3, 3)
        pw = self.proj_weight[:c, :h, :vd].reshape(c, h * vd)
        return vw, cw, pw

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, hd, vd = c // self.head_dim, self.head_dim, self.v_scale * self.head_dim
        q = self.q(x, h * hd).reshape(b, n, h, hd).transpose(1, 2)
        k = self.k(x, h * hd).reshape(b, n, h, hd).transpose(1, 2)
        vw, cw, pw = self._active(c, h, vd)
        v = _grid_conv(F.linear(x, vw), hw, lambda t: F.conv2d(t, cw, None, 1, 1, 1, h * vd))
        v = v.reshape(b, n, h, vd).transpose(1, 2)
        attn = torch.softmax(torch.matmul(q * hd ** -0.5, k.transpose(-2, -1)), dim=-1)
        o = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, h * vd)
        return F.linear(self._act(o), pw, self.proj_bias[:c])

    def to_static(self, c: int) -> Attention:
        h, hd, vd = c // self.head_dim, self.head_dim, self.v_scale * self.head_dim
        att = Attention(c, h, hd, vd, self.act_name)
        att.q = self.q.to_static(c, h * hd)
        att.k = self.k.to_static(c, h * hd)
        vw, cw, pw = self._active(c, h, vd)
        with torch.no_grad():
            att.v.weight.copy_(vw)
            att.v_conv.weight.copy_(cw)
            att.proj.weight.copy_(pw)
            att.proj.bias.copy_(self.proj_bias[:c])
        return att


class ElasticTransformerBlock(nn.Module):
    def __init__(self, width: int, head_dim: int, v_scale_max: int, mlp_max: float, act: str):
        super().__init__()
        self.norm1 = ElasticLayerNorm(width)
        self.attn = ElasticAttention(width, head_dim, v_scale_max, act)
        self.norm2 = ElasticLayerNorm(width)
        self.fc1 = ElasticLinear(width, round(width * mlp_max))
        self.fc2 = ElasticLinear(round(width * mlp_max), width)
        self.act_name = act
        self._act = act_fn(act)
        self.mlp_ratio = mlp_max

    def set_active(self, mlp_ratio: float, v_scale: int) -> None:
        self.mlp_ratio = mlp_ratio
        self.attn.v_scale = v_scale

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        c = x.shape[-1]
        x = x + self.attn(self.norm1(x), hw)
        hidden = round(c * self.mlp_ratio)
        return x + self.fc2(self._act(self.fc1(self.norm2(x), hidden)), c)

    def to_static(self, c: int) -> TransformerBlock:
        hidden = round(c * self.mlp_ratio)
        hd = self.attn.head_dim
        blk = TransformerBlock(c, c // hd, hd, self.attn.v_scale * hd, hidden, self.act_name)
        blk.norm1 = self.norm1.to_static(c)
        blk.attn = self.attn.to_static(c)
        blk.norm2 = self.norm2.to_static(c)
        blk.fc1 = self.fc1.to_static(c, hidden)
        blk.fc2 = self.fc2.to_static(hidden, c)
        return blk


class ElasticMBConvV(nn.Module):
    """MBConv with elastic input width (from the input), output width, kernel and expand.

    ``expand == 0`` makes the depthwise-separable block of the stem (no expand conv).
    ``residual``: identity shortcut (input and output shapes always agree);
    ``projection``: the official ElasticViT shortcut of a stage's first block, identity
    when the active shapes agree, else 2x2 average pooling (strided) and a 1x1 conv
    over the first channels (widths differ)."""

    def __init__(self, cin_max: int, cout_max: int, kernels: list[int], expand_max: float, stride: int,
                 se: bool, act: str, residual: bool, projection: bool = False):
        super().__init__()
        self.stride, self.act, self.residual = stride, act, residual
        self.shortcut_conv = ElasticConv1x1(cin_max, cout_max) if projection else None
        self.has_expand = expand_max > 0
        mid_max = _mid(cin_max, expand_max) if self.has_expand else cin_max
        self.expand_conv = ElasticConv1x1(cin_max, mid_max) if self.has_expand else None
        self.expand_bn = ElasticBatchNorm2d(mid_max) if self.has_expand else None
        self.dw = ElasticDepthwiseConv(mid_max, kernels, stride)
        self.dw_bn = ElasticBatchNorm2d(mid_max)
        self.se = ElasticSqueezeExcite(mid_max, _se) if se else None
        self.project = ElasticConv1x1(mid_max, cout_max)
        self.project_bn = ElasticBatchNorm2d(cout_max)
        self._act = act_fn(act)
        self.kernel, self.expand, self.cout = max(kernels), expand_max, cout_max

    def set_active(self, cout: int, kernel: int, expand: float) -> None:
        self.cout, self.kernel, self.expand = cout, kernel, expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self._act(self.expand_bn(self.expand_conv(x, _mid(x.shape[1], self.expand))))
        y = self._act(self.dw_bn(self.dw(y, self.kernel)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project(y, self.cout))
        if self.residual:
            return x + y
        if self.shortcut_conv is None:
            return y
        cin = x.shape[1]
        if self.stride == 1 and cin == self.cout:
            return x + y
        proj = (lambda t: self.shortcut_conv(t, self.cout)) if cin != self.cout else None
        return y + shortcut(x, self.stride, proj)

    def to_static(self, cin: int) -> nn.Module:
        mid = _mid(cin, self.expand) if self.has_expand else 0
        c_dw = mid or cin
        identity = self.residual or (self.shortcut_conv is not None and self.stride == 1 and cin == self.cout)
        spec = BlockSpec(cin, mid, self.cout, self.kernel, self.stride, _se(c_dw) if self.se is not None else 0,
                         self.act, identity, 0)
        block = MBConv(spec)
        if self.has_expand:
            block.expand[0] = self.expand_conv.to_static(cin, mid)
            block.expand[1] = self.expand_bn.to_static(mid)
        block.dw[0] = self.dw.to_static(c_dw, self.kernel)
        block.dw[1] = self.dw_bn.to_static(c_dw)
        if self.se is not None:
            block.se = self.se.to_static(c_dw)
        block.project[0] = self.project.to_static(c_dw, self.cout)
        block.project[1] = self.project_bn.to_static(self.cout)
        if identity or self.shortcut_conv is None:
            return block
        proj = self.shortcut_conv.to_static(cin, self.cout) if cin != self.cout else None
        return ShortcutMBConv(block, self.stride, proj)


class ElasticConvStage(nn.Module):
    def __init__(self, cin_max: int, cfg: ConvStageConfig):
        super().__init__()
        w = max(cfg.widths)
        self.blocks = nn.ModuleList(
            ElasticMBConvV(cin_max if j == 0 else w, w, cfg.kernels, max(cfg.expands),
                           cfg.stride if j == 0 else 1, cfg.se, cfg.act, residual=j > 0, projection=j == 0)
            for j in range(max(cfg.depths)))
        self.depth = max(cfg.depths)

    def set_active(self, width: int, depth: int, kernel: int, expand: float) -> None:
        self.depth = depth
        for b in self.blocks[:depth]:
            b.set_active(width, kernel, expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks[: self.depth]:
            x = b(x)
        return x

    def to_static(self, cin: int) -> list[nn.Module]:
        out, c = [], cin
        for b in self.blocks[: self.depth]:
            out.append(b.to_static(c))
            c = b.cout
        return out


class ElasticTransformerStage(nn.Module):
    def __init__(self, cin_max: int, cfg, head_dim: int):
        super().__init__()
        w = max(cfg.widths)
        self.down = ElasticMBConvV(cin_max, w, [cfg.down_kernel], cfg.down_expand, cfg.stride, cfg.se, cfg.act,
                                   residual=False, projection=True)
        self.blocks = nn.ModuleList(
            ElasticTransformerBlock(w, head_dim, max(cfg.v_scales), max(cfg.mlp_ratios), cfg.act)
            for _ in range(max(cfg.depths)))
        self.depth = max(cfg.depths)
        self.down_kernel, self.down_expand = cfg.down_kernel, cfg.down_expand

    def set_active(self, width: int, depth: int, mlp_ratio: float, v_scale: int) -> None:
        self.depth = depth
        self.down.set_active(width, self.down_kernel, self.down_expand)
        for b in self.blocks[:depth]:
            b.set_active(mlp_ratio, v_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        for blk in self.blocks[: self.depth]:
            t = blk(t, (h, w))
        return t.transpose(1, 2).reshape(b, c, h, w)

    def to_static(self, cin: int) -> TransformerStage:
        c = self.down.cout
        return TransformerStage(self.down.to_static(cin), [b.to_static(c) for b in self.blocks[: self.depth]])


class ElasticHead(nn.Module):
    """MobileNetV3 head whose first 1x1 conv is ``expand_ratio`` x the (elastic) input width."""

    def __init__(self, cin_max: int, expand_ratio: int, feature_mix: int, classes: int, dropout: float):
        super().__init__()
        self.expand_ratio = expand_ratio
        fe = expand_ratio * cin_max
        self.final_expand = ElasticConv1x1(cin_max, fe)
        self.final_bn = ElasticBatchNorm2d(fe)
        self.feature_mix = ElasticConv1x1(fe, feature_mix)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_mix, classes)
        self.fm = feature_mix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fe = self.expand_ratio * x.shape[1]
        x = F.hardswish(self.final_bn(self.final_expand(x, fe))).mean((2, 3), keepdim=True)
        x = F.hardswish(self.feature_mix(x, self.fm)).flatten(1)
        return self.classifier(self.dropout(x))

    def to_static(self, cin: int) -> Head:
        fe = self.expand_ratio * cin
        head = Head(cin, fe, self.fm, self.classifier.out_features, self.dropout.p)
        head.final_expand[0] = self.final_expand.to_static(cin, fe)
        head.final_expand[1] = self.final_bn.to_static(fe)
        head.feature_mix[0] = self.feature_mix.to_static(fe, self.fm)
        head.classifier = copy.deepcopy(self.classifier)
        return head


@SUPERNETS.register("vit_hybrid")
class VitHybridSupernet(Supernet):
    space: VitHybridSpace

    def __init__(self, space: VitHybridSpace):
        super().__init__(space)
        c: VitHybridConfig = space.config
        sw = max(c.stem.widths)
        self.stem_conv = nn.Parameter(torch.empty(sw, c.input_channels, 3, 3))
        nn.init.kaiming_normal_(self.stem_conv, mode="fan_out")
        self.stem_bn = ElasticBatchNorm2d(sw)
        self.stem_act = c.stem.act
        self.stem_blocks = nn.ModuleList(
            ElasticMBConvV(sw, sw, [3], 0, 1, False, c.stem.act, residual=True) for _ in range(max(c.stem.depths) - 1))
        self.stages = nn.ModuleList()
        cin = sw
        for s in c.stages:
            if isinstance(s, ConvStageConfig):
                self.stages.append(ElasticConvStage(cin, s))
            else:
                self.stages.append(ElasticTransformerStage(cin, s, c.head_dim))
            cin = max(s.widths)
        self.head = ElasticHead(cin, c.head.expand_ratio, c.head.feature_mix, c.num_classes, c.head.dropout)
        self.stem_width, self.stem_depth = sw, max(c.stem.depths)
        self.set_active(space.max_arch())

    def set_active(self, arch: Arch) -> None:
        self.active_arch = arch
        self.stem_width, self.stem_depth = int(arch["sw"]), int(arch["sd"])
        for b in self.stem_blocks:
            b.set_active(self.stem_width, 3, 0)
        for i, (st, cfg) in enumerate(zip(self.stages, self.space.config.stages)):
            w, d = int(arch[f"w{i}"]), int(arch[f"d{i}"])
            if isinstance(cfg, ConvStageConfig):
                st.set_active(w, d, int(arch[f"k{i}"]), float(arch[f"e{i}"]))
            else:
                st.set_active(w, d, float(arch[f"m{i}"]), int(arch[f"v{i}"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.space.config
        x = F.conv2d(x, self.stem_conv[: self.stem_width], None, c.stem.stride, 1)
        x = act_fn(self.stem_act)(self.stem_bn(x))
        for b in self.stem_blocks[: self.stem_depth - 1]:
            x = b(x)
        for st in self.stages:
            x = st(x)
        return self.head(x)

    def extract(self, arch: Arch) -> VitHybridNet:
        previous = self.active_arch
        self.set_active(arch)
        c = self.space.config
        sw = self.stem_width
        conv = nn.Conv2d(c.input_channels, sw, 3, c.stem.stride, 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(self.stem_conv[:sw])
        stem = nn.Sequential(conv, self.stem_bn.to_static(sw), act_layer(self.stem_act),
                             *[b.to_static(sw) for b in self.stem_blocks[: self.stem_depth - 1]])
        stages: list[nn.Module] = []
        cin = sw
        for i, st in enumerate(self.stages):
            if isinstance(st, ElasticConvStage):
                stages += st.to_static(cin)
            else:
                stages.append(st.to_static(cin))
            cin = int(arch[f"w{i}"])
        net = VitHybridNet(stem, stages, self.head.to_static(cin), int(arch["r"]))
        self.set_active(previous)
        return net.train(self.training)
