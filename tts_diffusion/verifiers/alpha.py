"""Alpha-quality verifier: scores the matte of an RGBA (Alfie) candidate, not its pixels.

    score = border_weight * border + (1 - border_weight) * sharpness
    border    = share of the pixels within `border_width` px of the edge with alpha < 0.5
                (a cut-out subject should not touch the frame)
    sharpness = 1 - mean_p 4 alpha(p) (1 - alpha(p))   (1 for a binary matte, 0 for alpha = 0.5)

The mattes come from the rgba run (`pipelines/alfie.py`), which sets them for the batch it
scores (`scoring_alphas`); inside an `ensemble` every member sees the same batch, so this
verifier can join one (e.g. `ensemble` of `clip` and `alpha`). Without rgba=True there is
no matte to score: one clear error.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Sequence

import torch

from ..errors import TTSInputError
from .alpha_spec import ALPHA
from .base import Verifier
from .registry import register_verifier

_ALPHAS: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("tts_alphas", default=None)


@contextlib.contextmanager
def scoring_alphas(alphas: torch.Tensor) -> Iterator[None]:
    """Make `alphas` [B, H, W] in [0, 1] the mattes of the batch being scored in this block."""
    token = _ALPHAS.set(alphas)
    try:
        yield
    finally:
        _ALPHAS.reset(token)


def current_alphas() -> torch.Tensor | None:
    return _ALPHAS.get()


def border_share(alpha: torch.Tensor, width: int) -> torch.Tensor:
    """Share of the pixels within `width` px of the edge that are transparent (< 0.5), [B]."""
    b, h, w = alpha.shape
    width = max(1, min(int(width), h // 2, w // 2))
    edge = torch.ones(h, w, dtype=torch.bool, device=alpha.device)
    edge[width : h - width, width : w - width] = False
    return (alpha[:, edge] < 0.5).float().mean(dim=1)


def sharpness(alpha: torch.Tensor) -> torch.Tensor:
    """1 - mean 4 a (1 - a): 1 for a binary matte, 0 for a flat 0.5, [B]."""
    a = alpha.float().clamp(0, 1)
    return 1 - (4 * a * (1 - a)).flatten(1).mean(dim=1)


class AlphaVerifier(Verifier):
    name = "alpha"

    def __init__(self, border_width: int = 2, border_weight: float = 0.5):
        super().__init__()
        self.border_width = int(border_width)
        self.border_weight = float(border_weight)

    def forward(self, images: torch.Tensor, prompts: Sequence[str] | str) -> torch.Tensor:
        alphas = current_alphas()
        if alphas is None:
            raise TTSInputError("the alpha verifier scores RGBA mattes: use it with rgba=True (--rgba)")
        if alphas.shape[0] != images.shape[0]:
            raise RuntimeError(f"alpha verifier: {images.shape[0]} images but {alphas.shape[0]} mattes")
        a = alphas.float().to(images.device)
        wb = self.border_weight
        return wb * border_share(a, self.border_width) + (1 - wb) * sharpness(a)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.forward(images, prompts)


@register_verifier(ALPHA)
def make_alpha(border_width: int = 2, border_weight: float = 0.5) -> AlphaVerifier:
    return AlphaVerifier(border_width, border_weight)
