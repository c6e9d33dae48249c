"""Feynman-Kac correctors (Skreta et al. 2025, "Feynman-Kac Correctors in Diffusion:
Annealing, Guidance, and Product of Experts").

Targets a geometric combination of the model's own marginals at every noise level,

    q_t(x)  ~  prod_k p_{k,t}(x)^(c_k),

with a weighted SDE whose drift uses the combined score sum_k c_k grad log p_k and
importance weights that correct for the combined score not being the score of a
diffusion's marginals. With the interpolant x = a x0 + s eps, probability-flow ODE
dx = [(a'/a) x - eta grad log p_t] dt and any diffusion coefficient g, the SDE

    dx = [(a'/a) x + (g^2/2 - eta) sum_k c_k grad log p_k] dt + g dW

has Feynman-Kac weights (derived from the Fokker-Planck equation of q_t; terms constant
in x dropped, since they cancel in self-normalised weights)

    d log w = eta (sum_k c_k |grad log p_k|^2 - |sum_k c_k grad log p_k|^2) dt,

which is the paper's result for each of its three targets, written for a general Gaussian
interpolant: annealing with the "target score" SDE (one expert, c = beta):
d log w = eta beta (1 - beta) |grad log p|^2 dt; the product of experts (c = (1, 1)):
-2 eta <grad log p_1, grad log p_2> dt; classifier-free guidance (c = (1 - w, w)):
eta w (1 - w) |grad log p_c - grad log p_u|^2 dt. With the VE path of the authors' EDM code
(a = 1, s = sigma) eta dt = sigma d sigma, and the CFG increment is
-w (w - 1) |s_c - s_u|^2 sigma d sigma: their update exactly (martaskrt/fkc-diffusion,
applications/images/edm2/generate_images.py).
`Family.pf_eta(i)` gives the exact integral of eta over each step; the scores are the ones
the model already computes (-eps/s of each expert: CFG's two halves `Prediction.cond_out`
/ `uncond_out`, or two prompts' predictions), so no extra network evaluations are needed
beyond the experts themselves.

Discretisation: each step uses the process's own stochastic transition (`Family.transition`
with eta) fed with the combined score (its mean is linear in the score); the weight rate is
integrated with the trapezoid rule in time (the scores at a grid point close the previous
step and open the next: no extra evaluations). Log-weight increments are centred
over the population (the paper's centring), the population is resampled when ESS <
`resample_threshold` K (`searchers.particles.should_resample`; 1, the default: at every step, as the
paper's code does; 0: never; `resampling` systematic by default) and
once more at the end, so the final particles are an unweighted sample of the target at the
clean end.

Annealing p^beta, the paper's two SDEs:
- "target_score": the whole step uses the score beta grad log p (noise g);
- "tempered_noise": the probability-flow part uses beta grad log p, the Langevin part
  (g^2/2) grad log p with noise g / sqrt(beta) (Langevin at temperature 1/beta targets
  p^beta). Written this way (drift (a'/a) x + beta (g~^2/2 - eta) grad log p, noise
  g~ = g / sqrt(beta)), the same Fokker-Planck argument gives the same weights.
  Both generalise to any combination (the Langevin part then uses the average score).

Start: the process's first grid point is (close to) pure noise N(0, I), so q_0 ~ N(0, I /
sum_k c_k) and particles start as noise / sqrt(sum c). Where the first grid point is exactly
pure noise (a = 0: flow models, zero-terminal-SNR schedules) a rescaled score has no x0 and
eta diverges; that first step is taken deterministically with the normalised combination
(coefficients c_k / sum c; exact at a = 0, where every expert's score is -x/s^2) and
weighting starts at the next grid point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..core.budget import Budget
from .particles import center_log_weights, ess, normalize_log_weights, resample, should_resample
from ..core.process import DenoisingProcess, Prediction
from ..records.result import SearchResult
from ..errors import TTSInputError
from ..verifiers.base import Verifier
from .common import SearchLog, full_samples, reached, stop_checks, unspent
from .fkc_spec import FKC, FKC_MODES, FKC_VARIANTS, denoiser_calls
from .registry import register_searcher
from .vocabulary import RESAMPLING_SCHEMES

#: experts(x, i) -> model outputs of each expert at grid point i (each costs its NFE)
ExpertFn = Callable[[torch.Tensor, int], Sequence[torch.Tensor]]
#: reward_fn(x0 latents) -> scores [K] (Tweedie estimates scored for stop_score)
RewardFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class FKCRun:
    x: torch.Tensor  # [K, ...] final particles (clean end)
    log_w: torch.Tensor  # [K] normalised final log-weights
    ancestors: torch.Tensor  # [K] final resampling
    resample_steps: list[int] = field(default_factory=list)
    ess: list[float] = field(default_factory=list)
    stopped_at: int | None = None  # the grid point where stop_score was reached

    def resampled(self) -> torch.Tensor:
        return self.x[self.ancestors]


def _sqnorm(t: torch.Tensor) -> torch.Tensor:
    return t.double().reshape(t.shape[0], -1).pow(2).sum(1)


def combine(proc: DenoisingProcess, x: torch.Tensor, i: int, outs: Sequence[torch.Tensor],
            coefs: Sequence[float]) -> tuple[Prediction, list[torch.Tensor]]:
    """The prediction whose score is sum_k c_k score_k, and each expert's eps.

    With sum c = 1 (CFG) the outputs combine linearly (x0 and eps are affine in the output);
    otherwise the eps (= -s * score) combine and x0 follows from x = a x0 + s eps."""
    fam = proc.family
    eps = [fam.to_x0_eps(x, o, i)[1] for o in outs]
    if abs(sum(coefs) - 1.0) < 1e-12:
        out = sum(c * o for c, o in zip(coefs, outs))
        x0, e = fam.to_x0_eps(x, out, i)
    else:
        e = sum(c * ek for c, ek in zip(coefs, eps))
        out, x0 = fam.pred_from_eps(x, e, i)
    return Prediction(i, out, x0, e), eps


@torch.no_grad()
def fkc_sample(proc: DenoisingProcess, experts: ExpertFn, coefs: Sequence[float], num_particles: int,
               generator: torch.Generator | None = None, *, eta: float = 1.0, variant: str = "target_score",
               resample_threshold: float = 1.0, resampling: str = "systematic", weights: bool = True,
               stop_score: float | None = None, reward_fn: RewardFn | None = None) -> FKCRun:
    """Weighted SDE simulation of q ~ prod_k p_k^(c_k) (see the module docstring).

    resample_threshold in [0, 1]: resample when ESS < threshold K (`should_resample`; 1, the
    paper's choice: at every step, 0: never).

    stop_score (with reward_fn): stop when satisfied. FKC's loop scores nothing, so at smc's
    default potential steps (`common.stop_checks`) the Tweedie estimates of the target's
    prediction are scored; at the first where one reaches stop_score the population ends and
    that particle alone runs the same SDE to the clean end (`FKCRun.stopped_at`: the step).

    weights=False runs the same SDE without weights or resampling (the plain heuristic, e.g.
    ordinary CFG sampling; for tests)."""
    if variant not in FKC_VARIANTS:
        raise TTSInputError(f"unknown FKC variant {variant!r}; choose from {FKC_VARIANTS}")
    if resampling not in RESAMPLING_SCHEMES:
        raise TTSInputError(f"unknown resampling scheme {resampling!r}; choose from {RESAMPLING_SCHEMES}")
    coefs = [float(c) for c in coefs]
    total = sum(coefs)
    if total <= 0:
        raise TTSInputError(f"the exponents of the target must sum to a positive number, got {coefs}")
    fam, k = proc.family, int(num_particles)
    x = proc.sample_noise(k, generator)
    if abs(total - 1.0) > 1e-12:
        x = x / math.sqrt(total)  # q at pure noise: N(0, I)^(sum c) ~ N(0, I / sum c)
    dev = x.device
    log_w = torch.zeros(k, dtype=torch.float64, device=dev)
    run = FKCRun(x, log_w, torch.arange(k, device=dev))
    checks = stop_checks(proc.num_steps) if stop_score is not None and reward_fn is not None else set()
    for i in range(proc.num_steps):
        outs = experts(x, i)
        pure_noise = fam.a(i) == 0.0
        if pure_noise and abs(total - 1.0) > 1e-12:
            # no rescaled score exists at a = 0; every expert's score there is -x / s^2
            pred, _ = combine(proc, x, i, outs, [c / total for c in coefs])
            x = proc.step(x, i, pred, eta=0.0)
            continue
        pred, eps = combine(proc, x, i, outs, coefs)
        if weights and not pure_noise and (len(coefs) > 1 or coefs[0] != 1.0):
            scores = [fam.score(e, i) for e in eps]
            mixed = sum(c * sc for c, sc in zip(coefs, scores))
            q = sum(c * _sqnorm(sc) for c, sc in zip(coefs, scores)) - _sqnorm(mixed)
            # trapezoid rule in time: this point closes step i-1 and opens step i (the last
            # step has no scores at its clean end and takes its left point twice)
            h = 0.5 * (fam.pf_eta(i - 1) if i > 0 and fam.a(i - 1) > 0 else 0.0) + 0.5 * fam.pf_eta(i)
            if i == proc.num_steps - 1:
                h += 0.5 * fam.pf_eta(i)
            log_w = center_log_weights(log_w + h * q.to(dev))
        best = reached(reward_fn(pred.x0), stop_score) if i in checks else None
        if best is not None:
            # satisfied: the particle that reached it goes on alone, the rest of the population ends here
            x, pred, outs = proc.select([best], x, pred, list(outs))
            k, log_w, checks, run.stopped_at = 1, torch.zeros(1, dtype=torch.float64, device=dev), set(), i
        elif weights:
            run.ess.append(float(ess(log_w)))
            if should_resample(log_w, float(resample_threshold)):
                # every per-particle quantity follows its ancestor; weights uniform again
                idx = resample(log_w, resampling, generator)
                x, pred, outs = proc.select(idx, x, pred, list(outs))
                log_w = torch.zeros_like(log_w)
                run.resample_steps.append(i)
        if variant == "target_score" or eta == 0.0:
            x = proc.step(x, i, pred, eta=eta, generator=generator)
        else:
            # tempered noise: probability-flow part with the combined score, Langevin part with
            # the average score sum c_k s_k / sum c and noise g / sqrt(sum c)
            avg, _ = combine(proc, x, i, outs, [c / total for c in coefs])
            flow_part, _ = fam.transition(x, i, pred.out, pred.x0, pred.eps, 0.0)
            sde_avg, std = fam.transition(x, i, avg.out, avg.x0, avg.eps, eta)
            ode_avg, _ = fam.transition(x, i, avg.out, avg.x0, avg.eps, 0.0)
            x = flow_part + (sde_avg - ode_avg)
            if std > 0:
                x = x + (std / math.sqrt(total)) * proc.randn_like(x, generator)
    run.x, run.log_w = x, normalize_log_weights(log_w)
    run.ancestors = resample(run.log_w, resampling, generator).to(dev) if weights else torch.arange(k, device=dev)
    return run


@register_searcher(FKC)
def fkc(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
        generator: torch.Generator | None, *, negative_prompt: str | None, mode: str, guidance: float | None,
        beta: float | None, prompt_2: str | None, variant: str, num_particles: int | None, eta: float,
        resample_threshold: float, resampling: str, stop_score: float | None, keep_images: int) -> SearchResult:
    """Options: FKC in fkc_spec.py (`tts-diffusion list --searcher fkc`). "cfg" needs CFG on
    (the model's own guidance scale is w by default), "anneal" targets p^beta of the model's
    own, guided, distribution, "product" makes two denoiser calls per particle and step. The
    final particles are all candidates; the best by verifier score is returned."""
    if mode not in FKC_MODES:
        raise TTSInputError(f"unknown FKC mode {mode!r}; choose from {FKC_MODES}")
    if mode != "anneal":  # both need two predictions per step that T-GATE's caches cannot give
        proc.require_cfg_halves(f"FKC mode {mode!r}" + (" (two prompts share one cross-attention cache)" if mode == "product" else ""))
    n = proc.num_steps
    calls = denoiser_calls(mode)
    affordable = full_samples(budget, n, calls)
    k = affordable if num_particles is None else int(num_particles)
    if k > affordable:
        raise TTSInputError(f"num_particles={k} needs {k * n * calls} NFE but the budget has {budget.remaining_nfe}")
    cond = proc.encode(prompt, negative_prompt)
    settings: dict = {"num_particles": k}
    if mode == "cfg":
        if not proc.do_cfg:
            raise TTSInputError("FKC guidance needs classifier-free guidance on (guidance_scale > 1)")
        w = proc.cfg_scale if guidance is None else float(guidance)

        def experts(x, i):
            p = proc.denoise(x, i, cond)
            return [p.uncond_out, p.cond_out]

        coefs = [1.0 - w, w]
        settings["guidance"] = w
    elif mode == "anneal":
        def experts(x, i):
            return [proc.denoise(x, i, cond).out]

        b = 2.0 if beta is None else float(beta)
        coefs = [b]
        settings["beta"] = b
    else:
        if not prompt_2:
            raise TTSInputError("FKC product mode needs a second prompt (prompt_2)")
        cond2 = proc.encode(prompt_2, negative_prompt)
        b = 1.0 if beta is None else float(beta)

        def experts(x, i):
            return [proc.denoise(x, i, cond).out, proc.denoise(x, i, cond2).out]

        coefs = [b, b]
        settings.update({"prompt_2": prompt_2, "beta": b})
    log = SearchLog(proc, verifier, prompt, budget, keep_images)
    with proc.metered(budget):
        run = fkc_sample(proc, experts, coefs, k, generator, eta=eta, variant=variant,
                         resample_threshold=resample_threshold, resampling=resampling,
                         stop_score=stop_score, reward_fn=log.score_intermediate)
    kk = run.x.shape[0]
    counts = torch.bincount(run.ancestors.cpu(), minlength=kk).tolist()
    info = [{"particle": j, "log_weight": float(run.log_w[j]), "resampled_copies": counts[j]} for j in range(kk)]
    log.score_latents(run.x, None, info)
    settings.update({"resample_steps": run.resample_steps, "final_ess": float(ess(run.log_w))})
    if stop_score is not None:
        settings["stopped_at"] = run.stopped_at
    return log.result({**settings, **unspent(budget, stop_score, log)})
