"""Best-of-N / random search (Ma et al. 2025, sec. 3.1 "random search").

Draw N initial noises, run each through the deterministic sampler, score the final
images with the verifier, keep the best. Candidates go through the denoiser together
(the process splits them into chunks of `max_batch` rows) in rounds of `round_size`
(default: one denoiser call's rows, `max_batch`, so Ctrl-C keeps every finished round), the
best found so far kept across rounds and one trace point written per round; with
`stop_score` the search ends after the first round whose best reaches it.
Candidate k's noise comes from its own seed, so the result does not depend on the chunk
or round size, and `seed` reproduces the winner with the plain pipeline."""
from __future__ import annotations

import torch

from ..core.budget import Budget
from ..core.process import DenoisingProcess
from ..records.result import SearchResult
from ..errors import TTSInputError
from ..verifiers.base import Verifier
from .best_of_n_spec import BEST_OF_N
from .registry import register_searcher
from .common import SearchLog, full_samples, stopped, unspent


@register_searcher(BEST_OF_N)
def best_of_n(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
              generator: torch.Generator | None, *, negative_prompt: str | None,
              num_samples: int | None, round_size: int | None, stop_score: float | None,
              keep_images: int) -> SearchResult:
    """Options: BEST_OF_N in best_of_n_spec.py (`tts-diffusion list --searcher best_of_n`)."""
    affordable = full_samples(budget, proc.num_steps, proc.nfe_per_step())  # reward guidance costs more a step
    n = affordable if num_samples is None else int(num_samples)
    if n > affordable:
        raise TTSInputError(f"num_samples={n} candidates need {n * proc.num_steps * proc.nfe_per_step()} NFE but the budget has"
                            f" {budget.remaining_nfe}")
    # default: rounds of one denoiser call's rows, so an interrupt keeps every finished round
    round_size = min(n, proc.max_batch) if round_size is None else int(round_size)
    cond = proc.encode(prompt, negative_prompt)
    log = SearchLog(proc, verifier, prompt, budget, keep_images)
    seeds = proc.seeds(n, generator)
    with proc.metered(budget):
        for r in range(0, n, round_size):
            round_seeds = seeds[r : r + round_size]
            x, _ = proc.sample(proc.noise_from_seeds(round_seeds), cond)  # a fresh population each round
            log.score_latents(x, round_seeds, [{"round": r // round_size} for _ in round_seeds])
            if stopped(log, stop_score):  # satisfied: the rest of the budget is not spent
                break
    return log.result({"num_samples": n, "round_size": round_size, **unspent(budget, stop_score, log)})
