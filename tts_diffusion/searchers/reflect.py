"""Reflection: verify, critique, refine (ReflectionFlow, Zhuo et al. 2025, arXiv 2504.16080,
sec. 3; their tts_reflectionflow.py loop), over the DenoisingProcess, without paid APIs.

    1  draw `num_samples` noises, sample them, verify             (noise-level scaling)
    2  keep the top `num_particles` as chains; their images are the chain heads
    3  for round = 1 .. num_rounds:
    4      critique every chain head                  c_k = critic(head_k, prompt)
    5      refine                                     p_k = refiner(p_k, c_k)
    6      generate one child per chain:
               refine="prompt": new noise, prompt p_k               (prompt-level)
               refine="image":  SDEdit from the head, prompt unchanged
               refine="both":   SDEdit from the head, prompt p_k    (reflection-level)
    7      verify the children against the original prompt
    8      keep the better of head and child per chain (ties: the child, so a chain moves on
           a plateau); the refined prompt stays with the chain only if its child is kept
    9  return the best image over all chains and rounds

SDEdit (Meng et al. 2022) stands in for ReflectionFlow's corrector (a FLUX LoRA conditioned on
the previous image): the head's clean latent is re-noised to grid point
j = n - ceil(strength * n) with the forward process (`proc.renoise`) and denoised from there,
costing ceil(strength * n) NFE. "prompt" x "image" is a 2x2 design: noise only (best-of-N) is
new noise with the original prompt, "image" isolates the effect of starting from the head,
"both" adds the refined prompt to it.

Every child's noise comes from its own seed (recorded on the candidate), so runs are
deterministic per generator seed. Chains are particles: the top-k selection goes through
`proc.select`. Critic verifier calls are charged to the budget's verifier count."""
from __future__ import annotations

from typing import Any

import torch

from ..core.budget import Budget
from ..core.process import Conditioning, DenoisingProcess
from ..records.result import ChainStep, SearchResult, to_uint8
from ..errors import TTSInputError
from ..reflection import Critique, make_critic, make_refiner
from ..reflection.critics import gives_feedback
from ..verifiers.base import Verdict, Verifier
from .common import SearchLog, stopped, unspent
from .reflect_spec import REFLECT, fewest_chains, minimum_nfe, round_cost, sdedit_start
from .registry import register_searcher

