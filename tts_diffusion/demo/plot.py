"""The score-against-NFE plot: every candidate as a point, the best so far as a staircase.

Drawn with matplotlib's object API (no pyplot state, so concurrent requests do not share a
figure) and shown by `gr.Plot`. NFE ticks are whole numbers and scores carry 2 or 3
decimals; a run whose candidates all share one NFE (best-of-N in one round) still shows
its points (hollow, with "x8" where several coincide), and equal scores get a visible band
around them.
"""
from __future__ import annotations

import math
from collections import Counter

from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator

from ..records.result import SearchResult

POINT_COLOR = "#7b8794"
BEST_COLOR = "#e8590c"


def score_plot(result: SearchResult, width: float = 6.4, height: float = 3.0) -> Figure:
    """The figure for one finished run."""
    points = [(c.nfe, c.score) for c in result.candidates if math.isfinite(c.score)]
    steps = [(p.nfe, p.best_score) for p in result.trace if math.isfinite(p.best_score)]
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if steps:
        xs, ys = map(list, zip(*steps))
        if result.nfe > xs[-1]:  # the best holds to the end of the budget
            xs.append(result.nfe)
            ys.append(ys[-1])
        ax.step(xs, ys, where="post", color=BEST_COLOR, linewidth=2, label="best so far", zorder=3)
        ax.plot(xs[:1], ys[:1], "o", color=BEST_COLOR, markersize=4, zorder=3)
    if points:  # hollow, above the staircase, so that each shows; "x8" where several coincide
        ax.scatter(*zip(*points), s=30, facecolors="none", edgecolors=POINT_COLOR, linewidths=1.2,
                   label=f"candidates ({len(points)})", zorder=4)
        for (x, y), n in Counter((x, round(y, 3)) for x, y in points).items():
            if n > 1:
                ax.annotate(f"×{n}", (x, y), xytext=(5, 4), textcoords="offset points", fontsize="small",
                            color=POINT_COLOR)
    scores = [s for _, s in points] + [s for _, s in steps]
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    pad = max(0.08 * (high - low), 0.02)
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlim(0, max([result.nfe] + [x for x, _ in points]) * 1.05 or 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.3f" if high - low < 0.1 else "%.2f"))
    ax.set_xlabel("NFE spent")
    ax.set_ylabel("verifier score")
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside upper center", ncols=2, fontsize="small", frameon=False)
    return fig
