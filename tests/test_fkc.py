"""Feynman-Kac correctors against exactly known targets (tts_diffusion/testing/analytic.py).

Coverage vs the 90 s test budget: CFG runs on both families (1-D) and on the flow grid
(2-D); the product on the flow grid; annealing's two variants on one family each.

Grids: FKC's weights integrate eta(t) |score|^2, whose rate diverges like 1/a near pure
noise; integrating the weights needs steps that are small in log a there. The tests use 200-step
grids uniform in log-SNR over [-10, 10] (a DDPM-family alpha_bar table and a flow sigma
schedule, both starting at a ~ 0.007), where the scaled-linear / shifted grids of real
pipelines take the first steps in large strides of log a; `test_fkc_cfg_on_pipeline_grids`
shows CFG (whose weight rate vanishes at pure noise) also works there.

Targets: CFG's p_u^(1-w) p_c^w and p^beta by quadrature on a fine grid; the product of two
mixtures in closed form.

Tolerances. Shape: the KS distance of one run's K = 2000 resampled particles must be below
2.2 / sqrt(K / 2) + 0.01 (resampling at every step roughly halves the effective size; 0.01
for discretisation). Masses and means: resampling makes particles share ancestors, so the
run-to-run spread of a mode's mass is 2-4x the binomial one at the ESS (measured); these
checks therefore pool R = 6 independent runs and require |estimate - exact| < 4.5 standard
errors of the between-run spread (Student t, 5 d.o.f., 99.4%) + a discretisation slack
(`analytic.agrees`). Every test has a guard: the same SDE without the weights (plain CFG,
plain product of scores, plain rescaled score) fails the same check, its standard errors
those of its i.i.d. samples.
"""
import math

import pytest
import torch

from tts_diffusion.testing.analytic import (
    FunctionVerifier, GaussianMixture, agrees, analytic_process, bimodal_1d, four_modes_2d, geometric_target,
    iid_estimate, replicate, weighted_ks,
)
from tts_diffusion.testing.helpers import BrightnessVerifier
from tts_diffusion import Budget, TTSInputError
from tts_diffusion.searchers import available_searchers, load_searcher
from tts_diffusion.searchers.fkc import fkc_sample

STEPS, K = 200, 2000
KS_TOL = 2.2 / math.sqrt(K / 2) + 0.01
RUNS, K_REP = 6, 1000


def cfg_world():
    """Unconditional: modes at -1.5 and 1.5 with equal weights; conditional: weights 1/4, 3/4."""
    return (GaussianMixture([0.5, 0.5], [-1.5, 1.5], [0.6, 0.6]),
            GaussianMixture([0.25, 0.75], [-1.5, 1.5], [0.6, 0.6]))


def cfg_experts(proc, cond):
    def experts(x, i):
        p = proc.denoise(x, i, cond)
        return [p.uncond_out, p.cond_out]

    return experts


@pytest.mark.parametrize("kind", ["vp", "flow"])
def test_fkc_cfg_matches_the_geometric_product_1d(kind):
    w = 3.0
    pu, pc = cfg_world()
    proc = analytic_process({"": pu, "c": pc}, kind, STEPS, cfg_scale=w, spacing="logsnr")
    target = geometric_target([(pu, 1 - w), (pc, w)])
    ex = cfg_experts(proc, proc.encode("c"))
    run = fkc_sample(proc, ex, [1 - w, w], K, torch.Generator().manual_seed(0))
    x = run.resampled()
    ks = weighted_ks(x, None, target.cdf)
    assert ks < KS_TOL, ks
    # guard: plain CFG sampling (the same SDE, no weights) is measurably off (in the modes'
    # shapes: the masses are close here)
    plain = fkc_sample(proc, ex, [1 - w, w], K, torch.Generator().manual_seed(0), weights=False)
    assert weighted_ks(plain.x, None, target.cdf) > KS_TOL


def test_fkc_cfg_matches_the_geometric_product_2d(kind="flow"):
    """Four modes; unconditional weights .1/.2/.3/.4, conditional .4/.3/.2/.1, w = 2: the target
    has 0.72 of its mass in the upper-right quadrant, plain CFG puts 0.63 there."""
    w = 2.0
    pu, pc = four_modes_2d((0.1, 0.2, 0.3, 0.4)), four_modes_2d((0.4, 0.3, 0.2, 0.1))
    proc = analytic_process({"": pu, "c": pc}, kind, STEPS, cfg_scale=w, spacing="logsnr")
    target = geometric_target([(pu, 1 - w), (pc, w)])
    ex = cfg_experts(proc, proc.encode("c"))
    quadrants = [(1, 1), (-1, 1), (-1, -1), (1, -1)]

    def masses(x):
        x = x.reshape(x.shape[0], 2)
        return [((sx * x[:, 0] > 0) & (sy * x[:, 1] > 0)).double().mean().item() for sx, sy in quadrants]

    exact = [target.mass(lambda p, sx=sx, sy=sy: (sx * p[:, 0] > 0) & (sy * p[:, 1] > 0)) for sx, sy in quadrants]
    fkc, fkc_se = replicate(lambda seed: masses(fkc_sample(proc, ex, [1 - w, w], K_REP,
                                                           torch.Generator().manual_seed(seed)).resampled()), RUNS)
    assert agrees(fkc, fkc_se, exact), (fkc, fkc_se, exact)
    # guard: plain CFG, K independent samples, standard errors of i.i.d. draws
    x = fkc_sample(proc, ex, [1 - w, w], K, torch.Generator().manual_seed(0), weights=False).x.reshape(K, 2)
    plain, plain_se = iid_estimate(torch.stack([(sx * x[:, 0] > 0) & (sy * x[:, 1] > 0) for sx, sy in quadrants], 1))
    assert not agrees(plain, plain_se, exact), (plain, plain_se, exact)


