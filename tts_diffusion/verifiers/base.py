"""The one verifier interface.

A verifier maps a batch of images (float tensor [B, 3, H, W] in [0, 1], already on the
verifier's device) and one prompt per image to a score tensor [B] (higher is better).
Preprocessing happens in torch; large batches are chunked; on GPU the model runs in
fp16/bf16. A verifier may also produce per-image feedback text for refinement loops.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..errors import TTSInputError
from ..params import Param, ParamSpec


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """A dtype name or torch.dtype; None: fp16 on CUDA, fp32 elsewhere."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
        "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    }
    try:
        return table[str(dtype).lower().replace("torch.", "")]
    except KeyError:
        raise TTSInputError(f"unknown dtype {dtype!r}; use fp16, bf16 or fp32") from None


@dataclass
class Verdict:
    """Scores plus optional per-image feedback (text) and correctness flags."""

    scores: torch.Tensor  # [B] float32
    feedback: list[str] | None = None
    correct: torch.Tensor | None = None  # [B] bool, when the verifier knows the truth


class Verifier(torch.nn.Module):
    """Base class. Subclasses implement `score(images, prompts) -> Tensor[B]` on one chunk;
    may override `verdict` to add feedback."""

    name: str = "verifier"
    #: rows per forward pass; `__call__` splits larger batches
    chunk_size: int = 64

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def check_prompt(self, prompt: str) -> None:
        """Raise TTSInputError if this verifier cannot judge `prompt` (called before any
        sampling, so bad input fails before compute is spent). Default: any prompt."""

    def _placement(self, device: str | torch.device | None, dtype: str | torch.dtype | None,
                   chunk_size: int) -> tuple[torch.device, torch.dtype]:
        """Constructor helper for verifiers with weights: checks `chunk_size`, remembers
        whether the dtype follows the device (no dtype given: fp16 on CUDA, fp32 elsewhere,
        also after later `.to(device)` calls) and returns the (device, dtype) to build on."""
        if int(chunk_size) < 1:
            raise TTSInputError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self._auto_dtype = dtype is None
        device = torch.device(device) if device is not None else torch.device("cpu")
        return device, resolve_dtype(dtype, device)

    def _to_args(self, *args, **kwargs):
        """`.to(...)` arguments as (device, dtype, non_blocking, memory_format); while no
        dtype was ever asked for, a move picks the device's dtype (fp16 on CUDA)."""
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is not None:
            self._auto_dtype = False
        elif device is not None and getattr(self, "_auto_dtype", False):
            dtype = resolve_dtype(None, torch.device(device))
        return device, dtype, non_blocking, memory_format

    def cuda(self, device: int | torch.device | None = None) -> "Verifier":
        """Routed through `to`, so a subclass's device/dtype rules (fp16 on CUDA) apply."""
        if device is None:
            return self.to(torch.device("cuda"))
        return self.to(torch.device("cuda", device) if isinstance(device, int) else torch.device(device))

    def cpu(self) -> "Verifier":
        return self.to(torch.device("cpu"))

    def train(self, mode: bool = True) -> "Verifier":
        """Verifiers are frozen: always in eval mode (dropout off, attention fast paths on)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, prompts: Sequence[str] | str) -> torch.Tensor:
        images, prompts = check_inputs(images, prompts)
        out = [
            self.score(images[s : s + self.chunk_size], prompts[s : s + self.chunk_size]).float()
            for s in range(0, images.shape[0], self.chunk_size)
        ]
        return torch.cat(out) if out else images.new_zeros(0)

    @torch.no_grad()
    def verdict(self, images: torch.Tensor, prompts: Sequence[str] | str) -> Verdict:
        return Verdict(scores=self(images, prompts))


def check_inputs(images: torch.Tensor, prompts: Sequence[str] | str) -> tuple[torch.Tensor, list[str]]:
    """Validate the verifier call; broadcast a single prompt to the batch."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise TTSInputError(f"verifier expects images as a float tensor [B, 3, H, W] in [0, 1], got {shape}")
    if isinstance(prompts, str):
        prompts = [prompts] * images.shape[0]
    prompts = list(prompts)
    if len(prompts) != images.shape[0]:
        raise TTSInputError(f"verifier got {images.shape[0]} images but {len(prompts)} prompts")
    return images, prompts


# ---------------------------------------------------------------- registry
VerifierFactory = Callable[..., Verifier]
_REGISTRY: dict[str, tuple[VerifierFactory, str]] = {}


def register_verifier(name: str, description: str = "", *, params: Sequence[Param] = ()
                      ) -> Callable[[VerifierFactory], VerifierFactory]:
    """Decorator: register a factory `f(**options) -> Verifier` under `name`; params: its
    options (params.py), used to parse `--verifier-option` and validate keyword options."""

    def deco(factory: VerifierFactory) -> VerifierFactory:
        _REGISTRY[name] = (factory, description)
        factory.params = ParamSpec(f"verifier {name!r}", list(params))  # type: ignore[attr-defined]
        return factory

    return deco


def verifier_params(name: str) -> ParamSpec:
    """The declared options of a registered verifier."""
    if name not in _REGISTRY:
        raise TTSInputError(f"unknown verifier {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name][0].params  # type: ignore[attr-defined]


def available_verifiers() -> dict[str, str]:
    """Name -> one-line description of every registered verifier."""
    return {k: d for k, (_, d) in sorted(_REGISTRY.items())}


def load_verifier(name_or_verifier: str | Verifier, **options) -> Verifier:
    """A verifier object from its registered name (options go to its factory)."""
    if isinstance(name_or_verifier, Verifier):
        return name_or_verifier
    if name_or_verifier not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise TTSInputError(f"unknown verifier {name_or_verifier!r}; available: {known}")
    return _REGISTRY[name_or_verifier][0](**options)
