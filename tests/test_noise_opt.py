"""noise_opt (ReNO / DNO gradient noise optimisation, searchers/noise_opt.py).

- On the analytic Gaussian-mixture worlds (exact denoisers), the gradient of the reward through
  the whole sampler (initial noise, and the injected noise of stochastic steps) matches central
  finite differences, with and without checkpointing; optimising pushes every sample into the
  mode a linear tilt favours.
- On tiny diffusers pipelines (float64) the gradient through the real UNet / transformer and
  VAE matches finite differences.
- Checkpointing keeps the saved activations independent of the number of steps.
- The budget is exact: NFE, verifier calls, reward gradients, backward rows, and the rows the
  denoiser really forwarded (the recomputation included) follow the documented rule.
- The oracle (not differentiable) is refused with one line, by the search and by SearchRequest.
"""
from __future__ import annotations

import math

import pytest
import torch

from tts_diffusion.core.budget import BACKWARD_NFE, Budget
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.errors import TTSInputError
from tts_diffusion.request import SearchRequest
from tts_diffusion.searchers.noise_opt import probability_regularizer, sample_with_grad
from tts_diffusion.searchers.registry import load_searcher, min_budget
from tts_diffusion.testing.analytic import analytic_process, bimodal_1d, four_modes_2d
from tts_diffusion.testing.helpers import saved_tensor_bytes
from tts_diffusion.verifiers import load_verifier
from tts_diffusion.verifiers.base import FunctionVerifier

F64 = torch.float64
noise_opt = load_searcher("noise_opt")


def _x_reward():
    """r(x) = x (the first coordinate of the decoded sample), differentiable."""
    return FunctionVerifier(lambda im, p: im[:, 0, 0, 0], differentiable=True)


def _fd(f, z, d, h=1e-5):
    return (f(z + h * d) - f(z - h * d)) / (2 * h)


