"""``Arch``: one point of a search space, as a flat mapping of choice name -> value.

A flat mapping works for every family (Optuna parameters, one-hot predictor
features and PA&DA's per-choice importance all index it the same way). Archs are
always stored in canonical form (choices that do not matter, such as the kernel
of a block beyond the stage depth, are set to the first option by the space), so
equal networks have equal ids.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Iterator

Value = int | float | str


class Arch(Mapping[str, Value]):
    __slots__ = ("_values", "_id", "_codes")

    def __init__(self, values: Mapping[str, Value]):
        self._values = dict(values)
        self._id: str | None = None
        self._codes: tuple[object, Any] | None = None  # (the space's token, its index row): set by the space

    def __getitem__(self, key: str) -> Value:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arch) and self._values == other._values

    def __repr__(self) -> str:
        return f"Arch({self.id})"

    def to_json(self) -> str:
        return json.dumps(self._values, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Arch":
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("an arch JSON must be an object of choice name -> value")
        return cls(data)

    @property
    def id(self) -> str:
        """Stable short id: the first 12 hex digits of the SHA-1 of the canonical JSON."""
        if self._id is None:
            self._id = hashlib.sha1(self.to_json().encode()).hexdigest()[:12]
        return self._id

    def replace(self, **changes: Value) -> "Arch":
        values = dict(self._values)
        values.update(changes)
        return Arch(values)
