"""paths' declaration (torch-free; the search is in paths.py), with the schedule arithmetic
that both the search and its minimum budget use, so the minimum a run checks and the one
`list` prints cannot drift apart."""
from __future__ import annotations

from ..errors import TTSInputError
from ..params import Param
from .declaration import SearcherEntry
from .vocabulary import STOP_SCORE


def path_schedule(num_steps: int, start: int, delta_f: int, delta_b: int) -> list[tuple[int, int, int]]:
    """The (i, j, k) of each iteration: paths at grid point i are noised back to j = i - Delta_f
    and sampled forward to k = min(j + Delta_b, num_steps)."""
    if not 0 <= start <= num_steps:
        raise TTSInputError(f"the search must start at a grid point in [0, {num_steps}], got {start}")
    if not 1 <= delta_f < delta_b:
        raise TTSInputError(f"need 1 <= delta_f < delta_b (paths must move toward the clean end), got {delta_f}, {delta_b}")
    out, i = [], start
    while i < num_steps:
        j = max(0, i - delta_f)
        k = min(j + delta_b, num_steps)
        out.append((i, j, k))
        i = k
    return out


def path_cost(num_steps: int, num_particles: int, num_children: int, start: int, delta_f: int,
              delta_b: int) -> tuple[int, int]:
    """(NFE, verifier calls) of one search over paths."""
    n, m = num_particles, num_children
    sched = path_schedule(num_steps, start, delta_f, delta_b)
    return n * start + sum(n * m * (k - j) for _, j, k in sched), n * m * len(sched)


def resolve_schedule(num_steps: int, start: int | None, delta_f: int | None,
                     delta_b: int | None) -> tuple[int, int, int]:
    """(start, delta_f, delta_b) with the defaults filled in: start num_steps // 4,
    delta_f num_steps // 10 and delta_b num_steps // 5 (at least 1 and delta_f + 1)."""
    start = num_steps // 4 if start is None else int(start)
    delta_f = max(1, num_steps // 10) if delta_f is None else int(delta_f)
    delta_b = max(delta_f + 1, num_steps // 5) if delta_b is None else int(delta_b)
    return start, delta_f, delta_b


def _min_budget(num_steps: int, o: dict) -> int:
    # sigma needs the process's noise levels; without it the default start is used
    start, delta_f, delta_b = resolve_schedule(num_steps, o["start"], o["delta_f"], o["delta_b"])
    return path_cost(num_steps, o["num_particles"] or 1, o["num_children"], start, delta_f, delta_b)[0]


PATHS = SearcherEntry.declare(
    "paths", "search over paths: branch noisy paths forward, denoise back, keep the best",
    params=[
        Param("num_particles", int, None, "paths N kept after each round (default: as many as the budget pays for)",
              low=1),
        Param("num_children", int, 4, "children M per path per round", low=1),
        Param("sigma", float, None, "noise level in [0, 1] where branching starts (alternative to start)", low=0.0,
              high=1.0),
        Param("start", int, None, "grid point where branching starts (default: num_steps // 4)", low=0),
        Param("delta_f", int, None, "grid points each path is noised back per round (default: num_steps // 10, >= 1)",
              low=1),
        Param("delta_b", int, None, "grid points children are denoised forward per round (default: num_steps // 5, "
              ">= delta_f + 1)", low=2),
        STOP_SCORE,
    ],
    min_budget=_min_budget)
