"""Search over paths (Ma et al. 2025, sec. 3.3 "Search over Paths").

    1. sample N = `num_particles` noises and run the ODE sampler down to noise level sigma (grid point i0)
    2. each path is noised forward by Delta_f (grid point i -> i - Delta_f) into M
       = `num_children` children with fresh noise (the forward process, `proc.renoise`)
    3. each child is run back by Delta_b > Delta_f grid points with the ODE sampler; the
       verifier scores each child's Tweedie estimate x0 (the final image once the end is
       reached) and the best N children are kept
    4. repeat 2-3 until the clean end; the best of the N final samples is returned

Noise levels are grid points of the process (0 = pure noise, num_steps = clean); `sigma`
may be given as a noise level in [0, 1] (the interpolant's noise coefficient s_i, sigma of
flow models), mapped to the nearest grid point. The schedule arithmetic (`path_schedule`,
`path_cost`, `resolve_schedule`) lives beside the declaration in paths_spec.py, which `list`
also uses."""
from __future__ import annotations

import torch

from ..core.budget import Budget
from ..core.process import DenoisingProcess
from ..records.result import SearchResult
from ..errors import TTSInputError
from ..verifiers.base import Verifier
from .common import SearchLog, reached, unspent
from .paths_spec import PATHS, path_cost, path_schedule, resolve_schedule
from .registry import register_searcher


def nearest_grid_point(proc: DenoisingProcess, sigma: float) -> int:
    if not 0.0 <= sigma <= 1.0:
        raise TTSInputError(f"sigma is a noise level in [0, 1], got {sigma}")
    levels = [proc.family.s(i) for i in range(proc.num_steps + 1)]
    return min(range(len(levels)), key=lambda i: abs(levels[i] - sigma))


@register_searcher(PATHS)
def search_over_paths(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
                      generator: torch.Generator | None, *, negative_prompt: str | None,
                      num_particles: int | None, num_children: int, sigma: float | None, start: int | None,
                      delta_f: int | None, delta_b: int | None, stop_score: float | None,
                      keep_images: int) -> SearchResult:
    """Options: PATHS in paths_spec.py (`tts-diffusion list --searcher paths`). Branching
    starts early in sampling by default (grid point num_steps // 4), where the layout is
    still open."""
    steps = proc.num_steps
    if sigma is not None and start is not None:
        raise TTSInputError("give either sigma (a noise level) or start (a grid point), not both")
    start = nearest_grid_point(proc, float(sigma)) if sigma is not None else start
    start, delta_f, delta_b = resolve_schedule(steps, start, delta_f, delta_b)
    m = int(num_children)
    sched = path_schedule(steps, start, delta_f, delta_b)
    per_path = path_cost(steps, 1, m, start, delta_f, delta_b)[0]
    if num_particles is None:
        n = budget.remaining_nfe // per_path
        if n < 1:
            raise TTSInputError(f"budget of {budget.remaining_nfe} NFE is below one path ({per_path} NFE with"
                                f" num_children={m}, start={start}, delta_f={delta_f}, delta_b={delta_b} at {steps}"
                                f" steps); raise the budget to at least {per_path}")
    else:
        n = int(num_particles)
    if n * per_path > budget.remaining_nfe:
        raise TTSInputError(f"num_particles={n} paths need {n * per_path} NFE; the budget has {budget.remaining_nfe}")

    cond = proc.encode(prompt, negative_prompt)
    log = SearchLog(proc, verifier, prompt, budget, keep_images)
    with proc.metered(budget):
        seeds = proc.seeds(n, generator)
        x, _ = proc.sample(proc.noise_from_seeds(seeds), cond, end=start)
        if not sched:  # branching starts at the clean end: plain best-of-N
            log.score_latents(x, seeds)
        for it, (i, j, k) in enumerate(sched):
            # 2. each path becomes M children (rows p*M .. p*M + M - 1), noised back to j
            x = proc.select(torch.arange(n).repeat_interleave(m), x)
            children = proc.renoise(x, i, j, generator)
            # 3. denoise each child to k, score it, keep the best N
            children, pred = proc.sample(children, cond, start=j, end=k)
            if k == steps:
                scores = log.score_latents(children, None, [{"round": it} for _ in range(children.shape[0])])
            else:  # score the Tweedie estimate of each child's image
                scores = log.score_intermediate(pred.x0)
            keep = torch.topk(scores, n, sorted=True).indices
            x = proc.select(keep, children)
            if reached(scores, stop_score) is not None:
                # satisfied: the best child alone finishes (an intermediate score: its x0 estimate's)
                if k < steps:
                    x, _ = proc.sample(proc.select([0], x), cond, start=k)  # row 0: the best (topk is sorted)
                    log.score_latents(x, None, [{"round": it, "stopped": True}])
                break
    return log.result({"num_particles": n, "start": start, "sigma": proc.family.s(start), "delta_f": delta_f,
                       "delta_b": delta_b, **unspent(budget, stop_score, log)})
