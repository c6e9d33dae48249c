"""Searcher registry. A searcher is a function

    search(proc, verifier, prompt, budget, generator, *, negative_prompt=None, **hyper) -> SearchResult

that spends at most `budget` (the process charges every denoiser row to it), records the
best score against NFE, and is deterministic for a given generator seed."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch

from ..core.budget import Budget
from ..core.process import DenoisingProcess
from ..core.result import SearchResult
from ..errors import TTSInputError
from ..params import Param, ParamSpec
from ..verifiers.base import Verifier


class Searcher(Protocol):
    def __call__(self, proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
                 generator: torch.Generator | None, **hyper) -> SearchResult: ...


_REGISTRY: dict[str, tuple[Searcher, str]] = {}


def register_searcher(name: str, description: str, *, params: Sequence[Param] = (),
                      run_defaults: dict | None = None) -> Callable[[Searcher], Searcher]:
    """Register `fn` under `name`. params: the searcher's hyper-parameters (params.py), the
    single source for CLI parsing, validation, `list --searcher` and the demo's widgets.
    run_defaults: what `TTSPipeline` / the CLI use when the caller leaves them out, e.g. a
    paper's setting {"num_inference_steps": 10, "budget": 500}."""
    unknown = set(run_defaults or {}) - {"num_inference_steps", "budget"}
    if unknown:
        raise ValueError(f"run_defaults takes num_inference_steps and budget, not {sorted(unknown)}")

    def deco(fn: Searcher) -> Searcher:
        _REGISTRY[name] = (fn, description)
        fn.searcher_name = name  # type: ignore[attr-defined]
        fn.run_defaults = dict(run_defaults or {})  # type: ignore[attr-defined]
        fn.params = ParamSpec(f"searcher {name!r}", list(params))  # type: ignore[attr-defined]
        return fn

    return deco


def run_defaults(name_or_fn: str | Searcher) -> dict:
    """The searcher's default steps / budget ({} when it has none: the model's steps, 4 samples)."""
    return dict(getattr(load_searcher(name_or_fn), "run_defaults", {}))


def searcher_params(name_or_fn: str | Searcher) -> ParamSpec:
    """The declared hyper-parameters of a searcher (an empty spec for a plain callable)."""
    fn = load_searcher(name_or_fn)
    return getattr(fn, "params", None) or ParamSpec(f"searcher {getattr(fn, '__name__', 'callable')!r}")


def available_searchers() -> dict[str, str]:
    return {k: d for k, (_, d) in sorted(_REGISTRY.items())}


def load_searcher(name_or_fn: str | Searcher) -> Searcher:
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in _REGISTRY:
        raise TTSInputError(f"unknown searcher {name_or_fn!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name_or_fn][0]
