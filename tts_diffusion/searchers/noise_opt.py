"""Gradient noise optimisation: ReNO (Eyring et al. 2024) and DNO (Tang et al. 2025).

    z <- N initial noises (and, with eta > 0, the noise injected at each stochastic step:
         optimised too with `optimize_step_noise` (DNO), else held fixed)
    repeat T times:
        x(z)  <- the sampler from z, every denoiser step checkpointed (memory of one step)
        r     <- verifier(decode(x(z)))            every iterate is a scored candidate
        loss  <- -r + gamma * R(z)                 R: DNO's probability regulariser
        z     <- Adam step on z along -grad loss   (each noise's gradient norm-clipped)
    sample and score the last z                   (ReNO: the last iterate takes no step)

With `opt_steps` the loop runs on a few-step schedule of the same model (its grid
subsampled) and the best noise found is sampled once on the full grid (ReNO's
"multi-apply": optimise with a fast sampler, apply to the slow one).

Budget (core/budget.py, one rule for every gradient method): per iteration, noise and step,
1 NFE for the sampling forward, BACKWARD_NFE = 2 for the backward through the denoiser and,
with checkpointing, 1 for the forward recomputed during the backward (the process charges
that one itself: the recomputation goes through `denoise_with_grad`); the reward gradient is
one verifier call per noise. The final sample costs `num_steps` NFE and one verifier call
per noise. Sampling uses the family's own step (DDIM / flow-matching Euler, differentiable),
not a multistep scheduler's history.
"""
from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from ..core.budget import Budget
from ..core.process import Conditioning, DenoisingProcess
from ..core.reward_grad import check_differentiable_verifier, differentiable_reward
from ..errors import TTSInputError
from ..records.result import SearchResult
from ..verifiers.base import Verifier
from .common import SearchLog, reached, stopped, unspent
from .noise_opt_spec import NOISE_OPT, iteration_nfe
from .registry import register_searcher

LOG2 = math.log(2.0)


# ---------------------------------------------------------------- DNO's probability regulariser
def _neg_log_prob_blocks(v: torch.Tensor, k: int) -> torch.Tensor:
    """-(log p_mean + log p_cov) of each row of v [n, D] seen as M = D // k samples of a
    k-dimensional N(0, I) (DNO, `compute_probability_regularization`): the sample mean m has
    M ||m||^2 ~ chi2_k, giving log p_mean = -M ||m||^2 / (2k); the sample covariance C deviates
    from I by at most about sqrt(k/M) (a concentration bound), giving
    c = max(0, sqrt(1 + ||C - I||_2) - 1 - sqrt(k/M)), log p_cov = -M c^2 / 2. Both are capped
    at -log 2, so a typical noise has zero gradient: only atypical ones are pushed back."""
    n, d = v.shape
    m = d // k
    if m < 2:  # too few coordinates for the statistics: no regulariser
        return v.new_zeros(n)
    rows = v[:, : m * k].reshape(n, m, k)
    mean = rows.mean(1)
    cov = rows.transpose(1, 2) @ rows / m
    eye = torch.eye(k, dtype=v.dtype, device=v.device)
    log_p_mean = (-m * mean.pow(2).sum(-1) / (2 * k)).clamp(max=-LOG2)
    dev = torch.linalg.matrix_norm(cov - eye, ord=2)
    c = (torch.sqrt(1 + dev) - 1 - math.sqrt(k / m)).clamp(min=0.0)
    log_p_cov = (-m * c * c / 2).clamp(max=-LOG2)
    return -(log_p_mean + log_p_cov)


def probability_regularizer(v: torch.Tensor, perms: list[torch.Tensor], k: int = 4) -> torch.Tensor:
    """DNO's regulariser per row of v [n, D]: the block statistics of v in its own order plus
    their mean over random permutations of the coordinates (`perms`), so correlations between
    any coordinates count, not only neighbours'."""
    reg = _neg_log_prob_blocks(v, k)
    if perms:
        reg = reg + torch.stack([_neg_log_prob_blocks(v[:, p], k) for p in perms]).mean(0)
    return reg


# ---------------------------------------------------------------------------- the sampler
def _step(proc: DenoisingProcess, x: torch.Tensor, i: int, cond: Conditioning, eta: float,
          noise: torch.Tensor | None) -> torch.Tensor:
    """One differentiable sampler step i -> i+1 (the family's transition, families.py)."""
    pred = proc.denoise_with_grad(x, i, cond)
    mean, std = proc.family.transition(x, i, pred.out, pred.x0, pred.eps, eta)
    return mean if std == 0.0 or noise is None else mean + std * noise


