"""EvoSearch (searchers/evo.py) on the analytic Gaussian-mixture worlds: exact NFE, moving
samples toward the reward's mode better than random search at equal NFE, and per-particle
state following every latent through proc.select."""
import math

import pytest
import torch

from tts_diffusion import Budget, TTSInputError
from tts_diffusion.searchers import load_searcher, min_budget
from tts_diffusion.searchers.evo import tournament
from tts_diffusion.searchers.evo_spec import default_schedule, evo_nfe, plan
from tts_diffusion.testing.analytic import FunctionVerifier, GaussianMixture, analytic_process, four_modes_2d

TARGET = torch.tensor([1.5, -1.5], dtype=torch.float64)  # the lightest mode (weight 0.1) of four_modes_2d


def _world(steps=20, kind="vp"):
    g = four_modes_2d()
    proc = analytic_process({"": g, "a": g}, kind, steps)
    verifier = FunctionVerifier(lambda x: -((x - TARGET) ** 2).sum(1), 2)
    return proc, verifier


def test_paper_nfe_and_plan():
    # REFERENCES.md sec. 8: the SD2.1 defaults cost exactly best-of-100 at 50 steps; FLUX's 1465
    assert evo_nfe((0, 20, 30, 40), (42, 26, 26, 26, 30), 50) == 5000
    assert evo_nfe((5, 20, 30, 40), (14, 7, 7, 7, 10), 50) == 1465
    assert plan(50, 5000, None, None) == ((0, 20, 30, 40), (42, 26, 26, 26, 30), 5000)
    assert default_schedule(20) == (0, 8, 12, 16)
    s, p, nfe = plan(20, 400, None, None)
    assert nfe <= 400 and evo_nfe(s, [v + 1 for v in p], 20) > 400  # the largest sizes that fit
    assert min_budget("evo", 20, evolution_schedule=(0, 10), population_size_schedule=(3, 2, 2)) == \
        3 * 20 + 2 * 10 + 2 * 10 + 2 * 10
    with pytest.raises(TTSInputError, match="evolution_schedule"):
        plan(20, 1000, (0, 20), None)
    with pytest.raises(TTSInputError, match="population_size_schedule"):
        plan(20, 1000, (0, 10), (3, 2))
    with pytest.raises(TTSInputError, match="raise the budget to at least 120"):
        plan(20, 100, (0, 10), (3, 2, 2))


@pytest.mark.parametrize("kind", ["vp", "flow"])
def test_budget_is_exact(kind):
    proc, verifier = _world(12, kind)
    sched, sizes = (0, 4, 8), (6, 4, 3, 5)
    budget = Budget(1000)
    res = load_searcher("evo")(proc, verifier, "a", budget, torch.Generator().manual_seed(0),
                               evolution_schedule=sched, population_size_schedule=sizes, elite_size=2)
    assert res.nfe == budget.nfe == evo_nfe(sched, sizes, 12) == res.settings["planned_nfe"]
    # the denoiser rows the model evaluated are the NFE charged (no CFG here)
    assert proc.adapter.rows == res.nfe
    # scored: every rollout of every generation and the final population
    assert len(res.candidates) == sum(sizes) == res.verifier_calls
    assert [c.info["generation"] for c in res.candidates] == [0] * 6 + [1] * 4 + [2] * 3 + [3] * 5
    again = load_searcher("evo")(proc, verifier, "a", Budget(1000), torch.Generator().manual_seed(0),
                                 evolution_schedule=sched, population_size_schedule=sizes, elite_size=2)
    assert again.scores == res.scores  # deterministic per seed


