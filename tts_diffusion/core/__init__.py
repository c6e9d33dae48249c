"""The sampler: a diffusers pipeline seen as a DenoisingProcess (families, schedulers,
adapters), the NFE budget, and per-call and per-particle state. Features that plug into the
process live in tts_diffusion/features/, what a search returns in tts_diffusion/records/."""
from .budget import Budget
from .families import Family
from .process import Conditioning, DenoisingProcess, Prediction

__all__ = ["Budget", "Conditioning", "DenoisingProcess", "Family", "Prediction"]
