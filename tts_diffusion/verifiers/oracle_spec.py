"""oracle's declaration (torch-free; the verifier is in oracle.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import VerifierEntry
from .vocabulary import DTYPES

ORACLE = VerifierEntry.declare(
    "oracle", "exact checker for the embedded shapes world (counts, colours, shapes, positions)",
    params=[
        Param("chunk_size", int, 256, "images per batch", low=1),
        Param("device", str, None, "accepted for symmetry with other verifiers and ignored (the oracle runs on CPU)"),
        Param("dtype", str, None, "accepted for symmetry with other verifiers and ignored", choices=DTYPES),
    ])
