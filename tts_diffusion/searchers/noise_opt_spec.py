"""noise_opt's declaration (torch-free; the search is in noise_opt.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import STOP_SCORE

#: NFE of one optimisation iteration per noise and sampler step: the sampling forward (1), the
#: denoiser backward (core/budget.py BACKWARD_NFE = 2) and, with checkpointing, the forward
#: recomputed during the backward (1)
def iteration_nfe(num_steps: int, checkpointing: bool) -> int:
    return num_steps * (3 + int(bool(checkpointing)))


def _min_budget(num_steps: int, o: dict) -> int:
    n = o["num_samples"]
    steps = o["opt_steps"] or num_steps
    iterations = 1 if o["num_iterations"] is None else o["num_iterations"]
    return n * (iterations * iteration_nfe(steps, o["checkpointing"]) + num_steps)


NOISE_OPT = SearcherEntry.declare(
    "noise_opt", "gradient ascent on the initial noise (ReNO / DNO) through the sampler, the decoder and a "
    "differentiable verifier",
    params=[
        Param("num_samples", int, 1, "noises optimised side by side (independently; the best iterate of any wins)",
              low=1),
        Param("num_iterations", int, None, "gradient steps T (default: as many as the budget pays for, at least 1; each costs "
              "(3 + checkpointing) NFE per noise and step, plus one verifier call)", low=0),
        Param("learning_rate", float, 0.01, "Adam step size on the noise (DNO: 0.01)", low=0.0, low_open=True),
        Param("grad_clip", float, 1.0, "clip each noise's gradient to this norm before the Adam step (0: no clipping)",
              low=0.0),
        Param("reg_weight", float, 1.0, "gamma: weight of DNO's probability regulariser, which keeps the optimised "
              "noise typical of its Gaussian (0: off)", low=0.0),
        Param("eta", float, 0.0, "noise of the stochastic steps (0: the ODE; only the initial noise is optimised "
              "unless optimize_step_noise)", low=0.0),
        Param("optimize_step_noise", bool, False, "with eta > 0, optimise the noise injected at every stochastic "
              "step too (DNO); off: it stays fixed across iterations"),
        Param("checkpointing", bool, True, "gradient checkpointing through the denoiser: memory of one step, not "
              "the trajectory, for one recomputed forward (1 NFE per noise and step) per iteration"),
        Param("opt_steps", int, None, "optimise through a few-step schedule of this many steps (the same model, "
              "its grid subsampled), then sample the best noise once on the full grid (default: the full grid)",
              low=1),
        STOP_SCORE,
    ],
    min_budget=_min_budget, needs_gradient=True)
