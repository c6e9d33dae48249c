"""Search methods, registered by name (see `available_searchers`).

Importing this package imports no torch: the registry (registry.py) holds every searcher's
declaration and imports a searcher's code the first time it is loaded (`load_searcher`)."""
from .registry import (Searcher, SearcherEntry, available_searchers, load_searcher, min_budget, register_searcher,
                       run_defaults, searcher_entry, searcher_params)

__all__ = ["Searcher", "SearcherEntry", "available_searchers", "load_searcher", "min_budget", "register_searcher",
           "run_defaults", "searcher_entry", "searcher_params"]
