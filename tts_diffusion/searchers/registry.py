"""The searcher registry, which is also the catalog `tts-diffusion list` prints.

A searcher is a function

    search(proc, verifier, prompt, budget, generator, *, negative_prompt, **options) -> SearchResult

that spends at most `budget` (the process charges every denoiser row to it), records the
best score against NFE, and is deterministic for a given generator seed. Its options are
declared once, in a `SearcherEntry` (name, description, options as params.py `Param`s, run
defaults, minimum-budget rule) that lives beside it in a module importing without torch
(`smc_spec.py` beside `smc.py`). This module imports no torch either: it holds every entry
by name, the built-in ones from the lines at the bottom of this file, and imports a
searcher's function (torch) the first time a search needs it. So `list`, `--help`, `-o`
parsing, `SearchRequest.check` and the searches themselves read the same declarations.

The registered function is wrapped: its options are validated and the declared defaults
filled in before it runs (an unknown key lists the valid ones, a bad value names the key,
the value and what is allowed: "searcher 'smc' option ..."), and its result's settings
record every option by its declared name (the values the searcher derived win). The
function itself takes every option as a keyword argument without a default."""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

from ..errors import TTSInputError
from ..params import Param, ParamSpec
from .vocabulary import KEEP_IMAGES

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..core.budget import Budget
    from ..core.process import DenoisingProcess
    from ..core.result import SearchResult
    from ..verifiers.base import Verifier

#: min_budget(num_steps, options) -> the least NFE a run with these (validated) options needs
MinBudget = Callable[[int, dict], int]

#: what `run_defaults` may set
RUN_DEFAULT_KEYS = ("num_inference_steps", "budget")


class Searcher(Protocol):
    def __call__(self, proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
                 generator: torch.Generator | None, **options: Any) -> SearchResult: ...


@dataclass(frozen=True)
class SearcherEntry:
    """A searcher's declaration: everything the registry knows about it besides its function."""

    name: str
    description: str
    params: ParamSpec
    run_defaults: Mapping[str, int] = field(default_factory=dict)
    #: None: one full sample (num_steps NFE)
    min_budget_rule: MinBudget | None = None

    @classmethod
    def declare(cls, name: str, description: str, *, params: Sequence[Param] = (),
                run_defaults: Mapping[str, int] | None = None,
                min_budget: MinBudget | None = None) -> "SearcherEntry":
        """An entry: `keep_images` is added when not declared; run_defaults may set
        num_inference_steps and budget only (a paper's setting, used when the caller leaves
        them out); min_budget(num_steps, options): the least NFE a run needs."""
        unknown = set(run_defaults or {}) - set(RUN_DEFAULT_KEYS)
        if unknown:
            raise ValueError(f"run_defaults takes num_inference_steps and budget, not {sorted(unknown)}")
        params = list(params)
        if KEEP_IMAGES.name not in {p.name for p in params}:
            params.append(KEEP_IMAGES)
        return cls(name, description, ParamSpec(f"searcher {name!r}", params), dict(run_defaults or {}), min_budget)

    def options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every option: `given` validated, the declared defaults for the rest."""
        return self.params.fill(dict(given))

    def min_budget(self, num_steps: int, options: Mapping[str, Any]) -> int:
        """The least NFE budget at `num_steps` steps with these options: options are
        validated first; options left out take their defaults, and a default derived from
        the budget takes its smallest value. No rule: one full sample (num_steps NFE)."""
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise TTSInputError(f"num_steps must be an integer >= 1, got {num_steps!r}")
        opts = self.options(options)
        return int(self.min_budget_rule(num_steps, opts)) if self.min_budget_rule is not None else num_steps


@dataclass
class _Slot:
    """A registered searcher: its declaration, and its function once imported (`module`:
    where a built-in's function is defined, imported on first use)."""

    entry: SearcherEntry
    function: Searcher | None = None
    module: str | None = None


_REGISTRY: dict[str, _Slot] = {}


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
            result = fn(proc, as_verifier(verifier), prompt, budget, generator, negative_prompt=negative_prompt,
                        **options)
            result.settings = {"searcher": entry.name, **options, **result.settings}
            return result

        search.entry = entry  # type: ignore[attr-defined]
        search.searcher_name = entry.name  # type: ignore[attr-defined]
        search.params = entry.params  # type: ignore[attr-defined]
        slot = _REGISTRY.get(entry.name)
        if slot is not None and slot.entry is entry:  # a built-in's function, imported now
            slot.function = search
        else:
            _REGISTRY[entry.name] = _Slot(entry, search)
        return search

    return deco


def _slot(name: str) -> _Slot:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise TTSInputError(f"unknown searcher {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name]


def searcher_entry(name_or_fn: str | Searcher) -> SearcherEntry:
    """The declaration of a registered searcher (by name, or its registered function); a
    plain callable gets one without options (its keyword arguments go to it unchecked)."""
    if callable(name_or_fn):
        entry = getattr(name_or_fn, "entry", None)
        if entry is None:
            label = getattr(name_or_fn, "__name__", type(name_or_fn).__name__)
            entry = SearcherEntry(label, "", ParamSpec(f"searcher {label!r}"))
        return entry
    return _slot(name_or_fn).entry


def load_searcher(name_or_fn: str | Searcher) -> Searcher:
    """The registered (wrapped) function of searcher `name`, imported on first use; a
    callable as is."""
    if callable(name_or_fn):
        return name_or_fn
    slot = _slot(name_or_fn)
    if slot.function is None:
        importlib.import_module(slot.module)  # its @register_searcher(ENTRY) fills the slot
        if slot.function is None:
            raise RuntimeError(f"{slot.module} does not register searcher {name_or_fn!r}")
    return slot.function


def available_searchers() -> dict[str, str]:
    """Name -> one-line description of every registered searcher, sorted by name."""
    return {k: s.entry.description for k, s in sorted(_REGISTRY.items())}


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


# ------------------------------------------------------------------ the built-in searchers
# One line each: its declaration (torch-free, beside it) and the module that defines and
# registers its function (imported on first use).
from .best_of_n_spec import BEST_OF_N  # noqa: E402
from .fkc_spec import FKC  # noqa: E402
from .paths_spec import PATHS  # noqa: E402
from .rbf_spec import CODE, RBF, SVDD  # noqa: E402
from .reflect_spec import REFLECT  # noqa: E402
from .smc_spec import SMC  # noqa: E402
from .zero_order_spec import ZERO_ORDER  # noqa: E402

for _entry, _module in ((BEST_OF_N, "best_of_n"), (ZERO_ORDER, "zero_order"), (PATHS, "paths"), (SMC, "smc"),
                        (FKC, "fkc"), (RBF, "rbf"), (SVDD, "rbf"), (CODE, "rbf"), (REFLECT, "reflect")):
    _REGISTRY[_entry.name] = _Slot(_entry, module=f"{__package__}.{_module}")
del _entry, _module
