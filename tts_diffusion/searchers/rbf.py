"""Rollover budget forcing (Kim et al. 2025, "Inference-Time Scaling for Flow Models via
Stochastic Generation and Rollover Budget Forcing") and the per-step
baselines it is compared with: SVDD-style greedy children (Li et al. 2024) and CoDe blocks
(Singh et al. 2025).

Stochastic generation. Flow models sample with an ODE; particle search needs randomness.
Every step here is a draw from the VP-converted sampler: x is mapped to the variance-
preserving interpolant with the same SNR (x_vp = c x, `Family.vp_scale`), takes one
DDPM / DDIM(eta) step of the VP SDE there and is mapped back (`Family.vp_transition`: the
paper's "SDE conversion" and "interpolant conversion"); for DDPM-family models this is
their own ancestral step, and for flow models whose process uses the "ddim" SDE schedule
it coincides with the process's own step (DDIM(eta) is covariant under the scale change).
`grid="vp"` also re-spaces the grid points uniformly in VP time (`Family.vp_regrid`, the
time reparametrisation); the default keeps the pipeline's grid.

Rollover budget forcing (RBF). `chains` independent chains (default 2). Each starts from the
best of an initial pool of `init_pool` noises (25) by the verifier's score of their Tweedie
estimates x0_hat. The remaining budget is split evenly over the chains and, per chain, over
the search steps (grid points 1 .. n-1): a per-step NFE quota. At a step a chain proposes
children x_{i+1} ~ p(. | x_i) one at a time, each costing one NFE (its denoiser evaluation,
which gives its x0_hat, scored, and is reused for its own next step). The first child whose
reward beats the chain's best so far is taken at once and the unspent quota rolls over to
the next step; if the quota runs out, the best child of the step is taken. The last search
step spends everything that is left. A final deterministic step (no NFE) goes to the clean
end; the final samples are scored and the best is returned. Paper defaults: 10 steps,
NFE 500, pool 25, 2 chains; with NFE 500 each chain gets (500 - 50) / 2 / 9 = 25 NFE per step.
As in the authors' code (KAIST-Visual-AI-Group/Flow-Inference-Time-Scaling, rbf/rbf.py) a
child is compared with the chain's best reward so far, a step whose quota runs out takes
its best child, and the last search step spends what is left.

SVDD ("svdd"): each of `particles` particles draws `children` children per step (all in one
batch), scores their x0_hat and keeps the best (greedy; `alpha > 0` samples the child with
probability ~ exp(r / alpha), SVDD's soft value decoding). CoDe ("code"): the same over
blocks of `block` steps: each child runs `block` stochastic steps before it is scored.
Both spend NFE = particles + particles * children * (n - 1) (children from the budget),
and call `proc.reindex` when children are expanded from their parents and when the best
child is kept, so per-particle model state follows. RBF's chains move one child at a time
and keep no per-row model state between denoiser calls; it does not call `reindex`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.budget import Budget
from ..core.process import Conditioning, DenoisingProcess, Prediction
from ..core.result import SearchResult
from ..errors import TTSInputError
from ..verifiers.base import Verifier
from .base import register_searcher
from .best_of_n import full_samples
from .common import SearchLog

RewardFn = Callable[[torch.Tensor], torch.Tensor]
INTERPOLANTS = ("vp", "native")
GRIDS = ("native", "vp")


def stochastic_step(proc: DenoisingProcess, x: torch.Tensor, i: int, pred: Prediction, eta: float,
                    generator: torch.Generator | None, interpolant: str = "vp") -> torch.Tensor:
    """One stochastic step i -> i+1: on the VP-converted interpolant (default) or with the
    process's own stochastic transition."""
    if interpolant == "native":
        return proc.step(x, i, pred, eta=eta, generator=generator)
    mean, std = proc.family.vp_transition(x, i, pred.x0, pred.eps, eta)
    if std == 0.0:
        return mean
    return mean + std * proc.randn_like(x, generator)


def _process_for(proc: DenoisingProcess, grid: str) -> DenoisingProcess:
    if grid not in GRIDS:
        raise TTSInputError(f"unknown grid {grid!r}; choose from {GRIDS}")
    if grid == "native":
        return proc
    return proc.with_grid(*proc.family.vp_regrid())


