"""User-facing pipelines."""
from ..core.tgate import TGate
from .tts_pipeline import TTSPipeline, load_diffusers_pipeline

__all__ = ["TGate", "TTSPipeline", "load_diffusers_pipeline"]
