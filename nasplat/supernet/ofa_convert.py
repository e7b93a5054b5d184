"""Official Once-for-All MobileNetV3 checkpoints in and out of nasplat ``mbv3`` supernets.

The published supernets (``ofa_mbv3_d234_e346_k357_w1.0`` and ``..._w1.2``, the
``ofa`` package's ``OFAMobileNetV3``) are torch state dicts, often under a
``state_dict`` key, of 475 tensors. nasplat's ``mbv3`` supernet for the matching space
(``search_spaces/ofa_mbv3.yaml``, ``ofa_mbv3_w12.yaml``) holds the same tensors under
other names, so a conversion is a renaming with a shape check, no arithmetic:

===========================================================  ==============================
OFA (``OFAMobileNetV3.state_dict()``)                        nasplat ``mbv3``
===========================================================  ==============================
``first_conv.{conv,bn}``                                     ``stem.{0,1}``
``blocks.0.conv.{depth_conv,point_linear}.{conv,bn}``        ``first_block.{dw,project}.{0,1}``
``blocks.N.conv.inverted_bottleneck.{conv.conv,bn.bn}``      ``stages.i.j.{expand_conv,expand_bn}``
``blocks.N.conv.depth_conv.conv.conv.weight``                ``stages.i.j.dw.weight``
``blocks.N.conv.depth_conv.conv.7to5_matrix``                ``stages.i.j.dw.transforms.7to5``
``blocks.N.conv.depth_conv.bn.bn``                           ``stages.i.j.dw_bn``
``blocks.N.conv.depth_conv.se.fc.{reduce,expand}``           ``stages.i.j.se.{reduce,expand}``
``blocks.N.conv.point_linear.{conv.conv,bn.bn}``             ``stages.i.j.{project,project_bn}``
``final_expand_layer.{conv,bn}``                             ``head.final_expand.{0,1}``
``feature_mix_layer.conv``                                   ``head.feature_mix.0``
``classifier.linear``                                        ``head.classifier``
===========================================================  ==============================

Block ``N >= 1`` is block ``j`` of stage ``i`` counting every stage at its largest
depth (OFA's ``block_group_info``). Keys are read in every form OFA's own
``load_state_dict`` accepts: the nested elastic form above, the flat form of a static
``MobileNetV3`` (e.g. OFA's full-network teacher ``ofa_D4_E6_K7``:
``inverted_bottleneck.conv.weight``), the old ``mobile_inverted_conv`` name and a
``module.`` prefix (DataParallel). Tensors a flat checkpoint lacks (the kernel transform
matrices, ``num_batches_tracked``) keep the supernet's initial values, as OFA's loader
does (identity matrices). Anything else missing, left over or of another shape is a
one-line error naming the first such tensor.

Nothing is unpickled: ``torch.load(weights_only=True)`` reads tensors and plain
containers only.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoint import load_weights, save_weights
from ..errors import UserError
from ..space import MBV3Space, SearchSpace
from ._base import Supernet, build_supernet

__all__ = ["convert_ofa_checkpoint", "load_any_weights", "load_weights_into", "nasplat_to_ofa", "ofa_subnet_setting",
           "ofa_to_nasplat", "read_ofa_state", "save_ofa"]

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# tensors an OFA checkpoint may lack (OFA's loader keeps the network's own values too)
_OPTIONAL = re.compile(r"(_matrix|num_batches_tracked)$")


def _block_names(stage_depths: list[int]) -> list[str]:
    """nasplat names of OFA's blocks 1.. (stage-major, each stage at its largest depth)."""
    return [f"stages.{i}.{j}" for i, d in enumerate(stage_depths) for j in range(d)]


