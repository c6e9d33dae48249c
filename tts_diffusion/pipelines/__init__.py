"""User-facing pipelines."""
from .tts_pipeline import TTSPipeline, load_diffusers_pipeline

__all__ = ["TTSPipeline", "load_diffusers_pipeline"]
