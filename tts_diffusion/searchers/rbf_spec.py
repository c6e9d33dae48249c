"""The declarations of rbf, svdd and code (torch-free; the searches are in rbf.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import STOP_SCORE, eta

INTERPOLANTS = ("vp", "native")
GRIDS = ("native", "vp")

#: Kim et al. 2025 compare RBF, SVDD and CoDe at 10 steps and NFE 500; those are their defaults
PAPER_RUN = {"num_inference_steps": 10, "budget": 500}


def _stochastic_params() -> list[Param]:
    return [
        eta("noise of the stochastic steps (1: DDPM)"),
        Param("interpolant", str, "vp", "stochastic step on the VP-converted interpolant or the process's own",
              choices=INTERPOLANTS),
        Param("grid", str, "native", "the pipeline's grid or one uniform in VP time", choices=GRIDS),
    ]


RBF = SearcherEntry.declare(
    "rbf", "rollover budget forcing: flow ODE -> VP SDE, children per step until one improves "
           "the x0 reward, unspent NFE rolls over (Kim et al. 2025)",
    params=[
        Param("num_particles", int, 2, "chains C", low=1),
        Param("init_pool", int, 25, "initial noises per chain; each chain starts from the best", low=1),
        *_stochastic_params(),
        Param("child_batch", int, 1, "children proposed per chain and batch (1: the paper)", low=1),
        STOP_SCORE,
    ],
    run_defaults=PAPER_RUN,
    min_budget=lambda num_steps, o: o["num_particles"] * (o["init_pool"] + num_steps - 1))


def _blockwise_params(block_default: int) -> list[Param]:
    return [
        Param("num_particles", int, 2, "particles K", low=1),
        Param("num_children", int, None, "children M per particle and block (default: as many as the budget pays "
              "for)", low=1),
        Param("block", int, block_default, "stochastic steps each child runs before it is scored", low=1),
        Param("alpha", float, 0.0, "0: keep the best child; > 0: sample one with probability ~ exp(r / alpha)",
              low=0.0),
        *_stochastic_params(),
        STOP_SCORE,
    ]


def _blockwise_min_budget(num_steps: int, o: dict) -> int:
    k = o["num_particles"]
    return k + k * (o["num_children"] or 1) * (num_steps - 1)


SVDD = SearcherEntry.declare(
    "svdd", "SVDD-style greedy search: per step, the best of M stochastic children by the reward of their x0 "
            "estimate",
    params=_blockwise_params(1), run_defaults=PAPER_RUN, min_budget=_blockwise_min_budget)
CODE = SearcherEntry.declare(
    "code", "CoDe: blockwise search, the best of M children each run a block of stochastic steps",
    params=_blockwise_params(2), run_defaults=PAPER_RUN, min_budget=_blockwise_min_budget)
