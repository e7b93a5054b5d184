"""Multi-objective search: metrics and constraints, Optuna searchers (``nsga2``, ``tpe``,
``gp``, ``random``, ``linas``), the Ray evaluator pool, Pareto front and hypervolume.

Only the config is imported eagerly (the experiment schema needs it); the rest loads on
first use so ``nasplat --help`` stays fast.
"""
from __future__ import annotations

from typing import Any

from .config import LinasConfig, SearchConfig

_LAZY = {
    "run_search": ".stage", "build_problem": ".stage", "read_pareto_archs": ".stage", "search_done": ".stage",
    "SEARCHERS": ".searchers", "METRICS": ".metrics", "parse_constraint": ".metrics", "pareto_mask": ".metrics",
    "hypervolume": ".metrics", "EvaluatorPool": ".evaluator", "SupernetEvaluator": ".evaluator",
    "Problem": ".runner", "SearchLoop": ".runner", "SearchResult": ".runner",
}

__all__ = ["LinasConfig", "SearchConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
