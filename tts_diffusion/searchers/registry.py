"""The searcher registry, which is also the catalog `tts-diffusion list` prints.

A searcher is a function

    search(proc, verifier, prompt, budget, generator, *, negative_prompt, **options) -> SearchResult

that spends at most `budget` (the process charges every denoiser row to it), records the
best score against NFE, and is deterministic for a given generator seed. Its options are
declared once, in a `SearcherEntry` (declaration.py: name, description, options as params.py
`Param`s, run defaults, minimum-budget rule) that lives beside it in a module importing
without torch (`smc_spec.py` beside `smc.py`). This module imports no torch either: it holds
every entry by name (registry.py's table), the built-in ones from `BUILTIN` below, and
imports a searcher's function (torch) the first time a search needs it. So `list`, `--help`, `-o`
parsing, `SearchRequest.check` and the searches themselves read the same declarations.

The registered function is wrapped (the original is the wrapper's `__wrapped__`): its
options are validated and the declared defaults filled in before it runs (an unknown key lists the valid ones, a bad value names the key,
the value and what is allowed: "searcher 'smc' option ..."), and its result's settings
record every option by its declared name (the values the searcher derived win). The
function itself takes every option as a keyword argument without a default."""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from ..params import Param, ParamSpec
from ..registry import Registry
from .best_of_n_spec import BEST_OF_N
from .das_spec import DAS
from .draft_commit_spec import DRAFT_COMMIT
from .evo_spec import EVO
from .declaration import MinBudget, SearcherEntry
from .driftlite_spec import DRIFTLITE
from .fkc_spec import FKC
from .noise_opt_spec import NOISE_OPT
from .paths_spec import PATHS
from .rbf_spec import CODE, RBF, SVDD
from .reflect_spec import REFLECT
from .smc_spec import SMC
from .zero_order_spec import ZERO_ORDER

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..core.budget import Budget
    from ..core.process import DenoisingProcess
    from ..records.result import SearchResult
    from ..verifiers.base import Verifier


class Searcher(Protocol):
    def __call__(self, proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
                 generator: torch.Generator | None, **options: Any) -> SearchResult: ...


# ------------------------------------------------------------------ the built-in searchers
#: one line each: its declaration (torch-free, beside it) and the module that defines and
#: registers its function (imported on first use)
BUILTIN: tuple[tuple[SearcherEntry, str], ...] = (
    (BEST_OF_N, "best_of_n"),
    (ZERO_ORDER, "zero_order"),
    (PATHS, "paths"),
    (SMC, "smc"),
    (FKC, "fkc"),
    (RBF, "rbf"),
    (SVDD, "rbf"),
    (CODE, "rbf"),
    (REFLECT, "reflect"),
    (DRIFTLITE, "driftlite"),
    (EVO, "evo"),
    (DRAFT_COMMIT, "draft_commit"),
    (NOISE_OPT, "noise_opt"),
    (DAS, "das"),
)

_REGISTRY = Registry("searcher", BUILTIN, __package__)


def register_searcher(name: str | SearcherEntry, description: str = "", *, params: Sequence[Param] = (),
                      run_defaults: Mapping[str, int] | None = None,
                      min_budget: MinBudget | None = None) -> Callable[[Callable[..., SearchResult]], Searcher]:
    """Decorator: register `fn` under its declaration, either a `SearcherEntry` (the built-in
    searchers' entries live in `<name>_spec.py` beside them) or a name with its description,
    params, run_defaults and min_budget (see `SearcherEntry.declare`).

    Returns the wrapped function (module docstring): it accepts a plain callable
    `f(images, prompts) -> scores` as the verifier (`FunctionVerifier`), validates its
    options and fills in the defaults, then calls `fn`; `.entry` is the declaration."""
    if isinstance(name, SearcherEntry):
        if description or params or run_defaults is not None or min_budget is not None:
            raise ValueError("register_searcher takes a SearcherEntry or a name with its description and options,"
                             " not both")
        entry = name
    else:
        entry = SearcherEntry.declare(name, description, params=params, run_defaults=run_defaults,
                                      min_budget=min_budget)

    def deco(fn: Callable[..., SearchResult]) -> Searcher:
        @functools.wraps(fn)
        def search(proc: DenoisingProcess, verifier: Any, prompt: str, budget: Budget,
                   generator: torch.Generator | None = None, *, negative_prompt: str | None = None,
                   **options: Any) -> SearchResult:
            from ..verifiers.base import as_verifier

            options = entry.options(options)
            result = search.__wrapped__(proc, as_verifier(verifier), prompt, budget, generator,
                                        negative_prompt=negative_prompt, **options)
            result.settings = {"searcher": entry.name, **options, **result.settings}
            return result

        search.entry = entry  # type: ignore[attr-defined]
        search.searcher_name = entry.name  # type: ignore[attr-defined]
        search.params = entry.params  # type: ignore[attr-defined]
        _REGISTRY.attach(entry, search)
        return search

    return deco


def searcher_entry(name_or_fn: str | Searcher) -> SearcherEntry:
    """The declaration of a registered searcher (by name, or its registered function); a
    plain callable gets one without options (its keyword arguments go to it unchecked)."""
    if callable(name_or_fn):
        entry = getattr(name_or_fn, "entry", None)
        if entry is None:
            label = getattr(name_or_fn, "__name__", type(name_or_fn).__name__)
            entry = SearcherEntry(label, "", ParamSpec(f"searcher {label!r}"))
        return entry
    return _REGISTRY.slot(name_or_fn).entry


def load_searcher(name_or_fn: str | Searcher) -> Searcher:
    """The registered (wrapped) function of searcher `name`, imported on first use; a
    callable as is."""
    return name_or_fn if callable(name_or_fn) else _REGISTRY.load(name_or_fn)


def available_searchers() -> dict[str, str]:
    """Name -> one-line description of every registered searcher, sorted by name."""
    return _REGISTRY.descriptions()


def searcher_params(name_or_fn: str | Searcher) -> ParamSpec:
    """The declared options of a searcher (an empty spec for a plain callable)."""
    return searcher_entry(name_or_fn).params


def run_defaults(name_or_fn: str | Searcher) -> dict:
    """The searcher's default steps / budget ({} when it has none: the model's steps, 4 samples)."""
    return dict(searcher_entry(name_or_fn).run_defaults)


def min_budget(name_or_fn: str | Searcher, num_steps: int, **options: Any) -> int:
    """The least NFE budget searcher `name` runs with at `num_steps` steps and these options
    (`SearcherEntry.min_budget`). E.g. paths with defaults at 20 steps: 129."""
    return searcher_entry(name_or_fn).min_budget(num_steps, options)