def test_fkc_cfg_on_pipeline_grids():
    """The same CFG check on Stable Diffusion's scaled-linear DDIM grid and SD3's shifted flow grid."""
    w = 3.0
    pu, pc = cfg_world()
    target = geometric_target([(pu, 1 - w), (pc, w)])
    for kind in ("vp", "flow"):
        proc = analytic_process({"": pu, "c": pc}, kind, STEPS, cfg_scale=w)
        run = fkc_sample(proc, cfg_experts(proc, proc.encode("c")), [1 - w, w], K, torch.Generator().manual_seed(2))
        assert weighted_ks(run.resampled(), None, target.cdf) < KS_TOL


def test_fkc_product_of_two_prompts(kind="flow"):
    """p1 = (N(-1.5, .3^2) + N(1.5, .3^2)) / 2, p2 = (N(-1.5, 1.5^2) + N(1.5, .3^2)) / 2: the
    normalised product p1 p2 (closed form) has 0.21 of its mass left of 0, the plain
    product-of-scores sampler puts about 0.39 there. The product's weights vary a lot (the
    per-run spread of the mass is ~3x binomial), so the check pools 6 runs: left-mode mass
    and mean, 4.5 standard errors + 0.015 / 0.05."""
    p1 = GaussianMixture([0.5, 0.5], [-1.5, 1.5], [0.3, 0.3])
    p2 = GaussianMixture([0.5, 0.5], [-1.5, 1.5], [1.5, 0.3])
    target = p1.product(p2)
    exact = [float(target.cdf(0.0)), float(target.mean()[0])]
    proc = analytic_process({"": p1, "p1": p1, "p2": p2}, kind, STEPS, spacing="logsnr")
    c1, c2 = proc.encode("p1"), proc.encode("p2")

    def experts(x, i):
        return [proc.denoise(x, i, c1).out, proc.denoise(x, i, c2).out]

    def stats(x):
        x = x.reshape(x.shape[0], 1)
        return torch.cat([(x < 0).double(), x], 1)

    est, se = replicate(lambda seed: stats(fkc_sample(proc, experts, [1.0, 1.0], K_REP,
                                                      torch.Generator().manual_seed(seed)).resampled()).mean(0).tolist(), RUNS)
    assert agrees(est, se, exact, slack=[0.015, 0.05]), (est, se, exact)
    plain = fkc_sample(proc, experts, [1.0, 1.0], K, torch.Generator().manual_seed(0), weights=False).x
    assert not agrees(*iid_estimate(stats(plain)), exact, slack=[0.015, 0.05])


@pytest.mark.parametrize("kind,variant,lo", [("vp", "target_score", -10.0), ("flow", "tempered_noise", -6.0)])
def test_fkc_annealing(kind, variant, lo):
    """p^2 of the bimodal mixture: left-mode mass 0.216 (p: 0.304) and mean 0.744.

    The annealing weights vary the most of the three targets (|score|^2 itself, not a
    difference of scores): one run of K = 1000 has a spread of 0.02-0.05 in the mass. So
    the estimate pools 12 runs of K = 500 on a 250-step log-SNR grid (from `lo` to 10) and
    must lie within 3.5 standard errors of the between-run spread (t, 11 d.o.f., 99.5%) plus
    a slack for the Euler discretisation of weights and SDE: measured biases of the mass
    (16 runs of 1000) -0.016 +- 0.008 (vp), -0.010 +- 0.007 (flow, target score), -0.003
    +- 0.02 (tempered noise, whose smaller noise leaves more to the weights); slack 0.02
    (0.04 tempered) on the mass, 0.07 (0.12) on the mean (the modes are 3.5 apart). The
    guard: the same SDE without weights, 4000 i.i.d. samples, lands near 0.15 (0.12)."""
    beta = 2.0
    g = bimodal_1d()
    target = geometric_target([(g, beta)])
    exact = [float(target.cdf(torch.tensor([0.0]))), float(target.mean())]
    proc = analytic_process({"": g, "a": g}, kind, 250, spacing="logsnr", log_snr_range=(lo, 10.0))
    cond = proc.encode("a")

    def experts(x, i):
        return [proc.denoise(x, i, cond).out]

    def one(seed):
        run = fkc_sample(proc, experts, [beta], 500, torch.Generator().manual_seed(seed), variant=variant)
        w, x = torch.softmax(run.log_w, 0), run.x.reshape(-1)
        return [float((w * (x < 0)).sum()), float((w * x).sum())]

    slack = [0.02, 0.07] if variant == "target_score" else [0.04, 0.12]
    m, se = replicate(one, 12)
    assert agrees(m, se, exact, z=3.5, slack=slack), (m, se, exact)
    x = fkc_sample(proc, experts, [beta], 4000, torch.Generator().manual_seed(0), variant=variant,
                   weights=False).x.reshape(-1, 1)
    plain, plain_se = iid_estimate(torch.cat([(x < 0).double(), x], 1))
    assert not agrees(plain, plain_se, exact, z=3.5, slack=slack), (plain, plain_se, exact)


