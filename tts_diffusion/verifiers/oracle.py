"""The shapes-world oracle as a verifier: exact checks of counts, colours, shapes, sizes,
positions, betweenness and containment (`tts_diffusion.shapes.oracle`), for prompts of the
shapes grammar (v2, which holds every v1 prompt).

The score of an image is the fraction of its prompt's checks that pass (1.0 iff the image
is correct), so search methods get a graded signal; `verdict` adds one line of feedback
per image and the exact `correct` flags. Images may have any resolution; detection runs
batched on the images' device (CPU or CUDA, one torch implementation), `chunk_size`
images at a time, and the scores come back there.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..catalog.verifiers import ORACLE
from ..shapes.phrasing import parse_prompt
from ..shapes.oracle import OracleResult, check_batch
from .base import Verdict, Verifier, check_inputs, register_verifier


class OracleVerifier(Verifier):
    """Exact checker for the embedded shapes world. No weights; deterministic."""

    name = "oracle"
    chunk_size = 256

    def __init__(self) -> None:
        super().__init__()
        # no weights: an empty buffer carries the device that `.to()` picks, which searchers
        # move images to (`verifier.device`), so the oracle runs where the model does
        self.register_buffer("_placed", torch.zeros(0), persistent=False)

    def results(self, images: torch.Tensor, prompts: Sequence[str] | str) -> list[OracleResult]:
        """Full oracle results (checks, feedback, detections) for every image."""
        images, prompts = check_inputs(images, prompts)
        out: list[OracleResult] = []
        for s in range(0, images.shape[0], self.chunk_size):
            out.extend(check_batch(images[s : s + self.chunk_size], prompts[s : s + self.chunk_size]))
        return out

    def check_prompt(self, prompt: str) -> None:
        """Prompts outside the shapes grammar raise TTSInputError (parse_prompt's message)."""
        parse_prompt(prompt)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Fraction of checks passed per image, float32 [B] on the images' device."""
        res = self.results(images, list(prompts))
        return torch.tensor([r.score for r in res], dtype=torch.float32, device=images.device)

    @torch.no_grad()
    def verdict(self, images: torch.Tensor, prompts: Sequence[str] | str) -> Verdict:
        """Scores, feedback text and exact correctness flags, one per image."""
        res = self.results(images, prompts)
        dev = images.device
        return Verdict(
            scores=torch.tensor([r.score for r in res], dtype=torch.float32, device=dev),
            feedback=[r.feedback for r in res],
            correct=torch.tensor([r.correct for r in res], dtype=torch.bool, device=dev),
        )


@register_verifier(ORACLE)
def make_oracle(**options) -> OracleVerifier:
    """Factory for the registry. Accepts `chunk_size` and `device` (where it checks images;
    the pipeline moves it to its own); a `dtype` option of other verifiers is accepted and
    ignored (the oracle works in float32)."""
    verifier = OracleVerifier()
    chunk = options.pop("chunk_size", None)
    if chunk is not None:
        verifier.chunk_size = int(chunk)
    device = options.pop("device", None)
    if device is not None:
        verifier.to(device)
    options.pop("dtype", None)
    if options:
        from ..errors import TTSInputError

        raise TTSInputError(f"the oracle verifier takes no options {sorted(options)}; it only accepts chunk_size and device")
    return verifier
