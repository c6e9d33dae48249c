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
    #: True when `score` is differentiable w.r.t. the images (torch ops all the way, no
    #: PIL round trip, no thresholds): reward guidance and noise optimisation need it
    differentiable: bool = False

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

    def gradient_problem(self) -> str | None:
        """None when this verifier's score has a gradient, else the one line that says why not
        and which verifiers do."""
        if self.differentiable:
            return None
        from .registry import not_differentiable_message

        return not_differentiable_message(self.name)

    def score_with_grad(self, images: torch.Tensor, prompts: Sequence[str] | str) -> torch.Tensor:
        """Scores [B] (float32) with the autograd graph kept back to `images`, chunked like
        `__call__`. Only for differentiable verifiers: any other raises one TTSInputError
        naming the differentiable ones. The weights stay frozen (no parameter gradients)."""
        problem = self.gradient_problem()
        if problem is not None:
            raise TTSInputError(problem)
        images, prompts = check_inputs(images, prompts)
        with torch.enable_grad():
            out = [
                self.score(images[s : s + self.chunk_size], prompts[s : s + self.chunk_size]).float()
                for s in range(0, images.shape[0], self.chunk_size)
            ]
        return torch.cat(out) if out else images.new_zeros(0)


class FunctionVerifier(Verifier):
    """A plain callable `fn(images, prompts) -> scores` used as a verifier.

    `images` is the float tensor [B, 3, H, W] in [0, 1] on `device`, `prompts` a list of B
    strings; the scores may be a tensor, a NumPy array or a list of B numbers (the search
    checks them: shape [B], NaN / inf count as the worst score). `differentiable=True`
    promises that `fn` returns a tensor computed by torch ops from `images` (its graph is
    kept for `score_with_grad`)."""

    def __init__(self, fn: Callable[[torch.Tensor, list[str]], object], name: str | None = None,
                 chunk_size: int = 64, device: str | torch.device = "cpu", differentiable: bool = False):
        super().__init__()
        if not callable(fn):
            raise TTSInputError(f"a verifier must be a Verifier, a registered name or a callable, got {fn!r}")
        if int(chunk_size) < 1:
            raise TTSInputError(f"chunk_size must be >= 1, got {chunk_size}")
        self.fn, self.chunk_size, self._device = fn, int(chunk_size), torch.device(device)
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.differentiable = bool(differentiable)

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, *args, **kwargs) -> "FunctionVerifier":
        """Images are handed to `fn` on this device (the pipeline moves its verifier)."""
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            self._device = torch.device(device)
        return self

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        out = self.fn(images, list(prompts))
        try:
            if isinstance(out, torch.Tensor):
                scores = out if self.differentiable and torch.is_grad_enabled() else out.detach()
            else:
                scores = torch.as_tensor(out, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise TTSInputError(f"verifier {self.name!r} returned {type(out).__name__}, not a list of scores") from None
        if scores.shape != (images.shape[0],) or scores.is_complex() or scores.dtype == torch.bool:
            raise TTSInputError(f"verifier {self.name!r} returned scores of shape {tuple(scores.shape)} and dtype "
                                f"{scores.dtype}; expected {images.shape[0]} real numbers")
        return scores


def as_verifier(obj: "Verifier | Callable") -> Verifier:
    """A Verifier as is; a plain callable wrapped in `FunctionVerifier`; anything else refused."""
    if isinstance(obj, Verifier):
        return obj
    if callable(obj):
        return FunctionVerifier(obj)
    raise TTSInputError(f"a verifier must be a registered name, a Verifier or a callable f(images, prompts) -> scores,"
                        f" got {type(obj).__name__}")


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