@dataclass
class ChainResult:
    x: torch.Tensor  # [C, ...] final samples (clean end)
    tweedie_rewards: torch.Tensor  # [C] best x0_hat reward each chain reached
    nfe: int
    rollovers: int = 0  # early acceptances
    forced: int = 0  # steps that ran out of quota
    quotas: list[list[int]] = field(default_factory=list)  # per chain, the quota of every step


@torch.no_grad()
def rollover_budget_forcing(proc: DenoisingProcess, cond: Conditioning, reward_fn: RewardFn, nfe: int,
                            generator: torch.Generator | None = None, *, chains: int = 2, init_pool: int = 25,
                            eta: float = 1.0, interpolant: str = "vp", child_batch: int = 1) -> ChainResult:
    """RBF with at most `nfe` denoiser evaluations (module docstring). child_batch > 1
    proposes that many children of a chain in one batch (faster on a GPU; children after
    an accepted one are still paid for, as they were evaluated)."""
    n = proc.num_steps
    c, pool = int(chains), int(init_pool)
    search_steps = n - 1
    if c < 1 or pool < 1 or c * (pool + search_steps) > nfe:
        raise TTSInputError(f"RBF with {c} chains, a pool of {pool} and {n} steps needs at least "
                            f"{c * (pool + search_steps)} NFE, the budget has {nfe}")
    child_batch = max(1, int(child_batch))
    spent = 0
    # 1. initial pool at grid point 0: keep each chain's best noise by the reward of its x0_hat
    x = proc.sample_noise(c * pool, generator)
    pred = proc.denoise(x, 0, cond)
    spent += c * pool
    r = reward_fn(pred.x0).double().reshape(c, pool)
    best_j = r.argmax(1)
    pick = torch.arange(c) * pool + best_j
    xs = [x[int(p)][None] for p in pick]
    preds = [pred.index(slice(int(p), int(p) + 1)) for p in pick]
    best = [float(r[j, best_j[j]]) for j in range(c)]
    at = [0] * c  # grid point of each chain's current state
    share, extra = divmod(nfe - c * pool, c)  # children NFE per chain (the first `extra` get one more)
    base = share // search_steps if search_steps else 0
    left = [share + (j < extra) for j in range(c)]  # children budget left per chain
    quota = [min(base, left[j]) if search_steps > 1 else left[j] for j in range(c)]
    used = [0] * c
    step_best: list[tuple[float, torch.Tensor, Prediction] | None] = [None] * c
    res = ChainResult(x, torch.zeros(c), 0, quotas=[[q] if search_steps else [] for q in quota])

    def advance(j: int, new_x: torch.Tensor, new_pred: Prediction, leftover: int) -> None:
        xs[j], preds[j] = new_x, new_pred
        at[j] += 1
        used[j] = 0
        step_best[j] = None
        if at[j] < n - 1:
            last = at[j] == n - 2
            quota[j] = left[j] if last else min(left[j], base + leftover)
            res.quotas[j].append(quota[j])

    # 2. search steps: children of grid point i land on i + 1 (1 NFE each)
    while True:
        active = [j for j in range(c) if at[j] < n - 1]
        if not active:
            break
        for i in sorted({at[j] for j in active}):
            group = [j for j in active if at[j] == i]
            last_step = i + 1 == n - 1
            # the last search step has no early acceptance: all its children go in one batch
            m = {j: quota[j] - used[j] if last_step else min(child_batch, quota[j] - used[j]) for j in group}
            parent_x = torch.cat([xs[j].expand(m[j], *xs[j].shape[1:]) for j in group])
            parent_pred = _cat_preds([preds[j] for j in group], [m[j] for j in group])
            kids = stochastic_step(proc, parent_x, i, parent_pred, eta, generator, interpolant)
            kid_pred = proc.denoise(kids, i + 1, cond)
            spent += kids.shape[0]
            kid_r = reward_fn(kid_pred.x0).double().cpu()
            row = 0
            for j in group:
                accepted = None
                for q in range(m[j]):
                    rr = float(kid_r[row + q])
                    used[j] += 1
                    left[j] -= 1
                    if step_best[j] is None or rr > step_best[j][0]:
                        step_best[j] = (rr, kids[row + q][None], kid_pred.index(slice(row + q, row + q + 1)))
                    if not last_step and rr > best[j] and accepted is None:
                        accepted = q
                if accepted is not None:  # rollover: take it, carry the unspent quota over
                    rr = float(kid_r[row + accepted])
                    best[j] = rr
                    res.rollovers += 1
                    advance(j, kids[row + accepted][None], kid_pred.index(slice(row + accepted, row + accepted + 1)),
                            quota[j] - used[j])
                elif used[j] >= quota[j]:  # budget forcing: the best child of the step
                    rr, bx, bp = step_best[j]
                    best[j] = max(best[j], rr)
                    if not last_step:
                        res.forced += 1
                    advance(j, bx, bp, 0)
                row += m[j]
    # 3. a deterministic last step to the clean end (no NFE)
    finals = [proc.step(xs[j], n - 1, preds[j], eta=0.0) for j in range(c)]
    res.x = torch.cat(finals)
    res.tweedie_rewards = torch.tensor(best)
    res.nfe = spent
    return res


