"""An analytic "text-to-image model": Gaussian mixtures in 1 or 2 dimensions whose denoiser
E[x0 | x_i] is known in closed form at every noise level, wrapped as a real
`DenoisingProcess` (adapter + family + model timesteps), so that every searcher runs
unchanged on it and its output can be compared with an exactly known target.

- `GaussianMixture`: weights w_k, means mu_k [K, D], per-axis stds tau_k [K, D]. On the
  interpolant x = a x0 + s eps its marginal is the mixture of N(a mu_k, a^2 tau_k^2 + s^2),
  and E[x0 | x] = sum_k r_k(x) (mu_k + a tau_k^2 / (a^2 tau_k^2 + s^2) (x - a mu_k)) with
  r_k the posterior component probabilities.
- `AnalyticAdapter`: maps prompt strings to mixtures (a negative / empty prompt to the
  "unconditional" one), so CFG's two halves and a second prompt are two exact denoisers.
  Latents are [B, D, 1, 1]; `decode` is the identity padded to three channels (values are
  not clipped), so a verifier can be any known function of x.
- `analytic_process`: builds the Family from a DDIM alpha_bar table (`vp_family`) or a
  flow-matching scheduler's sigmas (`flow_family`) and returns the DenoisingProcess.
- Exact targets: tilted mixtures p(x) exp(lam v.x) and products of mixtures in closed form;
  powers p^beta and geometric mixtures p_u^(1-w) p_c^w by quadrature on a fine grid.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

from tts_diffusion.core.families import flow_family, vp_family
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.verifiers.base import Verifier

F64 = torch.float64


class GaussianMixture:
    """Mixture of axis-aligned Gaussians in D dimensions."""

    def __init__(self, weights: Sequence[float], means, stds):
        self.w = torch.as_tensor(weights, dtype=F64)
        self.w = self.w / self.w.sum()
        self.mu = torch.as_tensor(means, dtype=F64)
        if self.mu.ndim == 1:
            self.mu = self.mu[:, None]
        tau = torch.as_tensor(stds, dtype=F64)
        if tau.ndim == 1:
            tau = tau[:, None]
        self.tau = tau.expand_as(self.mu).clone()

    @property
    def dim(self) -> int:
        return int(self.mu.shape[1])

    # ------------------------------------------------------------ densities
    def marginal(self, a: float = 1.0, s: float = 0.0):
        """Weights [K], means [K, D] and stds [K, D] of p(x_i) for x_i = a x0 + s eps."""
        return self.w, a * self.mu, torch.sqrt(a * a * self.tau**2 + s * s)

    def _comp_logp(self, x: torch.Tensor, a: float, s: float) -> torch.Tensor:
        w, m, sd = self.marginal(a, s)
        x = x.to(F64).reshape(x.shape[0], -1)[:, None, :]  # [N, 1, D]
        z = (x - m) / sd
        return torch.log(w) + (-0.5 * z * z - torch.log(sd) - 0.5 * math.log(2 * math.pi)).sum(-1)  # [N, K]

    def log_prob(self, x: torch.Tensor, a: float = 1.0, s: float = 0.0) -> torch.Tensor:
        return torch.logsumexp(self._comp_logp(x, a, s), dim=1)

    def x0_mean(self, x: torch.Tensor, a: float, s: float) -> torch.Tensor:
        """E[x0 | x_i = x] for x [N, D] (closed form, see the module docstring)."""
        x = x.to(F64).reshape(x.shape[0], -1)
        r = torch.softmax(self._comp_logp(x, a, s), dim=1)  # [N, K]
        var = a * a * self.tau**2 + s * s
        post = self.mu + (a * self.tau**2 / var) * (x[:, None, :] - a * self.mu)  # [N, K, D]
        return (r[:, :, None] * post).sum(1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.w, n, replacement=True, generator=generator)
        return self.mu[k] + self.tau[k] * torch.randn(n, self.dim, generator=generator, dtype=F64)

    def mean(self) -> torch.Tensor:
        return (self.w[:, None] * self.mu).sum(0)

    def cdf(self, x: torch.Tensor, axis: int = 0) -> torch.Tensor:
        """Marginal CDF along one axis."""
        x = torch.as_tensor(x, dtype=F64)[..., None]
        z = (x - self.mu[:, axis]) / (self.tau[:, axis] * math.sqrt(2))
        return (self.w * 0.5 * (1 + torch.erf(z))).sum(-1)

    # ------------------------------------------------------- exact targets
    def tilt_linear(self, lam: float, v: Sequence[float]) -> "GaussianMixture":
        """p(x) exp(lam v.x), normalised: component k becomes N(mu_k + lam tau_k^2 v, tau_k^2)
        with weight w_k exp(lam v.mu_k + lam^2 |tau_k v|^2 / 2)."""
        v = torch.as_tensor(v, dtype=F64)
        logw = torch.log(self.w) + lam * (self.mu @ v) + 0.5 * lam * lam * ((self.tau * v) ** 2).sum(1)
        return GaussianMixture(torch.softmax(logw, 0), self.mu + lam * self.tau**2 * v, self.tau)

    def product(self, other: "GaussianMixture") -> "GaussianMixture":
        """p(x) q(x), normalised (a product of Gaussian mixtures is a Gaussian mixture):
        N(m1, S1) N(m2, S2) = N(m1; m2, S1 + S2) N(m, S), S = (S1^-1 + S2^-1)^-1,
        m = S (S1^-1 m1 + S2^-1 m2)."""
        v1, v2 = self.tau[:, None] ** 2, other.tau[None] ** 2  # [K1, 1, D], [1, K2, D]
        m1, m2 = self.mu[:, None], other.mu[None]
        var = 1 / (1 / v1 + 1 / v2)
        mean = var * (m1 / v1 + m2 / v2)
        tot = v1 + v2
        logz = (-0.5 * (m1 - m2) ** 2 / tot - 0.5 * torch.log(2 * math.pi * tot)).sum(-1)
        logw = torch.log(self.w)[:, None] + torch.log(other.w)[None] + logz
        return GaussianMixture(torch.softmax(logw.flatten(), 0), mean.reshape(-1, self.dim),
                               var.sqrt().reshape(-1, self.dim))


# ------------------------------------------------------------ grid targets
class GridTarget:
    """A density known up to a constant, tabulated on a fine regular grid (1-D or 2-D) for
    exact-enough statistics: CDF, mean, masses of regions. Quadrature error is far below
    the Monte Carlo tolerances of the tests (spacing ~ 1e-3 in 1-D, 2e-2 in 2-D)."""

    def __init__(self, log_density: Callable[[torch.Tensor], torch.Tensor], dim: int,
                 lo: float = -8.0, hi: float = 8.0, n: int | None = None):
        self.dim = dim
        n = n or (16001 if dim == 1 else 641)
        self.axis = torch.linspace(lo, hi, n, dtype=F64)
        if dim == 1:
            pts = self.axis[:, None]
        else:
            gx, gy = torch.meshgrid(self.axis, self.axis, indexing="ij")
            pts = torch.stack([gx.flatten(), gy.flatten()], 1)
        logp = log_density(pts)
        p = torch.exp(logp - logp.max())
        self.pts, self.p = pts, p / p.sum()

    def mean(self) -> torch.Tensor:
        return (self.p[:, None] * self.pts).sum(0)

    def mass(self, region: Callable[[torch.Tensor], torch.Tensor]) -> float:
        return float(self.p[region(self.pts)].sum())

    def cdf(self, x: torch.Tensor) -> torch.Tensor:
        """1-D only: P(X <= x)."""
        c = torch.cumsum(self.p, 0)
        idx = torch.searchsorted(self.axis, torch.as_tensor(x, dtype=F64).contiguous(), right=True) - 1
        return torch.where(idx < 0, torch.zeros_like(idx, dtype=F64), c[idx.clamp(0, len(c) - 1)])


def geometric_target(parts: Sequence[tuple[GaussianMixture, float]], **grid) -> GridTarget:
    """prod_k p_k(x)^(c_k), normalised (e.g. p^beta; CFG's p_u^(1-w) p_c^w)."""
    dim = parts[0][0].dim
    return GridTarget(lambda x: sum(c * g.log_prob(x) for g, c in parts), dim, **grid)


# ------------------------------------------------------------ statistics
def weighted_ks(x: torch.Tensor, log_w: torch.Tensor | None, cdf: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """sup_x |F_n(x) - F(x)| for a (weighted) 1-D sample."""
    x = x.reshape(-1).to(F64)
    w = torch.ones_like(x) if log_w is None else torch.softmax(log_w.to(F64), 0) * x.numel()
    order = torch.argsort(x)
    xs, ws = x[order], w[order] / x.numel()
    hi = torch.cumsum(ws, 0)
    lo = hi - ws
    f = cdf(xs)
    return float(torch.maximum((hi - f).abs(), (lo - f).abs()).max())


def kish_ess(log_w: torch.Tensor | None, n: int) -> float:
    if log_w is None:
        return float(n)
    w = torch.softmax(log_w.to(F64), 0)
    return float(1 / (w * w).sum())


# --------------------------------------------------------------- adapter
class AnalyticAdapter:
    """ModelAdapter interface over exact Gaussian-mixture denoisers (see module docstring)."""

    distilled_guidance = False

    def __init__(self, mixtures: dict[str, GaussianMixture], schedule: Callable[[float], tuple[float, float]],
                 parameterization: str):
        """schedule(model timestep) -> (a, s) of the interpolant at that time;
        parameterization: "epsilon", "v_prediction" or "velocity" (flow, eps - x0)."""
        dims = {g.dim for g in mixtures.values()}
        if len(dims) != 1 or "" not in mixtures:
            raise ValueError("mixtures need one common dimension and an unconditional entry under ''")
        self.mixtures = dict(mixtures)
        self.keys = list(self.mixtures)
        self.dim = dims.pop()
        self.schedule, self.parameterization = schedule, parameterization
        self.pipe = self
        self.height = self.width = 1
        self.rows = 0  # denoiser rows evaluated (both CFG halves counted)

    device = torch.device("cpu")
    dtype = F64

    def latent_shape(self, n: int) -> tuple[int, ...]:
        return (n, self.dim, 1, 1)

    def pack(self, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def unpack(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def do_cfg(self, guidance_scale: float) -> bool:
        return guidance_scale != 1.0

    def timestep_kwargs(self, scheduler, num_steps):
        return {}

    def _key(self, prompt: str | None) -> int:
        prompt = prompt or ""
        if prompt not in self.mixtures:
            raise KeyError(f"no mixture for prompt {prompt!r}; known: {self.keys}")
        return self.keys.index(prompt)

    def encode(self, prompt: str, negative_prompt: str | None, cfg: bool):
        cond = {"k": torch.tensor([[self._key(prompt)]])}
        return cond, ({"k": torch.tensor([[self._key(negative_prompt)]])} if cfg else None)

    def forward(self, x: torch.Tensor, t: torch.Tensor, embeds: dict) -> torch.Tensor:
        a, s = self.schedule(float(t[0]))
        flat = x.reshape(x.shape[0], -1).to(F64)
        keys = embeds["k"][:, 0]
        x0 = torch.empty_like(flat)
        for k in keys.unique().tolist():
            rows = keys == k
            x0[rows] = self.mixtures[self.keys[k]].x0_mean(flat[rows], a, s)
        self.rows += x.shape[0]
        eps = (flat - a * x0) / s
        if self.parameterization == "velocity":
            out = eps - x0
        elif self.parameterization == "v_prediction":
            out = a * eps - s * x0
        else:
            out = eps
        return out.reshape(x.shape).to(x.dtype)

    def log_prob(self, x: torch.Tensor, t: torch.Tensor, embeds: dict) -> torch.Tensor:
        """log p_t(x) [B] of the (conditional) mixture at model timestep t (exact; DriftLite's
        ECG uses it as a basis)."""
        a, s = self.schedule(float(t))
        flat = x.reshape(x.shape[0], -1).to(F64)
        keys = embeds["k"][:, 0].expand(x.shape[0]) if embeds["k"].shape[0] == 1 else embeds["k"][:, 0]
        out = torch.empty(x.shape[0], dtype=F64)
        for k in keys.unique().tolist():
            rows = keys == k
            out[rows] = self.mixtures[self.keys[k]].log_prob(flat[rows], a, s)
        return out

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        flat = latents.reshape(latents.shape[0], -1)
        out = torch.zeros(latents.shape[0], 3, 1, 1, dtype=latents.dtype, device=latents.device)
        out[:, : flat.shape[1], 0, 0] = flat
        return out


class FunctionVerifier(Verifier):
    """A reward verifier that is a known function r(x) of the decoded sample x [B, D]."""

    name = "analytic"
    chunk_size = 1 << 20

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], dim: int, differentiable: bool = False):
        super().__init__()
        self.fn, self.dim = fn, dim
        self.differentiable = bool(differentiable)  # fn is torch ops on x (reward guidance, DriftLite)
        self.calls = 0

    def score(self, images, prompts):
        self.calls += images.shape[0]
        return self.fn(images[:, : self.dim, 0, 0].to(F64))


# ---------------------------------------------------------------- grids
def _table_schedule(table: torch.Tensor) -> Callable[[float], tuple[float, float]]:
    """(a, s) at a (possibly fractional) model timestep, alpha_bar linearly interpolated."""
    def schedule(t: float) -> tuple[float, float]:
        lo = min(int(math.floor(t)), len(table) - 1)
        hi = min(lo + 1, len(table) - 1)
        ab = float(table[lo] + (t - lo) * (table[hi] - table[lo]))
        return math.sqrt(ab), math.sqrt(1 - ab)

    return schedule


def vp_grid(steps: int, prediction_type: str = "epsilon", zero_snr: bool = False, spacing: str = "scaled_linear",
            log_snr_range: tuple[float, float] = (-10.0, 10.0)):
    """DDPM-family grid, DDIM "trailing" spacing (the first grid point is the noisiest).

    spacing "scaled_linear": Stable Diffusion's alpha_bar table (zero_snr rescales its betas
    to zero terminal SNR); "logsnr": a 1000-entry table with log-SNR linear in t over
    `log_snr_range` (fine steps in log a at the noisy end, which weighted SDEs need).
    Returns (family, model timesteps, schedule(t) -> (a, s), parameterization)."""
    if spacing == "logsnr":
        lam = torch.linspace(log_snr_range[1], log_snr_range[0], 1000, dtype=F64)
        table = torch.sigmoid(lam)
        ratio = 1000 // steps
        ts = [int(round(t)) - 1 for t in torch.arange(1000, 0, -1000 / steps).tolist()]
        fam = vp_family(table, ts, [t - ratio for t in ts], 1.0, prediction_type)
        return fam, torch.tensor(ts), _table_schedule(table), prediction_type
    sch = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                        set_alpha_to_one=False, steps_offset=0, timestep_spacing="trailing",
                        prediction_type=prediction_type, rescale_betas_zero_snr=zero_snr)
    sch.set_timesteps(steps)
    ts = [int(t) for t in sch.timesteps]
    r = sch.config.num_train_timesteps // steps
    fam = vp_family(sch.alphas_cumprod, ts, [t - r for t in ts], float(sch.final_alpha_cumprod), prediction_type)
    return fam, sch.timesteps.clone(), _table_schedule(sch.alphas_cumprod.double()), prediction_type


def flow_grid(steps: int, shift: float = 3.0, diffusion: str = "ddim", spacing: str = "shift",
              log_snr_range: tuple[float, float] = (-10.0, 10.0)):
    """Rectified-flow grid; the model is given timestep 1000 sigma.

    spacing "shift": FlowMatchEulerDiscreteScheduler(shift)'s sigmas (SD3's default, starting
    at pure noise sigma = 1); "logsnr": sigmas with log-SNR 2 log((1 - sigma)/sigma) uniform
    over `log_snr_range`, then sigma = 0.
    Returns (family, model timesteps, schedule, parameterization)."""
    if spacing == "logsnr":
        lam = torch.linspace(log_snr_range[0], log_snr_range[1], steps, dtype=F64)
        sigmas = torch.cat([torch.sigmoid(-lam / 2), torch.zeros(1, dtype=F64)])
        timesteps = sigmas[:-1] * 1000
    else:
        sch = FlowMatchEulerDiscreteScheduler(shift=shift)
        sch.set_timesteps(steps)
        sigmas, timesteps = sch.sigmas, sch.timesteps

    def schedule(t: float) -> tuple[float, float]:
        sigma = t / 1000.0
        return 1.0 - sigma, sigma

    return flow_family(sigmas, timesteps, diffusion), timesteps.clone(), schedule, "velocity"


def analytic_process(mixtures: dict[str, GaussianMixture], kind: str = "vp", steps: int = 50, *,
                     cfg_scale: float = 1.0, max_batch: int = 1 << 16, **grid_kw) -> DenoisingProcess:
    """A DenoisingProcess over exact mixture denoisers ("vp": DDIM alpha_bar table; "flow":
    flow-matching sigmas)."""
    family, ts, schedule, param = (vp_grid if kind == "vp" else flow_grid)(steps, **grid_kw)
    adapter = AnalyticAdapter(mixtures, schedule, param)
    return DenoisingProcess(adapter, family, ts, guidance_scale=cfg_scale, cfg_scale=cfg_scale, max_batch=max_batch)


# ------------------------------------------------------- the test worlds
def bimodal_1d() -> GaussianMixture:
    """The mixture of tests/test_families.py: 0.3 N(-2, 0.4^2) + 0.7 N(1.5, 0.6^2)."""
    return GaussianMixture([0.3, 0.7], [-2.0, 1.5], [0.4, 0.6])


def four_modes_2d(weights: Sequence[float] = (0.4, 0.3, 0.2, 0.1)) -> GaussianMixture:
    """Four modes at (+-1.5, +-1.5) with std 0.5 (quadrant k holds mode k)."""
    means = [[1.5, 1.5], [-1.5, 1.5], [-1.5, -1.5], [1.5, -1.5]]
    return GaussianMixture(list(weights), means, [[0.5, 0.5]] * 4)


def replicate(stat: Callable[[int], Sequence[float]], runs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over `runs` independent runs (seeds 0..runs-1) of a vector of statistics, and its
    standard error from the between-run spread (which includes the particle genealogy's
    extra variance that a binomial formula at the ESS would miss)."""
    s = torch.tensor([list(stat(seed)) for seed in range(runs)], dtype=F64)
    return s.mean(0), s.std(0) / math.sqrt(runs)


def agrees(estimate: torch.Tensor, stderr: torch.Tensor, exact: Sequence[float], z: float = 4.5,
           slack: float | Sequence[float] = 0.01) -> bool:
    """|estimate - exact| < z * stderr + slack for every component. With 6 runs, z = 4.5 is the
    99.4% two-sided point of Student's t with 5 degrees of freedom; `slack` covers the
    sampler's discretisation (stated per test)."""
    exact = torch.as_tensor(list(exact), dtype=F64)
    slack = torch.as_tensor(slack, dtype=F64)
    return bool(((estimate - exact).abs() < z * stderr + slack).all())


def iid_estimate(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of per-sample statistics [N, d] of N independent samples
    (an unweighted sampler without resampling: plain CFG, plain SDEs)."""
    v = values.to(F64).reshape(values.shape[0], -1)
    return v.mean(0), v.std(0) / math.sqrt(v.shape[0])