def test_elites_keep_the_best_and_tournament_is_near_greedy():
    r = torch.tensor([0.1, 0.9, 0.5, 0.3])
    wins = tournament(r, 200, 0.9, torch.Generator().manual_seed(0))
    # the global best wins whenever it is in the 90% subset (ceil(3.6) = 4 of 4: always)
    assert wins == [1] * 200
    wins = tournament(r, 400, 0.5, torch.Generator().manual_seed(0))
    share = wins.count(1) / 400  # best in a random half: P = 1/2
    assert abs(share - 0.5) < 0.1 and 0 not in wins  # the worst never wins a pair
    # with elites, the best score never drops from one generation to the next
    proc, verifier = _world()
    res = load_searcher("evo")(proc, verifier, "a", Budget(2000), torch.Generator().manual_seed(1), elite_size=3)
    gens = {}
    for c in res.candidates:
        gens.setdefault(c.info["generation"], []).append(c.score)
    assert len(gens) == 5


class _Recorded:
    """A verifier r(x) that remembers what it scored, so the best candidate's sample is known."""

    def __init__(self, fn):
        self.fn, self.xs, self.rs = fn, [], []
        self.verifier = FunctionVerifier(self, 2)

    def __call__(self, x):
        r = self.fn(x)
        self.xs.append(x.clone())
        self.rs.append(r.clone())
        return r

    def best_distance(self, best_score):
        xs, rs = torch.cat(self.xs), torch.cat(self.rs)
        k = int(torch.argmin((rs.float() - best_score).abs()))  # scores reach the result as float32
        return float(((xs[k] - TARGET) ** 2).sum())


def _edge(reward, runs=8, budget=400):
    """Mean over seeds of (best-of-N's - evo's) squared distance of the chosen sample to the
    lightest mode, its standard error, and both means, at equal NFE."""
    evo, bon = [], []
    for seed in range(runs):
        for name, out in (("evo", evo), ("best_of_n", bon)):
            proc, _ = _world()
            rec = _Recorded(reward(seed))
            res = load_searcher(name)(proc, rec.verifier, "a", Budget(budget), torch.Generator().manual_seed(seed))
            assert res.nfe <= budget
            out.append(rec.best_distance(res.best_score))
    evo, bon = torch.tensor(evo), torch.tensor(bon)
    diff = bon - evo
    return float(diff.mean()), float(diff.std() / math.sqrt(runs)), float(evo.mean()), float(bon.mean())


def test_moves_samples_to_the_rewards_mode_better_than_random_at_equal_nfe():
    """The reward -|x - mu_4|^2 peaks at the lightest mode (weight 0.1). At 400 NFE (20
    full samples) best-of-N's best is a draw near that mode at best; evo's later
    generations refine the latents that reached it. 8 seeds, paired."""
    mean, se, evo, bon = _edge(lambda seed: (lambda x: -((x - TARGET) ** 2).sum(1)))
    assert mean > 2 * se and evo < 0.5 * bon, (mean, se, evo, bon)


def test_guard_a_reward_blind_to_the_sample_gives_evo_no_edge():
    """Guard: the check above can fail. When the verifier's score ignores the sample (noise),
    evo selects blindly and its pick is no closer to the mode than best-of-N's."""
    def noise(seed):
        gen = torch.Generator().manual_seed(1000 + seed)
        return lambda x: torch.rand(x.shape[0], generator=gen, dtype=torch.float64)

    mean, se, evo, bon = _edge(noise)
    assert not (mean > 2 * se and evo < 0.5 * bon), (mean, se, evo, bon)


def test_stop_score_ends_at_the_first_generation_reaching_it_and_reports_the_rest():
    proc, verifier = _world()
    full = load_searcher("evo")(proc, verifier, "a", Budget(400), torch.Generator().manual_seed(0))
    first = max(c.score for c in full.candidates if c.info["generation"] == 0)
    res = load_searcher("evo")(proc, verifier, "a", Budget(400), torch.Generator().manual_seed(0),
                               stop_score=first)
    assert res.settings["stopped_early"] is True and res.settings["generations_run"] == 1
    assert res.best_score == first
    assert res.settings["unspent_nfe"] == 400 - res.nfe and res.nfe < full.nfe
    sizes = full.settings["population_size_schedule"]
    assert res.nfe == sizes[0] * 20  # P_0 rollouts from x_T


