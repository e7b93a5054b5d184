"""Fuzz the space and experiment loaders with hypothesis-generated documents.

Every document is a shipped search space (``search_spaces/*.yaml``) or a shipped
experiment (``examples/*.yaml``) mutated by a hypothesis-drawn list of edits: a key
deleted, an unknown key added, a value replaced by another type (None, bool, huge or
negative int, NaN/inf float, string, list, mapping), a list emptied or an element
duplicated, a number negated or zeroed; a share of documents are also damaged as text
(a character inserted, a slice cut, truncation). The document is written to a file and
loaded through ``load_space`` / ``load_experiment``. Outcomes:

* accepted: for a space, ``describe()`` (count, min/max arch MACs and params) and two
  sampled archs' MACs and params must then work too (an accepted document must be
  usable);
* rejected with a ``UserError`` whose line is one line and names the file;
* anything else is an *uncaught exception*: the count must be zero.

``python -m bench.fuzz [-n 10000] [--seed 0]`` (or ``nasplat bench fuzz``) prints the
number of documents, accepted / rejected counts and the number of uncaught exceptions
(with the first few tracebacks); ``--quick`` runs 1000.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def base_documents() -> list[tuple[str, dict[str, Any]]]:
    """(kind, document) for every shipped space and example experiment; experiments
    name their space by its shipped name so they load from any folder."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for p in sorted((REPO / "search_spaces").glob("*.yaml")):
        docs.append(("space", yaml.safe_load(p.read_text())))
    for p in sorted((REPO / "examples").glob("*.yaml")):
        d = yaml.safe_load(p.read_text())
        if isinstance(d.get("space"), str):
            d["space"] = Path(d["space"]).stem
        d.pop("hardware", None) if any("/" in str(h) for h in d.get("hardware", [])) else None
        docs.append(("experiment", d))
    return docs


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) to a node of ``doc``, the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def strategies():
    from hypothesis import strategies as st

    scalar = st.one_of(
        st.none(), st.booleans(), st.integers(-3, 3), st.integers(-2**70, 2**70), st.sampled_from([0, 1, 2, 4, 7, 8]),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
        st.sampled_from(["", "max", "min", "relu", "mbv3", "conv", "transformer", "digits", "sandwich", "../x",
                         "1e9", "~", "yes", "null"]))
    value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                         max_leaves=6)
    return st, value


def mutate(data, doc: Any) -> Any:
    """Apply a hypothesis-drawn list of edits to a deep copy of ``doc``."""
    st, value = strategies()
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths), label="path")
        node = _get(doc, path)
        parent = _get(doc, path[:-1]) if path else None
        op = data.draw(st.sampled_from(["delete", "add_key", "replace", "empty", "duplicate", "negate", "zero"]),
                       label="op")
        if op == "delete" and path:
            del parent[path[-1]]
        elif op == "add_key" and isinstance(node, dict):
            node[data.draw(st.sampled_from(["extra", "widths", "kernel", "depth", "strides", "optoins", "name"]),
                           label="key")] = data.draw(value, label="v")
        elif op == "replace":
            new = data.draw(value, label="v")
            if path:
                parent[path[-1]] = new
            else:
                doc = new
        elif op == "empty" and isinstance(node, (list, dict)):
            node.clear()
        elif op == "duplicate" and isinstance(node, list) and node:
            node.append(copy.deepcopy(node[data.draw(st.integers(0, len(node) - 1), label="i")]))
        elif op in ("negate", "zero") and path and isinstance(node, (int, float)) and not isinstance(node, bool):
            parent[path[-1]] = -node if op == "negate" else 0
    return doc


def damage_text(data, text: str) -> str:
    st, _ = strategies()
    kind = data.draw(st.sampled_from(["none", "none", "none", "insert", "cut", "truncate"]), label="text")
    if kind == "none" or not text:
        return text
    i = data.draw(st.integers(0, len(text)), label="at")
    if kind == "insert":
        return text[:i] + data.draw(st.sampled_from(list(":[]{}-&*!|>'\"%@`\t\n#,?")), label="ch") + text[i:]
    if kind == "cut":
        return text[:i] + text[i + data.draw(st.integers(1, 20), label="n"):]
    return text[:i]


class Tally:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.uncaught: list[str] = []
        self.bad_lines: list[str] = []

    @property
    def documents(self) -> int:
        return sum(self.counts.values())


def check_one(kind: str, path: Path, tally: Tally) -> None:
    """Load ``path`` as ``kind``; record accepted / rejected / uncaught."""
    from nasplat.errors import UserError
    from nasplat.experiment import load_experiment
    from nasplat.space import load_space

    import numpy as np

    try:
        if kind == "space":
            space = load_space(path)
            d = space.describe()
            rng = np.random.default_rng(0)
            for _ in range(2):
                a = space.sample(rng)
                macs, params = space.macs(a), space.num_params(a)
                if not (macs >= 0 and params > 0 and math.isfinite(macs)):
                    raise AssertionError(f"accepted space gives MACs {macs}, params {params}")
            if d["archs"] < 1:
                raise AssertionError(f"accepted space counts {d['archs']} archs")
        else:
            load_experiment(path)
        tally.counts[f"{kind} accepted"] += 1
    except UserError as e:
        tally.counts[f"{kind} rejected"] += 1
        line = e.line()
        if len(line.splitlines()) != 1 or str(path) not in line:
            tally.bad_lines.append(line)
    except Exception:  # noqa: BLE001 - counting them is the point
        tally.counts[f"{kind} uncaught"] += 1
        if len(tally.uncaught) < 20:
            tally.uncaught.append(f"{path.read_text(errors='replace')[:400]}\n{traceback.format_exc()}")


def run(n: int, seed: int = 0, folder: Path | None = None) -> Tally:
    """Generate and check ``n`` documents (hypothesis, derandomised by ``seed``)."""
    from hypothesis import HealthCheck, Phase, given, seed as hseed, settings, strategies as st

    bases = base_documents()
    tally = Tally()
    tmp = tempfile.TemporaryDirectory(prefix="nasplat-fuzz-") if folder is None else None
    root = Path(tmp.name) if tmp else Path(folder)
    counter = [0]

    @hseed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        kind, base = bases[data.draw(st.integers(0, len(bases) - 1), label="base")]
        doc = mutate(data, base)
        text = damage_text(data, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        counter[0] += 1
        path = root / f"doc{counter[0] % 7}.yaml"
        path.write_text(text)
        check_one(kind, path, tally)

    try:
        one()
    finally:
        if tmp:
            tmp.cleanup()
    return tally


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nasplat bench fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10_000, help="documents to generate (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1000 documents")
    args = ap.parse_args(argv)
    n = 1000 if args.quick else args.n
    from bench._common import machine, today
    t0 = time.perf_counter()
    tally = run(n, args.seed)
    dt = time.perf_counter() - t0
    for text in tally.uncaught[:5]:
        print(text, file=sys.stderr)
    for line in tally.bad_lines[:5]:
        print(f"not one line naming the file: {line}", file=sys.stderr)
    uncaught = sum(v for k, v in tally.counts.items() if k.endswith("uncaught"))
    print(f"fuzz: {tally.documents} documents in {dt:.0f}s ({', '.join(f'{k} {v}' for k, v in sorted(tally.counts.items()))})")
    print(f"fuzz: uncaught exceptions {uncaught}; rejections not one line naming the file {len(tally.bad_lines)}")
    print(f"machine: {machine()}; date {today()}")
    return 0 if uncaught == 0 and not tally.bad_lines else 1


if __name__ == "__main__":
    sys.exit(main())
