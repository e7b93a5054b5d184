"""A tiny name -> object registry used for every plug-in kind.

Families, strategies, datasets, searchers and predictors are registered by the
name used in YAML, so adding one is one module plus one decorator — no if/elif
chains over method names. The name is written once: a registry made with
``name_attr`` sets that class attribute on what it registers (as timm's
``register_model`` takes the name from the function).
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Plug-ins of one kind by name. Stable API."""

    def __init__(self, kind: str, name_attr: str | None = None):
        self.kind = kind
        self.name_attr = name_attr
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` as ``name`` (a second registration is an error)."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            if self.name_attr is not None:
                setattr(obj, self.name_attr, name)
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, file: str | None = None, field: str | None = None) -> T:
        """The plug-in ``name``; an unknown name is a one-line UserError listing the known
        ones, naming ``file`` and ``field`` when given."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise UserError(f"unknown {self.kind} {name!r} (known: {known})", file, field) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
