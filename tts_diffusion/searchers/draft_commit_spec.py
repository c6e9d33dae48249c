"""draft_commit's declaration (torch-free; the search is in draft_commit.py), with the NFE
arithmetic its plan and its minimum budget share."""
from __future__ import annotations

from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import STOP_SCORE

#: how drafts are made cheaply (draft_commit.py's module docstring says what each costs)
DRAFT_KINDS = ("steps", "preview", "tgate", "cache")

#: the cache config `draft=cache` uses when `cache_config` is left out
DEFAULT_CACHE = "FirstBlockCache:threshold=0.05"


def draft_steps(num_steps: int, o: dict) -> int:
    """Steps of a draft: `draft_steps` (default half the steps, at least 1) for steps / preview;
    the full grid for tgate / cache."""
    if o["draft"] in ("steps", "preview"):
        return min(num_steps, o["draft_steps"] or max(1, num_steps // 2))
    return num_steps


def commit_cost(num_steps: int, o: dict) -> int:
    """NFE of one commit: a full sample from the seed; preview drafts continue their prefix
    (the first draft_steps of the same grid) for the remaining steps."""
    return num_steps - draft_steps(num_steps, o) if o["draft"] == "preview" else num_steps


def minimum_nfe(num_steps: int, o: dict) -> int:
    n = max(o["num_samples"] or o["top_k"], o["top_k"])
    return n * draft_steps(num_steps, o) + o["top_k"] * commit_cost(num_steps, o)


DRAFT_COMMIT = SearcherEntry.declare(
    "draft_commit", "draft-then-commit (CachedSearch / Flash-BoN): N cheap drafts ranked by the verifier, the top k "
                    "re-run at full compute from the same seed and re-scored",
    params=[
        Param("num_samples", int, None, "drafts N (default: as many as the budget pays for after the commits)",
              low=1),
        Param("top_k", int, 1, "drafts committed: re-run at full compute from their seed and re-scored", low=1),
        Param("draft", str, "preview", "how drafts are made: steps (fewer steps), preview (the first draft_steps of"
              " the full grid, x0 estimate scored through the preview decoder; commits continue them), tgate"
              " (T-GATE at draft_gate), cache (diffusers enable_cache(cache_config) on the denoiser)",
              choices=DRAFT_KINDS),
        Param("draft_steps", int, None, "draft=steps / preview: steps of a draft (default: half the steps)", low=1),
        Param("draft_gate", int, None, "draft=tgate: the drafts' T-GATE gate step (default: half the steps)", low=1),
        Param("cache_config", str, None, "draft=cache: a diffusers.hooks config as NAME:key=value,... e.g."
              f" {DEFAULT_CACHE} or TaylorSeerCache:cache_interval=3 (default: {DEFAULT_CACHE})"),
        STOP_SCORE,
    ],
    min_budget=minimum_nfe)
