"""Ranking consistency: does the supernet rank subnets like stand-alone training does?

``nasplat bench ranking [EXP] [--quick]`` (also ``python -m bench.ranking``):

1. A fixed set of archs (``--archs``, default 20) spread over MACs: 4000 archs drawn
   with a fixed seed, sorted by MACs, one taken at each of N evenly spaced quantiles.
2. Each arch trained stand-alone from scratch (fresh init, SGD + cosine, label
   smoothing) for ``--standalone-epochs`` with ``--standalone-seeds`` seeds; these runs
   are Ray Tune trials in parallel; results are cached in the output folder, so a
   re-run only trains what is missing.
3. One supernet per strategy and seed (``--seeds``), all at the same budget counted in
   *subnet-steps* (forward+backward of one subnet on one batch): each strategy gets the
   ``train.epochs`` whose phases come closest to ``--budget`` (sandwich trains 4 subnets
   a step so it gets a quarter of uniform's epochs). The subnet-steps each run really
   took are read from its train log and reported. Also Ray Tune trials, also cached.
4. Each arch's supernet-inherited accuracy and loss on the val split (extract + BN
   recalibration, ``nasplat.supernet.evaluate.evaluate_arch``); Kendall τ (tau-b,
   ties handled) and Spearman ρ (scipy) against the stand-alone mean, per strategy and
   seed, on accuracy and on val loss (accuracies on small data tie; losses do not).

Defaults: digits, the small space ``bench/ranking_space.yaml``, the strategies
``uniform``, ``sandwich``, ``pada``, ``pada_iw`` (PA&DA with 1/(N·p) importance weights),
plus ``elasticvit`` and ``progressive_shrinking`` when registered. ``EXP`` takes the
space, data and ``train:`` settings of an experiment; ``--data cifar10:PATH`` or
``--data folder:PATH`` swaps the data set (the bench space then takes the data's
channels and a resolution range ending at ``--resolution``). Writes ``ranking.csv``,
``ranking.md``, ``standalone.csv`` and ``scatter_<strategy>.png`` to ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BENCH_SPACE = REPO / "bench" / "ranking_space.yaml"

# bench variant -> (strategy, options); options small enough for the bench space
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "uniform": ("uniform", {}),
    "sandwich": ("sandwich", {"num_random": 2}),
    "pada": ("pada", {}),
    "pada_iw": ("pada", {"importance_weights": True}),
    "elasticvit": ("elasticvit", {"num_levels": 4, "pool_size": 2000, "pool_max_draws": 200000,
                                  "bank_size": 20, "big_bank_size": 10}),
    "progressive_shrinking": ("progressive_shrinking", {}),
}


# -- the set up, shared by the driver and the trials ---------------------------------
def _space(space_cfg: dict[str, Any]):
    from nasplat.space import space_from_dict

    return space_from_dict(space_cfg, "ranking space")


def _data(data_cfg: dict[str, Any], channels: int, base_dir: str):
    from nasplat.data import DataConfig, load_data

    return load_data(DataConfig(**data_cfg), channels, Path(base_dir))


def pick_archs(space, n: int, seed: int = 12345) -> list:
    """``n`` distinct archs at evenly spaced MACs quantiles of 4000 random ones."""
    rng = np.random.default_rng(seed)
    pool = {a.id: a for a in (space.sample(rng) for _ in range(4000))}
    archs = sorted(pool.values(), key=lambda a: (space.macs(a), a.id))
    out, seen = [], set()
    for q in np.linspace(0, len(archs) - 1, n * 3):
        a = archs[int(round(q))]
        if a.id not in seen:
            seen.add(a.id)
            out.append(a)
    # thin to n, keeping the spread
    keep = np.linspace(0, len(out) - 1, n).round().astype(int)
    return [out[i] for i in keep]


def _eval_static(static, data, resolution: int) -> tuple[float, float]:
    """(accuracy, mean CE loss) of a static net on the val split."""
    import torch
    import torch.nn.functional as F

    from nasplat.supernet import resize

    static.eval()
    correct = total = 0
    loss = 0.0
    with torch.no_grad():
        for x, y, _ in data.batches("val", 500):
            out = static(resize(x, resolution))
            correct += int((out.argmax(1) == y).sum())
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            total += len(y)
    return correct / max(1, total), loss / max(1, total)


def train_standalone(job: dict[str, Any]) -> dict[str, Any]:
    """Train one arch from scratch; returns its val accuracy and loss."""
    import torch
    import torch.nn.functional as F

    from nasplat.supernet import build_supernet, resize

    torch.set_num_threads(job.get("threads", 1))
    space = _space(job["space"])
    data = _data(job["data"], space.config.input_channels, job["base_dir"])
    arch = space.arch(job["arch"])
    res = space.resolution(arch)
    torch.manual_seed(job["seed"])
    net = build_supernet(space).extract(arch).train()
    decay = [p for p in net.parameters() if p.ndim > 1]
    rest = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": job["weight_decay"]},
                           {"params": rest, "weight_decay": 0.0}],
                          lr=job["lr"], momentum=0.9, nesterov=True)
    bs, n = job["batch_size"], len(data.train)
    steps = max(1, n // bs)
    total = steps * job["epochs"]
    rng = np.random.default_rng(job["seed"] + 7)
    t0 = time.perf_counter()
    it = 0
    for _ in range(job["epochs"]):
        for x, y, _ in data.batches("train", bs, rng.permutation(n), drop_last=True):
            for g in opt.param_groups:
                g["lr"] = job["lr"] * 0.5 * (1 + np.cos(np.pi * it / total))
            loss = F.cross_entropy(net(resize(x, res)), y, label_smoothing=job["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
    acc, vloss = _eval_static(net, data, res)
    return {"arch": arch.id, "seed": job["seed"], "acc": acc, "loss": vloss, "macs": space.macs(arch),
            "params": space.num_params(arch), "seconds": time.perf_counter() - t0}


def train_supernet(job: dict[str, Any]) -> dict[str, Any]:
    """Train one supernet with a strategy, then evaluate every arch of the set through it."""
    import shutil

    import torch

    from nasplat.space import Arch
    from nasplat.supernet.evaluate import evaluate_arch
    from nasplat.train.config import TrainConfig
    from nasplat.train.distributed import Dist
    from nasplat.train.engine import make_trainer
    from nasplat.train.strategies import TrainContext

    torch.set_num_threads(job.get("threads", 1))
    space = _space(job["space"])
    data = _data(job["data"], space.config.input_channels, job["base_dir"])
    run_dir = Path(job["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = TrainConfig(**job["train"])
    torch.manual_seed(job["seed"])
    np.random.seed(job["seed"])
    ctx = TrainContext(space, data, cfg, job["seed"], run_dir, torch.device("cpu"), Dist())
    t0 = time.perf_counter()
    trainer = make_trainer(ctx, job["batch_size"])
    net = trainer.fit()
    train_s = time.perf_counter() - t0
    subnet_steps = 0
    with open(run_dir / "supernet" / "train_log.csv") as f:
        for row in csv.DictReader(f):
            subnet_steps += len(row["archs"].split(";")) if row["archs"] else 0
    out = {}
    for values in job["archs"]:
        arch = space.arch(values)
        acc, static = evaluate_arch(net, arch, data, job["calib_images"])
        _, vloss = _eval_static(static, data, space.resolution(arch))
        out[arch.id] = {"acc": acc, "loss": vloss}
    return {"variant": job["variant"], "seed": job["seed"], "epochs": cfg.epochs, "subnet_steps": subnet_steps,
            "train_seconds": train_s, "archs": out}


def _tune_trial(config: dict[str, Any]) -> None:
    from ray import tune

    job = config["job"]
    try:
        fn = train_standalone if job["kind"] == "standalone" else train_supernet
        result = fn(job)
        if job.get("key") is not None and Path(job["cache"]).parent.is_dir():
            # cache at once where the output folder is visible (a killed bench keeps what finished)
            from nasplat.io import write_json

            write_json(job["cache"], {**result, "key": job["key"],
                                      **({"planned": job["planned"]} if "planned" in job else {})})
    except Exception as e:  # reported, not raised: one failing strategy must not stop the bench
        result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    tune.report({"result": json.dumps(result)})


def run_jobs(jobs: list[dict[str, Any]], name: str, out: Path, cpus: int) -> list[dict[str, Any]]:
    """Run jobs as Ray Tune trials (one CPU each, ``cpus`` at a time)."""
    if not jobs:
        return []
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(_tune_trial, {"cpu": 1}),
        param_space={"job": tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=cpus, reuse_actors=False),
        run_config=tune.RunConfig(name=name, storage_path=str((out / "tune").resolve()), verbose=0),
    )
    results = []
    for r in tuner.fit():
        if r.error is not None or "result" not in (r.metrics or {}):
            results.append({"error": str(r.error).splitlines()[-1] if r.error else "no result",
                            "job": r.config["job"]})
            continue
        res = json.loads(r.metrics["result"])
        res["job"] = r.config["job"]
        results.append(res)
    return results


# -- equal budget ----------------------------------------------------------------------
def epochs_for_budget(strategy: str, options: dict[str, Any], base_train: dict[str, Any], space, data,
                      budget: int, batch_size: int) -> tuple[int, int]:
    """(train.epochs, planned subnet-steps) whose phases come closest to ``budget``."""
    import torch

    from nasplat.train.config import TrainConfig
    from nasplat.train.distributed import Dist
    from nasplat.train.strategies import STRATEGIES, TrainContext

    cls = STRATEGIES.get(strategy)
    opts = cls.parse_options(options)
    steps_per_epoch = max(1, len(data.train) // batch_size)

    def planned(e: int) -> int:
        cfg = TrainConfig(**{**base_train, "epochs": e, "strategy": strategy, "options": options})
        ctx = TrainContext(space, data, cfg, 0, Path("/nonexistent"), torch.device("cpu"), Dist())
        phases = cls(ctx, opts).phases()
        return sum(p.epochs * p.subnets_per_step for p in phases) * steps_per_epoch

    best = (1, planned(1))
    e = 1
    while best[1] < budget and e < 1000:
        e = e + 1 if e < 8 else int(e * 1.15) + 1
        s = planned(e)
        if abs(s - budget) <= abs(best[1] - budget):
            best = (e, s)
        if s >= budget:
            break
    # refine between the last two candidates
    lo = max(1, best[0] - 6)
    for e2 in range(lo, best[0] + 7):
        s = planned(e2)
        if abs(s - budget) < abs(best[1] - budget):
            best = (e2, s)
    return best


# -- metrics, table, plots ---------------------------------------------------------------
def correlations(sn: list[float], sa: list[float]) -> tuple[float, float]:
    from scipy.stats import kendalltau, spearmanr

    if len(set(sn)) < 2 or len(set(sa)) < 2:
        return float("nan"), float("nan")
    return float(kendalltau(sn, sa).statistic), float(spearmanr(sn, sa).statistic)


def _scatter(path: Path, variant: str, sa: dict[str, float], runs: list[dict[str, Any]], archs: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    for r, m in zip(runs, "os^vD"):
        xs = [sa[a.id] for a in archs]
        ys = [r["archs"][a.id]["acc"] for a in archs]
        ax.scatter(xs, ys, marker=m, alpha=0.7, label=f"seed {r['seed']}: τ={r['tau_acc']:.2f}")
    ax.set_xlabel("stand-alone val accuracy")
    ax.set_ylabel("supernet-inherited val accuracy")
    ax.set_title(f"{variant}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from nasplat.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.3f}"


# -- driver ---------------------------------------------------------------------------------
def _setup(args: argparse.Namespace):
    import yaml

    from nasplat.data import DataConfig
    from nasplat.space import read_yaml
    from nasplat.train.config import TrainConfig

    train = {"lr": 0.2, "warmup_epochs": 1.0}
    data_cfg: dict[str, Any] = {"name": "digits", "resolution": 12, "batch_size": 64, "calib_images": 500}
    base_dir = str(REPO)
    space_cfg = None
    if args.experiment:
        from nasplat.experiment import load_experiment

        exp = load_experiment(args.experiment)
        data_cfg = exp.config.data.model_dump()
        base_dir = str(exp.base_dir.resolve())
        t = exp.config.train.model_dump()
        train = {k: t[k] for k in ("lr", "momentum", "nesterov", "weight_decay", "label_smoothing",
                                   "warmup_epochs", "grad_clip")}
        space_cfg = exp.space.config.model_dump(mode="json")
    if args.space:
        space_cfg = read_yaml(args.space, "search space file")
    if args.data:
        name, _, path = args.data.partition(":")
        data_cfg = {**data_cfg, "name": name, "path": str(Path(path).resolve()) if path else None}
        if args.resolution:
            data_cfg["resolution"] = args.resolution
        if space_cfg is None:  # the bench space, adapted to the data's channels and size
            space_cfg = yaml.safe_load(BENCH_SPACE.read_text())
            probe = _data({**data_cfg}, 3, base_dir)
            r = int(data_cfg.get("resolution", probe.resolution))
            space_cfg.update(input_channels=probe.channels, num_classes=probe.num_classes,
                             resolutions=sorted({max(8, int(round(r * f / 2)) * 2) for f in (2 / 3, 5 / 6, 1.0)}))
    if space_cfg is None:
        space_cfg = yaml.safe_load(BENCH_SPACE.read_text())
    TrainConfig(**train)
    DataConfig(**data_cfg)
    return space_cfg, data_cfg, base_dir, train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nasplat bench ranking", description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", nargs="?", help="experiment YAML (space, data, train settings)")
    ap.add_argument("--space", help="space YAML (default: the experiment's, else bench/ranking_space.yaml)")
    ap.add_argument("--data", help="NAME[:PATH], e.g. cifar10:/data/cifar-10-batches-py (default: digits)")
    ap.add_argument("--resolution", type=int, help="stored image size with --data")
    ap.add_argument("--strategies", help="comma-separated variants (default: all registered of "
                    + ", ".join(VARIANTS) + ")")
    ap.add_argument("--archs", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=2, help="supernet seeds")
    ap.add_argument("--standalone-seeds", type=int, default=2)
    ap.add_argument("--standalone-epochs", type=int, default=2,
                    help="short on purpose: digits saturates near 98-99%% and ties hurt tau")
    ap.add_argument("--standalone-lr", type=float, default=0.3)
    ap.add_argument("--budget", type=int, default=600, help="subnet-steps per supernet")
    ap.add_argument("--calib-images", type=int, default=500)
    ap.add_argument("--cpus", type=int, default=2, help="parallel trials (local Ray instance)")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: a local instance)")
    ap.add_argument("--out", help="output folder (default runs/ranking_<space>_<data>)")
    ap.add_argument("--quick", action="store_true", help="1 stand-alone seed, a smaller budget")
    args = ap.parse_args(argv)
    if args.quick:
        args.standalone_seeds = 1
        args.budget = min(args.budget, 300)

    sys.path.insert(0, str(REPO))
    from bench._common import machine, today
    from nasplat.train.strategies import STRATEGIES
    from nasplat.ui import say

    space_cfg, data_cfg, base_dir, train = _setup(args)
    space = _space(space_cfg)
    data = _data(data_cfg, space.config.input_channels, base_dir)
    out = Path(args.out or f"runs/ranking_{space.config.name}_{data_cfg['name']}")
    out.mkdir(parents=True, exist_ok=True)
    names = args.strategies.split(",") if args.strategies else [v for v, (s, _) in VARIANTS.items()
                                                               if s in STRATEGIES]
    for v in names:
        if v not in VARIANTS and v not in STRATEGIES:
            from nasplat.errors import UserError

            raise UserError(f"unknown strategy {v!r} (known: {', '.join(VARIANTS)})", None, "--strategies")
    archs = pick_archs(space, args.archs)
    key = {"space": space.hash(), "data": data_cfg, "train": train}
    bs = int(data_cfg["batch_size"])
    say(f"ranking: {len(archs)} archs, MACs {space.macs(archs[0]):,}..{space.macs(archs[-1]):,}; "
        f"strategies {', '.join(names)}; {args.seeds} seed(s); budget {args.budget} subnet-steps; out {out}")

    # stand-alone ------------------------------------------------------------------------
    sa_dir = out / "standalone"
    sa_dir.mkdir(exist_ok=True)
    common = {"space": space_cfg, "data": data_cfg, "base_dir": base_dir, "batch_size": bs, "threads": 1}
    sa_jobs, sa_results = [], []
    for a in archs:
        for s in range(args.standalone_seeds):
            f = sa_dir / f"{a.id}_s{s}_e{args.standalone_epochs}_lr{args.standalone_lr:g}.json"
            if f.exists() and json.loads(f.read_text()).get("key") == key:
                sa_results.append(json.loads(f.read_text()))
                continue
            sa_jobs.append({**common, "kind": "standalone", "arch": dict(a), "seed": s,
                            "epochs": args.standalone_epochs, "lr": args.standalone_lr,
                            "weight_decay": train.get("weight_decay", 3e-5),
                            "label_smoothing": train.get("label_smoothing", 0.1), "cache": str(f.resolve()),
                            "key": key})
    # supernets --------------------------------------------------------------------------
    sn_dir = out / "supernets"
    sn_dir.mkdir(exist_ok=True)
    sn_jobs, sn_results = [], []
    for v in names:
        strat, opts = VARIANTS.get(v, (v, {}))
        try:
            epochs, planned = epochs_for_budget(strat, opts, train, space, data, args.budget, bs)
        except Exception as e:  # a strategy that cannot run on this space is reported, not fatal
            say(f"  {v}: cannot plan ({type(e).__name__}: {e})")
            sn_results.append({"variant": v, "seed": -1, "error": f"{type(e).__name__}: {e}"})
            continue
        for s in range(args.seeds):
            f = sn_dir / f"{v}_s{s}_b{args.budget}.json"
            if f.exists() and json.loads(f.read_text()).get("key") == {**key, "archs": [a.id for a in archs]}:
                sn_results.append(json.loads(f.read_text()))
                continue
            tr = {**train, "strategy": strat, "options": opts, "epochs": epochs, "threads": 1}
            sn_jobs.append({**common, "kind": "supernet", "variant": v, "seed": s, "train": tr,
                            "archs": [dict(a) for a in archs], "calib_images": args.calib_images,
                            "run_dir": str((sn_dir / f"{v}_s{s}").resolve()), "planned": planned,
                            "cache": str(f.resolve()), "key": {**key, "archs": [a.id for a in archs]}})
    todo = len(sa_jobs) + len(sn_jobs)
    say(f"  cached: {len(sa_results)} stand-alone, {len(sn_results)} supernet; to run: {len(sa_jobs)} "
        f"stand-alone, {len(sn_jobs)} supernet trials")
    t0 = time.perf_counter()
    if todo:
        import ray

        started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                                      runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
            if args.address:
                ray.init(address=args.address, **kw)
            else:
                ray.init(num_cpus=args.cpus, **kw)
            started = True
        try:
            # supernets first: they are the long trials, stand-alone ones fill in after
            try:
                ran = run_jobs(sn_jobs + sa_jobs, "ranking", out, args.cpus)
            except Exception as e:  # e.g. Ray's OOM killer on a crowded node: keep what the trials cached
                say(f"  Ray Tune stopped ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                    "collecting the trials that finished")
                ran = []
                for job in sn_jobs + sa_jobs:
                    f = Path(job["cache"])
                    res = json.loads(f.read_text()) if f.exists() else None
                    if res is not None and res.get("key") == job["key"]:
                        ran.append({**res, "job": job})
                    elif job["kind"] == "supernet":
                        ran.append({"error": "trial did not finish", "job": job})
            for res in ran:
                job = res.pop("job")
                if "error" in res:
                    say(f"  trial failed ({job['kind']} {job.get('variant', job.get('arch'))}): {res['error']}")
                    if job["kind"] == "supernet":
                        sn_results.append({"variant": job["variant"], "seed": job["seed"], "error": res["error"]})
                    continue
                if job["kind"] == "standalone":
                    res["key"] = key
                    sa_results.append(res)
                else:
                    res["key"] = {**key, "archs": [a.id for a in archs]}
                    res["planned"] = job["planned"]
                    sn_results.append(res)
                from nasplat.io import write_json

                write_json(job["cache"], res)
        finally:
            if started:
                ray.shutdown()
    wall = time.perf_counter() - t0

    # the table ----------------------------------------------------------------------------
    from nasplat.io import write_text

    by_arch: dict[str, list[dict[str, Any]]] = {}
    for r in sa_results:
        by_arch.setdefault(r["arch"], []).append(r)
    sa_acc = {a: float(np.mean([r["acc"] for r in rs])) for a, rs in by_arch.items()}
    sa_loss = {a: float(np.mean([r["loss"] for r in rs])) for a, rs in by_arch.items()}
    lines = ["arch,macs,params," + ",".join(f"acc_s{s}" for s in range(args.standalone_seeds)) + ",acc_mean,loss_mean"]
    for a in archs:
        rs = sorted(by_arch.get(a.id, []), key=lambda r: r["seed"])
        lines.append(f"{a.id},{space.macs(a)},{space.num_params(a)},"
                     + ",".join(f"{r['acc']:.4f}" for r in rs) + f",{sa_acc.get(a.id, float('nan')):.4f},"
                     f"{sa_loss.get(a.id, float('nan')):.4f}")
    write_text(out / "standalone.csv", "\n".join(lines) + "\n")
    accs = [sa_acc[a.id] for a in archs if a.id in sa_acc]
    rows, per_variant = [], {}
    complete = [a for a in archs if a.id in sa_acc]
    for r in sorted(sn_results, key=lambda r: (names.index(r["variant"]) if r["variant"] in names else 99, r["seed"])):
        if "error" in r:
            rows.append({"strategy": r["variant"], "seed": r["seed"], "error": r["error"]})
            continue
        sn_a = [r["archs"][a.id]["acc"] for a in complete]
        sn_l = [r["archs"][a.id]["loss"] for a in complete]
        r["tau_acc"], r["rho_acc"] = correlations(sn_a, [sa_acc[a.id] for a in complete])
        r["tau_loss"], r["rho_loss"] = correlations(sn_l, [sa_loss[a.id] for a in complete])
        rows.append({"strategy": r["variant"], "seed": r["seed"], "epochs": r["epochs"],
                     "subnet_steps": r["subnet_steps"], "tau_acc": r["tau_acc"], "rho_acc": r["rho_acc"],
                     "tau_loss": r["tau_loss"], "rho_loss": r["rho_loss"],
                     "sn_acc_mean": float(np.mean(sn_a)), "train_s": r["train_seconds"]})
        per_variant.setdefault(r["variant"], []).append(r)
    cols = ["strategy", "seed", "epochs", "subnet_steps", "tau_acc", "rho_acc", "tau_loss", "rho_loss",
            "sn_acc_mean", "train_s", "error"]
    write_text(out / "ranking.csv", ",".join(cols) + "\n" + "".join(
        ",".join(str(row.get(c, "")) for c in cols) + "\n" for row in rows))
    for v, runs in per_variant.items():
        _scatter(out / f"scatter_{v}.png", v, sa_acc, runs, complete)

    md = [f"Machine: {machine()}; date {today()}; wall {wall:.0f} s for {todo} trials.",
          f"Space `{space.config.name}` ({space.count():,} archs), data `{data_cfg['name']}`; {len(complete)} archs, "
          f"MACs {space.macs(archs[0]):,}..{space.macs(archs[-1]):,}; stand-alone: {args.standalone_epochs} "
          f"epochs x {args.standalone_seeds} seed(s), val accuracy {min(accs):.3f}..{max(accs):.3f} "
          f"(mean {np.mean(accs):.3f}, {len(set(np.round(accs, 4)))} distinct values); supernet budget "
          f"{args.budget} subnet-steps (batch {bs}).", "",
          "| strategy | seed | epochs | subnet-steps | τ (acc) | ρ (acc) | τ (val loss) | ρ (val loss) | mean inherited acc |",
          "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            md.append(f"| {row['strategy']} | {row['seed']} | — | — | error: {row['error']} | | | | |")
            continue
        md.append(f"| {row['strategy']} | {row['seed']} | {row['epochs']} | {row['subnet_steps']} | "
                  f"{_fmt(row['tau_acc'])} | {_fmt(row['rho_acc'])} | {_fmt(row['tau_loss'])} | "
                  f"{_fmt(row['rho_loss'])} | {row['sn_acc_mean']:.3f} |")
    for v, runs in per_variant.items():
        md.append(f"| **{v} mean** | {len(runs)} seeds | | | **{_fmt(np.nanmean([r['tau_acc'] for r in runs]))}** | "
                  f"{_fmt(np.nanmean([r['rho_acc'] for r in runs]))} | "
                  f"**{_fmt(np.nanmean([r['tau_loss'] for r in runs]))}** | "
                  f"{_fmt(np.nanmean([r['rho_loss'] for r in runs]))} | |")
    if args.standalone_seeds >= 2:  # the noise ceiling: stand-alone seed 0 vs seed 1
        two = [a for a in complete if len(by_arch[a.id]) >= 2]
        s0 = {a.id: next(r for r in by_arch[a.id] if r["seed"] == 0) for a in two}
        s1 = {a.id: next(r for r in by_arch[a.id] if r["seed"] == 1) for a in two}
        ta, ra = correlations([s0[a.id]["acc"] for a in two], [s1[a.id]["acc"] for a in two])
        tl, rl = correlations([s0[a.id]["loss"] for a in two], [s1[a.id]["loss"] for a in two])
        md.append(f"| *stand-alone seed 0 vs seed 1 (noise ceiling)* | | | | {_fmt(ta)} | {_fmt(ra)} | "
                  f"{_fmt(tl)} | {_fmt(rl)} | |")
    text = "\n".join(md) + "\n"
    write_text(out / "ranking.md", text)
    print(text)
    print(f"written: {out}/ranking.md, ranking.csv, standalone.csv, scatter_*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
