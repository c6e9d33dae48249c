"""NFE arithmetic of the built-in searchers, without torch: each searcher's `plan` and
`min_budget` (what `tts-diffusion list --searcher NAME` prints) use these same functions,
so the minimum a run checks and the minimum `list` reports cannot drift apart."""
from __future__ import annotations

import math

from ..errors import TTSInputError


# ------------------------------------------------------------ search over paths (paths.py)
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


# ---------------------------------------------------------------- reflection (reflect.py)
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
