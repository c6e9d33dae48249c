"""Search methods, registered by name (see `available_searchers`)."""
from . import best_of_n, fkc, paths, rbf, reflect, smc, zero_order  # noqa: F401  (registers)
from .base import (Searcher, available_searchers, load_searcher, min_budget, register_searcher, run_defaults,
                   searcher_params)

__all__ = ["Searcher", "available_searchers", "load_searcher", "min_budget", "register_searcher", "run_defaults",
           "searcher_params"]
