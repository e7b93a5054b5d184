"""``nasplat search``: the experiment's search stage, with storage, resume and outputs.

The study lives in ``runs/<name>/search/study.journal`` (Optuna's journal format, kept
in memory and written in batches, :mod:`.storage`) unless ``search.storage`` /
``--storage`` names an RDB URL or another journal file. A run folder from before the
journal (``study.db``, SQLite) is still opened and resumed as it is."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from ..errors import UserError
from ..paths import supernet_checkpoint
from ..ui import say
from .config import SearchConfig
from .metrics import MetricContext, make_metric, parse_constraint
from .outputs import pareto_table, write_outputs
from .runner import Problem, SearchLoop, SearchResult, annotate, fail_stale_trials, \
    fingerprint, records_from_study
from .searchers import SEARCHERS
from .storage import JOURNAL_NAME, StudyStorage, is_url, read_storage

if TYPE_CHECKING:
    from ..experiment import Experiment


def build_problem(exp: Experiment, cfg: SearchConfig | None = None) -> Problem:
    cfg = cfg or exp.config.search
    file = str(exp.path)
    ctx = MetricContext(exp.space, file, "search.objectives", exp, cfg.accuracy, cfg.latency)
    objectives = [make_metric(n, ctx) for n in cfg.objectives]
    constraints = [parse_constraint(c, file, f"search.constraints.{i}") for i, c in enumerate(cfg.constraints)]
    extra = []
    names = {m.name for m in objectives}
    for i, c in enumerate(constraints):
        if c.metric not in names:
            ctx.field = f"search.constraints.{i}"
            extra.append(make_metric(c.metric, ctx))
            names.add(c.metric)
    SEARCHERS.get(cfg.searcher, file, "search.searcher")
    from .feasibility import check_feasible  # an unsatisfiable constraint fails here, with the closest arch

    check_feasible(exp.space, objectives + extra, constraints, file)
    return Problem(exp.space, objectives, constraints, extra)


def storage_url(exp: Experiment, storage: str | None = None) -> str:
    """The study's storage: ``storage`` / ``search.storage`` (an RDB URL or a journal
    file path), else the run's ``search/study.journal`` (or an older run's ``study.db``)."""
    spec = storage or exp.config.search.storage
    if spec:
        return spec
    folder = (exp.run_dir / "search").resolve()
    if (folder / "study.db").is_file() and not (folder / JOURNAL_NAME).is_file():
        return f"sqlite:///{folder / 'study.db'}"
    return str(folder / JOURNAL_NAME)


def open_study_storage(spec: str) -> StudyStorage:
    try:
        return StudyStorage(spec)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - an unreadable file is a user problem
        raise UserError(f"cannot open the study storage ({type(e).__name__}: {str(e).splitlines()[0]})", spec,
                        "--storage") from None


def ensure_ray(address: str | None, cpus_needed: float) -> bool:
    """Connect to ``address`` or start a local Ray instance (:mod:`nasplat.ray_runtime`);
    True if this call started it."""
    from ..ray_runtime import start_ray

    return start_ray(address, num_cpus=cpus_needed)


def evaluator_init(exp: Experiment, cfg: SearchConfig, weights: Any) -> dict[str, Any]:
    return {"space": exp.space.config.model_dump(mode="json"), "weights": weights,
            "data": exp.config.data.model_dump(mode="json"), "base_dir": str(exp.base_dir.resolve()),
            "calib_images": cfg.calib_images or exp.config.data.calib_images, "calib_batch": cfg.calib_batch,
            "val_images": cfg.val_images, "threads": max(1, int(cfg.cpus_per_worker)), "seed": exp.config.seed,
            "channels_last": cfg.channels_last, "validation": cfg.validation, "precision": exp.config.train.precision}


def evaluator_gpus(exp: Experiment, cfg: SearchConfig) -> float:
    """GPU share per evaluator actor (Ray must be initialised): ``search.gpus_per_worker``,
    or 1/4 GPU when the experiment's device is not ``cpu`` and the cluster has GPUs."""
    import ray

    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    device = exp.config.device
    if device == "cpu":
        if cfg.gpus_per_worker:
            raise UserError("search.gpus_per_worker > 0 with device: cpu", exp.path, "search.gpus_per_worker")
        return 0.0
    gpus = cfg.gpus_per_worker if cfg.gpus_per_worker is not None else (0.25 if has_gpu else 0.0)
    if (gpus > 0 or device != "auto") and not has_gpu:
        raise UserError(f"device {device!r} asked for, but the Ray cluster has no GPU", exp.path, "device")
    return gpus


def data_paths(exp: Experiment) -> dict[str, str]:
    """The experiment's data path, resolved on the driver, by field name."""
    p = exp.config.data.path
    return {"data.path": str(exp.resolve(p).resolve())} if p else {}