def _cat_preds(preds: list[Prediction], reps: list[int]) -> Prediction:
    def cat(field_: str):
        parts = [getattr(p, field_) for p in preds]
        if parts[0] is None:
            return None
        return torch.cat([t.expand(r, *t.shape[1:]) for t, r in zip(parts, reps)])

    return Prediction(preds[0].i, cat("out"), cat("x0"), cat("eps"), cat("cond_out"), cat("uncond_out"))


@torch.no_grad()
def blockwise_search(proc: DenoisingProcess, cond: Conditioning, reward_fn: RewardFn, nfe: int,
                     generator: torch.Generator | None = None, *, particles: int = 2, children: int | None = None,
                     block: int = 1, alpha: float = 0.0, eta: float = 1.0, interpolant: str = "vp") -> ChainResult:
    """SVDD (block = 1) / CoDe (block > 1): per block, `children` children per particle
    run `block` stochastic steps in one batch; each particle keeps its best child (alpha = 0)
    or samples one with probability ~ exp(r / alpha)."""
    n = proc.num_steps
    k, block = int(particles), max(1, int(block))
    if children is None:
        children = (nfe - k) // (k * max(1, n - 1)) if n > 1 else 1
    m = int(children)
    if k < 1 or m < 1 or k + k * m * (n - 1) > nfe:
        raise TTSInputError(f"{k} particles with {m} children per step over {n} steps need "
                            f"{k + k * max(1, m) * (n - 1)} NFE, the budget has {nfe}")
    x = proc.sample_noise(k, generator)
    pred = proc.denoise(x, 0, cond)
    spent = k
    best = torch.full((k,), -torch.inf, dtype=torch.float64)
    i = 0
    while i < n - 1:
        j_end = min(i + block, n - 1)
        # every particle's m children, side by side: rows p*m .. p*m + m - 1
        parents = torch.arange(k, device=x.device).repeat_interleave(m)
        y, p = x[parents], pred.index(parents)
        proc.select(parents)
        for t in range(i, j_end):
            y = stochastic_step(proc, y, t, p, eta, generator, interpolant)
            p = proc.denoise(y, t + 1, cond)
            spent += y.shape[0]
        r = reward_fn(p.x0).double().cpu().reshape(k, m)
        if alpha > 0:
            choice = torch.multinomial(torch.softmax(r / alpha, 1), 1, generator=generator).reshape(k)
        else:
            choice = r.argmax(1)
        rows = (torch.arange(k) * m + choice).to(y.device)
        x, pred = y[rows], p.index(rows)
        proc.select(rows)
        best = r[torch.arange(k), choice]
        i = j_end
    x = proc.step(x, n - 1, pred, eta=0.0)
    return ChainResult(x, best, spent)


def _prepare(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget, negative_prompt: str | None,
             interpolant: str, grid: str, keep_images: int) -> tuple[DenoisingProcess, Conditioning, SearchLog]:
    """Checks shared by rbf / svdd / code (interpolant and grid names, at least one full
    sample in the budget); returns the process on the chosen grid, the conditioning and the log."""
    if interpolant not in INTERPOLANTS:
        raise TTSInputError(f"unknown interpolant {interpolant!r}; choose from {INTERPOLANTS}")
    run_proc = _process_for(proc, grid)
    full_samples(budget, run_proc.num_steps)
    cond = run_proc.encode(prompt, negative_prompt)
    return run_proc, cond, SearchLog(run_proc, verifier, prompt, budget, keep_images)


