"""The built-in searchers as `tts-diffusion list` shows them, declared once and without torch:
name, one-line description, hyper-parameters (params.py), run defaults and the minimum-budget
rule. Each searcher module registers its function with its entry from here
(`@register_searcher(SMC)`), so the live registry and `list` read the same objects.

The option vocabularies (resampling schemes, potentials, critics, ...) are declared here too;
the modules that implement them import them from here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..errors import TTSInputError
from ..params import Param, ParamSpec
from .budgets import minimum_nfe, path_cost, resolve_schedule, round_cost

#: min_budget(num_steps, options) -> the least NFE a run with these (validated) options needs
MinBudget = Callable[[int, dict], int]

#: the option every searcher shares (bookkeeping, not search)
KEEP_IMAGES = Param("keep_images", int, 16, "candidate images kept in the result (the best ones)", low=1)

#: what `run_defaults` may set
RUN_DEFAULT_KEYS = ("num_inference_steps", "budget")


@dataclass(frozen=True)
class SearcherEntry:
    """What the registry knows about a searcher besides its function."""

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
        """An entry as `register_searcher` takes it: `keep_images` is added when not declared;
        run_defaults may set num_inference_steps and budget only."""
        unknown = set(run_defaults or {}) - set(RUN_DEFAULT_KEYS)
        if unknown:
            raise ValueError(f"run_defaults takes num_inference_steps and budget, not {sorted(unknown)}")
        params = list(params)
        if KEEP_IMAGES.name not in {p.name for p in params}:
            params.append(KEEP_IMAGES)
        return cls(name, description, ParamSpec(f"searcher {name!r}", params), dict(run_defaults or {}), min_budget)

    def min_budget(self, num_steps: int, options: Mapping[str, Any]) -> int:
        """The least NFE budget at `num_steps` steps with these options (see `budget_floor`)."""
        return budget_floor(self.params, self.min_budget_rule, num_steps, options)


def budget_floor(params: ParamSpec, rule: MinBudget | None, num_steps: int, options: Mapping[str, Any]) -> int:
    """The least NFE a searcher with hyper-parameters `params` and minimum-budget `rule` runs
    with at `num_steps` steps: options are validated first; options left out take their
    defaults, and a default derived from the budget takes its smallest value. No rule: one
    full sample (num_steps NFE)."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise TTSInputError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    opts = {**params.defaults(), **params.validate(dict(options))}
    return int(rule(num_steps, opts)) if rule is not None else num_steps


# ------------------------------------------------------------------ vocabularies
RESAMPLING_SCHEMES = ("multinomial", "systematic", "stratified", "residual")
POTENTIALS = ("difference", "max", "sum", "immediate")
ON_STALL = ("keep", "move", "restart")
FKC_MODES = ("cfg", "anneal", "product")
FKC_VARIANTS = ("target_score", "tempered_noise")
INTERPOLANTS = ("vp", "native")
GRIDS = ("native", "vp")
REFINE_MODES = ("prompt", "image", "both")
CRITICS = ("feedback", "decomposed", "vlm", "none")
REFINERS = ("rules", "lm")

#: Kim et al. 2025 compare RBF, SVDD and CoDe at 10 steps and NFE 500; those are their defaults
PAPER_RUN = {"num_inference_steps": 10, "budget": 500}


# --------------------------------------------------------------------- best_of_n
BEST_OF_N = SearcherEntry.declare(
    "best_of_n", "random search: N noises, sampled deterministically, best verifier score kept",
    params=[
        Param("num_samples", int, None, "independent candidates N (default: as many as the budget pays for)", low=1),
        Param("round_size", int, None, "candidates per round, one trace point each (default: all in one round)",
              low=1),
        KEEP_IMAGES,
    ],
    min_budget=lambda num_steps, o: (o["num_samples"] or 1) * num_steps)


# -------------------------------------------------------------------- zero_order
ZERO_ORDER = SearcherEntry.declare(
    "zero_order", "zero-order search: move a pivot noise to its best neighbour on the Gaussian shell",
    params=[
        Param("num_children", int, 4, "neighbours N of the pivot per round", low=1),
        Param("step_size", float, 0.5, "lambda: the neighbours' distance relative to the pivot's norm", low=0.0,
              high=2.0, low_open=True),
        Param("num_rounds", int, None, "rounds K (default: as many as the budget pays for, at least 1)", low=1),
        Param("on_stall", str, "keep", "no neighbour beats the pivot: keep it (fresh neighbours), move to the best "
              "neighbour anyway, or restart from a new noise", choices=ON_STALL),
        KEEP_IMAGES,
    ],
    min_budget=lambda num_steps, o: (1 + (o["num_rounds"] or 1) * o["num_children"]) * num_steps)


