"""User-facing pipelines. Loaded lazily: `from tts_diffusion.pipelines import checks` (the
input checks the CLI runs before anything heavy) does not import torch."""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TGate", "TTSPipeline", "load_diffusers_pipeline"]


def __getattr__(name: str) -> Any:
    if name == "TGate":
        return importlib.import_module("..core.tgate", __name__).TGate
    if name in __all__:
        return getattr(importlib.import_module(".tts_pipeline", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