def _finish(log: SearchLog, res: ChainResult, settings: dict) -> SearchResult:
    info = [{"chain": j, "tweedie_reward": float(res.tweedie_rewards[j])} for j in range(res.x.shape[0])]
    log.score_latents(res.x, None, info)
    return log.result({**settings, "search_nfe": res.nfe})


#: Kim et al. 2025 compare RBF, SVDD and CoDe at 10 steps and NFE 500; those are their defaults
PAPER_RUN = {"num_inference_steps": 10, "budget": 500}


@register_searcher("rbf", "rollover budget forcing: flow ODE -> VP SDE, children per step until one improves "
                          "the x0 reward, unspent NFE rolls over (Kim et al. 2025)", run_defaults=PAPER_RUN)
def rbf(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
        generator: torch.Generator | None = None, *, negative_prompt: str | None = None, chains: int = 2,
        init_pool: int = 25, eta: float = 1.0, interpolant: str = "vp", grid: str = "native",
        child_batch: int = 1, keep_images: int = 16) -> SearchResult:
    """chains / init_pool: the paper's 2 chains from a pool of 25 noises (each shrunk to what
    the budget pays for, down to a single chain and pool of one = one stochastic sample);
    eta: noise of the stochastic steps (1: DDPM); interpolant: "vp" (converted, default)
    or "native" (the process's own stochastic step); grid: "native" or "vp" (uniform VP time);
    child_batch: children proposed per chain and batch."""
    run_proc, cond, log = _prepare(proc, verifier, prompt, budget, negative_prompt, interpolant, grid, keep_images)
    n, nfe = run_proc.num_steps, budget.remaining_nfe
    c = max(1, min(int(chains), nfe // n))
    pool = max(1, min(int(init_pool), nfe // c - (n - 1)))
    with run_proc.metered(budget):
        res = rollover_budget_forcing(run_proc, cond, log.score_intermediate, nfe, generator, chains=c,
                                      init_pool=pool, eta=eta, interpolant=interpolant, child_batch=child_batch)
    return _finish(log, res, {"searcher": "rbf", "chains": c, "init_pool": pool, "eta": eta,
                              "interpolant": interpolant, "grid": grid, "child_batch": child_batch,
                              "verifier": verifier.name, "rollovers": res.rollovers, "forced_steps": res.forced,
                              "quotas": res.quotas})


def _blockwise_searcher(name: str, block_default: int):
    def search(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
               generator: torch.Generator | None = None, *, negative_prompt: str | None = None, particles: int = 2,
               children: int | None = None, block: int = block_default, alpha: float = 0.0, eta: float = 1.0,
               interpolant: str = "vp", grid: str = "native", keep_images: int = 16) -> SearchResult:
        run_proc, cond, log = _prepare(proc, verifier, prompt, budget, negative_prompt, interpolant, grid,
                                       keep_images)
        nfe = budget.remaining_nfe
        k = max(1, min(int(particles), nfe // run_proc.num_steps))
        with run_proc.metered(budget):
            res = blockwise_search(run_proc, cond, log.score_intermediate, nfe, generator, particles=k,
                                   children=children, block=block, alpha=alpha, eta=eta, interpolant=interpolant)
        return _finish(log, res, {"searcher": name, "particles": k, "block": block, "alpha": alpha, "eta": eta,
                                  "interpolant": interpolant, "grid": grid, "verifier": verifier.name})

    search.__name__ = name
    search.__doc__ = (f"{name}: particles, children per step (default: what the budget pays for), block "
                      f"(default {block_default}), alpha (0: greedy), eta, interpolant, grid.")
    return search


svdd = register_searcher("svdd", "SVDD-style greedy search: per step, the best of M stochastic children by the "
                                 "reward of their x0 estimate", run_defaults=PAPER_RUN)(_blockwise_searcher("svdd", 1))
code = register_searcher("code", "CoDe: blockwise search, the best of M children each run a block of "
                                 "stochastic steps", run_defaults=PAPER_RUN)(_blockwise_searcher("code", 2))