def plan(budget: Budget, steps: int, child_cost: int, num_samples: int | None, num_particles: int | None,
         num_rounds: int | None) -> tuple[int, int, int]:
    """(initial samples N, chains K, rounds R) with N*steps + R*K*child_cost <= budget.
    Values the caller left out are derived; values given are never shrunk (TTSInputError)."""
    rem = budget.remaining_nfe
    k_min = fewest_chains(num_samples, num_particles)
    n_min = max(num_samples or k_min, k_min)
    minimum = minimum_nfe(steps, child_cost, num_samples, num_particles, num_rounds)
    if rem < minimum:
        raise TTSInputError(
            f"budget of {rem} NFE is below reflect's minimum: {n_min} initial sample(s) of {steps} NFE plus"
            f" {num_rounds or 1} round(s) of {k_min} chain(s) x {child_cost} NFE = {minimum} NFE;"
            f" raise the budget to at least {minimum}")
    n = num_samples
    if n is None:
        n = max(n_min, rem // steps // 2)
        n = min(n, (rem - k_min * child_cost * (num_rounds or 1)) // steps)
    k = num_particles if num_particles is not None else min(2, n)
    if k > n:
        raise TTSInputError(f"num_particles={k} chains need at least as many initial samples; num_samples={n}")
    if num_samples is None:  # the derived N leaves room for one round of the derived K
        n = max(k, min(n, (rem - k * child_cost * (num_rounds or 1)) // steps))
    left = rem - n * steps
    r = num_rounds if num_rounds is not None else left // (k * child_cost)
    need = n * steps + r * k * child_cost
    if r < 1 or need > rem:
        raise TTSInputError(
            f"reflect with {n} initial samples ({n * steps} NFE), {k} chains and {max(r, 1)} round(s) of"
            f" {k * child_cost} NFE needs {n * steps + max(r, 1) * k * child_cost} NFE; the budget has {rem}")
    return n, k, r


@register_searcher(REFLECT)
def reflect(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
            generator: torch.Generator | None, *, negative_prompt: str | None, **o: Any) -> SearchResult:
    """Options `o`: REFLECT in reflect_spec.py (`tts-diffusion list --searcher reflect`), every one given."""
    steps = proc.num_steps
    fresh = o["refine"] == "prompt"
    start = 0 if fresh else sdedit_start(steps, o["strength"])
    cost = round_cost(steps, o["refine"], o["strength"])
    n, k, rounds = plan(budget, steps, cost, o["num_samples"], o["num_particles"], o["num_rounds"])
    # everything that can refuse the request does so before any sampling
    verifier.check_prompt(prompt)
    critic_name = o["critic"] or ("feedback" if gives_feedback(verifier) else "decomposed")
    critic = make_critic(critic_name, verifier, budget=budget, model=o["critic_model"],
                         threshold=o["claim_threshold"], device=proc.device)
    critic.check_prompt(prompt)
    refiner = make_refiner(o["refiner"], model=o["refiner_model"], device=proc.device)
    use_refined = o["refine"] in ("prompt", "both")
    stop = o["stop_score"]

    log = SearchLog(proc, verifier, prompt, budget, o["keep_images"])
    conds: dict[str, Conditioning] = {prompt: proc.encode(prompt, negative_prompt)}

    def cond(p: str) -> Conditioning:
        if p not in conds:
            conds[p] = proc.encode(p, negative_prompt)
        return conds[p]

    def score(x: torch.Tensor, seeds: list[int], info: list[dict]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Decode, verify against the original prompt, record; (images, scores, first candidate index)."""
        images = proc.decode(x)
        scores = log.verify(images)
        first = len(log.candidates)
        log.record(images, scores, seeds, info)
        return images, scores, first

    with proc.metered(budget):
        # 1  noise-level: N samples, verified
        seeds = proc.seeds(n, generator)
        x, _ = proc.sample(proc.noise_from_seeds(seeds), conds[prompt])
        images, scores, first = score(x, seeds, [{"round": 0, "prompt": prompt} for _ in seeds])
        # 2  the top K become chains (particles: moved with proc.select)
        idx = torch.argsort(scores, descending=True, stable=True)[:k]
        heads, head_images, head_scores = proc.select(idx, x, images, scores)
        head_prompts = [prompt] * k
        chains = [[ChainStep(0, first + int(j), float(scores[j]), log.candidates[first + int(j)].nfe, prompt,
                             mode="noise", image=to_uint8(images[j]))] for j in idx.tolist()]
        for r in range(1, rounds + 1):
            if stopped(log, stop):  # satisfied: the rest of the budget is not spent
                break
            # 4  critique the heads (the guide's scores ride along as the verdict)
            with proc.timings.phase("critique"):
                critiques: list[Critique] = critic(head_images, prompt, Verdict(scores=head_scores.clone()))
            # 5  refine
            with proc.timings.phase("refine"):
                new_prompts = [refiner(p, c) if use_refined else p for p, c in zip(head_prompts, critiques)]
            # 6  one child per chain, from its own seed
            seeds = proc.seeds(k, generator)
            noise = proc.noise_from_seeds(seeds)
            x = noise if fresh else proc.renoise(heads, steps, start, noise=noise)
            children = torch.empty_like(heads)
            for p in dict.fromkeys(new_prompts):  # chains that share a prompt share a batch
                rows = [j for j, q in enumerate(new_prompts) if q == p]
                proc.reset_particles(len(rows))
                children[rows], _ = proc.sample(x[rows], cond(p), start=start)
            proc.reset_particles(k)
            # 7  verify against the original prompt
            info = [{"round": r, "chain": j, "prompt": new_prompts[j], "mode": o["refine"]} for j in range(k)]
            images, scores, first = score(children, seeds, info)
            # 8  keep the better of head and child per chain
            keep = scores >= head_scores
            for j in range(k):
                chains[j].append(ChainStep(r, first + j, float(scores[j]), log.candidates[first + j].nfe, new_prompts[j],
                                           critiques[j].text, critiques[j].to_dict()["claims"], o["refine"],
                                           bool(keep[j]), to_uint8(images[j])))
            sel = keep.to(heads.device).view(-1, *[1] * (heads.ndim - 1))
            heads = torch.where(sel, children, heads)
            head_images = torch.where(keep.to(images.device).view(-1, 1, 1, 1), images, head_images)
            head_scores = torch.where(keep, scores, head_scores)
            head_prompts = [new_prompts[j] if keep[j] else head_prompts[j] for j in range(k)]
    settings = {"num_samples": n, "num_particles": k, "num_rounds": rounds, "rounds_run": len(chains[0]) - 1,
                "critic": critic_name, **unspent(budget, stop, log)}
    result = log.result(settings)
    result.chains = chains
    return result
