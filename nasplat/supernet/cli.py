"""``nasplat convert ofa CKPT --space SPACE --out OUT.safetensors`` and
``nasplat convert --to ofa IN.safetensors --out OUT.pth``: official Once-for-All
MobileNetV3 checkpoints in and out (:mod:`nasplat.supernet.ofa_convert`)."""
from __future__ import annotations

import argparse

from ..errors import UserError

FORMATS = ("ofa",)
USAGE = ("nasplat convert ofa CKPT --space SPACE --out OUT.safetensors | "
         "nasplat convert --to ofa IN.safetensors --out OUT.pth")


def _convert(args: argparse.Namespace) -> int:
    if args.to:
        return _to_ofa(args)
    if len(args.inputs) != 2 or args.inputs[0] not in FORMATS:
        raise UserError(f"expected a format ({', '.join(FORMATS)}) and a checkpoint: {USAGE}", None, "convert")
    if not args.space:
        raise UserError(f"which space the checkpoint holds is needed (e.g. --space ofa_mbv3): {USAGE}",
                        None, "--space")
    from ..space import resolve_space
    from .ofa_convert import convert_ofa_checkpoint

    space = resolve_space(args.space, None, None, "--space")
    meta = convert_ofa_checkpoint(args.inputs[1], space, args.out)
    print(f"{args.inputs[1]} -> {args.out} (space {meta['space']}, hash {meta['space_hash'][:12]})")
    return 0


def _to_ofa(args: argparse.Namespace) -> int:
    if len(args.inputs) != 1:
        raise UserError(f"--to {args.to} takes one nasplat checkpoint: {USAGE}", None, "convert")
    if args.space:
        raise UserError("not used with --to (the layout is read from the checkpoint)", None, "--space")
    from ..checkpoint import load_checkpoint
    from .ofa_convert import nasplat_to_ofa, save_ofa

    src = args.inputs[0]
    state, _ = load_checkpoint(src)
    try:
        converted = nasplat_to_ofa(state["model"])
    except UserError as e:
        raise UserError(e.message, src) from None
    save_ofa(args.out, converted)
    print(f"{src} -> {args.out} ({len(converted)} tensors, OFAMobileNetV3 state_dict)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="official Once-for-All checkpoints in and out",
        description="Convert an official Once-for-All MobileNetV3 checkpoint (e.g. "
                    "ofa_mbv3_d234_e346_k357_w1.0) into a nasplat supernet checkpoint of a space of the "
                    "same shape (search_spaces/ofa_mbv3.yaml, ofa_mbv3_w12.yaml), or, with --to ofa, a "
                    "nasplat mbv3 checkpoint into a state dict the official OFAMobileNetV3 loads.",
        epilog="examples:\n  nasplat convert ofa ofa_mbv3_d234_e346_k357_w1.0 --space ofa_mbv3 --out ofa.safetensors\n"
               "  nasplat convert --to ofa runs/x/supernet/supernet.safetensors --out x.pth",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="ARG",
                   help="`ofa CKPT` (an OFA .pth state dict, or a dict with 'state_dict'), or with --to "
                        "the nasplat checkpoint to convert")
    p.add_argument("--to", choices=FORMATS, default=None, help="convert a nasplat checkpoint to this format")
    p.add_argument("--space", default=None, metavar="SPACE",
                   help="the space YAML or shipped space name the OFA checkpoint fits (e.g. ofa_mbv3)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write (atomically)")
    p.set_defaults(func=_convert)
