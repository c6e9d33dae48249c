"""Zero-order search (Ma et al. 2025, sec. 3.2 "Zero-Order Search").

    pivot <- a random Gaussian noise; score it (one full sample)
    repeat K = `num_rounds` times:
        draw N neighbours of the pivot at distance lambda = `step_size` (on the pivot's Gaussian shell)
        sample each with the deterministic ODE sampler, score the images
        if the best neighbour beats the pivot: it becomes the pivot
        else: `on_stall` decides (keep the pivot and redraw / move anyway / restart)

Neighbours are rotations of the pivot on the sphere of radius ||pivot||, so they keep the
norm a Gaussian noise of that dimension has (high-dimensional Gaussians live on a thin
shell; leaving it gives the model out-of-distribution inputs), and sit at chord distance
exactly lambda * ||pivot|| from it."""
from __future__ import annotations

import math

import torch

from ..core.budget import Budget
from ..core.process import DenoisingProcess
from ..records.result import SearchResult
from ..errors import TTSInputError
from ..verifiers.base import Verifier
from .registry import register_searcher
from .common import SearchLog, full_samples, stopped, unspent
from .zero_order_spec import ZERO_ORDER

def shell_neighbours(pivot: torch.Tensor, n: int, step: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points y with ||y|| = ||pivot|| and ||y - pivot|| = step * ||pivot||, in uniformly
    random directions: y = cos(t) p + sin(t) ||p|| v, v a unit vector orthogonal to p,
    t = 2 asin(step / 2) (the chord of angle t on a sphere of radius r is 2 r sin(t/2))."""
    if not 0.0 < step <= 2.0:
        raise TTSInputError(f"the zero-order step lambda must be in (0, 2] (relative distance), got {step}")
    flat = pivot.reshape(1, -1).double().cpu()
    r = flat.norm()
    z = torch.randn(n, flat.shape[1], generator=generator, dtype=torch.float64)
    unit = flat / r
    v = z - (z @ unit.T) * unit  # remove the pivot direction
    v = v / v.norm(dim=1, keepdim=True)
    t = 2 * math.asin(step / 2)
    y = math.cos(t) * flat + math.sin(t) * r * v
    return y.reshape(n, *pivot.shape[1:]).to(pivot.device, pivot.dtype)


@register_searcher(ZERO_ORDER)
def zero_order(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
               generator: torch.Generator | None, *, negative_prompt: str | None, num_children: int,
               step_size: float, num_rounds: int | None, on_stall: str, stop_score: float | None,
               keep_images: int) -> SearchResult:
    """Options: ZERO_ORDER in zero_order_spec.py (`tts-diffusion list --searcher zero_order`)."""
    n = int(num_children)
    samples = full_samples(budget, proc.num_steps)
    affordable = (samples - 1) // n
    rounds = affordable if num_rounds is None else int(num_rounds)
    if rounds > affordable or rounds < 1:
        raise TTSInputError(f"{max(rounds, 1)} rounds of {n} neighbours need {(1 + max(rounds, 1) * n) * proc.num_steps}"
                            f" NFE (the pivot and the neighbours at {proc.num_steps} steps); the budget has"
                            f" {budget.remaining_nfe}")
    cond = proc.encode(prompt, negative_prompt)
    log = SearchLog(proc, verifier, prompt, budget, keep_images)
    with proc.metered(budget):
        seed = proc.seeds(1, generator)[0]
        pivot = proc.noise_from_seeds([seed])
        x, _ = proc.sample(pivot, cond)
        pivot_score = float(log.score_latents(x, [seed], [{"round": 0, "role": "pivot"}])[0])
        for k in range(1, rounds + 1):
            if stopped(log, stop_score):  # satisfied: the rest of the budget is not spent
                break
            noises = shell_neighbours(pivot, n, step_size, generator)
            proc.reset_particles(n)  # the neighbours are a fresh population
            x, _ = proc.sample(noises, cond)
            scores = log.score_latents(x, None, [{"round": k, "role": "neighbour"} for _ in range(n)])
            best = int(torch.argmax(scores))
            if float(scores[best]) > pivot_score or on_stall == "move":
                pivot, pivot_score = noises[best : best + 1], float(scores[best])
            elif on_stall == "restart":
                seed = proc.seeds(1, generator)[0]
                pivot, pivot_score = proc.noise_from_seeds([seed]), -math.inf
    return log.result({"num_rounds": rounds, **unspent(budget, stop_score, log)})
