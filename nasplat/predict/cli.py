"""``nasplat predictor fit EXP --device NAME [--kind learned|lut|transfer]`` and
``nasplat predictor fit EXP --accuracy [--samples N | --from CSV]``."""
from __future__ import annotations

import argparse
import json

from ..cli_args import add_address, add_experiment, add_quiet
from ..errors import UserError


def _fit(args: argparse.Namespace) -> int:
    from ..experiment import load_experiment
    from .stage import fit_accuracy, fit_latency

    exp = load_experiment(args.experiment)
    options = None
    if args.options is not None:
        try:
            options = json.loads(args.options)
        except json.JSONDecodeError as e:
            raise UserError(f"not JSON: {e}", None, "--options") from None
        if not isinstance(options, dict):
            raise UserError("must be a JSON object", None, "--options")
    if args.accuracy:
        fit_accuracy(exp, args.samples, args.from_csv, args.quiet)
        return 0
    devices = [args.device] if args.device else list(exp.config.hardware)
    if not devices:
        raise UserError("no device: pass --device NAME or list profiles under hardware:", exp.path, "hardware")
    for dev in devices:
        m = fit_latency(exp, dev, args.kind, options, None, args.address, args.quiet)
        if m:
            print(json.dumps({"device": dev, **{k: (None if v != v else round(v, 5)) for k, v in m.items()}}))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predictor", help="fit latency / accuracy predictors")
    psub = p.add_subparsers(dest="predictor_command", required=True, parser_class=type(p))
    f = psub.add_parser("fit", help="fit, report held-out metrics, save (no pickle)")
    add_experiment(f)
    f.add_argument("--device", metavar="NAME", help="profile name (default: every profile under hardware:)")
    f.add_argument("--kind", default=None,
                   help="latency predictor: learned, lut or transfer (default: predictor.latency)")
    f.add_argument("--options", default=None, help="JSON hyper-parameters, e.g. '{\"model\": \"gbrt\"}'")
    f.add_argument("--accuracy", action="store_true", help="fit the accuracy predictor instead")
    f.add_argument("--samples", type=int, default=None, help="archs to evaluate for --accuracy")
    f.add_argument("--from", dest="from_csv", default=None, help="CSV with arch,accuracy for --accuracy")
    add_address(f, "measuring lut blocks on where: ray profiles")
    add_quiet(f)
    f.set_defaults(func=_fit)
