"""DAS (tempered SMC, searchers/das.py) against exactly known targets (testing/analytic.py).

The sampler's own distribution p is a Gaussian mixture with an exact denoiser and the reward
r(x) = -x is linear, so the target p(x) exp(lam r(x)) is the mixture tilted component-wise
(closed form). Tolerances as in tests/test_smc.py: the weighted KS distance below
1.95 / sqrt(ESS / 2) + 0.01 (the Kolmogorov 99.9% point at half the Kish ESS, plus the
200-step sampler's own discretisation).
"""
import math

import pytest
import torch

from tts_diffusion import Budget, TTSInputError
from tts_diffusion.request import SearchRequest
from tts_diffusion.searchers import available_searchers, load_searcher
from tts_diffusion.searchers.das import (
    adaptive_lambda, das_sampling, default_gamma, exp_schedule, reward_grad_through_denoiser,
)
from tts_diffusion.searchers.particles import ess
from tts_diffusion.searchers.registry import min_budget
from tts_diffusion.searchers.smc import fk_steering
from tts_diffusion.testing.analytic import FunctionVerifier, analytic_process, bimodal_1d, kish_ess, weighted_ks
from tts_diffusion.testing.helpers import SelectRecorder
from tts_diffusion.verifiers import load_verifier

STEPS, K = 200, 2000


def first_coord(x):
    return x.reshape(x.shape[0], -1)[:, 0]


def ks_tol(log_w):
    return 1.95 / math.sqrt(kish_ess(log_w, log_w.numel()) / 2) + 0.01


def world(kind, steps=STEPS):
    g = bimodal_1d()
    proc = analytic_process({"": g, "a": g}, kind, steps)
    return proc, proc.encode("a")


def run_das(kind, tempering="exp", gradient=False, lam=1.0, seed=0, k=K):
    proc, cond = world(kind)
    grad = reward_grad_through_denoiser(proc, cond, lambda x0: -first_coord(x0)) if gradient else None
    return das_sampling(proc, cond, lambda x: -first_coord(x), k, torch.Generator().manual_seed(seed),
                        reward_scale=lam, tempering=tempering, reward_grad_fn=grad)


def test_exp_schedule_and_adaptive_tempering():
    lam = exp_schedule(100, 0.008)  # DAS's SD setting: reaches 1 at step 87
    assert lam[0] == 0.0 and lam[-1] == 1.0 and len(lam) == 101
    assert all(a <= b for a, b in zip(lam, lam[1:]))
    assert lam[86] < 1.0 == lam[88] and abs(default_gamma(100) - 0.008) < 2e-4
    ours = exp_schedule(20, default_gamma(20))
    assert ours[17] < 1.0 == ours[18]
    # adaptive: the largest weight keeping ESS >= target K, found by bisection
    g = torch.Generator().manual_seed(0)
    log_w = torch.randn(500, generator=g, dtype=torch.float64) * 0.3
    new, old = 5 * torch.randn(500, generator=g, dtype=torch.float64), torch.zeros(500, dtype=torch.float64)
    lo = 0.01
    l = adaptive_lambda(log_w, new, old, lo, 0.5)
    assert lo < l < 1.0 and abs(float(ess(log_w + l * new - old)) - 250) < 1.0
    assert adaptive_lambda(log_w, 1e-3 * new, old, lo, 0.5) == 1.0  # a mild reward: straight to 1
    assert adaptive_lambda(log_w, new, old, 0.9, 0.5) == 0.9  # never below the current weight


@pytest.mark.parametrize("kind,tempering,gradient", [("vp", "exp", True), ("flow", "exp", False),
                                                     ("vp", "adaptive", False), ("flow", "adaptive", True),
                                                     ("flow", "exp", True)])