def sample_with_grad(proc: DenoisingProcess, z: torch.Tensor, cond: Conditioning, eta: float = 0.0,
                     step_noise: torch.Tensor | None = None, checkpointing: bool = True) -> torch.Tensor:
    """x at the clean end as a differentiable function of the initial noise z (and of
    `step_noise` [num_steps, B, ...], the stochastic steps' noise). With checkpointing each
    step keeps only its input for the backward and is recomputed there (1 NFE a row, charged
    by the process), so memory grows with one step, not with the trajectory."""
    x = z
    for i in range(proc.num_steps):
        noise = None if step_noise is None else step_noise[i]
        if checkpointing:
            x = checkpoint(_step, proc, x, i, cond, eta, noise, use_reentrant=False)
        else:
            x = _step(proc, x, i, cond, eta, noise)
    return x


def _few_step(proc: DenoisingProcess, steps: int) -> DenoisingProcess:
    """The same model on `steps` of its grid points (evenly spaced indices, the first and the
    clean end kept), stepped by the family's own step."""
    n = proc.num_steps
    if steps > n:
        raise TTSInputError(f"noise_opt opt_steps={steps} exceeds the run's {n} steps; use at most {n}")
    points = sorted({round(j * n / steps) for j in range(steps + 1)})
    return proc.with_grid(*proc.family.retime([proc.family.log_snr(j) for j in points]))


def _clip_rows(params: list[tuple[torch.Tensor, int]], max_norm: float) -> None:
    """Scale each noise's gradient to norm <= max_norm: noise b is index b of each parameter's
    batch dimension (0 for z [B, ...], 1 for the step noise [S, B, ...])."""
    sq = sum(p.grad.movedim(d, 0).reshape(p.shape[d], -1).pow(2).sum(1) for p, d in params)
    scale = (max_norm / (sq.sqrt() + 1e-12)).clamp(max=1.0)
    for p, d in params:
        p.grad.mul_(scale.view([-1 if k == d else 1 for k in range(p.ndim)]))


def _flat(z: torch.Tensor, step_noise: torch.Tensor | None, optimise_step_noise: bool) -> torch.Tensor:
    """What the regulariser sees per noise: z, and the optimised step noises, flattened [B, D]."""
    parts = [z.reshape(z.shape[0], -1)]
    if optimise_step_noise and step_noise is not None:
        parts.append(step_noise.transpose(0, 1).reshape(z.shape[0], -1))
    return torch.cat(parts, 1)


