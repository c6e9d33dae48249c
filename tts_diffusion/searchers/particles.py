"""Particle-population arithmetic shared by the particle searchers (SMC / FK steering,
Feynman-Kac correctors): log-weight normalisation, effective sample size, the one
adaptive-resampling rule (`should_resample`) and the four classic resampling schemes.

Pure functions on tensors. Weights live in the last dimension; any leading dimensions are
independent populations resampled in one call. Uniforms are drawn from the given
`generator` on its own device (CPU by default) and then moved to the weights' device, so
the result is a deterministic function of (log-weights, generator state) whatever device
the particles are on. Every resampler returns ancestor indices `idx` (int64, shape
[..., n], sorted within each population) such that the new population is `x[idx]`.

References: Douc, Cappe & Moulines 2005, "Comparison of resampling schemes for particle
filtering"; Kish's effective sample size (Kong, Liu & Wong 1994).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .vocabulary import RESAMPLING_SCHEMES


# ------------------------------------------------------------------ weights
def normalize_log_weights(log_w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log w - logsumexp(log w): log of weights that sum to one along `dim`.

    -inf entries (particles with zero weight) stay -inf. A population whose entries are
    all -inf has no normalisation; it is returned as uniform weights (log 1/K), so that a
    resampler called on it picks uniformly rather than failing with NaNs."""
    log_w = log_w.double() if log_w.dtype in (torch.float16, torch.bfloat16) else log_w
    lse = torch.logsumexp(log_w, dim=dim, keepdim=True)
    out = log_w - lse
    dead = torch.isneginf(lse).expand_as(out)
    if dead.any():
        k = log_w.shape[dim]
        out = torch.where(dead, torch.full_like(out, -math.log(k)), out)
    return out


