"""Multi-objective search: metrics and constraints, Optuna searchers (``nsga2``, ``tpe``,
``gp``, ``random``, ``linas``), the Ray evaluator pool, Pareto front and hypervolume.

Only the config is imported eagerly (the experiment schema needs it); the rest loads on
first use so ``nasplat --help`` stays fast.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .config import LinasConfig, SearchConfig

_EXPORTS = {
    "run_search": ".stage", "build_problem": ".stage", "read_pareto_archs": ".stage", "search_done": ".stage",
    "SEARCHERS": ".searchers", "METRICS": ".metrics", "parse_constraint": ".metrics", "pareto_mask": ".metrics",
    "hypervolume": ".metrics", "EvaluatorPool": ".evaluator", "SupernetEvaluator": ".evaluator",
    "Problem": ".runner", "SearchLoop": ".runner", "SearchResult": ".runner",
}
_names, __getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["LinasConfig", "SearchConfig", *_names]

if TYPE_CHECKING:
    from .evaluator import EvaluatorPool, SupernetEvaluator
    from .metrics import METRICS, hypervolume, parse_constraint, pareto_mask
    from .runner import Problem, SearchLoop, SearchResult
    from .searchers import SEARCHERS
    from .stage import build_problem, read_pareto_archs, run_search, search_done
