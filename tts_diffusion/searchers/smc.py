"""SMC / FK steering (Singhal et al. 2025, "A General Framework for Inference-time Scaling
and Steering of Diffusion Models"; FK steering).

K particles run the model's own stochastic sampler (the "prior" proposal, so incremental
weights are potentials only). At potential steps i (every `resample_interval` grid points
inside `window`) each particle's Tweedie estimate x0_hat(x_i) is scored, r_i = r(x0_hat),
and its log-weight grows by log G_i, with the paper's potentials written for the steps
where they are evaluated (r_j: the rewards of the particle's own ancestry at earlier
potential steps):

    difference  log G_i = lam (r_i - r_prev)       (r_prev = 0 at the first potential)
    max         log G_i = lam max_{j <= i} r_j
    sum         log G_i = lam sum_{j <= i} r_j
    immediate   log G_i = lam r_i

(lam = `reward_scale`). The population is resampled at potential steps when ESS <
`resample_threshold` K (`searchers.particles.should_resample`: 1 = at every potential step, 0 =
never), weights reset to uniform and every per-particle quantity (x, its prediction, the
reward history, registered model state) follows its ancestor through `proc.select`.

Final correction (the last potential G_0 = exp(lam r(x_0)) / prod_i G_i): at the clean end the
log-weights get lam r(x) - sum_i log G_i, the total of every potential the particle's
ancestry was given. Then the weighted population targets exactly

    p(x) exp(lam r(x)) / Z

whatever the potential (p: the sampler's own distribution); for "difference" the product
of potentials telescopes and the correction is lam (r(x) - r_last). The final population is
resampled once more (`SMCRun.ancestors`), so `SMCRun.resampled()` is an unweighted sample
of the tilted target; without this last weighting the particles follow a heuristic
distribution only (tests/test_smc.py shows both). As a searcher the best final particle by
verifier score is returned; all final particles are candidates, with their weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..core.budget import Budget
from .particles import dead_to_neginf, ess, normalize_log_weights, resample, should_resample
from ..core.process import Conditioning, DenoisingProcess
from ..records.result import SearchResult
from ..errors import TTSInputError
from ..verifiers.base import Verifier
from .common import SearchLog, full_samples, reached, unspent
from ..features.guidance import take_proposal_log_weights
from .registry import register_searcher
from .smc_spec import POTENTIALS, SMC
from .vocabulary import RESAMPLING_SCHEMES

RewardFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SMCRun:
    """The final population of an SMC run (everything on the particles' device)."""

    x: torch.Tensor  # [K, ...] particles at the clean end
    log_w: torch.Tensor  # [K] normalised final log-weights (target p exp(lam r))
    rewards: torch.Tensor  # [K] r(x) of the final particles
    ancestors: torch.Tensor  # [K] indices of the final resampling
    potential_steps: list[int] = field(default_factory=list)
    resample_steps: list[int] = field(default_factory=list)
    ess: list[float] = field(default_factory=list)  # ESS before each resampling decision
    stopped_at: int | None = None  # the potential step where stop_score was reached

    def resampled(self) -> torch.Tensor:
        """An unweighted sample of the target: x[ancestors]."""
        return self.x[self.ancestors]


def potential_steps(num_steps: int, interval: int, window: tuple[int, int]) -> list[int]:
    """Grid points where potentials are evaluated: window[0], window[0] + interval, ... < window[1]."""
    lo, hi = max(0, int(window[0])), min(num_steps, int(window[1]))
    return list(range(lo, hi, max(1, int(interval))))


def _log_potential(kind: str, reward_scale: float, r: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """log G at one potential step; updates the per-particle reward history in `state`."""
    lam = reward_scale
    if kind == "difference":
        g = lam * (r - state["prev"])
        state["prev"] = r
    elif kind == "max":
        state["max"] = torch.maximum(state["max"], r)
        g = lam * state["max"]
    elif kind == "sum":
        state["sum"] = state["sum"] + r
        g = lam * state["sum"]
    elif kind == "immediate":
        g = lam * r
    else:
        raise ValueError(f"unknown potential {kind!r}; choose from {POTENTIALS}")
    return g


def check_window(window: Sequence[int], num_steps: int) -> tuple[int, int]:
    """(first, end) grid points with 0 <= first < end <= num_steps, or a TTSInputError."""
    lo, hi = (int(v) for v in window)
    if not 0 <= lo < hi <= num_steps:
        raise TTSInputError(f"window=({lo}, {hi}) must satisfy 0 <= first < end <= {num_steps} (the grid points"
                            f" of {num_steps} steps)")
    return lo, hi


@torch.no_grad()
def fk_steering(proc: DenoisingProcess, cond: Conditioning, reward_fn: RewardFn, num_particles: int,
                generator: torch.Generator | None = None, *, reward_scale: float = 10.0, potential: str = "max",
                resample_interval: int = 1, window: Sequence[int] | None = None, resample_threshold: float = 1.0,
                resampling: str = "systematic", eta: float = 1.0, final_reward_fn: RewardFn | None = None,
                final_correction: bool = True, stop_score: float | None = None) -> SMCRun:
    """Run FK steering over the whole grid (see the module docstring).

    reward_fn(x0_latents) -> scores [K]: rewards of Tweedie estimates at potential steps;
    final_reward_fn (default reward_fn): rewards of the final particles.
    window: (first, end) grid points where potentials may be evaluated (default: all).
    resample_threshold in [0, 1]: resample at a potential step when ESS < threshold K
        (`should_resample`; 1: at every potential step, 0: never).
    final_correction: False skips the last weighting (only for tests showing it matters).
    stop_score: stop when satisfied: at the first potential step where a particle's reward
        reaches it, the population ends there and that particle alone is run to the clean end
        (`SMCRun.stopped_at`: the step; its final weight is 1)."""
    if potential not in POTENTIALS:
        raise TTSInputError(f"unknown potential {potential!r}; choose from {POTENTIALS}")
    if resampling not in RESAMPLING_SCHEMES:
        raise TTSInputError(f"unknown resampling scheme {resampling!r}; choose from {RESAMPLING_SCHEMES}")
    n, k = proc.num_steps, int(num_particles)
    steps = set(potential_steps(n, resample_interval, tuple(window) if window is not None else (0, n)))
    final_reward_fn = final_reward_fn or reward_fn
    guided = proc.call.step_hook is not None and hasattr(proc.call.step_hook, "require_weights")
    if guided:  # guided proposals (features/guidance.py): their weight correction log p/q joins log w
        proc.call.step_hook.require_weights(float(eta))

    x = proc.sample_noise(k, generator)
    dev = x.device
    log_w = torch.zeros(k, dtype=torch.float64, device=dev)
    applied = torch.zeros(k, dtype=torch.float64, device=dev)  # sum of log G along each ancestry
    history = {"prev": torch.zeros(k, dtype=torch.float64, device=dev),
               "max": torch.full((k,), -torch.inf, dtype=torch.float64, device=dev),
               "sum": torch.zeros(k, dtype=torch.float64, device=dev)}
    run = SMCRun(x, log_w, log_w, log_w)
    for i in range(n):
        pred = proc.denoise(x, i, cond)
        if i in steps:
            # potential: score the Tweedie estimate, log w += log G_i
            r = reward_fn(pred.x0).to(dev, torch.float64)
            g = _log_potential(potential, float(reward_scale), r, history)
            log_w = dead_to_neginf(log_w + g)
            applied = dead_to_neginf(applied + g)
            run.potential_steps.append(i)
            run.ess.append(float(ess(log_w)))
            if (best := reached(r, stop_score)) is not None:
                # satisfied: keep the particle that reached it, the rest of the population ends here
                idx = torch.tensor([best], device=dev)
                x, pred, applied, history, log_w = proc.select(idx, x, pred, applied, history, log_w)
                log_w, applied = torch.zeros_like(log_w), torch.zeros_like(applied)
                steps, run.stopped_at = set(), i
            elif should_resample(log_w, float(resample_threshold)):
                # resample: every per-particle quantity follows its ancestor; weights uniform again
                idx = resample(log_w, resampling, generator)
                x, pred, applied, history = proc.select(idx, x, pred, applied, history)
                log_w = torch.zeros_like(log_w)
                run.resample_steps.append(i)
        x = proc.step(x, i, pred, eta=eta, generator=generator)
        if guided:
            log_w = dead_to_neginf(log_w + take_proposal_log_weights(proc, k, dev))

    r_final = final_reward_fn(x).to(dev, torch.float64)
    if final_correction:
        # G_0 = exp(lam r(x)) / prod_i G_i: the target becomes p(x) exp(lam r(x)) (Singhal et al. 2025)
        log_w = dead_to_neginf(log_w + float(reward_scale) * r_final - applied)
    log_w = normalize_log_weights(log_w)
    run.x, run.log_w, run.rewards = x, log_w, r_final
    run.ancestors = resample(log_w, resampling, generator).to(dev)
    return run


@register_searcher(SMC)
def smc(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
        generator: torch.Generator | None, *, negative_prompt: str | None, num_particles: int | None,
        reward_scale: float, potential: str, resample_interval: int | None, window: Sequence[int] | None,
        resample_threshold: float, resampling: str, eta: float, stop_score: float | None,
        keep_images: int) -> SearchResult:
    """Options: SMC in smc_spec.py (`tts-diffusion list --searcher smc`). The default K is
    best-of-N's N at equal NFE; the default window starts at the first potential step after
    the pure-noise point."""
    n = proc.num_steps
    affordable = full_samples(budget, n, proc.nfe_per_step())  # reward guidance costs more a step
    k = affordable if num_particles is None else int(num_particles)
    if k > affordable:
        raise TTSInputError(f"num_particles={k} needs {k * n * proc.nfe_per_step()} NFE but the budget has {budget.remaining_nfe}")
    interval = max(1, n // 5) if resample_interval is None else int(resample_interval)
    window = (min(interval, n - 1), n) if window is None else check_window(window, n)
    cond = proc.encode(prompt, negative_prompt)
    log = SearchLog(proc, verifier, prompt, budget, keep_images)
    final: dict[str, torch.Tensor] = {}

    def final_reward(x: torch.Tensor) -> torch.Tensor:
        final["images"] = proc.decode(x)
        final["scores"] = log.verify(final["images"])
        return final["scores"]

    with proc.metered(budget):
        run = fk_steering(proc, cond, log.score_intermediate, k, generator, reward_scale=reward_scale,
                          potential=potential, resample_interval=interval, window=window,
                          resample_threshold=resample_threshold, resampling=resampling, eta=eta,
                          final_reward_fn=final_reward, stop_score=stop_score)
    kk = run.x.shape[0]
    counts = torch.bincount(run.ancestors.cpu(), minlength=kk).tolist()
    info = [{"particle": j, "log_weight": float(run.log_w[j]), "resampled_copies": counts[j]} for j in range(kk)]
    log.record(final["images"], final["scores"], None, info)
    return log.result({"num_particles": k, "resample_interval": interval, "window": list(window),
                       "potential_steps": run.potential_steps,
                       "resample_steps": run.resample_steps, "final_ess": float(ess(run.log_w)),
                       **({"stopped_at": run.stopped_at} if stop_score is not None else {}),
                       **unspent(budget, stop_score, log)})
