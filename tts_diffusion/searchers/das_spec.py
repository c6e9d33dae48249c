"""das's declaration (torch-free; the tempered SMC is in das.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import RESAMPLING, STOP_SCORE

TEMPERINGS = ("exp", "adaptive", "none")
PICKS = ("weight", "sample", "score")


def gradient_steps(num_steps: int) -> int:
    """Steps whose proposal follows the reward's gradient: the stochastic ones, every step but the
    last (which lands on the clean end without noise in every family)."""
    return max(0, num_steps - 1)


def particle_nfe(num_steps: int, gradient: bool) -> int:
    """NFE one particle costs over the grid (core/budget.py's rule): one denoiser forward a step
    and, with `gradient`, at every stochastic step one forward with a graph (1) and its backward
    (BACKWARD_NFE = 2) for grad_x r(x0_hat(x))."""
    return num_steps + (3 * gradient_steps(num_steps) if gradient else 0)


DAS = SearcherEntry.declare(
    "das", "DAS (Kim et al., ICLR 2025): tempered SMC towards p(x) exp(lambda r(x)), the reward weight rising "
           "from 0 over the steps, gradient-guided proposals; samples the KL-regularised target instead of "
           "maximising r (against reward over-optimisation)",
    params=[
        Param("num_particles", int, None, "particles K (default: as many as the budget pays for)", low=1),
        Param("reward_scale", float, 10.0, "lambda = 1/alpha (DAS's kl_coeff alpha, the weight of the KL to the base"
              " model): the target is p(x) exp(lambda r(x)) (DAS: alpha = 0.01 for CLIP, i.e. 100)", low=0.0),
        Param("tempering", str, "exp", "how the reward weight lambda_i / lambda rises over the steps: exp "
              "(min((1 + gamma)^i - 1, 1)), adaptive (the largest that keeps ESS >= adaptive_ess * K), none "
              "(1 from the start: untempered SMC)", choices=TEMPERINGS),
        Param("tempering_gamma", float, None, "gamma of the exp schedule (default: 2^(1 / (0.87 num_steps)) - 1, "
              "reaching 1 at 87% of the steps as DAS's gamma = 0.008 does over 100 steps)", low=0.0, low_open=True),
        Param("adaptive_ess", float, 0.5, "tempering=adaptive: the next weight is the largest that keeps the "
              "population's ESS >= this * K", low=0.0, high=1.0, low_open=True),
        Param("gradient", bool, True, "DAS's guided proposal: the step's mean moves by std^2 lambda_{i+1} lambda grad_x "
              "r(x0_hat(x)) through the denoiser, the decoder and the verifier (3 more NFE per particle and "
              "stochastic step; needs a differentiable verifier); off: the model's own steps"),
        Param("resample_threshold", float, 0.5, "resample when ESS < threshold * K (1: every step, 0: never)",
              low=0.0, high=1.0),
        RESAMPLING,
        Param("eta", float, 1.0, "noise of the stochastic steps (1: DDPM / the family's SDE; > 0: a deterministic "
              "step has no proposal density)", low=0.0, low_open=True),
        Param("pick", str, "weight", "the image returned: weight (DAS: the particle of largest final weight), "
              "sample (a draw from the final weights), score (the best verifier score, as smc)", choices=PICKS),
        STOP_SCORE,
    ],
    min_budget=lambda num_steps, o: (o["num_particles"] or 1) * particle_nfe(num_steps, o["gradient"]),
    needs_gradient=True, gradient_option="gradient")
