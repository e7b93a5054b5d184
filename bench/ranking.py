"""Ranking consistency: does a supernet rank subnets as stand-alone training does?

``nasplat bench ranking [--quick]`` (also ``python -m bench.ranking``). The protocol and
the decision rule are fixed here, before any run:

1. Spaces: an mbv3 space (``bench/ranking_space.yaml``) and a NAS-Bench-201-shaped cell
   space (``bench/ranking_nb201.yaml``), digits (scikit-learn's, embedded).
2. Ground truth: 30 archs per space at evenly spaced MACs quantiles of 4000 random ones
   (cell archs whose output is cut off from the input excluded: they are constant
   functions), each trained stand-alone from scratch to convergence (20 epochs, SGD
   Nesterov lr 0.1 cosine, no label smoothing) with 3 seeds; metric: val loss (primary),
   val accuracy (secondary). The seed-vs-seed Kendall τ of the ground truth (mean over the
   seed pairs) is reported first; a space whose τ is below 0.7 is not ranked (its
   ground truth cannot tell the archs apart) and no supernet is trained for it.
3. Supernets: per space the strategies (mbv3: uniform, pada, pada_iw — PA&DA with
   importance weights —, sandwich, progressive_shrinking, elasticvit; cell space:
   uniform, pada, pada_iw, sandwich), 5 seeds each, at an equal budget of subnet-steps
   (one forward + backward of one subnet on one batch; each strategy gets the
   ``train.epochs`` whose phases come closest to ``--budget`` = 1500); seed s gives every
   strategy the same initial weights and the same epoch order (a strategy that samples
   data, PA&DA, changes it by design). Each arch of the set is evaluated through each
   supernet: extract, BN recalibration on 500 training images, val loss and accuracy.
4. Statistics per strategy: Kendall τ (tau-b) between supernet and ground-truth val loss,
   mean over seeds, with a 95% bootstrap interval over archs and seeds (2000 resamples);
   Δτ against uniform paired by seed and arch (same resamples) with its interval; τ
   within MACs terciles (size alone inflates a global τ); τ on accuracy (secondary).
5. Decision rule: "A ≥ uniform" only when the lower bound of Δτ(A − uniform) is above
   −0.05; otherwise the data do not show it. The goal (docs/benchmarks.md): τ ≥ 0.8 for the
   best strategy and PA&DA ≥ uniform by this rule; anchor: PA&DA ranks NAS-Bench-201
   better than SPOS/uniform sampling (Lu et al., CVPR 2023, Table 1).

Caching: every trial's result is a JSON file under ``--out``/cache whose key holds the
git commit (plus a digest of uncommitted changes), the protocol, the space, the data and
the job; a re-run reuses matching files and the report marks those rows "cached".
Trials run as Ray Tune trials (one CPU each, ``--cpus`` at a time; a local Ray instance
unless ``--address``). ``--quick`` is a smoke test (9 archs, 2+2 seeds, tiny budgets):
its figures are no verdict.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SPACES = {"mbv3": REPO / "bench" / "ranking_space.yaml", "nb201": REPO / "bench" / "ranking_nb201.yaml"}

# bench variant -> (strategy, options)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "uniform": ("uniform", {}),
    "pada": ("pada", {}),
    "pada_iw": ("pada", {"importance_weights": True}),
    "sandwich": ("sandwich", {"num_random": 2}),
    "progressive_shrinking": ("progressive_shrinking", {}),
    "elasticvit": ("elasticvit", {"levels": "auto", "num_levels": 4, "pool_size": 500, "bank_size": 10,
                                  "big_bank_size": 5, "p_bank_every": 10}),
}
STRATEGIES_OF = {"mbv3": ["uniform", "pada", "pada_iw", "sandwich", "progressive_shrinking", "elasticvit"],
                 "nb201": ["uniform", "pada", "pada_iw", "sandwich"]}
MIN_GT_TAU = 0.7
MARGIN = 0.05


@dataclass(frozen=True)
class Protocol:
    """Every option that shapes a result (all of it enters the cache key)."""

    archs: int = 30
    gt_seeds: int = 3
    gt_epochs: int = 20
    gt_lr: float = 0.1
    seeds: int = 5
    budget: int = 1500
    lr: float = 0.1
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_clip: float = 5.0
    batch_size: int = 64
    calib_images: int = 500
    resamples: int = 2000


QUICK = Protocol(archs=9, gt_seeds=2, gt_epochs=3, seeds=2, budget=120, resamples=300)


# -- the set-up, shared by the driver and the trials ---------------------------------
def _space(cfg: dict[str, Any]):
    from nasplat.space import space_from_dict

    return space_from_dict(cfg, "ranking space")


def _data(cfg: dict[str, Any], channels: int):
    from nasplat.data import DataConfig, load_data

    return load_data(DataConfig(**cfg), channels, REPO)


def data_config(space, p: Protocol) -> dict[str, Any]:
    return {"name": "digits", "resolution": max(space.resolutions()), "batch_size": p.batch_size,
            "calib_images": p.calib_images}


def connected(space, arch) -> bool:
    """False for a cell arch whose output no path of non-``none`` ops reaches."""
    if space.family != "darts_cell":
        return True
    c = space.config
    geno = space.genotype_of(arch)
    for cell in [g for g in (geno["normal"], geno.get("reduce")) if g is not None]:
        live = set(range(c.cell_inputs))
        for j, node in enumerate(cell):
            if any(src in live for _, src in node):
                live.add(c.cell_inputs + j)
        outs = range(c.cell_inputs, c.cell_inputs + c.nodes) if c.output == "concat" else [c.cell_inputs + c.nodes - 1]
        if not any(o in live for o in outs):
            return False
    return True


def pick_archs(space, n: int, seed: int = 12345) -> list:
    """``n`` distinct connected archs at evenly spaced MACs quantiles of 4000 random ones."""
    rng = np.random.default_rng(seed)
    pool = {a.id: a for a in (space.sample(rng) for _ in range(4000)) if connected(space, a)}
    archs = sorted(pool.values(), key=lambda a: (space.macs(a), a.id))
    return [archs[int(round(q))] for q in np.linspace(0, len(archs) - 1, n)]


def _evaluate(net, data, resolution: int) -> tuple[float, float]:
    """(val accuracy, mean val CE) of a static net in eval mode."""
    import torch
    import torch.nn.functional as F

    from nasplat.supernet import resize

    net.eval()
    correct, loss, total = 0, 0.0, 0
    with torch.no_grad():
        for x, y, _ in data.batches("val", 500):
            out = net(resize(x, resolution))
            correct += int((out.argmax(1) == y).sum())
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            total += len(y)
    return correct / total, loss / total


def train_ground_truth(job: dict[str, Any]) -> dict[str, Any]:
    """Train one arch from scratch with each seed; its val accuracy and loss per seed."""
    import torch
    import torch.nn.functional as F

    from nasplat.supernet import resize
    from nasplat.supernet.standalone import build_standalone

    torch.set_num_threads(1)
    p = Protocol(**job["protocol"])
    space = _space(job["space"])
    data = _data(job["data"], space.config.input_channels)
    arch = space.arch(job["arch"])
    res = space.resolution(arch)
    out = []
    t0 = time.perf_counter()
    for seed in range(p.gt_seeds):
        torch.manual_seed(seed)
        net = build_standalone(space, arch=dict(arch)).train()
        decay = [q for q in net.parameters() if q.ndim > 1]
        rest = [q for q in net.parameters() if q.ndim <= 1]
        opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-5}, {"params": rest, "weight_decay": 0.0}],
                              lr=p.gt_lr, momentum=0.9, nesterov=True)
        n = len(data.train)
        steps = n // p.batch_size
        total, it = steps * p.gt_epochs, 0
        rng = np.random.default_rng([seed, 101])
        for _ in range(p.gt_epochs):
            for x, y, _ in data.batches("train", p.batch_size, rng.permutation(n), drop_last=True):
                for g in opt.param_groups:
                    g["lr"] = p.gt_lr * 0.5 * (1 + np.cos(np.pi * it / total))
                loss = F.cross_entropy(net(resize(x, res)), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                it += 1
        acc, vloss = _evaluate(net, data, res)
        out.append({"seed": seed, "acc": acc, "loss": vloss})
    return {"arch": arch.id, "macs": space.macs(arch), "seeds": out, "seconds": time.perf_counter() - t0}


def train_supernet(job: dict[str, Any]) -> dict[str, Any]:
    """Train one supernet with a strategy, then evaluate every arch of the set through it."""
    import csv
    import shutil

    import torch

    from nasplat.supernet.evaluate import extract_calibrated
    from nasplat.train.config import TrainConfig
    from nasplat.train.distributed import Dist
    from nasplat.train.engine import make_trainer
    from nasplat.train.strategies import TrainContext

    torch.set_num_threads(1)
    p = Protocol(**job["protocol"])
    space = _space(job["space"])
    data = _data(job["data"], space.config.input_channels)
    run_dir = Path(job["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)
    torch.manual_seed(job["seed"])  # the same initial weights for every strategy of this seed
    np.random.seed(job["seed"])
    ctx = TrainContext(space, data, TrainConfig(**job["train"]), job["seed"], run_dir, torch.device("cpu"), Dist())
    t0 = time.perf_counter()
    net = make_trainer(ctx, p.batch_size).fit()
    train_s = time.perf_counter() - t0
    with open(run_dir / "supernet" / "train_log.csv") as f:
        subnet_steps = sum(len(row["archs"].split(";")) for row in csv.DictReader(f) if row["archs"])
    archs = {}
    for values in job["archs"]:
        arch = space.arch(values)
        acc, loss = _evaluate(extract_calibrated(net, arch, data, p.calib_images), data, space.resolution(arch))
        archs[arch.id] = {"acc": acc, "loss": loss}
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"variant": job["variant"], "seed": job["seed"], "epochs": ctx.cfg.epochs, "subnet_steps": subnet_steps,
            "train_seconds": train_s, "archs": archs}


def _trial(config: dict[str, Any]) -> None:
    from ray import tune

    job = config["job"]
    try:
        result = (train_ground_truth if job["kind"] == "gt" else train_supernet)(job)
        from nasplat.io import write_json

        write_json(job["cache"], {"key": job["key"], "result": result})  # at once: a killed bench keeps it
    except Exception as e:  # reported, not raised: one failing strategy must not stop the bench
        result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    tune.report({"result": json.dumps(result)})


def run_jobs(jobs: list[dict[str, Any]], out: Path, cpus: int, address: str | None) -> list[dict[str, Any]]:
    """Run jobs as Ray Tune trials (one CPU each); results in job order."""
    if not jobs:
        return []
    import ray
    from ray import tune

    if not ray.is_initialized():
        kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                                  runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        ray.init(address=address, **kw) if address else ray.init(num_cpus=cpus, **kw)
    tuner = tune.Tuner(
        tune.with_resources(_trial, {"cpu": 1}),
        param_space={"job": tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=cpus, reuse_actors=False),
        run_config=tune.RunConfig(name="ranking", storage_path=str((out / "tune").resolve()), verbose=0),
    )
    by_cache: dict[str, dict[str, Any]] = {}
    for r in tuner.fit():
        job = r.config["job"]
        if r.error is not None or "result" not in (r.metrics or {}):
            by_cache[job["cache"]] = {"error": str(r.error).splitlines()[-1] if r.error else "no result"}
        else:
            by_cache[job["cache"]] = json.loads(r.metrics["result"])
    return [by_cache[j["cache"]] for j in jobs]


# -- caching -----------------------------------------------------------------------------
def code_version() -> str:
    """The git commit of the checkout, plus a digest of uncommitted changes to tracked files."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    commit = git("rev-parse", "HEAD").strip() or "unknown"
    diff = git("diff", "HEAD", "--", "nasplat", "bench")
    return commit + (f"+{hashlib.sha1(diff.encode()).hexdigest()[:12]}" if diff else "")


