"""TFG reward guidance (features/guidance.py) on the analytic worlds: zero strength is the
plain sampler exactly; guided SMC (guided proposals with the weight correction log p/q)
targets the exact tilt p(x) exp(lam r(x)) like SMC; guidance alone is biased (TFG is not
asymptotically exact: its distance to the target is reported, and shown to exceed the
sampling tolerance); costs follow the budget rule; the settings, presets, beam search and
the front doors (request, CLI, pipeline)."""
from __future__ import annotations

import math

import pytest
import torch

from tts_diffusion.core.budget import Budget
from tts_diffusion.errors import TTSInputError
from tts_diffusion.features.guidance import enable_reward_guidance, schedule_weights, tfg_beam_search
from tts_diffusion.features.guidance_spec import PRESETS, RewardGuidance
from tts_diffusion.request import SearchRequest
from tts_diffusion.searchers.smc import fk_steering
from tts_diffusion.testing.analytic import (FunctionVerifier, analytic_process, bimodal_1d, kish_ess,
                                            weighted_ks)

STEPS, K, LAM = 200, 2000, 1.0


def ks_tol(log_w):
    return 1.95 / math.sqrt(kish_ess(log_w, log_w.numel()) / 2) + 0.01


def _world(steps=STEPS):
    g = bimodal_1d()
    proc = analytic_process({"": g, "a": g}, "vp", steps).for_call()
    ver = FunctionVerifier(lambda x: -x[:, 0], 1, differentiable=True)  # r(x) = -x
    return g, proc, proc.encode("a"), ver


def _smc(proc, cond, ver, seed, guide=None):
    if guide is not None:
        enable_reward_guidance(proc, ver, guide, cond)
    reward = lambda x0: ver(proc.decode(x0), "a").double()  # noqa: E731
    budget = Budget(10**9)
    with proc.metered(budget):
        run = fk_steering(proc, cond, reward, K, torch.Generator().manual_seed(seed), reward_scale=LAM,
                          potential="difference", resample_interval=20, window=(20, STEPS), resample_threshold=0.5)
    return run, budget


