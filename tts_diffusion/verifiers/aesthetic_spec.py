"""aesthetic's declaration (torch-free; the verifier is in aesthetic.py)."""
from __future__ import annotations

from ..params import Param
from .clip_spec import DEFAULT_MODEL, DEFAULT_PRETRAINED
from .declaration import VerifierEntry
from .vocabulary import placement_params

HEAD_ENV = "TTS_AESTHETIC_HEAD"
HEAD_NAME = "sac+logos+ava1-l14-linearMSE.pth"

AESTHETIC = VerifierEntry.declare(
    "aesthetic", "LAION aesthetic predictor: MLP head on the CLIP ViT-L/14 image embedding (prompt ignored)",
    params=[
        Param("head", str, None, f"the MLP head file (default: ${HEAD_ENV}, else {HEAD_NAME} in the cache)"),
        Param("model", str, DEFAULT_MODEL, "open_clip architecture of the image embedding"),
        Param("pretrained", str, DEFAULT_PRETRAINED, "open_clip pretrained tag", nullable=True),
        Param("checkpoint", str, None, "path to CLIP weights for `model` (default: none, use `pretrained`)"),
        *placement_params(64),
    ],
    extra=lambda key, value: key == "clip", differentiable=True)  # extra: a built CLIPVerifier to share (Python only)