def normalized_weights(log_w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Weights w_k = exp(log w_k) / sum_j exp(log w_j)."""
    return normalize_log_weights(log_w, dim).exp()


def ess(log_w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Kish's effective sample size 1 / sum_k w_k^2 of the normalised weights (between 1
    and K; K for uniform weights)."""
    w = normalized_weights(log_w, dim)
    return 1.0 / (w * w).sum(dim)


def log_mean_exp(log_w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log (1/K sum_k exp(log w_k)): the log of the SMC incremental evidence estimate."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def center_log_weights(log_w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Subtract the mean over the population (Skreta et al. 2025's weight centring: it
    changes no normalised weight and keeps exp() in range)."""
    finite = torch.isfinite(log_w)
    mean = torch.where(finite, log_w, torch.zeros_like(log_w)).sum(dim, keepdim=True)
    mean = mean / finite.sum(dim, keepdim=True).clamp_min(1)
    return log_w - mean


# ---------------------------------------------------------------- uniforms
def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    gdev = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(shape, generator=generator, device=gdev, dtype=torch.float64)
    return u.to(like.device)


def _inverse_cdf(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Indices k with cdf_{k-1} <= u < cdf_k, for sorted or unsorted u in [0, 1).
    Zero-weight particles are never chosen; float round-off at the top end is clamped to
    the last particle of positive weight."""
    cdf = torch.cumsum(w, dim=-1)
    cdf = cdf / cdf[..., -1:].clamp_min(torch.finfo(cdf.dtype).tiny)
    idx = torch.searchsorted(cdf.contiguous(), u.contiguous(), right=True)
    k = w.shape[-1]
    # the last index with positive weight (searchsorted may return K when u ~ 1)
    last = (k - 1) - torch.argmax((w > 0).flip(-1).to(torch.int8), dim=-1, keepdim=True)
    idx = torch.minimum(idx, last)
    return idx


def _check(log_w: torch.Tensor, n: int | None) -> tuple[torch.Tensor, int]:
    if log_w.ndim == 0:
        raise ValueError("log-weights need at least one dimension (the particles)")
    if log_w.shape[-1] < 1:
        raise ValueError("cannot resample an empty population")
    if torch.isnan(log_w).any():
        raise ValueError("log-weights contain NaN")
    if torch.isposinf(log_w).any():
        raise ValueError("log-weights contain +inf")
    n = log_w.shape[-1] if n is None else int(n)
    if n < 0:
        raise ValueError(f"cannot draw a negative number of particles ({n})")
    return normalized_weights(log_w.double()), n


# ----------------------------------------------------------------- schemes
def multinomial_resample(log_w: torch.Tensor, generator: torch.Generator | None = None,
                         n: int | None = None) -> torch.Tensor:
    """n i.i.d. draws from the categorical distribution of the weights."""
    w, n = _check(log_w, n)
    u = _uniform((*w.shape[:-1], n), generator, w)
    return torch.sort(_inverse_cdf(w, u), dim=-1).values


def stratified_resample(log_w: torch.Tensor, generator: torch.Generator | None = None,
                        n: int | None = None) -> torch.Tensor:
    """One uniform in each stratum [j/n, (j+1)/n): u_j = (j + U_j) / n, U_j i.i.d."""
    w, n = _check(log_w, n)
    u = (torch.arange(n, device=w.device, dtype=torch.float64) + _uniform((*w.shape[:-1], n), generator, w)) / n
    return _inverse_cdf(w, u)


def systematic_resample(log_w: torch.Tensor, generator: torch.Generator | None = None,
                        n: int | None = None) -> torch.Tensor:
    """One shared uniform: u_j = (j + U) / n (the lowest-variance scheme in practice)."""
    w, n = _check(log_w, n)
    u0 = _uniform((*w.shape[:-1], 1), generator, w)
    u = (torch.arange(n, device=w.device, dtype=torch.float64) + u0) / n
    return _inverse_cdf(w, u)


def residual_resample(log_w: torch.Tensor, generator: torch.Generator | None = None,
                      n: int | None = None) -> torch.Tensor:
    """floor(n w_k) deterministic copies of particle k, the remaining R = n - sum floor(n w)
    drawn multinomially from the residual weights n w_k - floor(n w_k)."""
    w, n = _check(log_w, n)
    nw = n * w
    counts = torch.floor(nw + 1e-9)  # round-off: n * (1/n) may land just below 1
    resid = (nw - counts).clamp_min(0)
    r = (n - counts.sum(-1, keepdim=True)).round().long()  # [..., 1]
    # draw n residual indices per population, keep only the first R of each
    has = resid.sum(-1, keepdim=True) > 0
    safe = torch.where(has, resid, w)
    u = _uniform((*w.shape[:-1], n), generator, w)
    extra = _inverse_cdf(safe, u)  # [..., n]
    keep = (torch.arange(n, device=w.device) < r).to(counts.dtype)
    counts = counts.scatter_add(-1, extra, keep)
    return _counts_to_indices(counts.round().long(), n)


def _counts_to_indices(counts: torch.Tensor, n: int) -> torch.Tensor:
    """Offspring counts [..., K] (summing to n) -> sorted ancestor indices [..., n]."""
    cum = torch.cumsum(counts, dim=-1)
    pos = torch.arange(n, device=counts.device).expand(*counts.shape[:-1], n).contiguous()
    return torch.searchsorted(cum.contiguous(), pos, right=True)


_SCHEMES: dict[str, Callable[..., torch.Tensor]] = {
    "multinomial": multinomial_resample,
    "systematic": systematic_resample,
    "stratified": stratified_resample,
    "residual": residual_resample,
}


def resample(log_w: torch.Tensor, scheme: str = "systematic", generator: torch.Generator | None = None,
             n: int | None = None) -> torch.Tensor:
    """Ancestor indices [..., n] (n defaults to the population size) drawn with `scheme`,
    each particle k chosen n w_k times in expectation."""
    try:
        fn = _SCHEMES[scheme]
    except KeyError:
        raise ValueError(f"unknown resampling scheme {scheme!r}; choose from {RESAMPLING_SCHEMES}") from None
    return fn(log_w, generator, n)


def dead_to_neginf(log_w: torch.Tensor) -> torch.Tensor:
    """Log-weights with NaN and +inf replaced by -inf. They only arise from arithmetic on a
    lineage that already has zero weight (a -inf reward: inf - inf, r - (-inf)), so the
    particle stays dead instead of poisoning the population."""
    return torch.where(torch.isnan(log_w) | torch.isposinf(log_w), torch.full_like(log_w, -math.inf), log_w)


def should_resample(log_w: torch.Tensor, threshold: float) -> bool:
    """The one adaptive-resampling rule (SMC and FKC): resample when ESS < threshold * K.

    threshold in [0, 1]: 1 resamples at every potential step (whatever the weights), 0
    never; in between, when Kish's ESS of the population `log_w` [K] falls below
    threshold * K."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"resample threshold must be in [0, 1], got {threshold}")
    if threshold >= 1.0:
        return True
    if threshold <= 0.0:
        return False
    return float(ess(log_w)) < threshold * log_w.shape[-1]


def offspring_counts(idx: torch.Tensor, k: int) -> torch.Tensor:
    """How many times each of k particles was chosen ([..., k])."""
    out = torch.zeros((*idx.shape[:-1], k), dtype=torch.long, device=idx.device)
    return out.scatter_add(-1, idx, torch.ones_like(idx))
