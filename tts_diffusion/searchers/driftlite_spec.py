"""driftlite's declaration (torch-free; the sampler is in driftlite.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import RESAMPLING, STOP_SCORE, eta

CONTROLS = ("vcg", "ecg", "none")
TARGETS = ("tilt", "anneal", "both", "product")


def nfe_per_step(control: str, probes: int) -> int:
    """NFE a particle-step costs (core/budget.py's rule): the denoiser forward (1; run with a
    graph when the score's divergence is needed) and, for VCG and ECG (their log p basis),
    `probes` Hutchinson probes of div(score), each a denoiser backward (2 NFE)."""
    return 1 + (2 * probes if control in ("vcg", "ecg") else 0)


DRIFTLITE = SearcherEntry.declare(
    "driftlite", "DriftLite (Ren et al. 2026): guided SMC whose control drift, fitted by a small linear solve at "
                 "every step, keeps the weights stable; targets p exp(lambda r), p^beta or both",
    params=[
        Param("control", str, "vcg", "vcg: variance-controlling (bases grad r, score, forward drift); ecg: "
              "energy-controlling (Ritz; scalar bases r, log p where the model gives it, |x|^2/2); none: G-SMC",
              choices=CONTROLS),
        Param("target", str, "tilt", "tilt: p(x) exp(lambda r(x)); anneal: p(x)^beta; both: p^beta exp(lambda r); "
              "product (of experts) is future work in the paper and refused", choices=TARGETS),
        Param("reward_scale", float, 10.0, "lambda of the tilt (tilt, both); 10 as smc and das", low=0.0),
        Param("beta", float, 2.0, "exponent of the annealed target (anneal, both)", low=0.0, low_open=True),
        Param("num_particles", int, None, "particles K (default: as many as the budget pays for)", low=1),
        Param("probes", int, 1, "Hutchinson probes per Laplacian (of the reward and of log p; exact in 1-D)",
              low=1),
        Param("ridge", float, 1e-6, "relative ridge on the control's linear system (bases collinear as t -> 0)",
              low=0.0),
        Param("resample_threshold", float, 0.5, "resample when ESS < threshold * K (1: every step, 0: never)",
              low=0.0, high=1.0),
        RESAMPLING,
        eta(),
        STOP_SCORE,
    ],
    min_budget=lambda num_steps, o: (o["num_particles"] or 1) * num_steps * nfe_per_step(o["control"], o["probes"]))
