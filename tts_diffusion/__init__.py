"""tts-diffusion: test-time scaling for diffusion and flow text-to-image models.

    from tts_diffusion import TTSPipeline
    result = TTSPipeline.from_pretrained()("two red circles", verifier="oracle", budget=80)

The names below load on first use (PEP 562), so `import tts_diffusion` and the CLI's
`--help` / `--version` do not import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes

__version__ = "0.1.0"

#: public name -> module that defines it
_LAZY = {
    "Budget": ".core.budget",
    "DenoisingProcess": ".core.process",
    "SearchRequest": ".request",
    "SearchResult": ".records.result",
    "TGate": ".features.tgate_spec",
    "BudgetExceeded": ".errors",
    "MissingWeightsError": ".errors",
    "TTSInputError": ".errors",
    "TTSPipeline": ".pipelines.tts_pipeline",
    "available_searchers": ".searchers",
    "load_searcher": ".searchers",
    "Verifier": ".verifiers",
    "available_verifiers": ".verifiers",
    "load_verifier": ".verifiers",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # pragma: no cover
    from .core.budget import Budget
    from .core.process import DenoisingProcess
    from .records.result import SearchResult
    from .request import SearchRequest
    from .features.tgate_spec import TGate
    from .errors import BudgetExceeded, MissingWeightsError, TTSInputError
    from .pipelines.tts_pipeline import TTSPipeline
    from .searchers import available_searchers, load_searcher
    from .verifiers import Verifier, available_verifiers, load_verifier


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
