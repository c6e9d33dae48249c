"""tts-diffusion: test-time scaling for diffusion and flow text-to-image models.

    from tts_diffusion import TTSPipeline
    result = TTSPipeline.from_pretrained()("a photo of a red circle", verifier="oracle", budget=80)
"""
from .core import Budget, DenoisingProcess, SearchResult
from .errors import BudgetExceeded, MissingWeightsError, TTSInputError
from .pipelines import TGate, TTSPipeline
from .searchers import available_searchers, load_searcher
from .verifiers import Verifier, available_verifiers, load_verifier

__version__ = "0.1.0"
__all__ = [
    "Budget", "BudgetExceeded", "DenoisingProcess", "MissingWeightsError", "SearchResult", "TGate", "TTSInputError",
    "TTSPipeline", "Verifier", "available_searchers", "available_verifiers", "load_searcher", "load_verifier",
]