# ------------------------------------------------------------------------- paths
def _paths_min_budget(num_steps: int, o: dict) -> int:
    # sigma needs the process's noise levels; without it the default start is used
    start, delta_f, delta_b = resolve_schedule(num_steps, o["start"], o["delta_f"], o["delta_b"])
    return path_cost(num_steps, o["num_particles"] or 1, o["num_children"], start, delta_f, delta_b)[0]


PATHS = SearcherEntry.declare(
    "paths", "search over paths: branch noisy paths forward, denoise back, keep the best",
    params=[
        Param("num_particles", int, None, "paths N kept after each round (default: as many as the budget pays for)",
              low=1),
        Param("num_children", int, 4, "children M per path per round", low=1),
        Param("sigma", float, None, "noise level in [0, 1] where branching starts (alternative to start)", low=0.0,
              high=1.0),
        Param("start", int, None, "grid point where branching starts (default: num_steps // 4)", low=0),
        Param("delta_f", int, None, "grid points each path is noised back per round (default: num_steps // 10, >= 1)",
              low=1),
        Param("delta_b", int, None, "grid points children are denoised forward per round (default: num_steps // 5, "
              ">= delta_f + 1)", low=2),
        KEEP_IMAGES,
    ],
    min_budget=_paths_min_budget)


# --------------------------------------------------------------------------- smc
SMC = SearcherEntry.declare(
    "smc", "SMC / FK steering: K particles with stochastic steps, reward potentials on x0 estimates, "
           "resampling; final weights target p(x) exp(lambda r(x))",
    params=[
        Param("num_particles", int, None, "particles K (default: as many full samples as the budget pays for)",
              low=1),
        Param("reward_scale", float, 10.0, "lambda: the target is p(x) exp(lambda r(x))", low=0.0),
        Param("potential", str, "max", "potential G built from the x0 rewards", choices=POTENTIALS),
        Param("resample_interval", int, None, "grid points between potentials (default: num_steps // 5, >= 1)",
              low=1),
        Param("window", tuple, None, "(first, end) grid points with potentials (default: (resample_interval, "
              "num_steps))", length=2),
        Param("resample_threshold", float, 0.5, "resample when ESS < threshold * K (1: every potential step, "
              "0: never)", low=0.0, high=1.0),
        Param("resampling", str, "systematic", "resampling scheme", choices=RESAMPLING_SCHEMES),
        Param("eta", float, 1.0, "noise of the stochastic steps (1: DDPM / the family's SDE)", low=0.0),
        KEEP_IMAGES,
    ],
    min_budget=lambda num_steps, o: (o["num_particles"] or 1) * num_steps)


# --------------------------------------------------------------------------- fkc
FKC = SearcherEntry.declare(
    "fkc", "Feynman-Kac correctors: weighted SDE + resampling for CFG as p_u^(1-w) p_c^w, "
           "annealing p^beta, or the product of two prompts",
    params=[
        Param("mode", str, "cfg", "target: cfg p_u^(1-w) p_c^w, anneal p^beta, or product p(prompt)^beta "
              "p(prompt_2)^beta", choices=FKC_MODES),
        Param("guidance", float, None, "w of the cfg target (default: the process's guidance scale)"),
        Param("beta", float, None, "exponent of anneal (default 2) / product (default 1)", low=0.0, low_open=True),
        Param("prompt_2", str, None, "the second prompt of product mode (required there)"),
        Param("variant", str, "target_score", "annealing SDE (Skreta et al. 2025)", choices=FKC_VARIANTS),
        Param("num_particles", int, None, "particles K (default: as many as the budget pays for)", low=1),
        Param("eta", float, 1.0, "noise of the stochastic steps (1: DDPM / the family's SDE)", low=0.0),
        Param("resample_threshold", float, 1.0, "resample when ESS < threshold * K (1: every step, the paper's; "
              "0: never)", low=0.0, high=1.0),
        Param("resampling", str, "systematic", "resampling scheme", choices=RESAMPLING_SCHEMES),
        KEEP_IMAGES,
    ],
    min_budget=lambda num_steps, o: (o["num_particles"] or 1) * num_steps * (2 if o["mode"] == "product" else 1))


# ------------------------------------------------------------ rbf, svdd, code (rbf.py)
def _stochastic_params() -> list[Param]:
    return [
        Param("eta", float, 1.0, "noise of the stochastic steps (1: DDPM)", low=0.0),
        Param("interpolant", str, "vp", "stochastic step on the VP-converted interpolant or the process's own",
              choices=INTERPOLANTS),
        Param("grid", str, "native", "the pipeline's grid or one uniform in VP time", choices=GRIDS),
    ]