def test_das_samples_the_tilted_target(kind, tempering, gradient):
    """p = 0.3 N(-2, .4^2) + 0.7 N(1.5, .6^2), r(x) = -x, lam = 1: the target puts 0.93 of its
    mass on the left mode (p: 0.30). Gradient-guided proposals are corrected by log p/q."""
    run = run_das(kind, tempering, gradient)
    target = bimodal_1d().tilt_linear(1.0, [-1.0])
    ks = weighted_ks(run.x, run.log_w, target.cdf)
    assert ks < ks_tol(run.log_w), (ks, ks_tol(run.log_w))
    assert weighted_ks(run.resampled(), None, target.cdf) < ks_tol(run.log_w)
    assert run.lambdas[-1] == 1.0 and len(run.lambdas) == STEPS + 1 and len(run.ess) == STEPS + 1
    if tempering == "exp":
        assert run.lambdas[0] == 0.0 and run.lambdas[STEPS // 2] < 0.5
    # guard: the same check fails for the untilted sampler (das with lam = 0 samples p)
    p_run = run_das(kind, tempering, gradient, lam=0.0, k=500)
    assert weighted_ks(p_run.x, p_run.log_w, bimodal_1d().cdf) < ks_tol(p_run.log_w)
    assert weighted_ks(p_run.x, p_run.log_w, target.cdf) > 0.3


def test_without_the_proposal_correction_the_guided_population_is_wrong(monkeypatch):
    """Guard for log p/q: the same gradient-shifted proposals (std^2 lam_{i+1} lam grad r, lam = 2)
    made behind the weights' back (the sampler's step itself shifted, no correction) over-tilt
    the population, so the check above can fail."""
    target = bimodal_1d().tilt_linear(2.0, [-1.0])
    good = run_das("flow", "exp", True, lam=2.0)
    assert weighted_ks(good.x, good.log_w, target.cdf) < ks_tol(good.log_w)
    proc, cond = world("flow")
    grad_fn = reward_grad_through_denoiser(proc, cond, lambda x0: -first_coord(x0))
    schedule = exp_schedule(STEPS, default_gamma(STEPS))
    original = proc._step

    def shifted_step(x, i, pred, eta=0.0, noise=None, generator=None):
        out = original(x, i, pred, eta, noise, generator)
        std = proc.family.step_std(i, eta)
        return out if std == 0.0 else out + std * std * schedule[i + 1] * 2.0 * grad_fn(x, i)[1]

    monkeypatch.setattr(proc, "_step", shifted_step)
    bad = das_sampling(proc, cond, lambda x: -first_coord(x), K, torch.Generator().manual_seed(0), reward_scale=2.0)
    assert weighted_ks(bad.x, bad.log_w, target.cdf) > ks_tol(bad.log_w)


def test_untempered_das_is_smc_with_the_difference_potential():
    """tempering=none is FK steering's "difference" potential at every step (same draws, same
    particles), so the tempered runs below are compared with exactly untempered SMC."""
    proc, cond = world("vp", 50)
    r = lambda x: -first_coord(x)  # noqa: E731
    a = das_sampling(proc, cond, r, 300, torch.Generator().manual_seed(3), reward_scale=3.0, tempering="none")
    b = fk_steering(proc, cond, r, 300, torch.Generator().manual_seed(3), reward_scale=3.0, potential="difference",
                    resample_interval=1, window=(0, 50), resample_threshold=0.5)
    assert torch.equal(a.x, b.x) and a.resample_steps == b.resample_steps
    assert torch.allclose(a.log_w, b.log_w, atol=1e-9)


@pytest.mark.parametrize("kind", ["vp", "flow"])
def test_tempering_keeps_the_ess_higher_than_untempered_smc(kind):
    """At equal particles (K = 2000, lam = 4), DAS's exp tempering keeps the ESS higher over the
    steps than untempered SMC and resamples less often (measured, vp / flow: mean ESS 1510 /
    1527 against 1340 / 1417, resamplings 9 / 16 against 29 / 28)."""
    tempered = run_das(kind, "exp", lam=4.0)
    flat = run_das(kind, "none", lam=4.0)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert mean(tempered.ess) > 1.05 * mean(flat.ess), (mean(tempered.ess), mean(flat.ess))
    assert len(tempered.resample_steps) < len(flat.resample_steps)


def _x_reward():
    return FunctionVerifier(lambda x: -x[:, 0], 1, differentiable=True)


def test_searcher_budget_picks_determinism_and_reindex():
    proc, _ = world("flow", 10)
    rec = proc.call.register("recorder", SelectRecorder())
    das = load_searcher("das")
    assert "das" in available_searchers()
    # gradient: 10 forwards + 9 stochastic steps x (graph forward 1 + backward 2) = 37 NFE a particle
    assert min_budget("das", 10, num_particles=2) == 74 and min_budget("das", 10, gradient=False) == 10
    ver = _x_reward()
    b = Budget(80)
    res = das(proc, ver, "a", b, torch.Generator().manual_seed(0), reward_scale=3.0)
    assert res.settings["num_particles"] == 2 and res.nfe == 74 == b.nfe and b.denoiser_backwards == 18
    assert b.reward_grads == 18 and res.verifier_calls == 2 * (9 + 1 + 1) == b.verifier_calls
    assert proc.adapter.rows == 2 * (10 + 9) == b.model_rows
    # without the gradient: 8 particles of 10 steps; a verifier call at each step with lam_i > 0 + the end
    ver = _x_reward()
    b = Budget(83)
    res = das(proc, ver, "a", b, torch.Generator().manual_seed(0), reward_scale=3.0, gradient=False,
              resample_threshold=1.0)
    assert res.nfe == 80 == b.nfe and len(res.candidates) == 8 and ver.calls == 8 * (9 + 1) == res.verifier_calls
    assert res.settings["resample_steps"] == list(range(10)) and len(rec.selected) >= 10
    w = torch.tensor([c.info["log_weight"] for c in res.candidates])
    assert math.isclose(float(w.exp().sum()), 1.0, rel_tol=1e-6)
    assert res.best is res.candidates[int(torch.argmax(w))]  # pick=weight: DAS's largest final weight
    by_score = das(proc, ver, "a", Budget(83), torch.Generator().manual_seed(0), reward_scale=3.0, gradient=False,
                   resample_threshold=1.0, pick="score")
    assert by_score.best.score == max(by_score.scores)
    again = das(proc, ver, "a", Budget(83), torch.Generator().manual_seed(0), reward_scale=3.0, gradient=False,
                resample_threshold=1.0)
    other = das(proc, ver, "a", Budget(83), torch.Generator().manual_seed(1), reward_scale=3.0, gradient=False,
                resample_threshold=1.0)
    assert again.scores == res.scores and other.scores != res.scores
    with pytest.raises(TTSInputError, match="num_particles=3 needs 111 NFE"):
        das(proc, _x_reward(), "a", Budget(100), None, num_particles=3)
    with pytest.raises(TTSInputError, match="tempering"):
        das(proc, _x_reward(), "a", Budget(100), None, tempering="linear")
    with pytest.raises(TTSInputError, match="eta"):
        das(proc, _x_reward(), "a", Budget(100), None, eta=0.0)


def test_oracle_is_refused_with_the_gradient_and_accepted_without():
    proc, _ = world("flow", 2)
    with pytest.raises(TTSInputError, match=r"'oracle' is not differentiable"):
        load_searcher("das")(proc, load_verifier("oracle"), "a", Budget(100), None)
    with pytest.raises(TTSInputError, match=r"'oracle' is not differentiable"):
        SearchRequest("a red circle", searcher="das", verifier="oracle").check(embedded_model=True)
    SearchRequest("a red circle", searcher="das", verifier="oracle",
                  searcher_options={"gradient": False}).check(embedded_model=True)
    SearchRequest("a red circle", searcher="das", verifier="clip").check(embedded_model=True)


def test_das_on_a_diffusers_pipeline(tiny_pipe):
    from tts_diffusion.core.process import DenoisingProcess
    from tts_diffusion.testing.helpers import BrightnessVerifier
    from tts_diffusion.testing.tiny_pipelines import pipeline_call_kwargs

    kw = pipeline_call_kwargs("sd15")
    proc = DenoisingProcess.from_pipeline(tiny_pipe("sd15"), 3, 4.0, height=kw["height"], width=kw["width"])
    res = load_searcher("das")(proc, BrightnessVerifier(), "a red circle", Budget(12), torch.Generator().manual_seed(0),
                               gradient=False, tempering="adaptive")
    assert res.nfe == 12 and len(res.candidates) == 4 and res.best.image.shape[0] == 3


def test_stop_score_ends_the_population_at_the_first_reward_reaching_it():
    """Stop when satisfied: at the first step whose Tweedie rewards reach stop_score the
    population ends and that particle alone goes on (1 NFE a step without the gradient);
    unreachable, nothing changes."""
    proc, _ = world("flow", 10)
    das = load_searcher("das")
    kw = dict(reward_scale=3.0, gradient=False)
    free = das(proc, _x_reward(), "a", Budget(80), torch.Generator().manual_seed(0), **kw)
    easy = das(proc, _x_reward(), "a", Budget(80), torch.Generator().manual_seed(0), stop_score=-100.0, **kw)
    at = easy.settings["stopped_at"]
    assert at == next(i for i, v in enumerate(free.settings["lambdas"]) if v > 0)  # the first step scored
    assert easy.nfe == 8 * (at + 1) + 10 - 1 - at and easy.settings["unspent_nfe"] == 80 - easy.nfe
    assert easy.settings["stopped_early"] is True and len(easy.candidates) == 1
    never = das(proc, _x_reward(), "a", Budget(80), torch.Generator().manual_seed(0), stop_score=100.0, **kw)
    assert never.settings["stopped_at"] is None and never.settings["stopped_early"] is False
    assert never.nfe == free.nfe == 80 and never.scores == free.scores and never.best.score == free.best.score
