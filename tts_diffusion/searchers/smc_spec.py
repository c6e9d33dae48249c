"""smc's declaration (torch-free; FK steering is in smc.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import RESAMPLING, STOP_SCORE, eta

POTENTIALS = ("difference", "max", "sum", "immediate")

SMC = SearcherEntry.declare(
    "smc", "SMC / FK steering: K particles with stochastic steps, reward potentials on x0 estimates, "
           "resampling; final weights target p(x) exp(lambda r(x))",
    params=[
        Param("num_particles", int, None, "particles K (default: as many full samples as the budget pays for)",
              low=1),
        Param("reward_scale", float, 10.0, "lambda: the target is p(x) exp(lambda r(x))", low=0.0),
        Param("potential", str, "max", "potential G built from the x0 rewards", choices=POTENTIALS),
        Param("resample_interval", int, None, "grid points between potentials (default: num_steps // 5, >= 1)",
              low=1),
        Param("window", tuple, None, "(first, end) grid points with potentials (default: (resample_interval, "
              "num_steps))", length=2),
        Param("resample_threshold", float, 0.5, "resample when ESS < threshold * K (1: every potential step, "
              "0: never)", low=0.0, high=1.0),
        RESAMPLING,
        eta(),
        STOP_SCORE,
    ],
    min_budget=lambda num_steps, o: (o["num_particles"] or 1) * num_steps)
