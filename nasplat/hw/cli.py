"""``nasplat profile EXP [--device NAME] [--samples N] [--force] [--bundle OUT.tar | --import CSV]``
and ``nasplat device-run BUNDLE --out CSV``."""
from __future__ import annotations

import argparse

from ..cli_args import add_address, add_experiment, add_quiet, add_weights
from ..errors import UserError


def _profile(args: argparse.Namespace) -> int:
    from ..experiment import load_experiment
    from .stage import import_results, profile_experiment, write_bundle

    exp = load_experiment(args.experiment)
    if args.samples is not None and args.samples < 1:
        raise UserError(f"must be >= 1, got {args.samples}", None, "--samples")
    devices = [args.device] if args.device else list(exp.config.hardware)
    if not devices:
        raise UserError("no device: pass --device NAME or list profiles under hardware:", exp.path, "hardware")
    if (args.bundle or args.import_csv) and len(devices) != 1:
        raise UserError("--bundle / --import need exactly one --device", None, "--device")
    for dev in devices:
        if args.bundle:
            print(write_bundle(exp, dev, args.bundle, args.samples, args.quiet, args.weights))
        elif args.import_csv:
            import_results(exp, dev, args.import_csv, args.quiet)
        else:
            print(profile_experiment(exp, dev, args.samples, args.address, args.quiet, args.weights, args.force))
    return 0


def _device_run(args: argparse.Namespace) -> int:
    from . import runner

    try:
        rows = runner.run_bundle(args.bundle, args.out, args.quiet)
    except runner.BundleError as e:
        raise UserError(str(e), args.bundle) from None
    print(f"{len(rows)} models measured -> {args.out}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="measure subnet latency on a hardware profile")
    add_experiment(p)
    p.add_argument("--device", metavar="NAME", help="profile name (default: every profile under hardware:)")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="archs per device (default: profile.samples)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--bundle", metavar="OUT.tar", help="write an offline bundle instead of measuring")
    g.add_argument("--import", dest="import_csv", metavar="CSV", help="append a device-run result CSV")
    p.add_argument("--force", action="store_true",
                   help="discard the device's earlier measurements and measure again (e.g. after the profile "
                        "changed)")
    add_address(p, "profiles with where: ray")
    add_weights(p)
    add_quiet(p)
    p.set_defaults(func=_profile)

    d = sub.add_parser("device-run", help="time a bundle with ONNX Runtime (needs only onnxruntime + numpy)")
    d.add_argument("bundle", metavar="BUNDLE", help="a bundle tar written by `nasplat profile --bundle`")
    d.add_argument("--out", required=True, metavar="CSV", help="where to write the measurements")
    add_quiet(d)
    d.set_defaults(func=_device_run)