def test_fkc_weight_coefficient_is_the_integral_of_eta():
    """Family.pf_eta(i) = integral of eta = s s' - (a'/a) s^2 over the step, numerically."""
    for kind in ("vp", "flow"):
        fam = analytic_process({"": bimodal_1d()}, kind, 20).family
        for i in (1, 7, 15):
            n = 100000
            if kind == "flow":
                s = torch.linspace(fam.s(i), float(fam.s_to[i]), n + 1, dtype=torch.float64)
                a = 1 - s
            else:
                ab = torch.linspace(fam.a(i) ** 2, float(fam.a_to[i]) ** 2, n + 1, dtype=torch.float64)
                a, s = ab.sqrt(), (1 - ab).sqrt()
            am, sm = (a[1:] + a[:-1]) / 2, (s[1:] + s[:-1]) / 2
            numeric = float((sm * (s[1:] - s[:-1]) - sm * sm * (a[1:] - a[:-1]) / am).sum())
            assert fam.pf_eta(i) == pytest.approx(numeric, rel=1e-6)
            assert fam.pf_eta(i) < 0


def test_fkc_searcher_modes_and_budget():
    pu, pc = cfg_world()
    g = bimodal_1d()
    proc = analytic_process({"": pu, "c": pc, "d": g}, "flow", 10, cfg_scale=3.0)
    ver = FunctionVerifier(lambda x: -x[:, 0], 1)
    fkc = load_searcher("fkc")
    assert "fkc" in available_searchers()
    res = fkc(proc, ver, "c", Budget(64), torch.Generator().manual_seed(0))
    assert res.nfe == 60 and len(res.candidates) == 6 and res.settings["guidance"] == 3.0
    assert res.verifier_calls == 6 and res.best_score == max(res.scores)
    again = fkc(proc, ver, "c", Budget(64), torch.Generator().manual_seed(0))
    assert again.scores == res.scores
    prod = fkc(proc, ver, "c", Budget(64), torch.Generator().manual_seed(0), mode="product", prompt_2="d")
    assert prod.nfe == 60 and len(prod.candidates) == 3 and prod.settings["beta"] == 1.0  # 2 NFE per row and step
    ann = fkc(proc, ver, "c", Budget(40), torch.Generator().manual_seed(0), mode="anneal", variant="tempered_noise")
    assert ann.nfe == 40 and ann.settings["beta"] == 2.0
    with pytest.raises(TTSInputError, match="prompt_2"):
        fkc(proc, ver, "c", Budget(40), torch.Generator(), mode="product")
    with pytest.raises(TTSInputError, match="mode"):
        fkc(proc, ver, "c", Budget(40), torch.Generator(), mode="nope")
    no_cfg = analytic_process({"": pu, "c": pc}, "flow", 10)
    with pytest.raises(TTSInputError, match="classifier-free guidance"):
        fkc(no_cfg, ver, "c", Budget(40), torch.Generator())


def test_fkc_on_a_diffusers_pipeline(tiny_pipe):
    from tts_diffusion.testing.tiny_pipelines import pipeline_call_kwargs
    from tts_diffusion.core.process import DenoisingProcess

    kw = pipeline_call_kwargs("sd15")
    proc = DenoisingProcess.from_pipeline(tiny_pipe("sd15"), 3, 4.0, height=kw["height"], width=kw["width"])
    res = load_searcher("fkc")(proc, BrightnessVerifier(), "a red circle", Budget(9), torch.Generator().manual_seed(0))
    assert res.nfe == 9 and len(res.candidates) == 3


def test_product_mode_budget_message_counts_both_prompts_calls():
    """One product-mode sample costs two denoiser calls per step: the message says so."""
    g = four_modes_2d()
    proc = analytic_process({"": g, "a": g, "b": g}, "flow", 20, cfg_scale=2.0)
    with pytest.raises(TTSInputError, match=r"below one full sample \(40 NFE at 20 steps, 2 denoiser calls per step\);"
                                            r" raise the budget to at least 40"):
        load_searcher("fkc")(proc, FunctionVerifier(lambda x: x.sum(1), 2), "a", Budget(30), mode="product",
                             prompt_2="b")