def start_evaluators(exp: Experiment, cfg: SearchConfig, weights: Any, quiet: bool = False) -> Any:
    """The evaluator pool on the running Ray: every node checks it can read the data,
    actors with ``search.cpus_per_worker`` CPUs and their GPU share, and the
    per-evaluation timeout; returns once every evaluator is built."""
    from ..ray_runtime import check_paths_on_nodes
    from .evaluator import EvaluatorPool

    check_paths_on_nodes(data_paths(exp), exp.path)
    pool = EvaluatorPool(cfg.workers, evaluator_init(exp, cfg, weights), cfg.max_restarts, cfg.cpus_per_worker,
                         gpus=evaluator_gpus(exp, cfg), timeout_s=cfg.eval_timeout)
    try:  # every evaluator built before the first trial: a node that cannot build one fails here, once
        where = pool.locations()
    except BaseException:
        pool.shutdown()
        raise
    devices = sorted({w["device"] for w in where})
    say(f"search: {len(where)} evaluator(s) on {len({w['node'] for w in where})} Ray node(s), {', '.join(devices)}",
        not quiet)
    return pool


def load_supernet_weights(exp: Experiment, weights: str | Path | None = None) -> dict[str, Any]:
    """The run's trained supernet weights (as numpy), or those of ``weights`` (a nasplat
    checkpoint of the space or an official OFA checkpoint)."""
    from ..supernet import build_supernet
    from .evaluator import weights_to_numpy

    if weights is not None:
        from ..supernet.ofa_convert import load_any_weights

        return weights_to_numpy(load_any_weights(exp.space, weights))
    path = supernet_checkpoint(exp.run_dir)
    if not path.exists():
        raise UserError("no trained supernet; train one first (nasplat's `train` command) or use accuracy: predictor", path)
    return weights_to_numpy(build_supernet(exp.space, checkpoint=path))


def search_inputs(exp: Experiment, problem: Problem, weights: str | Path | None = None) -> dict[str, Any]:
    """What the search's results are made from (:mod:`nasplat.provenance`): its settings
    and the files its metrics read (the supernet when accuracy is measured on it, each
    predictor)."""
    from .. import provenance
    from ..hw.stage import experiment_profile
    from ..predict._base import latency_predictor_folder

    cfg, names, files = exp.config.search, {m.name for m in problem.all_metrics}, {}
    if "accuracy" in names:
        files["supernet" if cfg.accuracy == "supernet" else "predictor.accuracy"] = (
            (Path(weights) if weights else supernet_checkpoint(exp.run_dir)) if cfg.accuracy == "supernet"
            else exp.run_dir / "predictors" / "accuracy")
    extra = {}
    for n in sorted(x for x in names if x.startswith("latency@")):
        prof = experiment_profile(exp, n.split("@", 1)[1])
        if cfg.latency == "predictor":
            files[f"predictor.{prof.name}"] = latency_predictor_folder(exp.run_dir, prof.name, exp.space)
        else:
            extra.update(provenance.flatten(prof.model_dump(mode="json", exclude={"description"}),
                                            f"hardware.{prof.name}"))
    return {**provenance.search_inputs(exp, {k: v for k, v in files.items() if v and Path(v).exists()}), **extra}


def run_search(exp: Experiment, resume: bool = False, force: bool = False, address: str | None = None,
               storage: str | None = None, quiet: bool = False, print_table: bool = True,
               weights: str | Path | None = None) -> SearchResult:
    """The search stage; one writer per run folder and per journal file (:mod:`nasplat.lock`)."""
    from contextlib import ExitStack

    from ..lock import path_lock, stage_lock

    spec = storage_url(exp, storage)
    with ExitStack() as locks:
        folder = locks.enter_context(stage_lock(exp.run_dir, "search"))
        if not is_url(spec) and Path(spec).resolve().parent != folder.resolve():
            locks.enter_context(path_lock(spec))
        return _run_search(exp, resume, force, address, storage, quiet, print_table, weights)