def key_table(stage_depths: list[int], kernels: list[list[int]], se: list[bool]) -> dict[str, str]:
    """OFA key (nested elastic form) -> nasplat key, for a supernet whose stages have
    these largest depths, kernel choices and SE flags."""
    t: dict[str, str] = {"first_conv.conv.weight": "stem.0.weight",
                         "blocks.0.conv.depth_conv.conv.weight": "first_block.dw.0.weight",
                         "blocks.0.conv.point_linear.conv.weight": "first_block.project.0.weight",
                         "final_expand_layer.conv.weight": "head.final_expand.0.weight",
                         "feature_mix_layer.conv.weight": "head.feature_mix.0.weight",
                         "classifier.linear.weight": "head.classifier.weight",
                         "classifier.linear.bias": "head.classifier.bias"}
    for p in _BN:
        t[f"first_conv.bn.{p}"] = f"stem.1.{p}"
        t[f"blocks.0.conv.depth_conv.bn.{p}"] = f"first_block.dw.1.{p}"
        t[f"blocks.0.conv.point_linear.bn.{p}"] = f"first_block.project.1.{p}"
        t[f"final_expand_layer.bn.{p}"] = f"head.final_expand.1.{p}"
    stage_of = [i for i, d in enumerate(stage_depths) for _ in range(d)]
    for n, name in enumerate(_block_names(stage_depths), start=1):
        o = f"blocks.{n}.conv"
        t[f"{o}.inverted_bottleneck.conv.conv.weight"] = f"{name}.expand_conv.weight"
        t[f"{o}.depth_conv.conv.conv.weight"] = f"{name}.dw.weight"
        ks = sorted(kernels[stage_of[n - 1]])
        for small, large in zip(ks[:-1], ks[1:]):
            t[f"{o}.depth_conv.conv.{large}to{small}_matrix"] = f"{name}.dw.transforms.{large}to{small}"
        t[f"{o}.point_linear.conv.conv.weight"] = f"{name}.project.weight"
        for p in _BN:
            t[f"{o}.inverted_bottleneck.bn.bn.{p}"] = f"{name}.expand_bn.{p}"
            t[f"{o}.depth_conv.bn.bn.{p}"] = f"{name}.dw_bn.{p}"
            t[f"{o}.point_linear.bn.bn.{p}"] = f"{name}.project_bn.{p}"
        if se[stage_of[n - 1]]:
            for part in ("reduce", "expand"):
                for p in ("weight", "bias"):
                    t[f"{o}.depth_conv.se.fc.{part}.{p}"] = f"{name}.se.{part}.{p}"
    return t


def _space_table(space: SearchSpace) -> dict[str, str]:
    if not isinstance(space, MBV3Space):
        raise UserError(f"OFA checkpoints hold MobileNetV3 supernets; space {space.config.name!r} is of "
                        f"family {space.family!r}", space.source, "family")
    c = space.config
    return key_table([max(s.depths) for s in c.stages], [list(s.kernels) for s in c.stages],
                     [s.se for s in c.stages])


