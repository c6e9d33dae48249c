"""fkc's declaration (torch-free; the Feynman-Kac correctors are in fkc.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import RESAMPLING, STOP_SCORE, eta

FKC_MODES = ("cfg", "anneal", "product")
FKC_VARIANTS = ("target_score", "tempered_noise")


def denoiser_calls(mode: str) -> int:
    """Denoiser calls per particle and step: two prompts' predictions in product mode, else one."""
    return 2 if mode == "product" else 1


FKC = SearcherEntry.declare(
    "fkc", "Feynman-Kac correctors: weighted SDE + resampling for CFG as p_u^(1-w) p_c^w, "
           "annealing p^beta, or the product of two prompts",
    params=[
        Param("mode", str, "cfg", "target: cfg p_u^(1-w) p_c^w, anneal p^beta, or product p(prompt)^beta "
              "p(prompt_2)^beta", choices=FKC_MODES),
        Param("guidance", float, None, "w of the cfg target (default: the process's guidance scale)"),
        Param("beta", float, None, "exponent of anneal (default 2) / product (default 1)", low=0.0, low_open=True),
        Param("prompt_2", str, None, "the second prompt of product mode (required there)"),
        Param("variant", str, "target_score", "annealing SDE (Skreta et al. 2025)", choices=FKC_VARIANTS),
        Param("num_particles", int, None, "particles K (default: as many as the budget pays for)", low=1),
        eta(),
        Param("resample_threshold", float, 1.0, "resample when ESS < threshold * K (1: every step, the paper's; "
              "0: never)", low=0.0, high=1.0),
        RESAMPLING,
        STOP_SCORE,
    ],
    min_budget=lambda num_steps, o: (o["num_particles"] or 1) * num_steps * denoiser_calls(o["mode"]))
