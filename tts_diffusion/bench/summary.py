"""The sweep's summary: per method and budget, the judge's verdict (accuracy for the
oracle, else the mean judge score), the mean NFE and seconds per search (wall clock of the
whole search: denoiser, decoder and verifier); a table, a JSON file and a plot of the
verdict against NFE and against seconds (matplotlib optional). `equal_seconds` puts every
method on the seconds of a reference method's budgets (linear in log seconds between a
method's own points; None outside them), so methods compare at equal wall clock as well
as at equal NFE."""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path


def summarize(records: list[dict], methods: list[str], budgets: list[int], steps: int) -> dict:
    """metric[method][budget] = accuracy (records with a pass/fail `hit`) or mean judge score,
    with its standard error, n, per-category values, mean NFE and seconds."""
    is_acc = bool(records) and all(r.get("hit") is not None for r in records)
    out: dict = {"metric": "accuracy" if is_acc else "mean judge score", "budgets": budgets, "steps": steps,
                 "methods": methods, "cells": {}}
    for m in methods:
        out["cells"][m] = {}
        for b in budgets:
            rs = [r for r in records if r["method"] == m and r["budget"] == b]
            if not rs:
                continue
            vals = [r["hit"] if is_acc else r["judge_score"] for r in rs]
            cats = sorted({r["category"] for r in rs})
            out["cells"][m][str(b)] = {
                "n": len(rs), "value": _mean(vals), "stderr": _stderr(vals),
                "nfe": _mean([r["nfe"] for r in rs]), "seconds": _mean([r["seconds"] for r in rs]),
                "per_category": {c: _mean([v for r, v in zip(rs, vals) if r["category"] == c]) for c in cats}}
    out["equal_seconds"] = equal_seconds(out)
    return out


def equal_seconds(summary: dict, reference: str | None = None) -> dict:
    """{"reference": method, "seconds": [its mean seconds per budget], "value": {method: [value
    at those seconds]}}: each method's verdict interpolated linearly in log seconds between its
    own budgets' points (None outside its range). Reference: best_of_n if swept, else the
    first method."""
    cells = summary["cells"]
    methods = [m for m in summary["methods"] if cells.get(m)]
    if not methods:
        return {}
    ref = reference or ("best_of_n" if "best_of_n" in methods else methods[0])
    ref_secs = [cells[ref][b]["seconds"] for b in sorted(cells[ref], key=int)]
    out = {"reference": ref, "seconds": ref_secs, "value": {}}
    for m in methods:
        pts = sorted((c["seconds"], c["value"]) for c in cells[m].values())
        out["value"][m] = [_interp_log(pts, t) for t in ref_secs]
    return out


def _interp_log(points: list[tuple[float, float]], t: float) -> float | None:
    if not points or t <= 0:
        return None
    if len(points) == 1:
        return points[0][1] if math.isclose(points[0][0], t, rel_tol=0.05) else None
    for (s0, v0), (s1, v1) in zip(points, points[1:]):
        if s0 <= t <= s1 and s0 > 0:
            if s1 == s0:
                return v0
            w = (math.log(t) - math.log(s0)) / (math.log(s1) - math.log(s0))
            return v0 + w * (v1 - v0)
    return None


def per_method(summary: dict, field: str = "value") -> dict[str, dict[int, object]]:
    """One field of every cell of `summarize`'s output, as [method][budget] (budgets as ints):
    `value` (accuracy or mean judge score), `seconds`, `nfe`, `per_category`, `n`, `stderr`."""
    return {m: {int(b): cell[field] for b, cell in cells.items()} for m, cells in summary["cells"].items()}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _stderr(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    mu = _mean(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1) / len(xs))


def format_table(summary: dict) -> str:
    """method rows, budget columns: value (n) and the mean seconds per search."""
    budgets, steps = summary["budgets"], summary["steps"]
    head = f"{summary['metric']} by budget (x {steps} NFE)"
    lines = [head, f"{'method':<12}" + "".join(f"{str(b) + 'x':>16}" for b in budgets)]
    for m, cells in summary["cells"].items():
        row = "".join(f"{'-':>16}" if str(b) not in cells else
                      f"{cells[str(b)]['value']:>9.3f} ({cells[str(b)]['n']:>3})" for b in budgets)
        secs = "".join(f"{'':>16}" if str(b) not in cells else f"{cells[str(b)]['seconds']:>14.2f}s" for b in budgets)
        lines += [f"{m:<12}{row}", f"{'  s/search':<12}{secs}"]
    eq = summary.get("equal_seconds") or {}
    if eq.get("value"):
        lines.append(f"at equal seconds ({eq['reference']}'s seconds per search)")
        lines.append(f"{'method':<12}" + "".join(f"{s:>15.2f}s" for s in eq["seconds"]))
        for m, vals in eq["value"].items():
            lines.append(f"{m:<12}" + "".join(f"{'-':>16}" if v is None else f"{v:>16.3f}" for v in vals))
    return "\n".join(lines)


def write_summary(summary: dict, out: Path, echo: Callable[[str], None] = print) -> None:
    """<out stem>.summary.json, <out stem>.png (if matplotlib imports) and the table."""
    stem = out.with_suffix("") if out.suffix == ".jsonl" else out
    json_path = stem.with_name(stem.name + ".summary.json")
    json_path.write_text(json.dumps(summary, indent=2))
    echo(format_table(summary))
    if summary.get("searches_per_second") is not None:
        echo(f"{summary['new_records']} new records in {summary['run_seconds']:.1f} s on {summary['processes']} "
             f"process(es): {summary['searches_per_second']:.3f} searches/s")
        shares = summary.get("process_shares") or []
        if len(shares) > 1:
            secs = [s["seconds"] for s in shares]
            echo(f"process shares took {min(secs):.1f}-{max(secs):.1f} s (the sweep waits for the slowest)")
    png = plot(summary, stem.with_name(stem.name + ".png"))
    echo(f"wrote {out}, {json_path}" + (f" and {png}" if png else ""))


def plot(summary: dict, path: Path) -> Path | None:
    """The verdict against NFE, one line per method (None when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return None
    steps = summary["steps"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for m, cells in summary["cells"].items():
        bs = sorted(int(b) for b in cells)
        for ax, xs in ((axes[0], [b * steps for b in bs]), (axes[1], [cells[str(b)]["seconds"] for b in bs])):
            ax.errorbar(xs, [cells[str(b)]["value"] for b in bs],
                        yerr=[cells[str(b)]["stderr"] for b in bs], marker="o", capsize=3, label=m)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("NFE")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("seconds per search (verifier included)")
    axes[0].set_ylabel(f"{summary['metric']} ({summary.get('judge', 'judge')})")
    fig.suptitle(f"guided by {summary.get('verifier', '?')}, judged by {summary.get('judge', '?')}", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
