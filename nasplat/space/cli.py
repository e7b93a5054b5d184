"""``nasplat space info SPACE`` and ``nasplat space sample SPACE -n N``."""
from __future__ import annotations

import argparse
import json

import numpy as np

SPACE_HELP = "a space YAML file or a shipped space name (e.g. ofa_mbv3_small)"


def _load(spec: str):
    from . import resolve_space

    return resolve_space(spec, None, None, "SPACE")


def _info(args: argparse.Namespace) -> int:
    space = _load(args.space)
    d = space.describe()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"space      {d['name']} (family {d['family']}, {len(space.params)} choices)")
    print(f"subnets    {d['archs']:.3e} in all, {d['archs_per_resolution']:.3e} per resolution "
          f"({len(d['resolutions'])} resolutions {d['resolutions'][0]}..{d['resolutions'][-1]})")
    print(f"MACs       {d['macs_min'] / 1e6:.2f}M .. {d['macs_max'] / 1e6:.2f}M")
    print(f"params     {d['params_min'] / 1e6:.3f}M .. {d['params_max'] / 1e6:.3f}M")
    for key, value in d.items():  # what the family adds (e.g. darts_cell: ops, reduction cells)
        if key not in _COMMON:
            print(f"{key:<10} {value}")
    return 0


_COMMON = {"family", "name", "archs", "archs_per_resolution", "resolutions", "macs_min", "macs_max",
           "params_min", "params_max"}


def _sample(args: argparse.Namespace) -> int:
    space = _load(args.space)
    rng = np.random.default_rng(args.seed)
    for _ in range(args.n):
        print(space.sample(rng).to_json())
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("space", help="inspect a search space")
    s = p.add_subparsers(dest="space_command", required=True, parser_class=type(p))
    i = s.add_parser("info", help="family, subnet count, MACs and params range")
    i.add_argument("space", metavar="SPACE", help=SPACE_HELP)
    i.add_argument("--json", action="store_true", help="print the description as JSON")
    i.set_defaults(func=_info)
    q = s.add_parser("sample", help="random archs as JSON lines")
    q.add_argument("space", metavar="SPACE", help=SPACE_HELP)
    q.add_argument("-n", type=int, default=1, help="how many archs (default 1)")
    q.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    q.set_defaults(func=_sample)
