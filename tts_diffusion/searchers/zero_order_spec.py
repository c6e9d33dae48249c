"""zero_order's declaration (torch-free; the search is in zero_order.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import STOP_SCORE

ON_STALL = ("keep", "move", "restart")

ZERO_ORDER = SearcherEntry.declare(
    "zero_order", "zero-order search: move a pivot noise to its best neighbour on the Gaussian shell",
    params=[
        Param("num_children", int, 4, "neighbours N of the pivot per round", low=1),
        Param("step_size", float, 0.5, "lambda: the neighbours' distance relative to the pivot's norm", low=0.0,
              high=2.0, low_open=True),
        Param("num_rounds", int, None, "rounds K (default: as many as the budget pays for, at least 1)", low=1),
        Param("on_stall", str, "keep", "no neighbour beats the pivot: keep it (fresh neighbours), move to the best "
              "neighbour anyway, or restart from a new noise", choices=ON_STALL),
        STOP_SCORE,
    ],
    min_budget=lambda num_steps, o: (1 + (o["num_rounds"] or 1) * o["num_children"]) * num_steps,
    fresh_trajectories=True)
