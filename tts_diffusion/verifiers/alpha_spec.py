"""alpha's declaration (torch-free; the verifier is in alpha.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import VerifierEntry

ALPHA = VerifierEntry.declare(
    "alpha", "matte quality of rgba candidates: transparent border and a sharp (binary) matte",
    params=[
        Param("border_width", int, 2, "border band in pixels that should be transparent", low=1),
        Param("border_weight", float, 0.5, "weight of the border term (the rest: sharpness)", low=0.0, high=1.0),
    ])