def cached(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return entry["result"] if entry.get("key") == json.loads(json.dumps(key)) else None


# -- statistics -------------------------------------------------------------------------------
def tau(a, b) -> float:
    from scipy.stats import kendalltau

    if len(set(np.round(a, 12))) < 2 or len(set(np.round(b, 12))) < 2:
        return float("nan")
    return float(kendalltau(a, b).statistic)


def mean_tau(sn: np.ndarray, gt: np.ndarray, archs: np.ndarray | None = None, seeds: np.ndarray | None = None) -> float:
    """Mean over (resampled) seeds of τ(supernet, ground truth) on (resampled) archs; ``sn``
    is seeds x archs."""
    archs = np.arange(sn.shape[1]) if archs is None else archs
    seeds = np.arange(sn.shape[0]) if seeds is None else seeds
    return float(np.nanmean([tau(sn[s, archs], gt[archs]) for s in seeds]))


def bootstrap(sn: dict[str, np.ndarray], gt: np.ndarray, base: str, resamples: int, seed: int = 0
              ) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float, float]]]:
    """95% intervals of each strategy's mean τ and of its Δτ against ``base`` (paired:
    the same resampled archs and seed indices for both) over archs and seeds."""
    rng = np.random.default_rng(seed)
    n_archs, n_seeds = gt.shape[0], min(v.shape[0] for v in sn.values())
    draws: dict[str, list[float]] = {v: [] for v in sn}
    for _ in range(resamples):
        a = rng.integers(n_archs, size=n_archs)
        s = rng.integers(n_seeds, size=n_seeds)
        for v, m in sn.items():
            draws[v].append(mean_tau(m, gt, a, s))
    ci = {v: tuple(np.nanpercentile(d, [2.5, 97.5])) for v, d in draws.items()}
    delta = {}
    if base in sn:
        for v in sn:
            if v != base:
                dd = np.array(draws[v]) - np.array(draws[base])
                point = mean_tau(sn[v][:n_seeds], gt) - mean_tau(sn[base][:n_seeds], gt)
                lo, hi = np.nanpercentile(dd, [2.5, 97.5])
                delta[v] = (point, float(lo), float(hi))
    return ci, delta  # type: ignore[return-value]


