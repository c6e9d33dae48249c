"""DAS: test-time alignment of diffusion models without reward over-optimisation (Kim, Kim &
Park, ICLR 2025, arXiv 2501.05803; github.com/krafton-ai/DAS, `pipeline_using_SMC.py`,
`smc_utils.py`).

Target: the KL-regularised optimum p*(x) = p(x) exp(lam r(x)) / Z, lam = `reward_scale` = 1/alpha
(DAS's kl_coeff alpha weighs the KL to the base model p): a distribution to sample, not a reward
to maximise, so the base model keeps the samples typical. Tempered SMC reaches it; the reward
weight lam_i (a fraction of lam) rises from 0 to 1 over the steps, so the early, unreliable
Tweedie rewards cannot collapse the particles. On the grid i = 0 .. n (x_n clean), K particles:

    x_0 ~ N(0, I);  log w = 0;  log psi_prev = 0
    for i = 0 .. n-1:
        x0_hat = denoiser(x_i);  r_i = r(x0_hat)                      Tweedie estimate (1 NFE)
        lam_i  = tempering(i)                                         exp: min((1 + gamma)^i - 1, 1)
                                                                      adaptive: the largest in
                                                                      [lam_{i-1}, 1] keeping
                                                                      ESS >= adaptive_ess K
        log psi_i = lam_i lam r_i;  log w += log psi_i - log psi_prev   the tempered twist
        if ESS < resample_threshold K: resample, log w = 0            (every per-particle
                                                                      state follows: proc.select)
        m, std = the sampler's step i -> i+1 (eta)
        d = std^2 lam_g lam grad_{x_i} r(x0_hat(x_i))                  DAS's guided proposal
                                                                      (gradient=True; lam_g = the
                                                                      next lam_{i+1}, adaptive:
                                                                      lam_i)
        x_{i+1} = m + d + std z;  log w += log p/q = -(|d|^2 + 2 std d.z) / (2 std^2)
    log w += lam r(x_n) - log psi_prev                                the exact reward, lam_n = 1

The twists telescope, so the final weighted population targets p(x) exp(lam r(x)) exactly
whatever the schedule (tests/test_das.py: KS against the closed-form tilted mixtures; with
tempering=none this is untempered SMC with the "difference" potential at every step).

Returned image (`pick`): DAS's particle of largest final weight (default), a draw from the
final weights, or, like smc, the best verifier score. Costs (core/budget.py): 1 NFE a particle
and step; with the gradient, at each stochastic step one denoiser forward with a graph (1 NFE)
and its backward (2 NFE) plus one reward-gradient row; one verifier call per Tweedie reward
(none while lam_i = 0) and per final particle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.budget import Budget
from ..core.process import Conditioning, DenoisingProcess
from ..core.reward_grad import check_differentiable_verifier, differentiable_reward
from ..errors import TTSInputError
from ..features.guidance import denoise_with_graph
from ..records.result import SearchResult, to_uint8
from ..verifiers.base import Verifier
from .common import SearchLog, reached, unspent
from .das_spec import DAS, PICKS, TEMPERINGS
from .particles import dead_to_neginf, ess, normalize_log_weights, resample, should_resample
from .registry import register_searcher
from .vocabulary import RESAMPLING_SCHEMES

RewardFn = Callable[[torch.Tensor], torch.Tensor]
#: (x_i, i) -> (r(x0_hat(x_i)) [K], grad_{x_i} of it): through the denoiser
RewardGradFn = Callable[[torch.Tensor, int], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class DASRun:
    """The final population of a DAS run (everything on the particles' device)."""

    x: torch.Tensor  # [K, ...] particles at the clean end
    log_w: torch.Tensor  # [K] normalised final log-weights (target p exp(lam r))
    rewards: torch.Tensor  # [K] r(x) of the final particles
    ancestors: torch.Tensor  # [K] indices of a final resampling (an unweighted sample)
    lambdas: list[float] = field(default_factory=list)  # lam_i / lam at grid points 0 .. n
    ess: list[float] = field(default_factory=list)  # ESS after each reweighting (0 .. n), before resampling
    resample_steps: list[int] = field(default_factory=list)
    stopped_at: int | None = None  # the grid point where stop_score was reached

    def resampled(self) -> torch.Tensor:
        """An unweighted sample of the target: x[ancestors]."""
        return self.x[self.ancestors]


def default_gamma(num_steps: int) -> float:
    """gamma such that the exp schedule reaches 1 at 87% of the steps: (1 + gamma)^(0.87 n) = 2, as
    DAS's gamma = 0.008 does over its 100 steps (1.008^87 = 2.00)."""
    return 2.0 ** (1.0 / (0.87 * max(1, num_steps))) - 1.0


def exp_schedule(num_steps: int, gamma: float) -> list[float]:
    """DAS's "exp" tempering: lam_i = min((1 + gamma)^i - 1, 1) at grid points 0 .. n-1, then 1 at
    the clean end n (the exact reward)."""
    return [min((1.0 + gamma) ** i - 1.0, 1.0) for i in range(num_steps)] + [1.0]


def adaptive_lambda(log_w: torch.Tensor, new: torch.Tensor, old: torch.Tensor, lo: float, target: float,
                    iterations: int = 40) -> float:
    """Adaptive tempering: the largest l in [lo, 1] with ESS(log_w + l new - old) >= target K
    (bisection; `new` = lam r_i, `old` = log psi_prev). lo when even lo falls below the target
    (the weight never decreases)."""
    k = log_w.shape[-1]

    def ok(l: float) -> bool:
        return float(ess(dead_to_neginf(log_w + l * new - old))) >= target * k

    if ok(1.0):
        return 1.0
    if not ok(lo):
        return lo
    a, b = lo, 1.0
    for _ in range(iterations):
        mid = 0.5 * (a + b)
        a, b = (mid, b) if ok(mid) else (a, mid)
    return a


def reward_grad_through_denoiser(proc: DenoisingProcess, cond: Conditioning,
                                 reward_of_x0: RewardFn) -> RewardGradFn:
    """(x_i, i) -> (r(x0_hat(x_i)), grad_{x_i} r(x0_hat(x_i))) with the graph through the denoiser;
    charges its forward (1 NFE a row) and backward (core/budget.py: 2 NFE a row). NaN gradients
    become 0 (as DAS does)."""

    def fn(x: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        if proc.budget is not None:
            proc.budget.charge_nfe(n)
            proc.budget.charge_model_rows(n)
            proc.budget.charge_denoiser_backward(n)
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            r = reward_of_x0(denoise_with_graph(proc, xg, i, cond))
            (g,) = torch.autograd.grad(r.sum(), xg)
        return r.detach(), torch.nan_to_num(g.detach(), nan=0.0, posinf=0.0, neginf=0.0)

    return fn


def stochastic_steps(proc: DenoisingProcess, eta: float) -> list[int]:
    """Grid points whose step injects noise (where a guided proposal has a density)."""
    return [i for i in range(proc.num_steps) if proc.family.step_std(i, eta) > 0.0]


@torch.no_grad()
def das_sampling(proc: DenoisingProcess, cond: Conditioning, reward_fn: RewardFn, num_particles: int,
                 generator: torch.Generator | None = None, *, reward_scale: float = 10.0, tempering: str = "exp",
                 tempering_gamma: float | None = None, adaptive_ess: float = 0.5,
                 reward_grad_fn: RewardGradFn | None = None, resample_threshold: float = 0.5,
                 resampling: str = "systematic", eta: float = 1.0,
                 final_reward_fn: RewardFn | None = None, stop_score: float | None = None) -> DASRun:
    """Tempered SMC towards p(x) exp(reward_scale r(x)) (the module docstring, line by line).

    reward_fn(x0_latents) -> [K]: rewards of Tweedie estimates; final_reward_fn (default
    reward_fn): of the clean particles; reward_grad_fn (None: the model's own steps):
    `reward_grad_through_denoiser`, DAS's gradient-guided proposal at the stochastic steps.
    stop_score: stop when satisfied, as smc does: at the first step whose Tweedie rewards (those
    computed: none while lam_i = 0) reach it, the population ends there and that particle alone
    goes on to the clean end (`DASRun.stopped_at`: the step)."""
    if tempering not in TEMPERINGS:
        raise TTSInputError(f"unknown tempering {tempering!r}; choose from {TEMPERINGS}")
    if resampling not in RESAMPLING_SCHEMES:
        raise TTSInputError(f"unknown resampling scheme {resampling!r}; choose from {RESAMPLING_SCHEMES}")
    if eta <= 0.0:
        raise TTSInputError(f"das needs stochastic steps (eta > 0), got eta={eta}")
    n, k, lam = proc.num_steps, int(num_particles), float(reward_scale)
    gamma = default_gamma(n) if tempering_gamma is None else float(tempering_gamma)
    schedule = exp_schedule(n, gamma) if tempering == "exp" else [1.0] * (n + 1)
    final_reward_fn = final_reward_fn or reward_fn
    guided = set(stochastic_steps(proc, eta)) if reward_grad_fn is not None else set()

    x = proc.sample_noise(k, generator)
    dev = x.device
    log_w = torch.zeros(k, dtype=torch.float64, device=dev)
    log_psi = torch.zeros(k, dtype=torch.float64, device=dev)  # log psi_prev of each particle
    run = DASRun(x, log_w, log_w, log_w)
    lam_i = 0.0
    for i in range(n):
        # 1. the Tweedie estimate and its reward (with grad_{x_i} where the proposal follows it)
        pred = proc.denoise(x, i, cond)
        grad = None
        if i in guided:
            r, grad = reward_grad_fn(x, i)
            r = r.to(dev, torch.float64)
        elif tempering == "adaptive" or schedule[i] > 0.0:
            r = reward_fn(pred.x0).to(dev, torch.float64)
        else:  # lam_i = 0: the twist is 1 whatever r is; no verifier call
            r = torch.zeros(k, dtype=torch.float64, device=dev)
        scored = i in guided or tempering == "adaptive" or schedule[i] > 0.0
        if scored and run.stopped_at is None and (best := reached(r, stop_score)) is not None:
            # satisfied: the particle that reached it goes on alone, the rest of the population ends here
            x, pred, r, grad = proc.select([best], x, pred, r, grad)
            k, run.stopped_at = 1, i
            log_w = log_psi = torch.zeros(1, dtype=torch.float64, device=dev)
        # 2. the tempered twist log psi_i = lam_i lam r_i; the weights telescope
        if tempering == "adaptive":
            lam_i = adaptive_lambda(log_w, lam * r, log_psi, lam_i, float(adaptive_ess))
        else:
            lam_i = schedule[i]
        new_psi = lam_i * lam * r
        log_w = dead_to_neginf(log_w + new_psi - log_psi)
        log_psi = new_psi
        run.lambdas.append(lam_i)
        run.ess.append(float(ess(log_w)))
        # 3. resample when the ESS falls: every per-particle quantity follows its ancestor
        if should_resample(log_w, float(resample_threshold)):
            idx = resample(log_w, resampling, generator)
            x, pred, log_psi, grad = proc.select(idx, x, pred, log_psi, grad)
            log_w = torch.zeros_like(log_w)
            run.resample_steps.append(i)
        # 4. the proposal: the sampler's step, its mean moved by std^2 lam_g lam grad r (DAS)
        std = proc.family.step_std(i, eta)
        z = proc.randn_like(x, generator) if std > 0.0 else None
        x_next = proc._step(x, i, pred, eta, z, generator)
        if grad is not None:
            lam_g = lam_i if tempering == "adaptive" else schedule[i + 1]
            d = (std * std * lam_g * lam) * grad.to(x.dtype)
            x_next = x_next + d
            dd = d.reshape(k, -1).to(torch.float64)
            zz = z.reshape(k, -1).to(torch.float64)
            log_w = dead_to_neginf(log_w - ((dd * dd).sum(1) + 2 * std * (dd * zz).sum(1)) / (2 * std * std))
        x = x_next

    # the exact reward at the clean end (lam_n = 1): the target becomes p(x) exp(lam r(x))
    r_final = final_reward_fn(x).to(dev, torch.float64)
    log_w = normalize_log_weights(dead_to_neginf(log_w + lam * r_final - log_psi))
    run.lambdas.append(1.0)
    run.ess.append(float(ess(log_w)))
    run.x, run.log_w, run.rewards = x, log_w, r_final
    run.ancestors = resample(log_w, resampling, generator).to(dev)
    return run


@register_searcher(DAS)
def das(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
        generator: torch.Generator | None, *, negative_prompt: str | None, num_particles: int | None,
        reward_scale: float, tempering: str, tempering_gamma: float | None, adaptive_ess: float, gradient: bool,
        resample_threshold: float, resampling: str, eta: float, pick: str, stop_score: float | None,
        keep_images: int) -> SearchResult:
    """Options: DAS in das_spec.py (`tts-diffusion list --searcher das`). The default K is as many
    particles as the budget pays for."""
    if proc.call.step_hook is not None:
        raise TTSInputError("das makes its own gradient-guided proposals; turn the call's reward guidance off")
    if gradient:  # before any model work: one line naming the differentiable verifiers
        check_differentiable_verifier(verifier)
    n = proc.num_steps
    per_particle = n + (3 * len(stochastic_steps(proc, eta)) if gradient else 0)
    affordable = budget.remaining_nfe // per_particle
    k = affordable if num_particles is None else int(num_particles)
    if k < 1 or k > affordable:
        raise TTSInputError(f"das with num_particles={max(k, 1)} needs {max(k, 1) * per_particle} NFE ({per_particle} a"
                            f" particle at {n} steps{', with the gradient' if gradient else ''}) but the budget has"
                            f" {budget.remaining_nfe}")
    cond = proc.encode(prompt, negative_prompt)
    log = SearchLog(proc, verifier, prompt, budget, keep_images)
    final: dict[str, torch.Tensor] = {}

    def final_reward(x: torch.Tensor) -> torch.Tensor:
        final["images"] = proc.decode(x)
        final["scores"] = log.verify(final["images"])
        return final["scores"]

    def reward_of_x0(x0: torch.Tensor) -> torch.Tensor:
        budget.charge_reward_grad(x0.shape[0])
        return differentiable_reward(proc, verifier, x0, prompt).to(torch.float64)

    with proc.metered(budget):
        run = das_sampling(proc, cond, log.score_intermediate, k, generator, reward_scale=reward_scale,
                           tempering=tempering, tempering_gamma=tempering_gamma, adaptive_ess=adaptive_ess,
                           reward_grad_fn=reward_grad_through_denoiser(proc, cond, reward_of_x0) if gradient else None,
                           resample_threshold=resample_threshold, resampling=resampling, eta=eta,
                           final_reward_fn=final_reward, stop_score=stop_score)
    k_run = run.x.shape[0]  # 1 when stop_score was reached
    counts = torch.bincount(run.ancestors.cpu(), minlength=k_run).tolist()
    info = [{"particle": j, "log_weight": float(run.log_w[j]), "resampled_copies": counts[j]} for j in range(k_run)]
    log.record(final["images"], final["scores"], None, info)
    # the returned image: DAS's largest final weight, a draw from the weights, or the best score
    if pick == "weight":
        j = int(torch.argmax(run.log_w))
    elif pick == "sample":
        gdev = generator.device if generator is not None else torch.device("cpu")
        j = int(run.ancestors[int(torch.randint(k_run, (1,), generator=generator, device=gdev))])
    elif pick == "score":
        j = int(torch.argmax(final["scores"]))
    else:
        raise TTSInputError(f"unknown pick {pick!r}; choose from {PICKS}")
    chosen = log.candidates[-k_run + j]
    if chosen.image is None:
        chosen.image = to_uint8(final["images"][j])
    log.best = proc.call.best = chosen
    gamma = default_gamma(n) if tempering_gamma is None else tempering_gamma
    return log.result({"num_particles": k, "tempering_gamma": gamma if tempering == "exp" else tempering_gamma,
                       "lambdas": [round(v, 6) for v in run.lambdas], "ess": [round(v, 3) for v in run.ess],
                       "resample_steps": run.resample_steps, "final_ess": run.ess[-1], "picked_particle": j,
                       **({"stopped_at": run.stopped_at} if stop_score is not None else {}),
                       **unspent(budget, stop_score, log)})
