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
        Liu et al. 2025). "ddim" instead uses the DDIM form above on the flow interpolant,
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
        g = eta * self._flow_h(s)
        score = -eps / s
        mean = x - d * out + 0.5 * g * g * d * score
        return mean, g * math.sqrt(d)

    def _flow_h(self, sigma: float) -> float:
        if self.diffusion == "constant":
            return 1.0
        if self.diffusion == "sigma":
            return sigma
        if self.diffusion == "flow_grpo":
            sigma = min(sigma, 1.0 - 1e-3)
            return math.sqrt(sigma / (1.0 - sigma))
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
