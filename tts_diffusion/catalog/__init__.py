"""What `tts-diffusion list` prints and what the CLI checks names and options against, without
importing torch: the registry's answers for searchers and verifiers.

Once this process has loaded the live registry (`tts_diffusion.searchers` /
`tts_diffusion.verifiers`, which import torch), its answers are returned as they are,
components registered at run time by user code included. Before that, the answers come from
the built-in entries in `catalog.searchers` and `catalog.verifiers`, the same objects the
built-in modules register with; tests/test_startup.py checks that the two agree."""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

from ..errors import TTSInputError
from ..params import ParamSpec
from .searchers import BUILTIN_SEARCHERS, SearcherEntry
from .verifiers import BUILTIN_VERIFIERS, VerifierEntry

__all__ = ["available_searchers", "available_verifiers", "min_budget", "run_defaults", "searcher_entry",
           "searcher_params", "verifier_entry", "verifier_params", "SearcherEntry", "VerifierEntry"]


def _live(module: str) -> ModuleType | None:
    """The registry module when this process has imported it, else None (never imports it)."""
    return sys.modules.get(module)


def _unknown(kind: str, name: str, known: Any) -> TTSInputError:
    return TTSInputError(f"unknown {kind} {name!r}; available: {', '.join(sorted(known)) or 'none'}")


# ---------------------------------------------------------------------- searchers
def available_searchers() -> dict[str, str]:
    """Name -> one-line description of every searcher, sorted by name."""
    live = _live("tts_diffusion.searchers.base")
    if live is not None:
        return live.available_searchers()
    return {k: e.description for k, e in sorted(BUILTIN_SEARCHERS.items())}


def searcher_entry(name: str) -> SearcherEntry:
    """Description, hyper-parameters, run defaults and minimum-budget rule of searcher `name`."""
    live = _live("tts_diffusion.searchers.base")
    if live is None:
        if name not in BUILTIN_SEARCHERS:
            raise _unknown("searcher", name, BUILTIN_SEARCHERS)
        return BUILTIN_SEARCHERS[name]
    fn = live.load_searcher(name)
    return SearcherEntry(name, live.available_searchers()[name], live.searcher_params(fn), live.run_defaults(fn),
                         getattr(fn, "min_budget", None))


def searcher_params(name: str) -> ParamSpec:
    """The declared hyper-parameters of searcher `name` (as `tts_diffusion.searchers.searcher_params`)."""
    return searcher_entry(name).params


def run_defaults(name: str) -> dict:
    """The searcher's default steps / budget ({} when it has none), as `tts_diffusion.searchers.run_defaults`."""
    return dict(searcher_entry(name).run_defaults)


def min_budget(name: str, num_steps: int, **options: Any) -> int:
    """The least NFE budget searcher `name` runs with at `num_steps` steps and these options
    (as `tts_diffusion.searchers.min_budget`)."""
    return searcher_entry(name).min_budget(num_steps, options)


# ---------------------------------------------------------------------- verifiers
def available_verifiers() -> dict[str, str]:
    """Name -> one-line description of every verifier, sorted by name."""
    live = _live("tts_diffusion.verifiers.base")
    if live is not None:
        return live.available_verifiers()
    return {k: e.description for k, e in sorted(BUILTIN_VERIFIERS.items())}


def verifier_entry(name: str) -> VerifierEntry:
    """Description and options of verifier `name`."""
    live = _live("tts_diffusion.verifiers.base")
    if live is None:
        if name not in BUILTIN_VERIFIERS:
            raise _unknown("verifier", name, BUILTIN_VERIFIERS)
        return BUILTIN_VERIFIERS[name]
    params = live.verifier_params(name)  # unknown names: the registry's own error
    return VerifierEntry(name, live.available_verifiers()[name], params)


def verifier_params(name: str) -> ParamSpec:
    """The declared options of verifier `name` (as `tts_diffusion.verifiers.verifier_params`)."""
    return verifier_entry(name).params
