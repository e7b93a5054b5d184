"""Lazy re-exports for package ``__init__`` files (as Optuna's ``_LazyImport``): a name
is imported from its module on first use, so ``import nasplat`` and ``nasplat --help``
stay fast and ``python -m nasplat.hw.runner`` needs only onnxruntime and numpy. Each
package also imports the same names under ``if TYPE_CHECKING:`` for type checkers."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """``(__all__, __getattr__)`` for ``package``; ``exports`` maps a public name to the
    module (relative to ``package``, e.g. ``".stage"``) that defines it."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    return sorted(exports), __getattr__
