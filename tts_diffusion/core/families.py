"""Per-family math: how a model output, the Tweedie estimate x0, the noise eps, the score
and the velocity relate, and how one steps between time points.

Both families are Gaussian interpolants  x_i = a_i x0 + s_i eps  on a grid i = 0..n
(i = 0 pure noise, i = n clean):

- DDPM family (VP):  a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t); the model predicts
  eps (DDPM, Ho et al. 2020) or v = a eps - s x0 (Salimans & Ho 2022).
- flow matching:     a = 1 - sigma, s = sigma (rectified flow, Liu et al. 2022; SD3, FLUX);
  the model predicts the velocity u = d x / d sigma = eps - x0.

Everything a searcher needs (x0, eps, score, deterministic and stochastic steps, jumps
back to a noisier time) is written here once, in terms of (a, s); the searchers never
branch on the family. Nothing in this file knows about diffusers models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

FLOW_DIFFUSION_SCHEDULES = ("ddim", "constant", "sigma", "flow_grpo")


@dataclass
class Family:
    """A discretised interpolant. `timesteps[i]` is what the model is given at step i
    (i < n); `a_from[i], s_from[i]` the coefficients the model assumes at step i and
    `a_to[i], s_to[i]` those the step lands on (equal to the next step's `from` for every
    schedule but diffusers' DDIM with non-"leading" spacing, which we reproduce exactly)."""

    timesteps: torch.Tensor  # [n], float64, model time values
    a_from: torch.Tensor  # [n] float64
    s_from: torch.Tensor
    a_to: torch.Tensor
    s_to: torch.Tensor
    kind: str = "vp"  # "vp" or "flow"
    prediction_type: str = "epsilon"  # vp: epsilon | v_prediction | sample; flow: velocity
    #: flow SDE: diffusion-coefficient schedule (see `FLOW_DIFFUSION_SCHEDULES`)
    diffusion: str = "ddim"

    # ------------------------------------------------------------------ grid
    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def a(self, i: int) -> float:
        """Signal coefficient at grid point i (i = n: the clean end)."""
        return float(self.a_from[i]) if i < self.num_steps else float(self.a_to[-1])

    def s(self, i: int) -> float:
        """Noise coefficient at grid point i."""
        return float(self.s_from[i]) if i < self.num_steps else float(self.s_to[-1])

    def snr(self, i: int) -> float:
        s = self.s(i)
        return math.inf if s == 0 else (self.a(i) / s) ** 2

    # ------------------------------------------------------- output algebra
    def to_x0_eps(self, x: torch.Tensor, out: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tweedie estimate x0 and noise eps from the model output at step i.

        eps-prediction: x0 = (x - s eps) / a.          (DDPM eq. 15)
        v-prediction:   x0 = a x - s v, eps = s x + a v (Salimans & Ho 2022, eq. 11; a^2+s^2=1)
        flow velocity:  x0 = x - sigma u, eps = x + (1 - sigma) u (u = eps - x0)
        """
        a, s = float(self.a_from[i]), float(self.s_from[i])
        if self.kind == "flow":
            return x - s * out, x + a * out
        if self.prediction_type == "epsilon":
            return (x - s * out) / a, out
        if self.prediction_type == "v_prediction":
            return a * x - s * out, s * x + a * out
        if self.prediction_type == "sample":
            return out, (x - a * out) / s
        raise ValueError(f"unknown prediction_type {self.prediction_type!r}")

    def from_x0_eps(self, x0: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        """The model output that corresponds to (x0, eps) at step i (inverse of `to_x0_eps`)."""
        a, s = float(self.a_from[i]), float(self.s_from[i])
        if self.kind == "flow":
            return eps - x0
        if self.prediction_type == "epsilon":
            return eps
        if self.prediction_type == "v_prediction":
            return a * eps - s * x0
        return x0

    def score(self, eps: torch.Tensor, i: int) -> torch.Tensor:
        """grad log p_i(x) = -eps / s_i (Tweedie / denoising score matching)."""
        return -eps / float(self.s_from[i])

    # ----------------------------------------------------------------- steps
    def ode_step(self, x: torch.Tensor, i: int, out: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Deterministic step i -> i+1.

        DDPM family: DDIM with eta = 0 (Song et al. 2021, eq. 12), written as diffusers does.
        Flow: Euler on dx/dsigma = u, computed in float32 like FlowMatchEulerDiscreteScheduler.
        """
        if self.kind == "flow":
            dt = torch.tensor(float(self.s_to[i] - self.s_from[i]), dtype=torch.float32)
            return (x.float() + dt * out).to(out.dtype)
        return self._ddim(x0, eps, i, std=0.0)

    def transition(
        self, x: torch.Tensor, i: int, out: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, eta: float
    ) -> tuple[torch.Tensor, float]:
        """Mean and standard deviation of the stochastic step i -> i+1 (a Gaussian).

        DDPM family: DDIM with `eta` (Song et al. 2021, eq. 12 and 16):
            std = eta * (s'/s) * sqrt(1 - (a/a')^2),  mean = a' x0 + sqrt(s'^2 - std^2) eps.
        eta = 1 is the DDPM ancestral sampler.

        Flow: the reverse SDE with the same marginals as the ODE,
            d x = [u - g^2/2 * score] d sigma + g d W   (sigma decreasing),
        Euler-Maruyama with diffusion coefficient g(sigma) = eta * h(sigma), h chosen by
        `self.diffusion`: "constant" (1), "sigma" (sigma), "flow_grpo" (sqrt(sigma/(1-sigma)),
        Liu et al. 2025, eq. 9; at sigma = 1, where it diverges, the denominator takes the
        next grid sigma as Flow-GRPO's reference `sd3_sde_with_logprob` does). "ddim" instead uses the DDIM form above on the flow interpolant,
        which keeps the marginals exactly for every step size. The last step (to sigma = 0)
        is always noise-free.
        """
        if eta == 0.0:
            return self.ode_step(x, i, out, x0, eps), 0.0
        if self.kind == "vp" or self.diffusion == "ddim":
            std = self._ddim_std(i, eta)
            return self._ddim(x0, eps, i, std=std), std
        s, s_next = float(self.s_from[i]), float(self.s_to[i])
        if s_next <= 0.0:
            return self.ode_step(x, i, out, x0, eps), 0.0
        d = s - s_next  # > 0: |d sigma|
        g = eta * self._flow_h(s, s_next)
        score = -eps / s
        mean = x - d * out + 0.5 * g * g * d * score
        return mean, g * math.sqrt(d)

    def step_std(self, i: int, eta: float) -> float:
        """The standard deviation of `transition(..., i, ..., eta)`'s noise (no tensors needed):
        what the stochastic sampler injects on the step i -> i+1 (EvoSearch's x_t mutation)."""
        if eta == 0.0:
            return 0.0
        if self.kind == "vp" or self.diffusion == "ddim":
            return self._ddim_std(i, eta)
        s, s_next = float(self.s_from[i]), float(self.s_to[i])
        if s_next <= 0.0:
            return 0.0
        return eta * self._flow_h(s, s_next) * math.sqrt(s - s_next)

    def _flow_h(self, sigma: float, sigma_next: float) -> float:
        """h(sigma) of the step sigma -> sigma_next (g = eta h)."""
        if self.diffusion == "constant":
            return 1.0
        if self.diffusion == "sigma":
            return sigma
        if self.diffusion == "flow_grpo":
            # sqrt(sigma / (1 - sigma)) diverges at pure noise: Flow-GRPO evaluates the
            # denominator at the next grid sigma there (`torch.where(sigma == 1, sigma_max,
            # sigma)` with sigma_max = sigmas[1]), so the first step's noise stays finite.
            den = sigma if sigma < 1.0 else sigma_next
            return math.sqrt(sigma / (1.0 - den))
        raise ValueError(f"unknown flow diffusion schedule {self.diffusion!r}; choose from {FLOW_DIFFUSION_SCHEDULES}")

    def _ddim_std(self, i: int, eta: float) -> float:
        """eta times the std of the DDPM posterior q(x_{i+1} | x_i, x0) of the interpolant:
        (s'/s) sqrt(s^2 - (a/a')^2 s'^2); for the VP family this is DDIM's
        sqrt((1-ab')/(1-ab)) sqrt(1 - ab/ab') (Song et al. 2021, eq. 16)."""
        a, s = float(self.a_from[i]), float(self.s_from[i])
        a_next, s_next = float(self.a_to[i]), float(self.s_to[i])
        if s == 0.0 or a_next == 0.0:
            return 0.0
        return eta * (s_next / s) * math.sqrt(max(0.0, s * s - (a / a_next * s_next) ** 2))

    def _ddim(self, x0: torch.Tensor, eps: torch.Tensor, i: int, std: float) -> torch.Tensor:
        """a' x0 + sqrt(s'^2 - std^2) eps (the DDIM update, Song et al. 2021, eq. 12)."""
        a_next, s_next = float(self.a_to[i]), float(self.s_to[i])
        if self.kind == "vp":
            # exactly DDIMScheduler.step: alpha_prev**0.5 * x0 + (1 - alpha_prev - std**2)**0.5 * eps
            ab = torch.tensor(a_next * a_next, dtype=torch.float32)
            return ab**0.5 * x0 + (1 - ab - std**2) ** 0.5 * eps
        return a_next * x0 + math.sqrt(max(0.0, s_next * s_next - std * std)) * eps

    def renoise(self, x: torch.Tensor, i: int, j: int, noise: torch.Tensor) -> torch.Tensor:
        """Jump from grid point i back to a noisier grid point j <= i with the forward
        transition of the interpolant: x_j = (a_j/a_i) x_i + sqrt(s_j^2 - (a_j/a_i)^2 s_i^2) z.
        (For the VP family this is q(x_j | x_i), DDPM eq. 4 composed.)"""
        if j > i:
            raise ValueError(f"renoise goes to a noisier time: need j <= i, got i={i}, j={j}")
        a_i, s_i, a_j, s_j = self.a(i), self.s(i), self.a(j), self.s(j)
        r = a_j / a_i
        return r * x + math.sqrt(max(0.0, s_j * s_j - (r * s_i) ** 2)) * noise

    # ------------------------------------------- score algebra for weighted SDEs
    def pred_from_eps(self, x: torch.Tensor, eps: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(model output, x0) that correspond to a given noise estimate eps at step i, i.e.
        to the score -eps/s (x0 = (x - s eps)/a). Used to step with a combined score such as
        beta * score or score_1 + score_2 (Skreta et al. 2025); needs a_i > 0."""
        a, s = float(self.a_from[i]), float(self.s_from[i])
        if a == 0.0:
            raise ValueError(f"grid point {i} is pure noise (a = 0): x0 is undefined for a rescaled score")
        x0 = (x - s * eps) / a
        return self.from_x0_eps(x0, eps, i), x0

    def pf_eta(self, i: int) -> float:
        """Integral over step i -> i+1 of eta(t) dt, where the probability-flow ODE of the
        interpolant is  dx = [(a'/a) x - eta grad log p_t(x)] dt  with
        eta = s s' - (a'/a) s^2  (' = d/dt along the sampling direction; negative there).

        Every SDE with the marginals of a geometric combination q ~ prod_k p_k^(c_k) and drift
        (a'/a) x + (g^2/2 - eta) grad log q has Feynman-Kac weights
            d log w = eta (sum_k c_k |grad log p_k|^2 - |sum_k c_k grad log p_k|^2) dt
        (up to terms constant in x; Skreta et al. 2025's Feynman-Kac weights specialised to
        the Gaussian interpolant), which is why this one number per step is all the family
        contributes to FKC weights. Exact along the family's own path between grid points:
            VP   (a^2 + s^2 = 1): log(a_i / a_i+1)
            flow (a + s = 1):     (s'^2 - s^2)/2 - log(a'/a) + 2 (a' - a) - (a'^2 - a^2)/2.
        Infinite (-inf) when a_i = 0 (pure noise), where eta diverges."""
        a, s = float(self.a_from[i]), float(self.s_from[i])
        a2, s2 = float(self.a_to[i]), float(self.s_to[i])
        if a <= 0.0:
            return -math.inf
        if self.kind == "flow":
            return 0.5 * (s2 * s2 - s * s) - math.log(a2 / a) + 2 * (a2 - a) - 0.5 * (a2 * a2 - a * a)
        return math.log(a / a2)

    # ----------------------------------------- interpolant conversion (Kim et al. 2025)
    def vp_scale(self, i: int) -> float:
        """c_i = 1 / sqrt(a_i^2 + s_i^2): x_vp = c_i x_i follows the variance-preserving
        interpolant a_vp x0 + s_vp eps with a_vp^2 + s_vp^2 = 1 and the same SNR (Kim et al.
        2025, 'interpolant conversion', the scale part; 1 for the VP family)."""
        return 1.0 / math.hypot(self.a(i), self.s(i))

    def to_vp(self) -> "Family":
        """The same grid (same SNRs, same model timesteps) seen through the VP interpolant:
        a_vp = c a, s_vp = c s at every point; an epsilon-parameterised "vp" Family whose
        transitions are DDPM / DDIM(eta) steps of the VP SDE (Song et al. 2021)."""
        cf = 1.0 / torch.sqrt(self.a_from**2 + self.s_from**2)
        ct = 1.0 / torch.sqrt(self.a_to**2 + self.s_to**2)
        return Family(self.timesteps.clone(), self.a_from * cf, self.s_from * cf, self.a_to * ct, self.s_to * ct,
                      kind="vp", prediction_type="epsilon", diffusion="ddim")

    def vp_transition(self, x: torch.Tensor, i: int, x0: torch.Tensor, eps: torch.Tensor,
                      eta: float) -> tuple[torch.Tensor, float]:
        """Mean and std of the stochastic step i -> i+1 taken on the VP-converted interpolant
        and mapped back: x_vp = c_i x, one DDIM(eta) step of `to_vp()` (eta = 1: DDPM's
        ancestral step, the discretised VP SDE), divided by c_i+1. For the VP family this is
        `transition`; for a flow family it turns the flow ODE into the VP SDE with the same
        marginals (Kim et al. 2025, 'SDE conversion' and 'interpolant conversion')."""
        vp = self.to_vp()  # the DDIM mean is a' x0 + sqrt(s'^2 - std^2) eps: x enters through (x0, eps)
        c_to = 1.0 / math.hypot(float(self.a_to[i]), float(self.s_to[i]))
        if eta == 0.0:
            mean = vp._ddim(x0, eps, i, std=0.0)
            return (mean / c_to).to(x0.dtype), 0.0
        std = vp._ddim_std(i, eta)
        mean = vp._ddim(x0, eps, i, std=std)
        return (mean / c_to).to(x0.dtype), std / c_to

    def retime(self, log_snr: Sequence[float]) -> tuple["Family", torch.Tensor]:
        """Time reparametrisation: a family of the same kind whose grid points have the given
        log-SNRs log(a^2/s^2) (n+1 increasing values; the last may be +inf, the clean end),
        with model timesteps interpolated in this family's own noise coordinate (sigma for
        flow, log-SNR for VP) between its grid points. Points are clamped to the range of
        noise levels the model was given on this grid. Returns (family, model timesteps).
        `vp_regrid` uses it for Kim et al. 2025's uniform-VP-time grid."""
        lam = torch.as_tensor(list(log_snr), dtype=torch.float64)
        if lam.ndim != 1 or lam.numel() < 2 or bool((lam[1:] < lam[:-1]).any()):
            raise ValueError("retime needs at least two increasing log-SNR values")
        if self.kind == "flow":
            coord = lambda l: torch.sigmoid(-l / 2)  # sigma = s/(a+s) = 1/(1+exp(l/2))  # noqa: E731
            known = self.s_from
        else:
            coord = lambda l: l  # noqa: E731
            known = torch.log(self.a_from**2 / self.s_from**2)
        # the model's grid, ordered by increasing coordinate for interpolation
        order = torch.argsort(known)
        xs, ts = known[order], self.timesteps.double()[order]
        u = coord(lam[:-1]).clamp(float(xs[0]), float(xs[-1]))
        t_new = _interp(u, xs, ts)
        lam_model = _coord_to_log_snr(u, self.kind)
        lam_end = lam[-1]
        if self.kind == "flow":
            sig = torch.cat([u, coord(lam_end)[None]])
            a, s = 1 - sig, sig
        else:
            ab = torch.sigmoid(torch.cat([lam_model, lam_end[None]]))  # alpha_bar = snr / (1 + snr)
            a, s = ab.sqrt(), (1 - ab).sqrt()
        fam = Family(t_new, a[:-1].clone(), s[:-1].clone(), a[1:].clone(), s[1:].clone(), kind=self.kind,
                     prediction_type=self.prediction_type, diffusion=self.diffusion)
        return fam, t_new.clone()

    def log_snr(self, i: int) -> float:
        """log(a_i^2 / s_i^2) (-inf at pure noise, +inf at the clean end)."""
        a, s = self.a(i), self.s(i)
        if s == 0.0:
            return math.inf
        return -math.inf if a == 0.0 else 2 * math.log(a / s)

    def vp_regrid(self, beta_min: float = 0.1, beta_max: float = 20.0) -> tuple["Family", torch.Tensor]:
        """The same number of steps with the model's grid points uniformly spaced in the time
        of the linear-beta VP SDE (Kim et al. 2025: sampling the VP-converted interpolant on
        its own uniform time grid, the time part of the conversion), between this grid's
        noisiest point (at most VP time 1) and its last model point; the clean end is kept.
        Returns (family, model timesteps), see `retime`."""
        n = self.num_steps
        lam = vp_log_snr(n, self.log_snr(0), self.log_snr(n - 1), beta_min, beta_max)
        return self.retime([*lam.tolist(), self.log_snr(n)])


def vp_log_snr(num_points: int, first: float, last: float, beta_min: float = 0.1,
               beta_max: float = 20.0) -> torch.Tensor:
    """num_points log-SNRs uniformly spaced in the time of the VP SDE with the linear beta
    schedule of Song et al. 2021 (alpha_t = exp(-T(t)/2), T(t) = beta_min t + (beta_max -
    beta_min) t^2 / 2, SNR = e^-T / (1 - e^-T)), from the time whose log-SNR is `first`
    (at most t = 1) to the one whose log-SNR is `last`."""
    def time_of(lam: float) -> float:
        if lam == -math.inf:
            return 1.0
        big_t = math.log1p(math.exp(-lam)) if lam > -700 else -lam
        b = beta_max - beta_min
        return min(1.0, (-beta_min + math.sqrt(beta_min * beta_min + 2 * b * big_t)) / b)

    t = torch.linspace(time_of(first), time_of(last), num_points, dtype=torch.float64)
    big_t = beta_min * t + 0.5 * (beta_max - beta_min) * t * t
    return -big_t - torch.log(-torch.expm1(-big_t))


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation (xp increasing), like numpy.interp."""
    if xp.numel() == 1:
        return fp.expand_as(x).clone()
    j = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, xp.numel() - 1)
    x0, x1, f0, f1 = xp[j - 1], xp[j], fp[j - 1], fp[j]
    w = torch.where(x1 > x0, (x - x0) / (x1 - x0), torch.zeros_like(x))
    return f0 + w * (f1 - f0)


def _coord_to_log_snr(u: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "flow":
        return 2 * (torch.log1p(-u) - torch.log(u))
    return u


# ------------------------------------------------------------ constructors
def vp_family(alphas_cumprod: torch.Tensor, timesteps: Sequence[int], prev_timesteps: Sequence[int],
              final_alpha_cumprod: float, prediction_type: str) -> Family:
    """DDPM-family grid from a scheduler's alpha_bar table (DDIM's convention: step i goes
    from timesteps[i] to prev_timesteps[i], alpha_bar of a negative time = final value)."""
    ac = alphas_cumprod.double()
    ab_from = torch.stack([ac[int(t)] for t in timesteps])
    ab_to = torch.stack([ac[int(p)] if p >= 0 else torch.tensor(float(final_alpha_cumprod), dtype=torch.float64)
                         for p in prev_timesteps])
    return Family(
        timesteps=torch.tensor([float(t) for t in timesteps], dtype=torch.float64),
        a_from=ab_from.sqrt(), s_from=(1 - ab_from).sqrt(),
        a_to=ab_to.sqrt(), s_to=(1 - ab_to).sqrt(),
        kind="vp", prediction_type=prediction_type,
    )


def flow_family(sigmas: torch.Tensor, timesteps: torch.Tensor, diffusion: str = "ddim") -> Family:
    """Flow-matching grid from a scheduler's sigmas (n+1 values, the last usually 0)."""
    sg = sigmas.double().cpu()
    if diffusion not in FLOW_DIFFUSION_SCHEDULES:
        raise ValueError(f"unknown flow diffusion schedule {diffusion!r}; choose from {FLOW_DIFFUSION_SCHEDULES}")
    return Family(
        timesteps=timesteps.double().cpu(),
        a_from=1 - sg[:-1], s_from=sg[:-1], a_to=1 - sg[1:], s_to=sg[1:],
        kind="flow", prediction_type="velocity", diffusion=diffusion,
    )
