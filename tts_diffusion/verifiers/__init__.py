"""Verifiers: score images against prompts through one batched interface.

Importing this package registers the built-in verifiers (each module registers itself
with ``@register_verifier``); list them with ``available_verifiers()`` and build one
with ``load_verifier(name, **options)``. Heavy dependencies (open_clip, model weights)
load only when a verifier is constructed.
"""
from __future__ import annotations

import importlib
import importlib.util

from .base import (FunctionVerifier, Verdict, Verifier, available_verifiers, check_inputs, load_verifier,
                   register_verifier, verifier_params)
from .preprocess import clip_preprocess

#: modules that register built-in verifiers, imported when present (some are written
#: in parallel; a module that exists but fails to import is a real error and raises)
_BUILTIN_MODULES = ("clip", "oracle", "image_reward", "aesthetic", "ensemble", "alpha")

for _mod in _BUILTIN_MODULES:
    if importlib.util.find_spec(f"{__name__}.{_mod}") is not None:
        importlib.import_module(f"{__name__}.{_mod}")
del _mod

from .clip import CLIPVerifier  # noqa: E402

__all__ = [
    "Verdict",
    "Verifier",
    "CLIPVerifier",
    "FunctionVerifier",
    "available_verifiers",
    "check_inputs",
    "clip_preprocess",
    "load_verifier",
    "register_verifier",
    "verifier_params",
]
