"""SMC / FK steering against exactly known targets (tts_diffusion/testing/analytic.py).

The sampler's own distribution p is a Gaussian mixture whose denoiser is exact, and the
reward a known function, so the target p(x) exp(lam r(x)) is a Gaussian mixture in closed
form (linear r: mixture tilted component-wise; quadratic r: product with a Gaussian).

Tolerances. For K weighted particles with Kish effective sample size ESS, the KS distance
of the weighted empirical CDF to the target is compared with 1.95 / sqrt(ESS / 2) (the
99.9% point of the Kolmogorov distribution for ESS / 2 i.i.d. draws: particles that share
ancestors are worth less than independent ones; halving was measured to cover it) plus 0.01
for the sampler's own discretisation (200 DDPM steps on the exact denoiser: KS <= 0.007
against p, measured on 10^5 samples). The 1-D left-mode mass is compared with 4 binomial
standard errors at ESS / 2 plus 0.01; the 2-D masses pool independent runs (see that test).
Guards show the same checks fail without the final weight correction.
"""
import math

import pytest
import torch

from tts_diffusion.testing.analytic import (
    FunctionVerifier, GaussianMixture, agrees, analytic_process, bimodal_1d, four_modes_2d, kish_ess, replicate,
    weighted_ks,
)
from tts_diffusion.testing.helpers import BrightnessVerifier, SelectRecorder
from tts_diffusion import Budget, TTSInputError
from tts_diffusion.searchers import available_searchers, load_searcher
from tts_diffusion.searchers.smc import POTENTIALS, _log_potential, fk_steering, potential_steps

STEPS, K = 200, 2000


def first_coord(x):
    return x.reshape(x.shape[0], -1)[:, 0]


def ks_tol(log_w):
    return 1.95 / math.sqrt(kish_ess(log_w, log_w.numel()) / 2) + 0.01


def mass_tol(p, log_w):
    return 4 * math.sqrt(p * (1 - p) / (kish_ess(log_w, log_w.numel()) / 2)) + 0.01


def run_1d(kind, potential="difference", lam=1.0, interval=20, final_correction=True, seed=0, window=None):
    g = bimodal_1d()
    proc = analytic_process({"": g, "a": g}, kind, STEPS)
    window = window or (interval, STEPS)
    run = fk_steering(proc, proc.encode("a"), lambda x: -first_coord(x), K, torch.Generator().manual_seed(seed),
                      reward_scale=lam, potential=potential, resample_interval=interval, window=window, resample_threshold=0.5,
                      final_correction=final_correction)
    return run, g.tilt_linear(lam, [-1.0])


def test_potentials_and_final_correction_arithmetic():
    r = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.5]), torch.tensor([2.0, 4.0])]
    lam = 0.5
    expect = {
        "difference": [lam * r[0], lam * (r[1] - r[0]), lam * (r[2] - r[1])],
        "max": [lam * r[0], lam * torch.maximum(r[0], r[1]), lam * torch.maximum(torch.maximum(r[0], r[1]), r[2])],
        "sum": [lam * r[0], lam * (r[0] + r[1]), lam * (r[0] + r[1] + r[2])],
        "immediate": [lam * rr for rr in r],
    }
    for kind in POTENTIALS:
        state = {"prev": torch.zeros(2), "max": torch.full((2,), -torch.inf), "sum": torch.zeros(2)}
        got = [_log_potential(kind, lam, rr, state) for rr in r]
        for a, b in zip(got, expect[kind]):
            assert torch.allclose(a, b)
    # the difference potentials telescope: their product is exp(lam r_last)
    assert torch.allclose(sum(expect["difference"]), lam * r[2])
    assert potential_steps(10, 3, (1, 10)) == [1, 4, 7]
    with pytest.raises(ValueError):
        _log_potential("bogus", 1.0, r[0], {})


