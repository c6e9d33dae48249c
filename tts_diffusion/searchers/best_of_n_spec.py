"""best_of_n's declaration (torch-free; the search is in best_of_n.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import STOP_SCORE

BEST_OF_N = SearcherEntry.declare(
    "best_of_n", "random search: N noises, sampled deterministically, best verifier score kept",
    params=[
        Param("num_samples", int, None, "independent candidates N (default: as many as the budget pays for)", low=1),
        Param("round_size", int, None, "candidates per round, one trace point each (default: one denoiser call's"
              " rows, max_batch, so Ctrl-C keeps every finished round)", low=1),
        STOP_SCORE,
    ],
    min_budget=lambda num_steps, o: (o["num_samples"] or 1) * num_steps, fresh_trajectories=True)
