"""EvoSearch (He et al. 2025, arXiv 2505.17618; tinnerhrhe/EvoSearch-codes `evosearch.py`),
with the time points indexed explicitly (REFERENCES.md sec. 8).

    schedule s_0 < ... < s_{G-1} (grid points), population sizes P_0 .. P_G
    draw P_0 noises x_T; advance them with the SDE to grid point s_0
    for g = 0 .. G-1:
        roll the population (at s_g) out to x_0 with the SDE, keeping a copy of every
            rollout at each later time point s_h (h > g): the archive at s_h
        score the rollouts with the verifier; each score belongs to the rollout's x_0 and to
            every latent it passed through (the archive rows and the population itself)
        pool = archive at s_g (earlier rollouts) + the population at s_g
        elites   = the top `elite_size` of the pool by score, copied unchanged
        parents  = P_{g+1} - elites tournaments: best of a random `tournament_fraction` of the pool
        mutate   s_g = 0 (x_T): child = sqrt(1 - beta^2) parent + beta eps   (beta = mutation_rate)
                 s_g > 0 (x_t): child = parent + sigma_t eps  (sigma_t: the std of the DDPM / SDE
                               step into grid point s_g, the sampler's own noise)
        advance the children (elites + mutated parents) to s_{g+1} (g = G-1: to the clean end)
    score the last generation; return the best sample seen anywhere

A latent "at s_g" is x before the denoiser step s_g (grid point s_g; 0 is pure noise): the
released code's cached latent is the output *after* step s_g, which it then steps again (the
off-by-one REFERENCES.md names); here every latent is stepped once per grid point. NFE:
`evo_spec.evo_nfe` (the paper's defaults at 50 steps: 5000 = best-of-100).

Every latent held between generations (population, rollouts, archive) is a particle of the
call: rows move only through `proc.select`, so T-GATE caches and RGBA attention state follow
each latent, and a parent taken from the archive resumes with the state it had there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..core.budget import Budget
from ..core.process import Conditioning, DenoisingProcess
from ..records.result import SearchResult
from ..verifiers.base import Verifier
from .common import SearchLog, stopped, unspent
from .evo_spec import EVO, plan
from .registry import register_searcher


@dataclass
class Bank:
    """Every latent the search holds, one row per particle of the call (same order):
    `point[r]` the time-point index the row is at, `reward[r]` its rollout's score (NaN until
    scored), `link[r]` the rollout row whose score it gets (-1: none pending)."""

    x: torch.Tensor
    point: torch.Tensor
    reward: torch.Tensor
    link: torch.Tensor

    def arrange(self, proc: DenoisingProcess, idx: torch.Tensor) -> None:
        """Keep rows `idx` in this order (repeats copy a row); the call's state follows."""
        self.x, self.point, self.reward, self.link = proc.select(idx, self.x, self.point, self.reward, self.link)

    def rows(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(mask).reshape(-1)


def mutation_std(proc: DenoisingProcess, i: int) -> float:
    """sigma_t of the x_t mutation at grid point i > 0: the std of the stochastic (eta = 1)
    step i-1 -> i of the process's family, the noise its SDE sampler injects there."""
    return proc.family.step_std(i - 1, 1.0)


def _advance_first(proc: DenoisingProcess, bank: Bank, p: int, i: int, cond: Conditioning, eta: float,
                   generator: torch.Generator | None) -> None:
    """One grid point i -> i+1 for the first p rows of the bank (the rows behind wait)."""
    xs = bank.x[:p]
    pred = proc.denoise(xs, i, cond)
    bank.x = torch.cat([proc.step(xs, i, pred, eta=eta, generator=generator), bank.x[p:]])


def tournament(rewards: torch.Tensor, n: int, fraction: float, generator: torch.Generator | None) -> list[int]:
    """n winners: each the best of a random subset of ceil(fraction * len) pool members
    (lowest index among equals)."""
    size = len(rewards)
    k = max(1, math.ceil(fraction * size - 1e-9))
    out = []
    for _ in range(n):
        subset = torch.randperm(size, generator=generator)[:k].sort().values
        out.append(int(subset[torch.argmax(rewards[subset])]))
    return out


@register_searcher(EVO)
def evo(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
        generator: torch.Generator | None, *, negative_prompt: str | None, evolution_schedule: Sequence[int] | None,
        population_size_schedule: Sequence[int] | None, elite_size: int, mutation_rate: float,
        tournament_fraction: float, eta: float, stop_score: float | None, keep_images: int) -> SearchResult:
    """Options: EVO in evo_spec.py (`tts-diffusion list --searcher evo`)."""
    n = proc.num_steps
    points, sizes, planned = plan(n, budget.remaining_nfe, evolution_schedule, population_size_schedule)
    last = len(points) - 1
    cond = proc.encode(prompt, negative_prompt)
    log = SearchLog(proc, verifier, prompt, budget, keep_images)
    generations = 0
    with proc.metered(budget):
        # draw P_0 noises and advance them to s_0
        x = proc.noise_from_seeds(proc.seeds(sizes[0], generator))
        x, _ = proc.sample(x, cond, 0, points[0], eta=eta, generator=generator)
        p0 = sizes[0]
        bank = Bank(x, torch.zeros(p0, dtype=torch.long), torch.full((p0,), math.nan, dtype=torch.float64),
                    torch.full((p0,), -1, dtype=torch.long))
        for g, s_g in enumerate(points):
            # roll the population (the unscored rows at s_g, first in the bank) out to x_0
            current = bank.rows((bank.point == g) & bank.reward.isnan())
            p = len(current)
            bank.link[current] = torch.arange(p)
            bank.arrange(proc, torch.cat([current, torch.arange(len(bank.x))]))
            bank.point[:p] = -1  # the rollout rows
            for i in range(s_g, n):
                if i in points[g + 1:]:  # keep a copy of each rollout at the later time point
                    bank.arrange(proc, torch.cat([torch.arange(p), torch.arange(len(bank.x))]))
                    bank.point[p : 2 * p] = points.index(i)
                    bank.link[p : 2 * p] = torch.arange(p)
                _advance_first(proc, bank, p, i, cond, eta, generator)
            scores = log.score_latents(bank.x[:p], None, [{"generation": g, "role": "rollout"}] * p).double()
            pending = bank.link >= 0
            bank.reward[pending] = scores[bank.link[pending]]
            bank.link[pending] = -1
            bank.arrange(proc, torch.arange(p, len(bank.x)))  # drop the rollouts (their x_0 is scored)
            generations = g + 1
            if stopped(log, stop_score):
                break
            # select the next generation from the pool at s_g: elites + tournament parents
            pool = bank.rows(bank.point == g)
            later = bank.rows(bank.point > g)
            r = bank.reward[pool]
            e = min(elite_size, sizes[g + 1], len(pool))
            elites = torch.argsort(r, descending=True, stable=True)[:e].tolist()
            parents = tournament(r, sizes[g + 1] - e, tournament_fraction, generator)
            children = pool[torch.tensor(elites + parents, dtype=torch.long)]
            bank.arrange(proc, torch.cat([children, later]))
            m = sizes[g + 1]
            # mutate the parents (the elites stay as they are)
            xs = bank.x[e:m]
            noise = proc.randn_like(xs, generator)
            if s_g == 0:
                xs = math.sqrt(1.0 - mutation_rate**2) * xs + mutation_rate * noise
            else:
                xs = xs + mutation_std(proc, s_g) * noise
            bank.x = torch.cat([bank.x[:e], xs.to(bank.x.dtype), bank.x[m:]])
            # advance the children to the next time point (after the last: to the clean end)
            end = points[g + 1] if g < last else n
            for i in range(s_g, end):
                _advance_first(proc, bank, m, i, cond, eta, generator)
            bank.point[:m] = g + 1
            bank.reward[:m] = math.nan
            if g == last:
                log.score_latents(bank.x[:m], None, [{"generation": g + 1, "role": "final"}] * m)
                generations = g + 2
                bank.arrange(proc, torch.arange(0))
    return log.result({"evolution_schedule": list(points), "population_size_schedule": list(sizes),
                       "planned_nfe": planned, "generations_run": generations, **unspent(budget, stop_score, log)})