@pytest.mark.parametrize("kind", ["vp", "flow"])
def test_smc_matches_tilted_target_1d(kind):
    """p = 0.3 N(-2, .4^2) + 0.7 N(1.5, .6^2), r(x) = -x, lam = 1: the target puts 0.93 of its
    mass on the left mode (p: 0.30)."""
    run, target = run_1d(kind)
    ks = weighted_ks(run.x, run.log_w, target.cdf)
    assert ks < ks_tol(run.log_w), (ks, ks_tol(run.log_w))
    # the resampled (unweighted) population, too
    assert weighted_ks(run.resampled(), None, target.cdf) < ks_tol(run.log_w)
    left = float(target.cdf(0.0))
    w = torch.softmax(run.log_w, 0)
    got = float((w * (first_coord(run.x) < 0)).sum())
    assert abs(got - left) < mass_tol(left, run.log_w), (got, left)
    assert run.resample_steps and set(run.resample_steps) <= set(run.potential_steps)
    # the tilt moved the distribution far: sup |F_p - F_target| on a grid
    grid = torch.linspace(-4, 4, 801, dtype=torch.float64)
    assert (bimodal_1d().cdf(grid) - target.cdf(grid)).abs().max() > 0.5


@pytest.mark.parametrize("potential", POTENTIALS)
def test_every_potential_is_exact_after_the_final_correction(potential):
    """With the final weight exp(lam r(x)) / prod G, every potential targets p exp(lam r);
    without it, "sum" and "immediate" target something else (mild lam, 3 potential steps,
    so that the correction weights stay well conditioned)."""
    run, target = run_1d("flow", potential, lam=0.5, interval=50)
    ks = weighted_ks(run.x, run.log_w, target.cdf)
    assert ks < ks_tol(run.log_w), (potential, ks, ks_tol(run.log_w))
    if potential in ("sum", "immediate"):
        bad, _ = run_1d("vp" if potential == "immediate" else "flow", potential, lam=0.5, interval=50,
                        final_correction=False)
        ks_bad = weighted_ks(bad.x, bad.log_w, target.cdf)
        assert ks_bad > ks_tol(bad.log_w), (potential, ks_bad)


def test_difference_potential_needs_the_final_correction_when_it_stops_early():
    """Potentials only in the first half: without the last weighting the particles follow
    p exp(lam r(x0_hat at step 100)), not p exp(lam r(x))."""
    good, target = run_1d("flow", window=(20, 100))
    bad, _ = run_1d("flow", window=(20, 100), final_correction=False)
    assert weighted_ks(good.x, good.log_w, target.cdf) < ks_tol(good.log_w)
    assert weighted_ks(bad.x, bad.log_w, target.cdf) > ks_tol(bad.log_w)


@pytest.mark.parametrize("kind", ["vp", "flow"])
def test_smc_matches_tilted_target_2d(kind):
    """Four modes with weights .4/.3/.2/.1 and r(x) = -|x - m|^2 / 2, m = (-1.5, -1): the target
    p(x) N(x; m, I) is the product of two mixtures (closed form). Quadrant masses and the mean
    from 6 independent runs of K = 1000, within 4.5 standard errors of the between-run spread
    (Student t, 5 d.o.f.) + 0.01: the particles' shared ancestry makes that spread 1.3-2.7x the
    binomial one at the final ESS (measured), so a single-run binomial bound would be wrong."""
    g = four_modes_2d()
    m = torch.tensor([-1.5, -1.0], dtype=torch.float64)
    target = g.product(GaussianMixture([1.0], [m.tolist()], [[1.0, 1.0]]))
    proc = analytic_process({"": g, "a": g}, kind, STEPS)
    cond = proc.encode("a")
    reward = lambda x: -0.5 * ((x.reshape(x.shape[0], -1) - m) ** 2).sum(1)  # noqa: E731
    quadrants = [(1, 1), (-1, 1), (-1, -1), (1, -1)]

    def stats(x, w):
        x = x.reshape(x.shape[0], 2)
        return [float((w * ((sx * x[:, 0] > 0) & (sy * x[:, 1] > 0))).sum()) for sx, sy in quadrants] + \
            (w[:, None] * x).sum(0).tolist()

    def one(seed):
        run = fk_steering(proc, cond, reward, 1000, torch.Generator().manual_seed(seed), reward_scale=1.0,
                          potential="difference", resample_interval=20, window=(20, STEPS), resample_threshold=0.5)
        return stats(run.x, torch.softmax(run.log_w, 0))

    samples = target.sample(400000, torch.Generator().manual_seed(0))  # Monte Carlo SE < 1e-3
    exact = stats(samples, torch.full((len(samples),), 1 / len(samples), dtype=torch.float64))
    est, se = replicate(one, 6)
    assert agrees(est, se, exact, slack=[0.01] * 4 + [0.03] * 2), (est, se, exact)
    # guard: the same runs without the final weighting, potentials stopping at step 100
    def early(seed):
        run = fk_steering(proc, cond, reward, 1000, torch.Generator().manual_seed(seed), reward_scale=1.0,
                          potential="difference", resample_interval=20, window=(20, 100), resample_threshold=0.5,
                          final_correction=False)
        return stats(run.x, torch.softmax(run.log_w, 0))

    bad, bad_se = replicate(early, 6)
    assert not agrees(bad, bad_se, exact, slack=[0.01] * 4 + [0.03] * 2), (bad, bad_se, exact)


