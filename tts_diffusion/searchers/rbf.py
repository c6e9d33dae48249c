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

Rollover budget forcing (RBF), per chain (`num_particles` chains, default 2):

    x <- the best of `init_pool` noises (25) by the verifier's score of its x0_hat
    for each search step (grid points 0 .. n-2), with quota = share + what rolled over:
        propose children x' ~ p(. | x) one at a time (1 NFE each: its denoiser evaluation,
        which gives x0_hat(x'), scored, and is reused for its own next step)
        the first child whose reward beats the chain's best so far is taken at once and the
            unspent quota rolls over to the next step
        if the quota runs out, the best child of the step is taken (budget forcing)
    a deterministic last step (no NFE) to the clean end; the final samples are scored

The NFE left after the pools is split evenly over the chains and, per chain, over the search
steps (grid points 1 .. n-1); the last search step spends everything that is left. Paper
defaults: 10 steps, NFE 500, pool 25, 2 chains; with NFE 500 each chain gets
(500 - 50) / 2 / 9 = 25 NFE per step. As in the authors' code
(KAIST-Visual-AI-Group/Flow-Inference-Time-Scaling, rbf/rbf.py) a child is compared with
the chain's best reward so far, a step whose quota runs out takes its best child, and the
last search step spends what is left. Chains at the same grid point propose in one batch;
the population (each chain's state and its best child of the step) is kept as named rows
(`NamedRows`), moved only through `proc.select`, so per-particle model state follows.

SVDD ("svdd"): each of `num_particles` particles draws `num_children` children per step (all
in one batch), scores their x0_hat and keeps the best (greedy; `alpha > 0` samples the child
with probability ~ exp(r / alpha), SVDD's soft value decoding). CoDe ("code"): the same over
blocks of `block` steps: each child runs `block` stochastic steps before it is scored.
Both spend NFE = K + K M (n - 1) (M from the budget by default) and move particles through
`proc.select` when children are expanded from their parents and when the best child is kept.
A budget that cannot pay for the requested particles / chains is an error (never shrunk).

Stop when satisfied (`stop_score`, all three): every round here already scores Tweedie
estimates (RBF's initial pool and each batch of children, a block's children in SVDD /
CoDe); at the first whose best reward reaches stop_score the search ends, and that state
alone runs the stochastic steps to the clean end (`finish_alone`: 1 NFE a step, what
`num_children=1` would spend); the NFE not spent is reported (`settings["unspent_nfe"]`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..core.budget import Budget
from ..core.process import Conditioning, DenoisingProcess, Prediction
from ..records.result import SearchResult
from ..errors import TTSInputError
from ..verifiers.base import Verifier
from .common import SearchLog, full_samples, reached, unspent
from .rbf_spec import CODE, GRIDS, INTERPOLANTS, RBF, SVDD
from .declaration import SearcherEntry
from .registry import register_searcher

RewardFn = Callable[[torch.Tensor], torch.Tensor]


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


def finish_alone(proc: DenoisingProcess, cond: Conditioning, x: torch.Tensor, pred: Prediction, i: int,
                 eta: float, generator: torch.Generator | None, interpolant: str) -> torch.Tensor:
    """Stop when satisfied: the state `x` at grid point i (its prediction `pred`) runs the
    stochastic steps to grid point n-1 (1 NFE each) and the deterministic last step (no NFE)."""
    for t in range(i, proc.num_steps - 1):
        x = stochastic_step(proc, x, t, pred, eta, generator, interpolant)
        pred = proc.denoise(x, t + 1, cond)
    return proc.step(x, proc.num_steps - 1, pred, eta=0.0)


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
    stopped_at: int | None = None  # the grid point where a Tweedie reward reached stop_score


# ------------------------------------------------------------------ bookkeeping
def _cat_preds(a: Prediction, b: Prediction) -> Prediction:
    """Two predictions' rows, one after the other (the rows may be at different grid points;
    each row's own grid point is tracked by its chain)."""
    def cat(name: str):
        u, v = getattr(a, name), getattr(b, name)
        return None if u is None or v is None else torch.cat([u, v])

    return Prediction(a.i, cat("out"), cat("x0"), cat("eps"), cat("cond_out"), cat("uncond_out"))


class NamedRows:
    """The particle population as named rows (a chain's state, its best child of the step).

    Every change of the population goes through `proc.select`, so per-particle model state
    registered on the call (core/state.py) follows the rows: `expand` puts children (copies
    of their parents) first and the named rows after them, `children_step` replaces the
    children by their next state, `compact` keeps the named rows only."""

    def __init__(self, proc: DenoisingProcess, x: torch.Tensor, pred: Prediction, names: list[Any]):
        self.proc, self.x, self.pred = proc, x, pred
        self.row = {name: r for r, name in enumerate(names)}

    def expand(self, parents: list[tuple[Any, int]]) -> tuple[torch.Tensor, Prediction]:
        """m copies of each named parent as rows 0..M-1 (in order), the named rows after them."""
        idx = [self.row[name] for name, m in parents for _ in range(m)]
        first = len(idx)
        names = list(self.row)
        idx += [self.row[name] for name in names]
        self.x, self.pred = self.proc.select(idx, self.x, self.pred)
        self.row = {name: first + k for k, name in enumerate(names)}
        return self.x[:first], self.pred.index(slice(0, first))

    def children_step(self, kids: torch.Tensor, kid_pred: Prediction) -> None:
        """Rows 0..M-1 (the copies made by `expand`) become the children's new states."""
        m = kids.shape[0]
        self.x = torch.cat([kids, self.x[m:]])
        self.pred = _cat_preds(kid_pred, self.pred.index(slice(m, self.x.shape[0])))

    def name(self, name: Any, row: int) -> None:
        self.row[name] = row

    def drop(self, name: Any) -> int | None:
        return self.row.pop(name, None)

    def compact(self) -> None:
        """Keep the named rows only, in naming order."""
        names = list(self.row)
        self.x, self.pred = self.proc.select([self.row[name] for name in names], self.x, self.pred)
        self.row = {name: k for k, name in enumerate(names)}


@dataclass
class Chain:
    """One RBF chain: its reward bar, its children budget and the current step's quota."""

    best: float  # best x0_hat reward the chain has reached (the bar a child must beat)
    left: int  # children NFE left
    base: int  # per-step share of the chain's budget
    at: int = 0  # grid point of the chain's state
    quota: int = 0  # NFE of the current step
    used: int = 0  # NFE spent in the current step
    step_best: float | None = None  # best child reward of the current step
    quotas: list[int] = field(default_factory=list)

    def start_step(self, num_steps: int, rollover: int) -> None:
        """The quota of the step from grid point `at`: the share plus what rolled over; the
        last search step gets everything left."""
        last = self.at == num_steps - 2
        self.quota = self.left if last else min(self.left, self.base + rollover)
        self.used, self.step_best = 0, None
        self.quotas.append(self.quota)

    def proposals(self, child_batch: int, last: bool) -> int:
        """Children to propose now (the last search step proposes all of its quota at once)."""
        return self.quota - self.used if last else min(child_batch, self.quota - self.used)

    def consider(self, rewards: list[float], last: bool) -> tuple[int | None, int | None]:
        """Pay for the children (in proposal order); returns (the first child that beats the
        chain's best, if any and not on the last step; the step's new best child, if any)."""
        accepted = new_best = None
        for q, r in enumerate(rewards):
            self.used += 1
            self.left -= 1
            if self.step_best is None or r > self.step_best:
                self.step_best, new_best = r, q
            if not last and accepted is None and r > self.best:
                accepted = q
        return accepted, new_best


@torch.no_grad()
def rollover_budget_forcing(proc: DenoisingProcess, cond: Conditioning, reward_fn: RewardFn, nfe: int,
                            generator: torch.Generator | None = None, *, num_particles: int = 2,
                            init_pool: int = 25, eta: float = 1.0, interpolant: str = "vp",
                            child_batch: int = 1, stop_score: float | None = None) -> ChainResult:
    """RBF with at most `nfe` denoiser evaluations (module docstring); `num_particles` chains.
    child_batch > 1 proposes that many children of a chain in one batch (faster on a GPU;
    children after an accepted one are still paid for, as they were evaluated). Chains at
    the same grid point propose in one batch. stop_score: the first pool / batch of children
    whose best reward reaches it ends the search; that state alone finishes (`finish_alone`)."""
    n, c, pool = proc.num_steps, int(num_particles), int(init_pool)
    search_steps = n - 1
    if c < 1 or pool < 1 or c * (pool + search_steps) > nfe:
        raise TTSInputError(f"RBF with num_particles={c} chains, init_pool={pool} and {n} steps needs at least "
                            f"{c * (pool + search_steps)} NFE, the budget has {nfe}")
    child_batch = max(1, int(child_batch))
    res = ChainResult(torch.zeros(0), torch.zeros(c), 0)

    # 1. initial pool at grid point 0: each chain starts from the best of its `pool` noises by r(x0_hat)
    x = proc.sample_noise(c * pool, generator)
    pred = proc.denoise(x, 0, cond)
    spent = c * pool
    r0 = reward_fn(pred.x0).double().cpu().reshape(c, pool)
    if (hit := reached(r0, stop_score)) is not None:  # satisfied by a noise of the pool
        x, pred = proc.select([hit], x, pred)
        res.x = finish_alone(proc, cond, x, pred, 0, eta, generator, interpolant)
        res.tweedie_rewards = r0.reshape(-1)[[hit]]
        res.nfe, res.stopped_at = spent + n - 1, 0
        return res
    start = r0.argmax(1)
    x, pred = proc.select(torch.arange(c) * pool + start, x, pred)
    pop = NamedRows(proc, x, pred, [("chain", j) for j in range(c)])
    share, extra = divmod(nfe - c * pool, c)  # children NFE per chain (the first `extra` get one more)
    base = share // search_steps if search_steps else 0
    chains = [Chain(best=float(r0[j, start[j]]), left=share + (j < extra), base=base) for j in range(c)]
    if search_steps:
        for ch in chains:
            ch.start_step(n, 0)

    # 2. search steps: children of grid point i land on i + 1 (1 NFE each)
    while active := [j for j in range(c) if chains[j].at < n - 1]:
        for i in sorted({chains[j].at for j in active}):
            group = [j for j in active if chains[j].at == i]
            last = i + 1 == n - 1
            # propose children x_{i+1} ~ p(. | x_i) of every chain in the group, one batch
            m = [chains[j].proposals(child_batch, last) for j in group]
            parent_x, parent_pred = pop.expand([(("chain", j), mj) for j, mj in zip(group, m)])
            kids = stochastic_step(proc, parent_x, i, parent_pred, eta, generator, interpolant)
            kid_pred = proc.denoise(kids, i + 1, cond)
            spent += kids.shape[0]
            kid_r = reward_fn(kid_pred.x0).double().cpu().tolist()
            pop.children_step(kids, kid_pred)
            if (hit := reached(kid_r, stop_score)) is not None:  # satisfied: that child alone finishes
                x, pred = proc.select([hit], pop.x, pop.pred)
                res.x = finish_alone(proc, cond, x, pred, i + 1, eta, generator, interpolant)
                res.tweedie_rewards = torch.tensor([kid_r[hit]])
                res.nfe, res.stopped_at, res.quotas = spent + n - 2 - i, i + 1, [ch.quotas for ch in chains]
                return res
            row = 0
            for j, mj in zip(group, m):
                chain = chains[j]
                accepted, new_best = chain.consider(kid_r[row : row + mj], last)
                if accepted is not None:  # rollover: take the child now, its unspent quota moves on
                    chain.best = kid_r[row + accepted]
                    res.rollovers += 1
                    pop.name(("chain", j), row + accepted)
                    pop.drop(("best", j))
                    chain.at += 1
                    if chain.at < n - 1:
                        chain.start_step(n, chain.quota - chain.used)
                else:
                    if new_best is not None:
                        pop.name(("best", j), row + new_best)
                    if chain.used >= chain.quota:  # budget forcing: the best child of the step
                        chain.best = max(chain.best, chain.step_best)
                        res.forced += not last
                        pop.name(("chain", j), pop.drop(("best", j)))
                        chain.at += 1
                        if chain.at < n - 1:
                            chain.start_step(n, 0)
                row += mj
            pop.compact()

    # 3. a deterministic last step to the clean end (no NFE)
    res.x = proc.step(pop.x, n - 1, pop.pred, eta=0.0)
    res.tweedie_rewards = torch.tensor([ch.best for ch in chains])
    res.quotas = [ch.quotas for ch in chains]
    res.nfe = spent
    return res


@torch.no_grad()
def blockwise_search(proc: DenoisingProcess, cond: Conditioning, reward_fn: RewardFn, nfe: int,
                     generator: torch.Generator | None = None, *, num_particles: int = 2,
                     num_children: int | None = None, block: int = 1, alpha: float = 0.0, eta: float = 1.0,
                     interpolant: str = "vp", stop_score: float | None = None) -> ChainResult:
    """SVDD (block = 1) / CoDe (block > 1): per block, `num_children` children per particle
    run `block` stochastic steps in one batch; each particle keeps its best child (alpha = 0)
    or samples one with probability ~ exp(r / alpha). stop_score: the first block whose best
    child reaches it ends the search; that child alone finishes (`finish_alone`)."""
    n = proc.num_steps
    k, block = int(num_particles), max(1, int(block))
    m = blockwise_children(nfe, n, k) if num_children is None else int(num_children)
    if k < 1 or m < 1 or k + k * m * (n - 1) > nfe:
        raise TTSInputError(f"num_particles={k} with num_children={max(1, m)} per step over {n} steps need "
                            f"{k + k * max(1, m) * (n - 1)} NFE, the budget has {nfe}")
    x = proc.sample_noise(k, generator)
    pred = proc.denoise(x, 0, cond)
    spent = k
    best = torch.full((k,), -torch.inf, dtype=torch.float64)
    i = 0
    while i < n - 1:
        j_end = min(i + block, n - 1)
        # every particle's m children, side by side: rows p*m .. p*m + m - 1
        y, p = proc.select(torch.arange(k).repeat_interleave(m), x, pred)
        for t in range(i, j_end):
            y = stochastic_step(proc, y, t, p, eta, generator, interpolant)
            p = proc.denoise(y, t + 1, cond)
            spent += y.shape[0]
        r = reward_fn(p.x0).double().cpu().reshape(k, m)
        if (hit := reached(r, stop_score)) is not None:  # satisfied: that child alone finishes
            y, p = proc.select([hit], y, p)
            x = finish_alone(proc, cond, y, p, j_end, eta, generator, interpolant)
            res = ChainResult(x, r.reshape(-1)[[hit]], spent + n - 1 - j_end)
            res.stopped_at = j_end
            return res
        if alpha > 0:
            choice = torch.multinomial(torch.softmax(r / alpha, 1), 1, generator=generator).reshape(k)
        else:
            choice = r.argmax(1)
        x, pred = proc.select(torch.arange(k) * m + choice, y, p)
        best = r[torch.arange(k), choice]
        i = j_end
    x = proc.step(x, n - 1, pred, eta=0.0)
    return ChainResult(x, best, spent)


def blockwise_children(nfe: int, num_steps: int, num_particles: int) -> int:
    """The most children per particle and step `nfe` pays for (SVDD / CoDe's default)."""
    return (nfe - num_particles) // (num_particles * max(1, num_steps - 1)) if num_steps > 1 else 1


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


def _finish(log: SearchLog, res: ChainResult, settings: dict, stop_score: float | None) -> SearchResult:
    info = [{"chain": j, "tweedie_reward": float(res.tweedie_rewards[j])} for j in range(res.x.shape[0])]
    log.score_latents(res.x, None, info)
    stop = {"stopped_at": res.stopped_at, **unspent(log.budget, stop_score, log)} if stop_score is not None else {}
    return log.result({**settings, "search_nfe": res.nfe, **stop})


@register_searcher(RBF)
def rbf(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
        generator: torch.Generator | None, *, negative_prompt: str | None, num_particles: int, init_pool: int,
        eta: float, interpolant: str, grid: str, child_batch: int, stop_score: float | None,
        keep_images: int) -> SearchResult:
    """Options: RBF in rbf_spec.py (`tts-diffusion list --searcher rbf`); a budget below
    num_particles * (init_pool + steps - 1) NFE is an error."""
    run_proc, cond, log = _prepare(proc, verifier, prompt, budget, negative_prompt, interpolant, grid, keep_images)
    nfe = budget.remaining_nfe
    with run_proc.metered(budget):
        res = rollover_budget_forcing(run_proc, cond, log.score_intermediate, nfe, generator,
                                      num_particles=num_particles, init_pool=init_pool, eta=eta,
                                      interpolant=interpolant, child_batch=child_batch, stop_score=stop_score)
    return _finish(log, res, {"rollovers": res.rollovers, "forced_steps": res.forced, "quotas": res.quotas},
                   stop_score)


def _blockwise_searcher(entry: SearcherEntry):
    """The search function of a blockwise searcher (svdd, code), named after its entry."""

    def search(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
               generator: torch.Generator | None, *, negative_prompt: str | None, num_particles: int,
               num_children: int | None, block: int, alpha: float, eta: float, interpolant: str, grid: str,
               stop_score: float | None, keep_images: int) -> SearchResult:
        run_proc, cond, log = _prepare(proc, verifier, prompt, budget, negative_prompt, interpolant, grid,
                                       keep_images)
        nfe = budget.remaining_nfe
        with run_proc.metered(budget):
            res = blockwise_search(run_proc, cond, log.score_intermediate, nfe, generator,
                                   num_particles=num_particles, num_children=num_children, block=block,
                                   alpha=alpha, eta=eta, interpolant=interpolant, stop_score=stop_score)
        m = blockwise_children(nfe, run_proc.num_steps, num_particles) if num_children is None else num_children
        return _finish(log, res, {"num_children": m}, stop_score)

    search.__name__ = entry.name
    search.__doc__ = f"Options: {entry.name.upper()} in rbf_spec.py (`tts-diffusion list --searcher {entry.name}`)."
    return search


svdd = register_searcher(SVDD)(_blockwise_searcher(SVDD))
code = register_searcher(CODE)(_blockwise_searcher(CODE))