_FLAT_ELASTIC = re.compile(r"^(blocks\.[1-9]\d*\.conv\.(?:inverted_bottleneck|depth_conv|point_linear))"
                           r"\.(conv|bn)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def canonical_ofa_key(key: str) -> str:
    """Any key form OFA's loader accepts -> the nested form of ``OFAMobileNetV3``."""
    key = key.removeprefix("module.").replace(".mobile_inverted_conv.", ".conv.")
    key = key.replace("classifier.linear.linear.", "classifier.linear.")
    m = _FLAT_ELASTIC.match(key)
    if m and not (m.group(2) == "conv" and m.group(3) != "weight"):
        key = f"{m.group(1)}.{m.group(2)}.{m.group(2)}.{m.group(3)}"
    return key


def is_safetensors(path: str | Path) -> bool:
    """Whether ``path`` starts like a safetensors file (8-byte header size, then ``{``)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_ofa_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an OFA checkpoint file (a state dict, or a dict holding one under
    ``state_dict``), read without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found", path)
    if is_safetensors(path):
        raise UserError("a safetensors file, not an OFA torch checkpoint (a nasplat checkpoint needs no "
                        "conversion)", path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise UserError(f"not a readable torch checkpoint ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})", path) from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise UserError("expected a state dict (or a dict with a 'state_dict' entry)", path)
    bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise UserError(f"entry {bad!r} is not a tensor; expected a state dict", path)
    return {str(k): v for k, v in obj.items()}


def ofa_to_nasplat(state: Mapping[str, torch.Tensor], space: SearchSpace,
                   source: str | Path | None = None) -> dict[str, torch.Tensor]:
    """An OFA state dict -> the state dict of ``build_supernet(space)`` (every tensor of
    it: those the checkpoint may lack keep the supernet's initial values)."""
    table = _space_table(space)
    target = build_supernet(space).state_dict()
    out: dict[str, torch.Tensor] = {}
    where = f"space {space.config.name!r}"
    for key, tensor in state.items():
        canon = canonical_ofa_key(key)
        name = table.get(canon)
        if name is None:
            raise UserError(f"tensor {key!r} has no place in {where} (is the space of the same shape?)", source)
        want = target[name].shape
        if tuple(tensor.shape) != tuple(want):
            raise UserError(f"tensor {key!r} has shape {list(tensor.shape)}, {where} needs {list(want)} "
                            f"(at {name})", source)
        out[name] = tensor.detach().to(target[name].dtype).clone()
    missing = next((k for k, v in table.items() if v not in out and not _OPTIONAL.search(k)), None)
    if missing is not None:
        raise UserError(f"tensor {missing!r} of {where} is missing from the checkpoint", source)
    return {k: out.get(k, v) for k, v in target.items()}


_NASPLAT_STAGE = re.compile(r"^stages\.(\d+)\.(\d+)\.")


def nasplat_to_ofa(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A nasplat ``mbv3`` supernet state dict -> the state dict ``OFAMobileNetV3`` of the
    same configuration loads with ``strict=True`` (nested key form).

    The layout (largest depth per stage, kernels, SE) is read from the keys themselves.
    """
    depths: dict[int, int] = {}
    kernels: dict[int, set[int]] = {}
    se: dict[int, bool] = {}
    for k in state:
        m = _NASPLAT_STAGE.match(k)
        if not m:
            continue
        i, j = int(m.group(1)), int(m.group(2))
        depths[i] = max(depths.get(i, 0), j + 1)
        t = re.search(r"\.dw\.transforms\.(\d+)to(\d+)$", k)
        if t:
            kernels.setdefault(i, set()).update((int(t.group(1)), int(t.group(2))))
        if ".se." in k:
            se[i] = True
    if not depths or "stem.0.weight" not in state:
        raise UserError("not an mbv3 supernet checkpoint (no stem / stages tensors)")
    n = max(depths) + 1
    if sorted(depths) != list(range(n)):
        raise UserError(f"stage tensors are not contiguous: stages {sorted(depths)}")
    table = key_table([depths[i] for i in range(n)], [sorted(kernels.get(i, ())) for i in range(n)],
                      [se.get(i, False) for i in range(n)])
    inverse = {v: k for k, v in table.items()}
    out = {}
    for k, v in state.items():
        if k not in inverse:
            raise UserError(f"tensor {k!r} has no place in an OFA MobileNetV3")
        out[inverse[k]] = v.detach().cpu().contiguous()
    return out


def ofa_subnet_setting(arch: Mapping[str, Any], space: SearchSpace) -> dict[str, list[int]]:
    """``arch`` as the arguments of OFA's ``set_active_subnet(ks=, e=, d=)`` (one kernel
    and expand ratio per block, stage-major at the largest depths; a block past its
    stage's depth is inactive and gets the smallest choice)."""
    c = space.config
    blocks = [(i, j, s) for i, s in enumerate(c.stages) for j in range(max(s.depths))]
    return {"ks": [int(arch.get(f"k{i}_{j}", min(s.kernels))) for i, j, s in blocks],
            "e": [_number(arch.get(f"e{i}_{j}", min(s.expands))) for i, j, s in blocks],
            "d": [int(arch[f"d{i}"]) for i in range(len(c.stages))]}


def _number(v: Any) -> int | float:
    f = float(v)
    return int(f) if f.is_integer() else f


def save_ofa(path: str | Path, state: Mapping[str, torch.Tensor]) -> None:
    """Write ``{"state_dict": ...}`` as OFA's published checkpoints are laid out."""
    from ..io import atomic_path

    with atomic_path(Path(path)) as tmp:
        torch.save({"state_dict": dict(state)}, tmp)


def convert_ofa_checkpoint(src: str | Path, space: SearchSpace, out: str | Path) -> dict[str, Any]:
    """``nasplat convert ofa``: an OFA checkpoint file -> a nasplat supernet checkpoint
    of ``space``; returns the checkpoint's metadata."""
    net = build_supernet(space)
    net.load_state_dict(ofa_to_nasplat(read_ofa_state(src), space, src))
    meta = {"space_hash": space.hash(), "space": space.config.name, "source": "ofa",
            "converted_from": Path(src).name}
    save_weights(out, net, meta)
    return meta


def load_weights_into(model: torch.nn.Module, space: SearchSpace, path: str | Path, field: str | None = None) -> None:
    """Load ``path`` into ``model`` (the supernet of ``space``): a nasplat checkpoint of
    this space, or an official OFA checkpoint (converted in memory). ``field``: the
    config field that named the file, for the error message."""
    path = Path(path)
    try:
        if not path.is_file():
            raise UserError("checkpoint not found", path)
        if is_safetensors(path):
            load_weights(path, model, space.hash())
        else:
            model.load_state_dict(ofa_to_nasplat(read_ofa_state(path), space, path))
    except UserError as e:
        raise UserError(e.message, e.file, e.field or field) from None


def load_any_weights(space: SearchSpace, path: str | Path) -> Supernet:
    """``build_supernet(space)`` with the weights of ``path`` (see :func:`load_weights_into`)."""
    net = build_supernet(space)
    load_weights_into(net, space, path)
    return net