def test_searcher_budget_determinism_and_reindex():
    g = bimodal_1d()
    proc = analytic_process({"": g, "a": g}, "flow", 10)
    rec = proc.call.register("recorder", SelectRecorder())
    seen = rec.selected
    ver = FunctionVerifier(lambda x: -x[:, 0], 1)
    smc = load_searcher("smc")
    assert "smc" in available_searchers()
    budget = Budget(83)  # 8 particles of 10 steps, 3 NFE left over
    res = smc(proc, ver, "a", budget, torch.Generator().manual_seed(0), reward_scale=2.0, resample_interval=3, resample_threshold=1.0)
    pot = res.settings["potential_steps"]
    assert pot == [3, 6, 9] and res.settings["resample_steps"] == pot and len(seen) == 3
    assert res.nfe == 80 == budget.nfe and len(res.candidates) == 8
    assert res.verifier_calls == 8 * (len(pot) + 1) == ver.calls
    assert res.best_score == max(res.scores)
    assert sum(c.info["resampled_copies"] for c in res.candidates) == 8
    assert math.isclose(sum(math.exp(c.info["log_weight"]) for c in res.candidates), 1.0, rel_tol=1e-6)
    again = smc(proc, ver, "a", Budget(83), torch.Generator().manual_seed(0), reward_scale=2.0, resample_interval=3,
                resample_threshold=1.0)
    other = smc(proc, ver, "a", Budget(83), torch.Generator().manual_seed(1), reward_scale=2.0, resample_interval=3,
                resample_threshold=1.0)
    assert again.scores == res.scores and other.scores != res.scores
    with pytest.raises(TTSInputError, match="num_particles"):
        smc(proc, ver, "a", Budget(30), torch.Generator(), num_particles=4)
    with pytest.raises(TTSInputError, match="potential"):
        smc(proc, ver, "a", Budget(30), torch.Generator(), potential="nope")
    with pytest.raises(TTSInputError, match="below one full sample"):
        smc(proc, ver, "a", Budget(9), torch.Generator())


def test_smc_on_a_diffusers_pipeline(tiny_pipe):
    from tts_diffusion.testing.tiny_pipelines import pipeline_call_kwargs
    from tts_diffusion.core.process import DenoisingProcess

    kw = pipeline_call_kwargs("sd15")
    proc = DenoisingProcess.from_pipeline(tiny_pipe("sd15"), 3, 4.0, height=kw["height"], width=kw["width"])
    res = load_searcher("smc")(proc, BrightnessVerifier(), "a red circle", Budget(12), torch.Generator().manual_seed(0),
                               resample_interval=1)
    assert res.nfe == 12 and len(res.candidates) == 4 and res.best.image.shape[0] == 3
