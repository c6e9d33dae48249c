"""ensemble's declaration (torch-free; the verifier is in ensemble.py)."""
from __future__ import annotations

from typing import Any, Mapping

from ..params import Param
from .declaration import VerifierEntry
from .vocabulary import DTYPES

ENSEMBLE_MODES = ("rank", "zscore")


def _factory_checks(key: str, value: Any) -> bool:
    """Options the factory checks itself: per-member `name.option` keys, Python-only
    mappings, and members / weights given as Python objects."""
    return ("." in key or key in ("stats", "reference", "member_options")
            or (key == "members" and not isinstance(value, str))
            or (key == "weights" and isinstance(value, (str, Mapping))))


ENSEMBLE = VerifierEntry.declare(
    "ensemble", "rank-average (Ma et al. 2025) or z-score weighted ensemble of other verifiers",
    params=[
        Param("members", str, "clip,oracle", "member verifiers, comma separated (Python: also a list or "
              "{name: verifier})"),
        Param("weights", tuple, None, "one weight >= 0 per member, e.g. 1,2 (default: equal)", item_type=float),
        Param("mode", str, "rank", "rank: mean within-batch rank; zscore: weighted standardised scores",
              choices=ENSEMBLE_MODES),
        Param("device", str, None, "device of every member built by name"),
        Param("dtype", str, None, "dtype of every member built by name", choices=DTYPES),
        Param("chunk_size", int, None, "chunk size of every member built by name (default: each member's own)",
              low=1),
    ],
    extra=_factory_checks, differentiable=None)