class _Follow:
    """Per-particle state holding the latent each row was last denoised with; a prediction
    hook checks that state row r belongs to the latent in row r (it is that latent's nearest
    among all held rows), so a latent that moved without its state is caught."""

    def __init__(self):
        self.last, self.n, self.checks = None, 0, 0

    def select(self, idx):
        self.n = int(idx.numel())
        if self.last is not None:
            self.last = self.last[idx]

    def reset(self, n):
        self.last, self.n = None, int(n)

    def hook(self, proc, x, i, cond, pred):
        flat = x.reshape(x.shape[0], -1)
        if self.last is None:
            self.last = torch.full((self.n, flat.shape[1]), math.nan, dtype=flat.dtype)
        held = self.last[: flat.shape[0]]
        known = ~held.isnan().any(1)
        if known.any():
            d = torch.cdist(flat, self.last).nan_to_num(math.inf)
            d[d == 0] = math.inf  # a row already at this very latent (an elite replaying its ODE rollout)
            own = (flat - held).norm(dim=1)
            assert bool((own[known] <= d.min(dim=1).values[known] + 1e-9).all()), f"state left its latent at step {i}"
            self.checks += 1
        self.last[: flat.shape[0]] = flat
        return pred


def test_per_particle_state_follows_every_latent():
    d = 16
    means = torch.zeros(4, d, dtype=torch.float64)
    for k in range(4):
        means[k, k] = 3.0
    g = GaussianMixture([0.25] * 4, means, [0.5] * 4)
    proc = analytic_process({"": g, "a": g}, "vp", 12)
    proc.adapter.decode = lambda z: z.reshape(z.shape[0], -1)[:, :3, None, None]  # 3 of the 16 coordinates
    follow = _Follow()
    proc.call.register("follow", follow)
    proc.call.prediction_hook = follow.hook
    verifier = FunctionVerifier(lambda x: x[:, 0], d)
    res = load_searcher("evo")(proc, verifier, "a", Budget(2000), torch.Generator().manual_seed(0),
                               evolution_schedule=(0, 4, 8), population_size_schedule=(6, 4, 4, 5), eta=0.0)
    assert follow.checks > 0 and res.nfe == evo_nfe((0, 4, 8), (6, 4, 4, 5), 12)


# ------------------------------------------------- stop when satisfied, every searcher
@pytest.mark.parametrize("name,opts", [
    ("best_of_n", {"round_size": 2}), ("zero_order", {"num_children": 2}), ("smc", {"resample_interval": 2}),
    ("paths", {"num_children": 2}), ("evo", {}), ("draft_commit", {"top_k": 2}), ("fkc", {"mode": "anneal"}),
    ("rbf", {"init_pool": 4}), ("svdd", {"num_children": 2}), ("code", {"num_children": 2})])
def test_stop_score_ends_early_and_returns_the_unspent_budget(name, opts):
    """With stop_score at or below the first round's best, the search stops after that round
    (potential step) and reports the NFE it did not spend; unreachable, it spends as usual."""
    proc, verifier = _world()
    free = load_searcher(name)(proc, verifier, "a", Budget(400), torch.Generator().manual_seed(0), **opts)
    easy = load_searcher(name)(proc, verifier, "a", Budget(400), torch.Generator().manual_seed(0),
                               stop_score=-100.0, **opts)
    assert easy.settings["stopped_early"] is True
    assert easy.settings["unspent_nfe"] == 400 - easy.nfe > 400 - free.nfe
    never = load_searcher(name)(proc, verifier, "a", Budget(400), torch.Generator().manual_seed(0),
                                stop_score=1.0, **opts)  # the reward is <= 0
    assert never.settings["stopped_early"] is False and never.nfe == free.nfe
    assert never.scores == free.scores
