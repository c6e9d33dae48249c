"""Searcher registry. A searcher is a function

    search(proc, verifier, prompt, budget, generator, *, negative_prompt=None, **hyper) -> SearchResult

that spends at most `budget` (the process charges every denoiser row to it), records the
best score against NFE, and is deterministic for a given generator seed.

Every registered searcher declares its hyper-parameters (params.py). The registry wraps the
function so that keyword arguments are validated against that spec before any model work:
an unknown key lists the valid ones, a bad value names the key, the value and what is
allowed, both naming the searcher ("searcher 'smc' option ...")."""
from __future__ import annotations

import functools
from typing import Any, Callable, Protocol, Sequence

import torch

from ..catalog.searchers import KEEP_IMAGES, MinBudget, SearcherEntry, budget_floor  # noqa: F401  (re-exported)
from ..core.budget import Budget
from ..core.process import DenoisingProcess
from ..core.result import SearchResult
from ..errors import TTSInputError
from ..params import Param, ParamSpec
from ..verifiers.base import Verifier, as_verifier


class Searcher(Protocol):
    def __call__(self, proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
                 generator: torch.Generator | None, **hyper) -> SearchResult: ...


_REGISTRY: dict[str, tuple[Searcher, str]] = {}


def register_searcher(name: str | SearcherEntry, description: str = "", *, params: Sequence[Param] = (),
                      run_defaults: dict | None = None,
                      min_budget: MinBudget | None = None) -> Callable[[Searcher], Searcher]:
    """Register `fn` under `name`. params: the searcher's hyper-parameters (params.py), the
    single source for CLI parsing, validation, `list --searcher` and the demo's widgets
    (`keep_images` is added when not declared). run_defaults: what `TTSPipeline` / the CLI
    use when the caller leaves them out, e.g. a paper's setting {"num_inference_steps": 10,
    "budget": 500}. min_budget(num_steps, options): the least NFE a run needs (default: one
    full sample, num_steps NFE). Instead of these, `name` may be a `SearcherEntry` that holds
    them (the built-in searchers register with their entries in `catalog.searchers`, which
    `tts-diffusion list` reads without importing torch).

    The registered object validates its keyword arguments through the spec, accepts a plain
    callable `f(images, prompts) -> scores` as the verifier (`FunctionVerifier`), then calls
    `fn`; `fn.__wrapped__` is the unvalidated function."""
    if isinstance(name, SearcherEntry):
        if description or params or run_defaults is not None or min_budget is not None:
            raise ValueError("register_searcher takes a SearcherEntry or a name with its description and options,"
                             " not both")
        entry = name
    else:
        entry = SearcherEntry.declare(name, description, params=params, run_defaults=run_defaults,
                                      min_budget=min_budget)

    def deco(fn: Searcher) -> Searcher:
        spec = entry.params

        @functools.wraps(fn)
        def validated(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
                      generator: torch.Generator | None = None, *, negative_prompt: str | None = None,
                      **hyper: Any) -> SearchResult:
            hyper = spec.validate(hyper)
            return fn(proc, as_verifier(verifier), prompt, budget, generator, negative_prompt=negative_prompt,
                      **hyper)

        validated.searcher_name = entry.name  # type: ignore[attr-defined]
        validated.run_defaults = dict(entry.run_defaults)  # type: ignore[attr-defined]
        validated.params = spec  # type: ignore[attr-defined]
        validated.min_budget = entry.min_budget_rule or (lambda steps, options: steps)  # type: ignore[attr-defined]
        _REGISTRY[entry.name] = (validated, entry.description)
        return validated

    return deco


def run_defaults(name_or_fn: str | Searcher) -> dict:
    """The searcher's default steps / budget ({} when it has none: the model's steps, 4 samples)."""
    return dict(getattr(load_searcher(name_or_fn), "run_defaults", {}))


def searcher_params(name_or_fn: str | Searcher) -> ParamSpec:
    """The declared hyper-parameters of a searcher (an empty spec for a plain callable)."""
    fn = load_searcher(name_or_fn)
    return getattr(fn, "params", None) or ParamSpec(f"searcher {getattr(fn, '__name__', 'callable')!r}")


def min_budget(name_or_fn: str | Searcher, num_steps: int, **options: Any) -> int:
    """The least NFE budget `name` can run with at `num_steps` steps and these options
    (validated first; options left out take their defaults, and a default derived from the
    budget takes its smallest value). E.g. paths with defaults at 20 steps: 129."""
    fn = load_searcher(name_or_fn)
    return budget_floor(searcher_params(fn), getattr(fn, "min_budget", None), num_steps, options)


def available_searchers() -> dict[str, str]:
    return {k: d for k, (_, d) in sorted(_REGISTRY.items())}


def load_searcher(name_or_fn: str | Searcher) -> Searcher:
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in _REGISTRY:
        raise TTSInputError(f"unknown searcher {name_or_fn!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name_or_fn][0]
