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

import math
from typing import Any

import torch

from ..core.budget import Budget
from ..core.process import Conditioning, DenoisingProcess
from ..core.result import ChainStep, SearchResult, to_uint8
from ..errors import TTSInputError
from ..params import Param
from ..reflection import CRITICS, REFINERS, Critique, make_critic, make_refiner
from ..reflection.critics import gives_feedback
from ..verifiers.base import Verdict, Verifier
from .base import register_searcher
from .common import SearchLog

REFINE_MODES = ("prompt", "image", "both")

PARAMS = [
    Param("num_samples", int, None, "initial noises sampled and verified (default: half of the budget's full samples)",
          low=1),
    Param("num_particles", int, None, "chains kept: the top initial samples by score (default: 2, at most num_samples)",
          low=1),
    Param("num_rounds", int, None, "critique-refine-generate rounds (default: as many as the budget pays for)", low=1),
    Param("refine", str, "both", "prompt: refined prompt, new noise; image: SDEdit from the chain head with the"
          " original prompt; both: SDEdit from the head with the refined prompt", choices=REFINE_MODES),
    Param("strength", float, 0.6, "SDEdit strength for image / both: re-noise the head this far back"
          " (costs ceil(strength * steps) NFE per chain and round)", low=0.0, high=1.0, low_open=True),
    Param("critic", str, None, "feedback (the verifier's own, e.g. oracle) | decomposed (claims scored by the"
          " verifier) | vlm (critic_model) | none (no critique); default: feedback if the verifier gives any, else decomposed",
          choices=CRITICS, nullable=True),
    Param("refiner", str, "rules", "rules (rewrite toward the failed claims) | lm (refiner_model)", choices=REFINERS),
    Param("critic_model", str, None, "critic=vlm: local folder of a transformers vision-language model + processor"),
    Param("refiner_model", str, None, "refiner=lm: local folder of a transformers causal LM + tokenizer"),
    Param("claim_threshold", float, None, "decomposed critic: margin by which a claim's caption must beat its"
          " contrasts (default 0: at least as high)"),
    Param("stop_score", float, None, "stop once the best score reaches this (e.g. 1 with the oracle)"),
    Param("keep_images", int, 16, "candidate images kept in the result (chain images are always kept)", low=1),
]


def sdedit_start(num_steps: int, strength: float) -> int:
    """Grid point SDEdit restarts from: n - ceil(strength * n) (strength 1: pure noise)."""
    return num_steps - math.ceil(strength * num_steps - 1e-9)


def plan(budget: Budget, steps: int, child_cost: int, num_samples: int | None, num_particles: int | None,
         num_rounds: int | None) -> tuple[int, int, int]:
    """(initial samples N, chains K, rounds R) with N*steps + R*K*child_cost <= budget.
    Values the caller left out are derived; values given are never shrunk (TTSInputError)."""
    rem = budget.remaining_nfe
    k_min = num_particles or 1
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


def round_cost(num_steps: int, refine: str, strength: float) -> int:
    """NFE of one chain's child: a fresh sample (refine="prompt") or an SDEdit from the head."""
    start = 0 if refine == "prompt" else sdedit_start(num_steps, strength)
    return num_steps - start


def minimum_nfe(steps: int, child_cost: int, num_samples: int | None, num_particles: int | None,
                num_rounds: int | None) -> int:
    """The least NFE a run needs: one initial sample per chain (or num_samples) plus one round
    (or num_rounds rounds) of one child per chain."""
    k = num_particles or 1
    return max(num_samples or k, k) * steps + k * child_cost * (num_rounds or 1)


def _min_budget(num_steps: int, o: dict) -> int:
    return minimum_nfe(num_steps, round_cost(num_steps, o["refine"], o["strength"]), o["num_samples"],
                       o["num_particles"], o["num_rounds"])


@register_searcher("reflect", "reflection loop (ReflectionFlow): best-of-N, keep top chains, then rounds of"
                   " critique -> refined prompt -> regenerate (new noise or SDEdit from the chain head) -> verify",
                   params=PARAMS, min_budget=_min_budget)
def reflect(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
            generator: torch.Generator | None = None, *, negative_prompt: str | None = None,
            **hyper: Any) -> SearchResult:
    """Hyper-parameters: see PARAMS (`tts-diffusion list --searcher reflect`)."""
    o = {**reflect.params.defaults(), **reflect.params.validate(hyper)}  # type: ignore[attr-defined]
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

    done = lambda: stop is not None and log.best is not None and log.best.score >= stop  # noqa: E731
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
            if done():
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
    settings = {"searcher": "reflect", "num_samples": n, "num_particles": k, "num_rounds": rounds,
                "rounds_run": len(chains[0]) - 1, "refine": o["refine"], "strength": o["strength"],
                "critic": critic_name, "refiner": o["refiner"], "verifier": verifier.name}
    result = log.result(settings)
    result.chains = chains
    return result
