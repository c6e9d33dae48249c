"""Verifiers: score images against prompts through one batched interface.

The registry (registry.py) lists every verifier with its declared options without importing
torch; `load_verifier(name, **options)` imports the verifier's module and builds one (heavy
dependencies such as open_clip and model weights load only then). The classes below load on
first use (PEP 562).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes
from .registry import (VerifierEntry, available_verifiers, check_differentiable, differentiable_verifiers, load_verifier,
                       register_verifier, verifier_entry, verifier_params)

_LAZY = {
    "CLIPVerifier": ".clip",
    "FunctionVerifier": ".base",
    "Verdict": ".base",
    "Verifier": ".base",
    "check_inputs": ".base",
    "clip_preprocess": ".preprocess",
}

__all__ = sorted([*_LAZY, "VerifierEntry", "available_verifiers", "check_differentiable", "differentiable_verifiers", "load_verifier", "register_verifier",
                  "verifier_entry", "verifier_params"])

if TYPE_CHECKING:  # pragma: no cover
    from .base import FunctionVerifier, Verdict, Verifier, check_inputs
    from .clip import CLIPVerifier
    from .preprocess import clip_preprocess

__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
