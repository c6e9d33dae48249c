"""Resampling schemes, ESS and log-weight arithmetic (tts_diffusion/searchers/particles.py).

Unbiasedness is checked on 20000 independent populations resampled in one batched call:
the mean offspring count of particle k must equal n w_k within 5 standard errors (the SE
estimated from the same draws), for every scheme."""
import math

import pytest
import torch

from tts_diffusion.searchers.particles import (
    RESAMPLING_SCHEMES, center_log_weights, ess, log_mean_exp, normalize_log_weights, normalized_weights,
    offspring_counts, resample,
)

W = torch.tensor([0.05, 0.15, 0.3, 0.0, 0.5], dtype=torch.float64)
LOGW = torch.log(W)


def test_normalisation_and_ess():
    lw = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    n = normalize_log_weights(lw)
    assert torch.logsumexp(n, 0).item() == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(normalize_log_weights(lw + 100.0), n)  # shift invariance
    assert torch.allclose(normalized_weights(LOGW), W)
    assert torch.isneginf(normalize_log_weights(LOGW)[3])
    dead = normalize_log_weights(torch.full((4,), -math.inf))  # no information: uniform
    assert torch.allclose(dead.exp(), torch.full((4,), 0.25, dtype=dead.dtype))
    assert ess(torch.zeros(7)).item() == pytest.approx(7.0)
    assert ess(torch.tensor([0.0, -math.inf, -math.inf])).item() == pytest.approx(1.0)
    assert ess(LOGW).item() == pytest.approx(1 / float((W * W).sum()))
    assert ess(torch.zeros(3, 5)).tolist() == pytest.approx([5.0] * 3)  # batched
    assert log_mean_exp(torch.log(torch.tensor([1.0, 3.0]))).item() == pytest.approx(math.log(2.0))
    c = center_log_weights(lw)
    assert c.mean().item() == pytest.approx(0.0, abs=1e-12) and torch.allclose(normalize_log_weights(c), n)


@pytest.mark.parametrize("scheme", RESAMPLING_SCHEMES)
@pytest.mark.parametrize("n", [5, 3, 12])
def test_unbiased_offspring_counts(scheme, n):
    pops = 20000
    idx = resample(LOGW.expand(pops, 5), scheme, torch.Generator().manual_seed(1), n=n)
    assert idx.shape == (pops, n) and idx.dtype == torch.long
    assert bool((idx[:, 1:] >= idx[:, :-1]).all())  # sorted within each population
    counts = offspring_counts(idx, 5).double()
    assert counts.sum(1).eq(n).all()
    assert counts[:, 3].eq(0).all()  # a zero-weight particle is never chosen
    se = counts.std(0) / math.sqrt(pops) + 1e-12
    err = (counts.mean(0) - n * W).abs()
    assert bool((err <= 5 * se + 1e-9).all()), (scheme, n, counts.mean(0), n * W)


def test_low_variance_schemes_beat_multinomial():
    pops = 20000
    var = {}
    for scheme in RESAMPLING_SCHEMES:
        counts = offspring_counts(resample(LOGW.expand(pops, 5), scheme, torch.Generator().manual_seed(2)), 5)
        var[scheme] = counts.double().var(0).sum().item()
        if scheme in ("systematic", "residual"):  # at least floor(n w_k) copies
            assert bool((counts >= torch.floor(5 * W)).all())
        if scheme == "systematic":  # and at most ceil(n w_k)
            assert bool((counts <= torch.ceil(5 * W)).all())
    for scheme in ("systematic", "stratified", "residual"):
        assert var[scheme] < 0.8 * var["multinomial"], var


@pytest.mark.parametrize("scheme", RESAMPLING_SCHEMES)
def test_deterministic_given_generator(scheme):
    lw = torch.randn(3, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = resample(lw, scheme, torch.Generator().manual_seed(7))
    b = resample(lw, scheme, torch.Generator().manual_seed(7))
    c = resample(lw, scheme, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    one = resample(lw[1], scheme, torch.Generator().manual_seed(7))
    assert one.shape == (50,) and one.min() >= 0 and one.max() < 50


def test_degenerate_and_invalid_weights():
    g = torch.Generator().manual_seed(0)
    for scheme in RESAMPLING_SCHEMES:
        assert resample(torch.tensor([-math.inf, 0.0, -math.inf]), scheme, g).tolist() == [1, 1, 1]
        assert resample(torch.zeros(4), scheme, g, n=0).shape == (0,)
        assert resample(torch.full((3,), -math.inf), scheme, g).max() < 3  # uniform fallback
    assert resample(torch.zeros(4), "residual", g).tolist() == [0, 1, 2, 3]  # exact copies
    assert resample(torch.zeros(4), "systematic", g).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="NaN"):
        resample(torch.tensor([0.0, math.nan]), "systematic", g)
    with pytest.raises(ValueError, match=r"\+inf"):
        resample(torch.tensor([0.0, math.inf]), "systematic", g)
    with pytest.raises(ValueError, match="unknown resampling scheme"):
        resample(torch.zeros(3), "bogus", g)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_device_agnostic():
    lw = torch.randn(4, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for scheme in RESAMPLING_SCHEMES:
        cpu = resample(lw, scheme, torch.Generator().manual_seed(3))
        gpu = resample(lw.cuda(), scheme, torch.Generator().manual_seed(3))
        assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
