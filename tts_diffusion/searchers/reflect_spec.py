"""reflect's declaration (torch-free; the loop is in reflect.py), with the NFE arithmetic
that both its `plan` and its minimum budget use."""
from __future__ import annotations

import math

from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import STOP_SCORE

REFINE_MODES = ("prompt", "image", "both")
CRITICS = ("feedback", "decomposed", "vlm", "none")
REFINERS = ("rules", "lm")


def sdedit_start(num_steps: int, strength: float) -> int:
    """Grid point SDEdit restarts from: n - ceil(strength * n) (strength 1: pure noise)."""
    return num_steps - math.ceil(strength * num_steps - 1e-9)


def round_cost(num_steps: int, refine: str, strength: float) -> int:
    """NFE of one chain's child: a fresh sample (refine="prompt") or an SDEdit from the head."""
    start = 0 if refine == "prompt" else sdedit_start(num_steps, strength)
    return num_steps - start


def fewest_chains(num_samples: int | None, num_particles: int | None) -> int:
    """Chains K of the cheapest run: num_particles if given; else `plan`'s default min(2, N)
    when num_samples N is given; else 1 (the smallest N a budget derives)."""
    if num_particles is not None:
        return num_particles
    return min(2, num_samples) if num_samples is not None else 1


def minimum_nfe(steps: int, child_cost: int, num_samples: int | None, num_particles: int | None,
                num_rounds: int | None) -> int:
    """The least NFE a run needs: one initial sample per chain (or num_samples) plus one round
    (or num_rounds rounds) of one child per chain (chains: `fewest_chains`)."""
    k = fewest_chains(num_samples, num_particles)
    return max(num_samples or k, k) * steps + k * child_cost * (num_rounds or 1)


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
        STOP_SCORE,
        Param("keep_images", int, 16, "candidate images kept in the result (chain images are always kept)", low=1),
    ],
    min_budget=lambda num_steps, o: minimum_nfe(num_steps, round_cost(num_steps, o["refine"], o["strength"]),
                                                o["num_samples"], o["num_particles"], o["num_rounds"]))
