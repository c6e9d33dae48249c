"""User-facing pipelines. Loaded lazily: `from tts_diffusion.pipelines import checks` (the
input checks the CLI runs before anything heavy) does not import torch."""
from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY = {"TGate": "..features.tgate_spec", "TTSPipeline": ".tts_pipeline", "load_diffusers_pipeline": ".tts_pipeline"}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