@register_searcher(NOISE_OPT)
def noise_opt(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
              generator: torch.Generator | None, *, negative_prompt: str | None, num_samples: int,
              num_iterations: int | None, learning_rate: float, grad_clip: float, reg_weight: float, eta: float,
              optimize_step_noise: bool, checkpointing: bool, opt_steps: int | None, stop_score: float | None,
              keep_images: int) -> SearchResult:
    """Options: NOISE_OPT in noise_opt_spec.py (`tts-diffusion list --searcher noise_opt`).
    stop_score: the first iteration whose reward reaches it ends the optimisation (on the full
    grid its sample is the result, no final sample is drawn; on a few-step schedule each
    noise's best iterate is then sampled on the full grid as usual)."""
    check_differentiable_verifier(verifier)
    if optimize_step_noise and eta == 0.0:
        raise TTSInputError("noise_opt optimize_step_noise needs stochastic steps: set eta > 0 (e.g. eta=1)")
    n, full = int(num_samples), proc.num_steps
    grid = proc.with_grid(proc.family, proc.model_timesteps) if opt_steps is None else _few_step(proc, int(opt_steps))
    per_iter = n * iteration_nfe(grid.num_steps, checkpointing)
    final = n * full  # the last iterate's sample (on the full grid)
    affordable = (budget.remaining_nfe - final) // per_iter if budget.remaining_nfe >= final else -1
    iters = affordable if num_iterations is None else int(num_iterations)
    if affordable < 0 or iters > affordable or (num_iterations is None and iters < 1):
        iters = max(iters, 1 if num_iterations is None else 0)
        need = final + iters * per_iter
        raise TTSInputError(f"noise_opt with {n} noise(s), {max(iters, 0)} iterations at {grid.num_steps} steps needs "
                            f"{need} NFE ({per_iter} per iteration, {final} for the final sample); the budget has "
                            f"{budget.remaining_nfe}")
    cond = proc.encode(prompt, negative_prompt)
    log = SearchLog(proc, verifier, prompt, budget, keep_images)
    seeds = proc.seeds(n, generator)
    z0 = proc.noise_from_seeds(seeds).float()
    step_noise = None
    if eta > 0.0:  # drawn once: fixed across iterations unless optimised
        step_noise = torch.stack([proc.randn_like(z0, generator) for _ in range(grid.num_steps)]).float()
    perms = [torch.randperm(_flat(z0, step_noise, optimize_step_noise).shape[1], generator=generator)
             for _ in range(8)] if reg_weight > 0 else []

    z = z0.clone().requires_grad_(True)
    params = [(z, 0)]
    if optimize_step_noise:
        step_noise = step_noise.clone().requires_grad_(True)
        params.append((step_noise, 1))
    opt = torch.optim.Adam([p for p, _ in params], lr=float(learning_rate))
    best_z, best_r = z0.clone(), torch.full((n,), -math.inf)
    best_noise = None if step_noise is None else step_noise.detach().clone()
    dtype = proc.dtype
    with grid.metered(budget):
        for t in range(iters):
            # the budget first: forward, recomputation (charged by the process) and backward
            budget.charge_denoiser_backward(n * grid.num_steps)
            budget.charge_reward_grad(n)
            opt.zero_grad(set_to_none=True)
            x = sample_with_grad(grid, z.to(dtype), cond, eta, None if step_noise is None else step_noise.to(dtype),
                                 checkpointing)
            r = differentiable_reward(grid, verifier, x, prompt)
            loss = -r.sum()
            if reg_weight > 0:
                loss = loss + float(reg_weight) * probability_regularizer(
                    _flat(z, step_noise, optimize_step_noise).double(), perms).float().sum()
            with proc.timings.phase("backward"):
                loss.backward()
            scores = log._checked(r.detach(), n)
            if opt_steps is None:  # a full-grid sample: a candidate
                log.record(proc.decode(x.detach()), scores,
                           seeds if t == 0 else None, [{"iteration": t, "noise": b} for b in range(n)])
            better = scores > best_r
            best_r = torch.where(better, scores, best_r)
            best_z[better] = z.detach()[better].to(best_z.dtype)
            if best_noise is not None and optimize_step_noise:
                best_noise[:, better] = step_noise.detach()[:, better]
            if reached(scores, stop_score) is not None:  # satisfied: no more iterations
                iters = t + 1
                break
            if grad_clip > 0:
                _clip_rows(params, float(grad_clip))
            with torch.no_grad():
                for p, _ in params:  # a non-finite reward gradient moves nothing
                    p.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            opt.step()
    # the last iterate (or, on a few-step schedule, each noise's best iterate) on the full grid
    if opt_steps is None and stopped(log, stop_score):  # its full-grid sample is already a candidate
        return log.result({"num_samples": n, "num_iterations": iters, **unspent(budget, stop_score, log)})
    with proc.metered(budget):
        if opt_steps is None:
            last_z, last_noise = z.detach(), None if step_noise is None else step_noise.detach()
        else:
            last_z = torch.where(torch.isfinite(best_r).view(-1, *[1] * (z.ndim - 1)), best_z, z.detach())
            last_noise = best_noise
        full_grid = proc.with_grid(proc.family, proc.model_timesteps)
        full_noise = None
        if eta > 0.0:
            full_noise = last_noise if opt_steps is None else torch.stack(
                [proc.randn_like(z0, generator) for _ in range(full)]).float()
        with torch.no_grad():
            x = last_z.to(dtype)
            for i in range(full):
                pred = full_grid.denoise(x, i, cond)
                mean, std = full_grid.family.transition(x, i, pred.out, pred.x0, pred.eps, eta)
                x = mean if std == 0.0 else mean + std * full_noise[i].to(dtype)
        log.score_latents(x, seeds if iters == 0 else None,
                          [{"iteration": iters, "noise": b, "final": True} for b in range(n)])
    return log.result({"num_samples": n, "num_iterations": iters, **unspent(budget, stop_score, log)})
