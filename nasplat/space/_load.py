"""Loading a space YAML with one-line errors naming the file and the field."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import UserError
from ._base import FAMILIES, SearchSpace


def read_yaml(path: str | Path, what: str = "file") -> dict[str, Any]:
    """``yaml.safe_load`` a mapping, turning every failure into a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found", path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        problem = getattr(e, "problem", None) or str(e)
        raise UserError(f"invalid YAML: {problem}", path, where) from None
    except UnicodeDecodeError:
        raise UserError("not a text file", path) from None
    if data is None:
        raise UserError("the file is empty", path)
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping at the top level, got {type(data).__name__}", path)
    return data


def validation_error(e: ValidationError, path: str | Path | None, prefix: str = "") -> UserError:
    """The first pydantic error as a one-line UserError with a dotted field path."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-after"))
    field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return UserError(msg, path, field or None)


def validate(model: type[BaseModel], data: Any, path: str | Path | None, prefix: str = "") -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, path, prefix) from None


def space_from_dict(data: dict[str, Any], source: str | Path | None = None, prefix: str = "") -> SearchSpace:
    family = data.get("family")
    field = f"{prefix}.family" if prefix else "family"
    if family is None:
        raise UserError("required field is missing", source, field)
    if not isinstance(family, str):
        raise UserError("must be a string", source, field)
    cls = FAMILIES.get(family, str(source) if source else None, field)
    config = validate(cls.Config, data, source, prefix)
    return cls(config, source)


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file."""
    return space_from_dict(read_yaml(path, "search space file"), path)


def resolve_space(spec: str | Path | dict[str, Any], base_dir: Path | None = None,
                  source: str | Path | None = None, field: str | None = "space") -> SearchSpace:
    """The one rule for naming a space: an inline mapping, a YAML path (relative to
    ``base_dir``) or the name of a shipped space (``ofa_mbv3_small`` ->
    ``search_spaces/ofa_mbv3_small.yaml``). Unknown: one line naming both forms."""
    from ..paths import SHIPPED_SPACES

    if isinstance(spec, dict):
        return space_from_dict(spec, source, field or "")
    p = Path(spec)
    path = p if p.is_absolute() or base_dir is None else base_dir / p
    if p.suffix or len(p.parts) > 1:  # a path
        if not path.is_file() and source is not None:  # named in a file: name that file and field
            raise UserError(f"search space {str(spec)!r} not found", source, field)
        return load_space(path)
    for c in (path, SHIPPED_SPACES / f"{spec}.yaml"):
        if c.is_file():
            return load_space(c)
    shipped = ", ".join(sorted(q.stem for q in SHIPPED_SPACES.glob("*.yaml")))
    raise UserError(f"search space {str(spec)!r} not found (a YAML path, or a shipped space: {shipped})",
                    source, field)
