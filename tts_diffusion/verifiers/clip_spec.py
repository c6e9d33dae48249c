"""clip's declaration (torch-free; the verifier is in clip.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import VerifierEntry
from .vocabulary import placement_params

DEFAULT_MODEL = "ViT-L-14"
DEFAULT_PRETRAINED = "openai"

CLIP = VerifierEntry.declare(
    "clip", "CLIP score (cosine of image and prompt embeddings) through open_clip",
    params=[
        Param("model", str, None, "open_clip architecture (e.g. ViT-L-14) or a local model folder "
              "(default: the project's domain CLIP when present, else ViT-L-14)"),
        Param("pretrained", str, None, "open_clip pretrained tag (default: openai with ViT-L-14)"),
        Param("checkpoint", str, None, "path to a weights file for `model` (default: none, use `pretrained`)"),
        *placement_params(64),
        Param("scale", float, 1.0, "multiplier of the cosine similarity", low=0.0, low_open=True),
        Param("text_cache_size", int, 4096, "prompt embeddings kept in memory", low=0),
    ], differentiable=True)
