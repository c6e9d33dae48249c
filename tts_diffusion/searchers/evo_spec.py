"""evo's declaration (torch-free; EvoSearch is in evo.py), with the plan arithmetic (time
points, population sizes, NFE) that the search, its minimum budget and the tests share."""
from __future__ import annotations

from typing import Sequence

from ..errors import TTSInputError
from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import STOP_SCORE, eta

#: the paper's SD2.1 setting (EvoSearch-codes README): 50 steps, these time points and sizes
PAPER_STEPS = 50
PAPER_SCHEDULE = (0, 20, 30, 40)
PAPER_POPULATIONS = (42, 26, 26, 26, 30)


def default_schedule(num_steps: int) -> tuple[int, ...]:
    """The paper's time points (0, 20, 30, 40 of 50 steps) on a grid of `num_steps` (rounded,
    duplicates dropped)."""
    pts = sorted({min(num_steps - 1, round(s * num_steps / PAPER_STEPS)) for s in PAPER_SCHEDULE})
    return tuple(pts)


def check_schedule(schedule: Sequence[int], num_steps: int) -> tuple[int, ...]:
    s = tuple(int(v) for v in schedule)
    if not s or any(b <= a for a, b in zip(s, s[1:])) or s[0] < 0 or s[-1] >= num_steps:
        raise TTSInputError(f"evolution_schedule={list(s)} must be increasing grid points in [0, {num_steps - 1}]"
                            f" (the denoiser steps of {num_steps} steps)")
    return s


def evo_nfe(schedule: Sequence[int], populations: Sequence[int], num_steps: int) -> int:
    """NFE of a run (REFERENCES.md sec. 8): P_0 s_0 (first advance) + sum_g P_g (S - s_g)
    (the rollouts that score generation g) + sum_g P_{g+1} (s_{g+1} - s_g) (children
    advancing) + P_G (S - s_{G-1}) (the last generation to the end)."""
    s, p, n = list(schedule), list(populations), num_steps
    g = len(s)
    return (p[0] * s[0] + sum(p[k] * (n - s[k]) for k in range(g))
            + sum(p[k + 1] * (s[k + 1] - s[k]) for k in range(g - 1)) + p[g] * (n - s[g - 1]))


def scaled_populations(m: int, length: int) -> tuple[int, ...]:
    """The paper's sizes (42, 26, 26, 26, 30) scaled by m / 26 (m = 26: the paper's), as many
    as `length` (the last size stays the paper's last), each at least 1."""
    base = list(PAPER_POPULATIONS[: length - 1]) + [PAPER_POPULATIONS[-1]]
    while len(base) < length:  # longer schedules repeat the middle size
        base.insert(-1, PAPER_POPULATIONS[1])
    return tuple(max(1, round(b * m / 26)) for b in base)


def plan(num_steps: int, budget_nfe: int, schedule: Sequence[int] | None,
         populations: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(time points, population sizes, NFE) of a run: the schedule given or the paper's scaled
    to the grid; the sizes given, or the paper's proportions scaled to the largest that
    `budget_nfe` pays for, what is left going to P_0, then to P_G. TTSInputError when the budget is too small."""
    s = check_schedule(schedule if schedule is not None else default_schedule(num_steps), num_steps)
    if populations is not None:
        p = tuple(int(v) for v in populations)
        if len(p) != len(s) + 1 or min(p) < 1:
            raise TTSInputError(f"population_size_schedule={list(p)} needs {len(s) + 1} sizes >= 1 (one more than"
                                f" evolution_schedule={list(s)})")
    else:
        m, p = 1, scaled_populations(1, len(s) + 1)
        while evo_nfe(s, scaled_populations(m + 1, len(s) + 1), num_steps) <= budget_nfe:
            m += 1
            p = scaled_populations(m, len(s) + 1)
        # what the proportional sizes leave goes to P_0 (more initial noises), then to P_G
        for g in (0, len(p) - 1):
            while evo_nfe(s, p[:g] + (p[g] + 1,) + p[g + 1:], num_steps) <= budget_nfe:
                p = p[:g] + (p[g] + 1,) + p[g + 1:]
    nfe = evo_nfe(s, p, num_steps)
    if nfe > budget_nfe:
        raise TTSInputError(f"evo with evolution_schedule={list(s)} and population_size_schedule={list(p)} needs"
                            f" {nfe} NFE at {num_steps} steps; the budget has {budget_nfe}: raise the budget to at"
                            f" least {nfe} or pass smaller sizes / fewer time points")
    return s, p, nfe


def minimum_nfe(num_steps: int, o: dict) -> int:
    """The least NFE a run with options `o` needs (the sizes given, else all sizes 1)."""
    s = check_schedule(o["evolution_schedule"] or default_schedule(num_steps), num_steps)
    return evo_nfe(s, o["population_size_schedule"] or scaled_populations(1, len(s) + 1), num_steps)


EVO = SearcherEntry.declare(
    "evo", "EvoSearch: a population over x_T and intermediate x_t; rollouts scored, elites kept, tournament "
           "parents mutated (x_T: Gaussian perturbation, x_t: the SDE's own noise) at the evolution_schedule",
    params=[
        Param("evolution_schedule", tuple, None, "grid points where the population evolves (default: the paper's"
              " 0,20,30,40 of 50 steps, scaled to num_steps)"),
        Param("population_size_schedule", tuple, None, "population sizes P_0..P_G, one more than the schedule"
              " (default: the paper's 42,26,26,26,30 scaled to what the budget pays for, the rest to P_0 then"
              " P_G)"),
        Param("elite_size", int, 5, "best members of the archive kept unchanged per generation", low=1),
        Param("mutation_rate", float, 0.2, "beta: x_T children are sqrt(1-beta^2) parent + beta noise", low=0.0,
              high=1.0),
        Param("tournament_fraction", float, 0.9, "each parent is the best of a random subset of this share of the"
              " archive", low=0.0, high=1.0, low_open=True),
        eta("noise of the rollouts and of the steps between time points (1: DDPM / the family's SDE, as the"
            " paper)"),
        STOP_SCORE,
    ],
    min_budget=minimum_nfe)
