"""The sweep's summary: per method and budget, the judge's verdict (accuracy for the
oracle, else the mean judge score), the mean NFE and seconds per search; a table, a JSON
file and a plot of the verdict against NFE (matplotlib optional)."""
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
    return out


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
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m, cells in summary["cells"].items():
        bs = sorted(int(b) for b in cells)
        ax.errorbar([b * steps for b in bs], [cells[str(b)]["value"] for b in bs],
                    yerr=[cells[str(b)]["stderr"] for b in bs], marker="o", capsize=3, label=m)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("NFE")
    ax.set_ylabel(f"{summary['metric']} ({summary.get('judge', 'judge')})")
    ax.set_title(f"guided by {summary.get('verifier', '?')}, judged by {summary.get('judge', '?')}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
