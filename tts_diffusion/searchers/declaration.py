"""A searcher's declaration (torch-free): its name, description, options (params.py
`Param`s), run defaults and minimum-budget rule. Each built-in searcher's lives beside it, in
`<name>_spec.py`; the registry (registry.py) holds them all."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..errors import TTSInputError
from ..params import Param, ParamSpec
from .vocabulary import KEEP_IMAGES

#: min_budget(num_steps, options) -> the least NFE a run with these (validated) options needs
MinBudget = Callable[[int, dict], int]

#: what `run_defaults` may set
RUN_DEFAULT_KEYS = ("num_inference_steps", "budget")


@dataclass(frozen=True)
class SearcherEntry:
    """A searcher's declaration: everything the registry knows about it besides its function."""

    name: str
    description: str
    params: ParamSpec
    run_defaults: Mapping[str, int] = field(default_factory=dict)
    #: None: one full sample (num_steps NFE)
    min_budget_rule: MinBudget | None = None
    #: every candidate is denoised from fresh noise through every step in order (no
    #: resampling, no jump back to a noisier step): diffusers' cache hooks, whose state is
    #: one trajectory per batch, can follow it (features/diffusers_cache.py)
    fresh_trajectories: bool = False
    #: True: the search follows the verifier's gradient (a non-differentiable verifier is refused)
    needs_gradient: bool = False
    #: the bool option that turns the gradient off (das's `gradient`), or None: always on
    gradient_option: str | None = None

    @classmethod
    def declare(cls, name: str, description: str, *, params: Sequence[Param] = (),
                run_defaults: Mapping[str, int] | None = None,
                min_budget: MinBudget | None = None, fresh_trajectories: bool = False,
                needs_gradient: bool = False, gradient_option: str | None = None) -> "SearcherEntry":
        """An entry: `keep_images` is added when not declared; run_defaults may set
        num_inference_steps and budget only (a paper's setting, used when the caller leaves
        them out); min_budget(num_steps, options): the least NFE a run needs; needs_gradient:
        the search follows the verifier's gradient (SearchRequest.check refuses a registered
        verifier declared not differentiable), unless its bool option `gradient_option` is off."""
        unknown = set(run_defaults or {}) - set(RUN_DEFAULT_KEYS)
        if unknown:
            raise ValueError(f"run_defaults takes num_inference_steps and budget, not {sorted(unknown)}")
        params = list(params)
        if KEEP_IMAGES.name not in {p.name for p in params}:
            params.append(KEEP_IMAGES)
        return cls(name, description, ParamSpec(f"searcher {name!r}", params), dict(run_defaults or {}), min_budget,
                   bool(fresh_trajectories), bool(needs_gradient), gradient_option)

    def follows_gradient(self, options: Mapping[str, Any]) -> bool:
        """Whether a run with these options follows the verifier's gradient."""
        if not self.needs_gradient:
            return False
        if self.gradient_option is None:
            return True
        return bool(options.get(self.gradient_option, self.params.get(self.gradient_option).default))

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
