"""Model-agnostic sampling state shared by every method."""
from .budget import Budget
from .families import Family
from .process import Conditioning, DenoisingProcess, Prediction
from .result import SearchResult

__all__ = ["Budget", "Conditioning", "DenoisingProcess", "Family", "Prediction", "SearchResult"]