def _run_search(exp: Experiment, resume: bool, force: bool, address: str | None, storage: str | None,
                quiet: bool, print_table: bool, weights: str | Path | None) -> SearchResult:
    from .. import provenance

    cfg: SearchConfig = exp.config.search
    problem = build_problem(exp, cfg)
    out_dir = exp.run_dir / "search"
    spec = storage_url(exp, storage)
    name = exp.config.name
    fp = fingerprint(problem, cfg)
    st = open_study_storage(spec)
    try:
        existing = name in optuna.get_all_study_names(st.storage)
    except Exception as e:  # noqa: BLE001 - a bad URL or driver is a user problem
        raise UserError(f"cannot open the study storage ({type(e).__name__}: {str(e).splitlines()[0]})",
                        None, "--storage") from None
    n_trials = 0
    inputs = search_inputs(exp, problem, weights)
    if existing:
        old = optuna.load_study(study_name=name, storage=st.storage)
        n_done = len(records_from_study(old, exp.space))
        n_trials = len(old.trials)
        provenance.check(out_dir, "search", inputs, has_outputs=True, force=force, resume=n_done < cfg.budget,
                         file=exp.path)
        if force:
            if st.journal is not None:  # a journal file holds this one study: start a fresh file
                st.journal.path.unlink()
                st = open_study_storage(spec)
            else:
                optuna.delete_study(study_name=name, storage=st.storage)
            existing, n_trials = False, 0
        elif old.user_attrs.get("nasplat") not in (None, fp):
            raise UserError(f"the stored study {name!r} was made with other settings "
                            f"({old.user_attrs.get('nasplat')}); use --force to start over", spec, "search")
        elif n_done < cfg.budget and not resume:
            raise UserError(f"a partial search exists ({n_done}/{cfg.budget} archs); pass --resume to continue it "
                            f"or --force to restart", spec, None)
    seed = (cfg.seed if cfg.seed is not None else exp.config.seed) + n_trials  # fresh random stream per resume
    study = optuna.create_study(storage=st.storage, study_name=name, directions=problem.directions,
                                load_if_exists=True)
    study.set_user_attr("nasplat", fp)
    if not existing or provenance.read_record(out_dir) is None:
        provenance.record(out_dir, "search", inputs)
    # A journal has one writer, and this driver holds its lock: a RUNNING trial in it was left by a
    # killed driver. An RDB study may be shared by live drivers: their RUNNING trials are left alone
    # (only COMPLETE trials count, so a dead driver's RUNNING ones cost nothing).
    stale = fail_stale_trials(study) if st.journal is not None else 0
    if stale:
        say(f"search: {stale} trial(s) left running by an interrupted driver marked failed; their archs may be "
            f"proposed again")
    known = records_from_study(study, exp.space)
    if len(known) >= cfg.budget:
        say(f"search already complete: {len(known)} archs in {spec}")
        records = list(known.values())
        result = SearchResult(records, annotate(problem, records), problem)
    else:
        if known:
            say(f"resuming search: {len(known)}/{cfg.budget} archs already evaluated")
        pool = None
        started = False
        try:
            if problem.expensive:
                tensors = load_supernet_weights(exp, weights)
                started = ensure_ray(address, cfg.workers * cfg.cpus_per_worker)
                pool = start_evaluators(exp, cfg, tensors, quiet)
                if not known:  # an accuracy constraint the largest subnet misses stops here
                    from .feasibility import check_accuracy_reachable

                    check_accuracy_reachable(exp.space, problem.constraints, pool.map, exp.path)
            last = [time.monotonic()]
            loop: SearchLoop

            def on_round() -> None:  # periodic outputs, so a long search can be watched
                if time.monotonic() - last[0] > 30:
                    recs = list(loop.known.values())
                    write_outputs(SearchResult(recs, annotate(problem, recs), problem), out_dir, plot=False)
                    last[0] = time.monotonic()

            exp.write_config()
            loop = SearchLoop(problem, cfg, study, seed, expensive=pool.map if pool else None, on_round=on_round,
                              persist=st.flush, quiet=quiet)
            result = loop.run()
        finally:
            st.flush()
            if pool is not None:
                pool.shutdown()
            if started:
                import ray

                ray.shutdown()
    st.flush()
    write_outputs(result, out_dir)
    if print_table:
        print(pareto_table(result), flush=True)
    return result


def search_done(exp: Experiment) -> bool:
    """True when the search's outputs exist and cover the budget (for ``nasplat run``)."""
    out = exp.run_dir / "search"
    if not (out / "pareto.csv").exists() or not (out / "trials.csv").exists():
        return False
    spec = storage_url(exp)
    if not is_url(spec) and not Path(spec).is_file():
        return False
    try:
        study = optuna.load_study(study_name=exp.config.name, storage=read_storage(spec))
    except Exception:  # noqa: BLE001
        return False
    return len(records_from_study(study, exp.space)) >= exp.config.search.budget


def read_pareto_archs(exp: Experiment) -> list[Any]:
    import csv

    from ..space import Arch

    path = exp.run_dir / "search" / "pareto.csv"
    if not path.exists():
        raise UserError("no Pareto front yet; run `nasplat search` first", path)
    with open(path, newline="") as f:
        return [exp.space.arch(Arch.from_json(r["arch"]), str(path)) for r in csv.DictReader(f)]


def out_path(exp: Experiment) -> Path:
    return exp.run_dir / "search"