def test_zero_strength_is_the_plain_sampler():
    g, proc, cond, ver = _world(20)
    x = proc.sample_noise(64, torch.Generator().manual_seed(0))
    plain, _ = proc.sample(x, cond, eta=1.0, generator=torch.Generator().manual_seed(1))
    enable_reward_guidance(proc, ver, {"rho": 0.0, "mu": 0.0}, cond)
    guided, _ = proc.sample(x, cond, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(plain, guided)


def test_guided_smc_targets_the_exact_tilt_and_guidance_alone_is_biased():
    g, proc, cond, ver = _world()
    target = g.tilt_linear(LAM, [-1.0])
    cfg = RewardGuidance.build(verifier="analytic", preset="mpgd", mu=0.02)
    for seed in range(2):
        run, budget = _smc(proc, cond, ver, seed, cfg)
        ks = weighted_ks(run.x, run.log_w, target.cdf)
        assert ks < ks_tol(run.log_w), (seed, ks, ks_tol(run.log_w))
        noisy = sum(proc.family._ddim_std(i, 1.0) > 0 for i in range(STEPS))
        assert budget.reward_grads == K * noisy  # every stochastic step (a noise-free one stays unguided)
        plain, _ = _smc(analytic_process({"": g, "a": g}, "vp", STEPS).for_call(), cond, ver, seed)
        # guided proposals keep the weights healthier than SMC's blind ones (report both)
        print(f"seed {seed}: guided SMC KS {ks:.4f}, min ESS {min(run.ess):.0f}; SMC min ESS {min(plain.ess):.0f}")
    # guidance alone (no weights): a visible bias, beyond the tolerance SMC meets
    proc2 = analytic_process({"": g, "a": g}, "vp", STEPS).for_call()
    enable_reward_guidance(proc2, ver, RewardGuidance.build(verifier="analytic", preset="mpgd", mu=0.02), cond)
    x, _ = proc2.sample(proc2.sample_noise(K, torch.Generator().manual_seed(0)), cond, eta=1.0,
                        generator=torch.Generator().manual_seed(1))
    ks_guided = weighted_ks(x, None, target.cdf)
    print(f"guidance only: KS to the exact tilt {ks_guided:.4f} (tolerance {ks_tol(torch.zeros(K)):.4f})")
    assert ks_guided > 2 * ks_tol(torch.zeros(K))


def test_variance_guidance_and_recurrence_costs():
    g, proc, cond, ver = _world(10)
    cfg = RewardGuidance.build(verifier="analytic", preset="tfg", rho=0.05, mu=0.05, n_recur=2, samples=3)
    assert cfg.nfe_per_step() == 2 * (1 + 3) and cfg.reward_grads_per_step() == 2 * (3 + 3)
    enable_reward_guidance(proc, ver, cfg, cond)
    assert proc.nfe_per_step() == 8
    budget = Budget(10**6)
    n = 5
    with proc.metered(budget):
        x, _ = proc.sample(proc.sample_noise(n, torch.Generator().manual_seed(0)), cond)
    # per step: 2 passes x (1 forward + 1 forward with graph + backward 2) = 8 NFE a row; the
    # first pass's forward is proc.sample's own
    assert budget.nfe == n * 10 * 8 and budget.denoiser_backwards == n * 10 * 2
    assert budget.reward_grads == n * 10 * cfg.reward_grads_per_step()
    assert torch.isfinite(x).all()
    assert proc.settings()["reward_guidance"]["n_recur"] == 2


def test_variance_guidance_follows_the_exact_gradient():
    """Delta_t = rho grad_x r(x0_hat(x)) with r = -x: -rho d x0_hat / dx, which on the 1-D
    mixture equals the exact derivative of E[x0 | x] (finite differences of the closed form)."""
    g, proc, cond, ver = _world(10)
    guide = enable_reward_guidance(proc, ver, RewardGuidance.build(verifier="analytic", preset="dps", rho=1.0), cond)
    i = 5
    x = torch.linspace(-2, 2, 9, dtype=torch.float64).reshape(-1, 1, 1, 1)
    d = guide.variance_guidance(proc, x, i, None).flatten()
    a, s = proc.family.a(i), proc.family.s(i)
    h = 1e-5
    dx0 = (g.x0_mean(x.flatten()[:, None] + h, a, s) - g.x0_mean(x.flatten()[:, None] - h, a, s)).flatten() / (2 * h)
    w = float(schedule_weights(proc.family, "constant")[i])
    assert torch.allclose(d, -w * dx0, rtol=1e-5, atol=1e-8)


def test_weighted_guidance_refuses_recurrence_and_deterministic_steps():
    g, proc, cond, ver = _world(10)
    enable_reward_guidance(proc, ver, {"n_recur": 2}, cond)
    with pytest.raises(TTSInputError, match="needs n_recur=1"):
        fk_steering(proc, cond, lambda x: x[:, 0, 0, 0], 4, torch.Generator().manual_seed(0))
    enable_reward_guidance(proc, ver, {}, cond)
    with pytest.raises(TTSInputError, match="eta > 0"):
        fk_steering(proc, cond, lambda x: x[:, 0, 0, 0], 4, torch.Generator().manual_seed(0), eta=0.0)


def test_non_differentiable_verifier_refused():
    g, proc, cond, _ = _world(5)
    with pytest.raises(TTSInputError, match="not differentiable.*aesthetic, clip, image_reward"):
        enable_reward_guidance(proc, FunctionVerifier(lambda x: x[:, 0], 1), "x", cond)
    with pytest.raises(TTSInputError, match="'oracle' is not differentiable"):
        SearchRequest("a red circle", reward_guidance="oracle").check(embedded_model=True)
    with pytest.raises(TTSInputError, match="'oracle' is not differentiable"):  # the search's verifier guides
        SearchRequest("a red circle", reward_guidance={"preset": "dps"}).check(embedded_model=True)


def test_presets_schedules_and_options():
    assert RewardGuidance.parse("clip") == RewardGuidance(verifier="clip")  # TFG's defaults
    mp = RewardGuidance.parse({"verifier": "clip", "preset": "mpgd", "mu": 0.3})
    assert (mp.rho, mp.mu, mp.iterations, mp.n_recur) == (0.0, 0.3, 1, 1)
    assert set(PRESETS) == {"tfg", "dps", "freedom", "ugd", "mpgd", "lgd"}
    assert RewardGuidance.from_cli("clip", ["n_recur=3"]).n_recur == 3
    with pytest.raises(TTSInputError, match="needs --reward-guidance"):
        RewardGuidance.from_cli(None, ["rho=1"])
    with pytest.raises(TTSInputError, match="rho=-1"):
        RewardGuidance.parse({"rho": -1})
    fam = _world(10)[1].family
    for kind in ("increase", "decrease", "constant"):
        w = schedule_weights(fam, kind)
        assert abs(float(w.mean()) - 1) < 1e-12
    inc = schedule_weights(fam, "increase")
    assert bool((inc[1:] >= inc[:-1] - 1e-12).all())  # alpha_t grows towards the clean end


def test_beam_search_finds_the_best_configuration():
    best_at = {"rho": 2.0, "mu": 0.5, "gamma": 0.1}

    def score(c):
        return -sum((math.log(c[k]) - math.log(v)) ** 2 for k, v in best_at.items())

    best, tried = tfg_beam_search(score, rounds=8)
    assert all(abs(best[k] - v) < 1e-9 for k, v in best_at.items())
    assert tried[0][0] == {"rho": 0.25, "mu": 0.25, "gamma": 0.001}
    assert max(c["rho"] for c, _ in tried) <= 8 and max(c["gamma"] for c, _ in tried) <= 1


def test_request_round_trip_and_cli_flags():
    req = SearchRequest("a red circle", verifier="clip", reward_guidance={"preset": "ugd", "mu": 0.5})
    checked = req.check(embedded_model=True)
    assert checked.reward_guidance.preset == "ugd" and checked.reward_guidance.mu == 0.5
    assert SearchRequest.from_dict(checked.to_dict()).check(embedded_model=True) == checked
    from click.testing import CliRunner

    from tts_diffusion.cli import main

    r = CliRunner().invoke(main, ["generate", "a red circle", "--reward-guidance", "oracle", "--out", "/tmp/x.png"])
    assert r.exit_code == 2 and "'oracle' is not differentiable" in r.output
    r = CliRunner().invoke(main, ["generate", "a red circle", "--reward-guidance-option", "rho=2"])
    assert r.exit_code == 2 and "needs --reward-guidance VERIFIER" in r.output
    r = CliRunner().invoke(main, ["generate", "--help"])
    assert "--reward-guidance" in r.output and "--reward-guidance-option" in r.output


def test_guided_best_of_n_and_smc_on_the_embedded_model():
    """The front door: domain CLIP guides, the oracle judges; both searchers run guided, pay
    for guidance by the budget rule and record the settings."""
    from tts_diffusion.paths import default_model_path

    if not (default_model_path() / "model_index.json").exists():
        pytest.skip("embedded shapes model missing")
    from tts_diffusion import TTSPipeline

    tts = TTSPipeline.from_pretrained()
    guide = {"verifier": "clip", "preset": "mpgd", "mu": 0.5}
    for searcher, options in (("best_of_n", {}), ("smc", {"num_particles": 2, "window": (1, 4)})):
        res = tts("a red circle", searcher=searcher, verifier="oracle", num_inference_steps=4, budget=8, seed=1,
                  reward_guidance=guide, progress=False, **options)
        assert res.settings["reward_guidance"]["preset"] == "mpgd"
        assert res.nfe == 8 and len(res.candidates) == 2 and res.timings["reward_grad"] > 0
    plain = tts("a red circle", searcher="best_of_n", verifier="oracle", num_inference_steps=4, budget=8, seed=1,
                progress=False)
    assert "reward_guidance" not in plain.settings
    with pytest.raises(TTSInputError, match="need 24 NFE"):  # variance guidance: 4 NFE a step
        tts("a red circle", searcher="best_of_n", num_samples=2, verifier="oracle", num_inference_steps=3,
            budget=12, reward_guidance={"verifier": "clip", "preset": "dps"}, progress=False)