def terciles(macs: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(macs, kind="stable")
    return [np.sort(part) for part in np.array_split(order, 3)]


def seed_agreement(per_seed: np.ndarray) -> tuple[float, list[float]]:
    """Mean and list of pairwise τ between the ground truth's seeds (rows)."""
    pairs = [tau(per_seed[i], per_seed[j]) for i in range(len(per_seed)) for j in range(i + 1, len(per_seed))]
    return float(np.mean(pairs)) if pairs else float("nan"), pairs


# -- equal budget ----------------------------------------------------------------------
def epochs_for_budget(strategy: str, options: dict[str, Any], train: dict[str, Any], space, data,
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
        cfg = TrainConfig(**{**train, "epochs": e, "strategy": strategy, "options": options})
        ctx = TrainContext(space, data, cfg, 0, Path("/nonexistent"), torch.device("cpu"), Dist())
        return sum(ph.epochs * ph.subnets_per_step for ph in cls(ctx, opts).phases()) * steps_per_epoch

    one, two = planned(1), planned(2)
    if two == 2 * one:  # one phase: proportional to the epochs
        e = max(1, int(round(budget / one)))
        return e, e * one
    lo, hi = 1, 2
    while planned(hi) < budget and hi < 10_000:  # planned(e) grows with e: bracket, then bisect
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if planned(mid) < budget else (lo, mid)
    return min(((e, planned(e)) for e in (lo, hi)), key=lambda es: (abs(es[1] - budget), es[0]))


# -- the driver -------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.3f}"


def _ci(lo_hi: tuple[float, float]) -> str:
    return f"[{_fmt(lo_hi[0])}, {_fmt(lo_hi[1])}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nasplat bench ranking", description=__doc__.split("\n\n")[0])
    ap.add_argument("--spaces", default="mbv3,nb201", help="comma-separated: " + ", ".join(SPACES))
    ap.add_argument("--strategies", help="comma-separated variants (default per space: "
                    + "; ".join(f"{k}: {', '.join(v)}" for k, v in STRATEGIES_OF.items()) + ")")
    ap.add_argument("--cpus", type=int, default=2, help="trials at a time (local Ray instance)")
    ap.add_argument("--address", help="Ray cluster address (default: a local instance)")
    ap.add_argument("--out", default="runs/ranking", help="output and cache folder")
    ap.add_argument("--quick", action="store_true", help="a smoke test: 9 archs, 2+2 seeds, tiny budgets, no verdict")
    ap.add_argument("--budget", type=int, help=f"subnet-steps per supernet (default {Protocol.budget})")
    args = ap.parse_args(argv)
    proto = QUICK if args.quick else Protocol()
    if args.budget:
        proto = replace(proto, budget=args.budget)

    sys.path.insert(0, str(REPO))
    import yaml

    from bench._common import machine, today
    from nasplat.errors import UserError
    from nasplat.io import write_text
    from nasplat.ui import say

    spaces = args.spaces.split(",")
    for name in spaces:
        if name not in SPACES:
            raise UserError(f"unknown space {name!r} (known: {', '.join(SPACES)})", None, "--spaces")
    chosen = args.strategies.split(",") if args.strategies else None
    for v in chosen or []:
        if v not in VARIANTS:
            raise UserError(f"unknown strategy {v!r} (known: {', '.join(VARIANTS)})", None, "--strategies")
    out = Path(args.out) / ("quick" if args.quick else "full")
    version = code_version()
    header = [f"Machine: {machine()}; {today()}; code {version}.",
              f"Protocol: {json.dumps(asdict(proto))}; decision rule: A ≥ uniform iff the lower bound of the 95% "
              f"interval of Δτ(A − uniform) > −{MARGIN}; spaces are ranked only when the ground truth's "
              f"seed-vs-seed τ ≥ {MIN_GT_TAU}." + (" QUICK MODE: a smoke test, no verdict." if args.quick else "")]
    say("\n".join(header))
    t_start = time.perf_counter()

    # set-up and ground truth -----------------------------------------------------------------
    setups, gt_jobs, gt_found = {}, [], {}
    for name in spaces:
        cfg = yaml.safe_load(SPACES[name].read_text())
        space = _space(cfg)
        dcfg = data_config(space, proto)
        archs = pick_archs(space, proto.archs)
        setups[name] = (cfg, space, dcfg, archs)
        for a in archs:
            key = {"code": version, "protocol": asdict(proto), "space": cfg, "data": dcfg, "kind": "gt", "arch": dict(a)}
            path = out / "cache" / name / f"gt_{a.id}.json"
            hit = cached(path, key)
            if hit is not None:
                gt_found[(name, a.id)] = (hit, True)
            else:
                gt_jobs.append({"kind": "gt", "space": cfg, "data": dcfg, "arch": dict(a), "protocol": asdict(proto),
                                "cache": str(path.resolve()), "key": key, "name": name, "arch_id": a.id})
    say(f"ground truth: {len(gt_found)} cached, {len(gt_jobs)} to train ({proto.gt_seeds} seeds x "
        f"{proto.gt_epochs} epochs each)")
    for job, res in zip(gt_jobs, run_jobs(gt_jobs, out, args.cpus, args.address)):
        gt_found[(job["name"], job["arch_id"])] = (res, False)

    report = header + [""]
    csv_rows = ["space,strategy,seed,epochs,subnet_steps,tau_loss,tau_acc,cached,error"]
    gt_rows = ["space,arch,macs," + ",".join(f"loss_s{s},acc_s{s}" for s in range(proto.gt_seeds))]
    sn_plan: list[tuple[str, dict[str, Any]]] = []
    ranked = {}
    for name in spaces:
        cfg, space, dcfg, archs = setups[name]
        results = [gt_found[(name, a.id)] for a in archs]
        errors = [r["error"] for r, _ in results if "error" in r]
        if errors:
            report += [f"## {name}: ground truth failed ({errors[0]})", ""]
            continue
        losses = np.array([[s["loss"] for s in r["seeds"]] for r, _ in results]).T  # seeds x archs
        accs = np.array([[s["acc"] for s in r["seeds"]] for r, _ in results]).T
        macs = np.array([space.macs(a) for a in archs], dtype=np.float64)
        for a, (r, _) in zip(archs, results):
            gt_rows.append(f"{name},{a.id},{int(r['macs'])}," + ",".join(f"{s['loss']:.5f},{s['acc']:.4f}"
                                                                          for s in r["seeds"]))
        agree, pairs = seed_agreement(losses)
        agree_acc, _ = seed_agreement(accs)
        n_cached = sum(c for _, c in results)
        report += [f"## {name}: `{space.config.name}` ({space.count():,} archs), {len(archs)} archs, MACs "
                   f"{macs.min() / 1e6:.2f}-{macs.max() / 1e6:.2f} M",
                   f"Ground truth ({proto.gt_seeds} seeds x {proto.gt_epochs} epochs; {n_cached}/{len(archs)} archs "
                   f"from the cache): val loss {losses.mean(0).min():.3f}-{losses.mean(0).max():.3f}, val accuracy "
                   f"{accs.mean(0).min():.3f}-{accs.mean(0).max():.3f}; seed-vs-seed τ (val loss) "
                   f"**{_fmt(agree)}** (pairs {', '.join(_fmt(t) for t in pairs)}), on accuracy {_fmt(agree_acc)}."]
        if agree < MIN_GT_TAU and not args.quick:
            report += [f"Not ranked: the ground truth agrees with itself at τ {_fmt(agree)} < {MIN_GT_TAU}.", ""]
            continue
        ranked[name] = (losses.mean(0), accs.mean(0), macs)
        train = {"lr": proto.lr, "warmup_epochs": proto.warmup_epochs, "label_smoothing": proto.label_smoothing,
                 "grad_clip": proto.grad_clip, "threads": 1}
        data = _data(dcfg, space.config.input_channels)
        for v in chosen or STRATEGIES_OF[name]:
            strat, opts = VARIANTS[v]
            try:
                epochs, planned = epochs_for_budget(strat, opts, train, space, data, proto.budget, proto.batch_size)
            except Exception as e:  # a strategy that cannot run on this space is reported, not fatal
                sn_plan.append((name, {"variant": v, "error": f"{type(e).__name__}: {e}"}))
                continue
            for s in range(proto.seeds):
                tr = {**train, "strategy": strat, "options": opts, "epochs": epochs}
                key = {"code": version, "protocol": asdict(proto), "space": cfg, "data": dcfg, "kind": "supernet",
                       "variant": v, "seed": s, "train": tr, "archs": [a.id for a in archs]}
                path = out / "cache" / name / f"sn_{v}_s{s}.json"
                sn_plan.append((name, {"kind": "supernet", "space": cfg, "data": dcfg, "variant": v, "seed": s,
                                       "train": tr, "archs": [dict(a) for a in archs], "protocol": asdict(proto),
                                       "run_dir": str((out / "supernets" / name / f"{v}_s{s}").resolve()),
                                       "cache": str(path.resolve()), "key": key, "planned": planned}))
        report.append("")

    # supernets ----------------------------------------------------------------------------------
    sn_found: dict[tuple[str, str, int], tuple[dict[str, Any], bool]] = {}
    todo = []
    for name, job in sn_plan:
        if "error" in job:
            continue
        hit = cached(Path(job["cache"]), job["key"])
        if hit is not None:
            sn_found[(name, job["variant"], job["seed"])] = (hit, True)
        else:
            todo.append((name, job))
    say(f"supernets: {len(sn_found)} cached, {len(todo)} to train (budget {proto.budget} subnet-steps)")
    for (name, job), res in zip(todo, run_jobs([j for _, j in todo], out, args.cpus, args.address)):
        sn_found[(name, job["variant"], job["seed"])] = (res, False)

    for name, (gt_loss, gt_acc, macs) in ranked.items():
        cfg, space, dcfg, archs = setups[name]
        ids = [a.id for a in archs]
        variants = [v for v in (chosen or STRATEGIES_OF[name])]
        sn_loss, sn_acc, info = {}, {}, {}
        for v in variants:
            runs = [sn_found.get((name, v, s)) for s in range(proto.seeds)]
            planned_err = next((j["error"] for n, j in sn_plan if n == name and j.get("variant") == v and "error" in j),
                               None)
            errs = [r["error"] for r, _ in filter(None, runs) if "error" in r]
            if planned_err or errs or None in runs:
                info[v] = {"error": planned_err or (errs[0] if errs else "missing")}
                csv_rows.append(f"{name},{v},,,,,,,{info[v]['error']!r}")
                continue
            sn_loss[v] = np.array([[r["archs"][i]["loss"] for i in ids] for r, _ in runs])
            sn_acc[v] = np.array([[r["archs"][i]["acc"] for i in ids] for r, _ in runs])
            info[v] = {"epochs": runs[0][0]["epochs"], "steps": runs[0][0]["subnet_steps"],
                       "cached": sum(c for _, c in runs), "inherited": float(sn_acc[v].mean())}
            for (r, c), row_l, row_a in zip(runs, sn_loss[v], sn_acc[v]):
                csv_rows.append(f"{name},{v},{r['seed']},{r['epochs']},{r['subnet_steps']},{tau(row_l, gt_loss):.4f},"
                                f"{tau(row_a, gt_acc):.4f},{int(c)},")
        ci, delta = bootstrap(sn_loss, gt_loss, "uniform", proto.resamples)
        thirds = terciles(macs)
        report += [f"### {name}: supernet vs ground truth (val loss), {proto.seeds} seeds per strategy",
                   "| strategy | epochs | subnet-steps | τ | 95% CI | Δτ vs uniform [95% CI] | ≥ uniform? | "
                   "τ low / mid / high MACs | τ (acc) | inherited acc | cached |",
                   "|---|---|---|---|---|---|---|---|---|---|---|"]
        for v in variants:
            if "error" in info[v]:
                report.append(f"| {v} | error: {info[v]['error']} |||||||||| |")
                continue
            t = mean_tau(sn_loss[v], gt_loss)
            terc = " / ".join(_fmt(mean_tau(sn_loss[v][:, part], gt_loss[part])) for part in thirds)
            if v in delta:
                d, lo, hi = delta[v]
                dtext, verdict = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]", ("yes" if lo > -MARGIN else "not shown")
            else:
                dtext, verdict = "—", "—"
            if args.quick:
                verdict = "(quick)"
            report.append(f"| {v} | {info[v]['epochs']} | {info[v]['steps']} | **{_fmt(t)}** | {_ci(ci[v])} | {dtext} | "
                          f"{verdict} | {terc} | {_fmt(mean_tau(sn_acc[v], gt_acc))} | {info[v]['inherited']:.3f} | "
                          f"{info[v]['cached']}/{proto.seeds} |")
        if sn_loss:
            best = max(sn_loss, key=lambda v: mean_tau(sn_loss[v], gt_loss))
            report += ["", f"Best strategy: {best}, τ {_fmt(mean_tau(sn_loss[best], gt_loss))} (goal ≥ 0.8)."]
        report.append("")
    wall = time.perf_counter() - t_start
    report.append(f"Wall time {wall / 60:.1f} min (load average {__import__('os').getloadavg()[0]:.1f} at the end).")
    text = "\n".join(report) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "ranking.md", text)
    write_text(out / "ranking.csv", "\n".join(csv_rows) + "\n")
    write_text(out / "ground_truth.csv", "\n".join(gt_rows) + "\n")
    print(text)
    print(f"written: {out}/ranking.md, ranking.csv, ground_truth.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