RBF = SearcherEntry.declare(
    "rbf", "rollover budget forcing: flow ODE -> VP SDE, children per step until one improves "
           "the x0 reward, unspent NFE rolls over (Kim et al. 2025)",
    params=[
        Param("num_particles", int, 2, "chains C", low=1),
        Param("init_pool", int, 25, "initial noises per chain; each chain starts from the best", low=1),
        *_stochastic_params(),
        Param("child_batch", int, 1, "children proposed per chain and batch (1: the paper)", low=1),
        KEEP_IMAGES,
    ],
    run_defaults=PAPER_RUN,
    min_budget=lambda num_steps, o: o["num_particles"] * (o["init_pool"] + num_steps - 1))


def _blockwise_params(block_default: int) -> list[Param]:
    return [
        Param("num_particles", int, 2, "particles K", low=1),
        Param("num_children", int, None, "children M per particle and block (default: as many as the budget pays "
              "for)", low=1),
        Param("block", int, block_default, "stochastic steps each child runs before it is scored", low=1),
        Param("alpha", float, 0.0, "0: keep the best child; > 0: sample one with probability ~ exp(r / alpha)",
              low=0.0),
        *_stochastic_params(),
        KEEP_IMAGES,
    ]


def _blockwise_min_budget(num_steps: int, o: dict) -> int:
    k = o["num_particles"]
    return k + k * (o["num_children"] or 1) * (num_steps - 1)


SVDD = SearcherEntry.declare(
    "svdd", "SVDD-style greedy search: per step, the best of M stochastic children by the reward of their x0 "
            "estimate",
    params=_blockwise_params(1), run_defaults=PAPER_RUN, min_budget=_blockwise_min_budget)
CODE = SearcherEntry.declare(
    "code", "CoDe: blockwise search, the best of M children each run a block of stochastic steps",
    params=_blockwise_params(2), run_defaults=PAPER_RUN, min_budget=_blockwise_min_budget)


# ----------------------------------------------------------------------- reflect
REFLECT = SearcherEntry.declare(
    "reflect", "reflection loop (ReflectionFlow): best-of-N, keep top chains, then rounds of critique -> refined "
               "prompt -> regenerate (new noise or SDEdit from the chain head) -> verify",
    params=[
        Param("num_samples", int, None, "initial noises sampled and verified (default: half of the budget's full "
              "samples)", low=1),
        Param("num_particles", int, None, "chains kept: the top initial samples by score (default: 2, at most "
              "num_samples)", low=1),
        Param("num_rounds", int, None, "critique-refine-generate rounds (default: as many as the budget pays for)",
              low=1),
        Param("refine", str, "both", "prompt: refined prompt, new noise; image: SDEdit from the chain head with the"
              " original prompt; both: SDEdit from the head with the refined prompt", choices=REFINE_MODES),
        Param("strength", float, 0.6, "SDEdit strength for image / both: re-noise the head this far back"
              " (costs ceil(strength * steps) NFE per chain and round)", low=0.0, high=1.0, low_open=True),
        Param("critic", str, None, "feedback (the verifier's own, e.g. oracle) | decomposed (claims scored by the"
              " verifier) | vlm (critic_model) | none (no critique); default: feedback if the verifier gives any,"
              " else decomposed", choices=CRITICS, nullable=True),
        Param("refiner", str, "rules", "rules (rewrite toward the failed claims) | lm (refiner_model)",
              choices=REFINERS),
        Param("critic_model", str, None, "critic=vlm: local folder of a transformers vision-language model +"
              " processor"),
        Param("refiner_model", str, None, "refiner=lm: local folder of a transformers causal LM + tokenizer"),
        Param("claim_threshold", float, None, "decomposed critic: margin by which a claim's caption must beat its"
              " contrasts (default 0: at least as high)"),
        Param("stop_score", float, None, "stop once the best score reaches this (e.g. 1 with the oracle)"),
        Param("keep_images", int, 16, "candidate images kept in the result (chain images are always kept)", low=1),
    ],
    min_budget=lambda num_steps, o: minimum_nfe(num_steps, round_cost(num_steps, o["refine"], o["strength"]),
                                                o["num_samples"], o["num_particles"], o["num_rounds"]))


#: name -> entry of every built-in searcher (each is registered by its module in tts_diffusion.searchers)
BUILTIN_SEARCHERS: dict[str, SearcherEntry] = {
    e.name: e for e in (BEST_OF_N, ZERO_ORDER, PATHS, SMC, FKC, RBF, SVDD, CODE, REFLECT)}