@pytest.mark.parametrize("kind", ["vp", "flow"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_gradient_through_the_analytic_process_matches_finite_differences(kind, eta):
    mix = four_modes_2d()
    proc = analytic_process({"": mix, "p": mix}, kind=kind, steps=6)
    cond = proc.encode("p")
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 2, 1, 1, generator=g, dtype=F64)
    noise = torch.randn(proc.num_steps, 3, 2, 1, 1, generator=g, dtype=F64) if eta else None
    w = torch.tensor([0.7, -0.4], dtype=F64)
    # the flow-matching Euler step is computed in float32 like diffusers' scheduler: wider
    # differences and tolerance there (rounding / h), float64 throughout for VP
    h, tol = (1e-5, dict(rtol=1e-5, atol=1e-7)) if kind == "vp" else (2e-3, dict(rtol=1e-3, atol=5e-4))

    def reward(z_, noise_=noise, ckpt=False):
        x = sample_with_grad(proc, z_, cond, eta, noise_, checkpointing=ckpt)
        return (x.reshape(3, 2) * w).sum(1) + 0.3 * x.reshape(3, 2)[:, 0] ** 2

    for ckpt in (False, True):
        zz = z.clone().requires_grad_(True)
        nn = None if noise is None else noise.clone().requires_grad_(True)
        r = reward(zz, nn, ckpt)
        gz, *gn = torch.autograd.grad(r.sum(), [zz] + ([nn] if nn is not None else []))
        for _ in range(2):
            d = torch.randn(z.shape, generator=g, dtype=F64)
            fd = _fd(lambda t: reward(t), z, d, h)
            assert torch.allclose((gz * d).flatten(1).sum(1), fd, **tol), (ckpt, gz, fd)
        if eta:  # the injected noise of the stochastic steps
            d = torch.randn(noise.shape, generator=g, dtype=F64)
            fd = _fd(lambda t: reward(z, t), noise, d, h)
            an = (gn[0] * d).transpose(0, 1).flatten(1).sum(1)
            assert gn[0].abs().sum() > 0 and torch.allclose(an, fd, **tol)


def test_guard_finite_differences_see_a_wrong_gradient():
    """The check above can fail: a gradient off by 10% is caught."""
    proc = analytic_process({"": bimodal_1d(), "p": bimodal_1d()}, kind="vp", steps=6)
    cond = proc.encode("p")
    z = torch.randn(4, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    zz = z.clone().requires_grad_(True)
    (gz,) = torch.autograd.grad(sample_with_grad(proc, zz, cond).sum(), zz)
    fd = _fd(lambda t: sample_with_grad(proc, t, cond).reshape(-1), z, torch.ones_like(z))
    assert torch.allclose(gz.reshape(-1), fd, rtol=1e-5)
    assert not torch.allclose(1.1 * gz.reshape(-1), fd, rtol=1e-5)


@pytest.mark.parametrize("kind", ["vp", "flow"])
def test_optimised_samples_move_to_the_tilted_mode(kind):
    """Bimodal 1-D world 0.3 N(-2, 0.4^2) + 0.7 N(1.5, 0.6^2), reward r(x) = x: the tilted
    target p(x) exp(lam x) puts (for lam = 3) essentially all mass on the right mode, and
    every optimised noise ends there (its sample is still the model's ODE image of a noise),
    while about 3 in 10 plain samples start in the left one."""
    mix = bimodal_1d()
    assert float(mix.tilt_linear(3.0, [1.0]).w[1]) > 0.999
    proc = analytic_process({"": mix, "p": mix}, kind=kind, steps=8)
    b = Budget(max_nfe=10**6)
    res = noise_opt(proc, _x_reward(), "p", b, torch.Generator().manual_seed(1), num_samples=40,
                    num_iterations=15, learning_rate=0.2, grad_clip=0.0)
    first = torch.tensor([c.score for c in res.candidates if c.info["iteration"] == 0])
    final = torch.tensor([c.score for c in res.candidates if c.info.get("final")])
    assert 0.15 < float((first < 0).float().mean()) < 0.45
    assert bool((final > 0.5).all()), final
    assert float(final.mean()) > float(first.mean()) + 1.0
    # every noise's reward rises over the iterations (gradient ascent on a monotone ODE map)
    per_noise = {}
    for c in res.candidates:
        per_noise.setdefault(c.info["noise"], []).append(c.score)
    assert all(s[-1] > s[0] for s in per_noise.values())


def test_budget_is_exact_and_the_recomputation_is_real():
    mix = four_modes_2d()
    for ckpt in (True, False):
        proc = analytic_process({"": mix, "p": mix}, kind="flow", steps=5, cfg_scale=1.0)
        n, s, t = 3, 5, 4
        per_iter = n * s * (3 + int(ckpt))
        b = Budget(max_nfe=t * per_iter + n * s + per_iter - 1)  # one NFE short of another iteration
        res = noise_opt(proc, _x_reward(), "p", b, torch.Generator().manual_seed(0), num_samples=n,
                        checkpointing=ckpt, reg_weight=0.0)
        assert res.settings["num_iterations"] == t
        assert b.nfe == res.nfe == t * per_iter + n * s
        assert b.denoiser_backwards == t * n * s and b.nfe - BACKWARD_NFE * b.denoiser_backwards == \
            n * s * (t * (1 + int(ckpt)) + 1)
        assert b.reward_grads == t * n and b.verifier_calls == (t + 1) * n
        # the rows the exact denoiser actually evaluated: forward (+ recomputation) + final sample
        assert proc.adapter.rows == n * s * (t * (1 + int(ckpt)) + 1) == b.model_rows
        assert len(res.candidates) == (t + 1) * n
    assert min_budget("noise_opt", 5, num_samples=3, num_iterations=4) == 4 * 3 * 5 * 4 + 15
    with pytest.raises(TTSInputError, match=r"noise_opt with 1 noise\(s\), 9 iterations at 5 steps needs 185 NFE"):
        noise_opt(proc, _x_reward(), "p", Budget(max_nfe=100), None, num_iterations=9)


def test_oracle_is_refused_with_one_line():
    proc = analytic_process({"": bimodal_1d(), "p": bimodal_1d()}, kind="flow", steps=2)
    with pytest.raises(TTSInputError, match=r"'oracle' is not differentiable.*use one of aesthetic, clip, image_reward"):
        noise_opt(proc, load_verifier("oracle"), "p", Budget(max_nfe=100), None)
    with pytest.raises(TTSInputError, match=r"'oracle' is not differentiable"):
        SearchRequest("a red circle", searcher="noise_opt", verifier="oracle").check(embedded_model=True)
    SearchRequest("a red circle", searcher="noise_opt", verifier="clip").check(embedded_model=True)
    with pytest.raises(TTSInputError, match="optimize_step_noise needs stochastic steps"):
        noise_opt(proc, _x_reward(), "p", Budget(max_nfe=100), None, optimize_step_noise=True)


def test_few_step_schedule_and_step_noise_optimisation():
    mix = bimodal_1d()
    proc = analytic_process({"": mix, "p": mix}, kind="vp", steps=8)
    b = Budget(max_nfe=10**6)
    res = noise_opt(proc, _x_reward(), "p", b, torch.Generator().manual_seed(2), num_samples=8, num_iterations=10,
                    opt_steps=2, learning_rate=0.2)
    # 10 iterations on the 2-step schedule (4 NFE a step with checkpointing), the best noise sampled once on 8 steps
    assert b.nfe == 8 * (10 * 2 * 4 + 8) and len(res.candidates) == 8
    assert all(c.info.get("final") for c in res.candidates)
    b2 = Budget(max_nfe=10**6)
    res2 = noise_opt(proc, _x_reward(), "p", b2, torch.Generator().manual_seed(2), num_samples=8, num_iterations=10,
                     eta=1.0, optimize_step_noise=True, learning_rate=0.2)
    first = [c.score for c in res2.candidates if c.info["iteration"] == 0]
    last = [c.score for c in res2.candidates if c.info.get("final")]
    assert sum(last) / 8 > sum(first) / 8 + 0.5


def test_probability_regulariser():
    """A typical Gaussian noise sits at or near DNO's caps (2 log 2 for each of the two terms,
    own order and permutations), with a small gradient; an atypical one (scaled or shifted) gets a
    large value and a gradient that pulls it back."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4096, generator=g, dtype=F64)
    perms = [torch.randperm(4096, generator=g) for _ in range(3)]
    zt = z.clone().requires_grad_(True)
    reg = probability_regularizer(zt, perms)
    (gt,) = torch.autograd.grad(reg.sum(), zt)
    assert bool((reg >= 4 * math.log(2) - 1e-9).all()) and bool((reg < 4 * math.log(2) + 5).all())
    for bad in (3.0 * z, z + 0.5):
        zb = bad.clone().requires_grad_(True)
        rb = probability_regularizer(zb, perms)
        (gb,) = torch.autograd.grad(rb.sum(), zb)
        assert bool((rb > 100).all())
        assert bool((probability_regularizer(bad - 1e-3 * gb / gb.norm(dim=1, keepdim=True) * 64, perms) < rb).all())


# ----------------------------------------------------------------- tiny real pipelines
@pytest.fixture(scope="module", params=["sd15", "pixart_sigma"])
def tiny64(request):
    from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

    pipe = make_tiny_pipeline(request.param, seed=3)
    pipe.to(F64)
    return DenoisingProcess.from_pipeline(pipe, num_steps=2, guidance_scale=3.0)


def test_gradient_through_tiny_pipeline_matches_finite_differences(tiny64):
    """Through the real denoiser (UNet or transformer, CFG on) and the VAE decoder, in float64."""
    proc = tiny64
    cond = proc.encode("a red circle")
    v = FunctionVerifier(lambda im, p: (im[:, 0] - im[:, 2]).mean(dim=(1, 2)) * 10, differentiable=True)
    from tts_diffusion.core.reward_grad import differentiable_reward

    def reward(z, ckpt=False):
        x = sample_with_grad(proc, z, cond, checkpointing=ckpt)
        return differentiable_reward(proc, v, x, "a red circle").double()

    g = torch.Generator().manual_seed(0)
    z = torch.randn(proc.adapter.latent_shape(2), generator=g, dtype=F64)
    zz = z.clone().requires_grad_(True)
    (gz,) = torch.autograd.grad(reward(zz, ckpt=True).sum(), zz)
    assert gz.abs().sum() > 0
    h = 3e-3  # decoded images are float32 (adapter.decode): steps large enough to keep rounding out
    for _ in range(2):
        d = torch.randn(z.shape, generator=g, dtype=F64)
        d = d / d.norm()
        fd = _fd(reward, z, d, h)
        an = (gz * d).flatten(1).sum(1)
        assert torch.allclose(an, fd, rtol=2e-2, atol=2e-3 * float(gz.norm())), (an, fd)


def test_checkpointing_memory_grows_with_one_step_not_the_trajectory():
    """Bytes the autograd graph saves for the backward: without checkpointing they grow by one
    step's activations per step; with it, by nothing measurable (only step inputs are kept)."""
    from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

    pipe = make_tiny_pipeline("sd15", seed=3)
    saved = {}
    for steps in (2, 4):
        proc = DenoisingProcess.from_pipeline(pipe, num_steps=steps, guidance_scale=3.0)
        cond = proc.encode("a red circle")
        z = torch.randn(proc.adapter.latent_shape(2), generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        for ckpt in (False, True):
            saved[steps, ckpt] = saved_tensor_bytes(lambda: sample_with_grad(proc, z, cond, checkpointing=ckpt).sum())
    per_step = (saved[4, False] - saved[2, False]) / 2
    latent = z.numel() * z.element_size()
    assert per_step > 20 * latent  # a step's activations are far larger than its input
    assert saved[4, True] - saved[2, True] <= 2 * latent  # checkpointed: at most the step inputs
    assert saved[4, True] < saved[4, False] / 10


def test_stop_score_ends_at_the_first_iteration_reaching_it():
    """Stop when satisfied: the optimisation ends at the first iteration whose sample reaches
    stop_score; on the full grid that sample is the result (no final sample), the NFE not
    spent is reported; an unreachable stop_score changes nothing."""
    mix = bimodal_1d()
    proc = analytic_process({"": mix, "p": mix}, kind="flow", steps=8)
    kw = dict(num_samples=2, num_iterations=15, learning_rate=0.2, grad_clip=0.0, reg_weight=0.0)
    free = noise_opt(proc, _x_reward(), "p", Budget(max_nfe=10**4), torch.Generator().manual_seed(1), **kw)
    rewards = [max(c.score for c in free.candidates if c.info["iteration"] == t) for t in range(15)]
    target = rewards[0] + 0.5 * (max(rewards) - rewards[0])  # reached part-way, not at the first iteration
    first = next(t for t, r in enumerate(rewards) if r >= target)
    assert 0 < first < 14
    b = Budget(max_nfe=10**4)
    res = noise_opt(proc, _x_reward(), "p", b, torch.Generator().manual_seed(1), stop_score=target, **kw)
    per_iter = 2 * 8 * 4  # forward, recomputation and backward (2 NFE) per noise and step
    assert res.settings["num_iterations"] == first + 1 and res.nfe == (first + 1) * per_iter
    assert res.settings["stopped_early"] is True and res.best_score == rewards[first] >= target
    assert res.settings["unspent_nfe"] == 10**4 - res.nfe and not any(c.info.get("final") for c in res.candidates)
    never = noise_opt(proc, _x_reward(), "p", Budget(max_nfe=10**4), torch.Generator().manual_seed(1),
                      stop_score=1e5, **kw)
    assert never.settings["stopped_early"] is False and never.nfe == free.nfe and never.scores == free.scores
