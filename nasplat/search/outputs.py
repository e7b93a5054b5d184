"""Search outputs: ``trials.csv``, ``pareto.csv``, ``hypervolume.csv``, ``pareto.png`` and
the Pareto table printed on the console."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ..io import atomic_path, write_text
from .runner import Problem, SearchResult


def columns(problem: Problem) -> list[str]:
    names = [m.name for m in problem.all_metrics]
    for c in problem.constraints:
        if c.metric not in names:
            names.append(c.metric)
    return ["number", "arch_id", *names, "feasible", "pareto", "eval_seconds", "node", "arch"]


def rows(result: SearchResult) -> list[dict[str, Any]]:
    out = []
    for r in result.records:
        row = {"number": r["number"], "arch_id": r["arch_id"], "feasible": r["feasible"], "pareto": r["pareto"],
               "eval_seconds": "" if r.get("seconds") is None else f"{r['seconds']:.4f}",
               "node": r.get("node", ""), "arch": r["arch"].to_json()}
        row.update(r["values"])
        out.append(row)
    return out


def _csv(rows_: list[dict[str, Any]], cols: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows_)
    return buf.getvalue()


def write_outputs(result: SearchResult, out_dir: Path, plot: bool = True) -> dict[str, Path]:
    out_dir = Path(out_dir)
    cols = columns(result.problem)
    all_rows = rows(result)
    paths = {"trials": out_dir / "trials.csv", "pareto": out_dir / "pareto.csv",
             "hypervolume": out_dir / "hypervolume.csv", "plot": out_dir / "pareto.png"}
    write_text(paths["trials"], _csv(all_rows, cols))
    front = sorted((r for r in all_rows if r["pareto"]), key=lambda r: r[result.problem.objectives[0].name])
    write_text(paths["pareto"], _csv(front, cols))
    hv = "evaluations,hypervolume\n" + "".join(f"{i + 1},{v:.6f}\n" for i, v in enumerate(result.hv_history))
    write_text(paths["hypervolume"], hv)
    if plot:
        plot_front(result, paths["plot"])
    return paths


def _fmt(name: str, v: float) -> str:
    if name == "accuracy":
        return f"{100 * v:.2f}%"
    if name in ("macs", "params"):
        return f"{v / 1e6:.2f}M"
    if name.startswith("latency"):
        return f"{v:.3f} ms"
    return f"{v:.4g}"


def pareto_table(result: SearchResult) -> str:
    p = result.problem
    names = [m.name for m in p.all_metrics]
    front = sorted(result.front(), key=lambda r: r["values"][p.objectives[0].name])
    header = ["arch_id", *names]
    body = [[r["arch_id"], *[_fmt(n, r["values"][n]) for n in names]] for r in front]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    lines = [f"Pareto front: {len(front)} of {len(result.records)} evaluated archs "
             f"({sum(r['feasible'] for r in result.records)} feasible)"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def plot_front(result: SearchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = result.problem
    objs = p.objectives
    if len(objs) >= 2:
        xm, ym = objs[1], objs[0]
    else:
        xm, ym = (p.extra[0] if p.extra else objs[0]), objs[0]
    def conv(name: str, v: float) -> float:
        return v * 100 if name == "accuracy" else v / 1e6 if name in ("macs", "params") else v

    label = {n: (f"{n} (M)" if n in ("macs", "params") else "accuracy (%)" if n == "accuracy"
                 else f"{n} (ms)" if n.startswith("latency") else n) for n in (xm.name, ym.name)}

    def xy(rs: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
        return ([conv(xm.name, r["values"][xm.name]) for r in rs], [conv(ym.name, r["values"][ym.name]) for r in rs])

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=110)
    feas = [r for r in result.records if r["feasible"]]
    infeas = [r for r in result.records if not r["feasible"]]
    if infeas:
        ax.scatter(*xy(infeas), s=10, c="#bbbbbb", marker="x", label="infeasible")
    if feas:
        ax.scatter(*xy(feas), s=12, c="#7aa6d6", alpha=0.7, label="feasible")
    front = sorted(result.front(), key=lambda r: r["values"][xm.name])
    if front:
        fx, fy = xy(front)
        ax.step(fx, fy, where="post", c="#d62728", lw=1.2)
        ax.scatter(fx, fy, s=28, c="#d62728", label="Pareto front", zorder=3)
    for c in p.constraints:
        for m, line in ((xm, ax.axvline), (ym, ax.axhline)):
            if c.metric == m.name:
                line(conv(m.name, c.limit), ls="--", c="k", lw=1, label=f"constraint: {c.text}")
    ax.set_xlabel(label[xm.name])
    ax.set_ylabel(label[ym.name])
    ax.set_title(f"{len(result.records)} archs, {len(front)} on the front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
