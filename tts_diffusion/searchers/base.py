"""Searcher registry. A searcher is a function

    search(proc, verifier, prompt, budget, generator, *, negative_prompt=None, **hyper) -> SearchResult

that spends at most `budget` (the process charges every denoiser row to it), records the
best score against NFE, and is deterministic for a given generator seed."""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from ..core.budget import Budget
from ..core.process import DenoisingProcess
from ..core.result import SearchResult
from ..errors import TTSInputError
from ..verifiers.base import Verifier


class Searcher(Protocol):
    def __call__(self, proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
                 generator: torch.Generator | None, **hyper) -> SearchResult: ...


_REGISTRY: dict[str, tuple[Searcher, str]] = {}


def register_searcher(name: str, description: str) -> Callable[[Searcher], Searcher]:
    def deco(fn: Searcher) -> Searcher:
        _REGISTRY[name] = (fn, description)
        fn.searcher_name = name  # type: ignore[attr-defined]
        return fn

    return deco


def available_searchers() -> dict[str, str]:
    return {k: d for k, (_, d) in sorted(_REGISTRY.items())}


def load_searcher(name_or_fn: str | Searcher) -> Searcher:
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in _REGISTRY:
        raise TTSInputError(f"unknown searcher {name_or_fn!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name_or_fn][0]
