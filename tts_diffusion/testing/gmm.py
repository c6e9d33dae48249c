"""A 1-D Gaussian mixture whose posterior mean E[x0 | x_i] is known in closed form at
every point of an interpolant x = a x0 + s eps: an exact denoiser for testing samplers."""
import math

import torch


class GaussianMixture1D:
    def __init__(self, weights, means, stds):
        self.w = torch.tensor(weights, dtype=torch.float64)
        self.mu = torch.tensor(means, dtype=torch.float64)
        self.tau = torch.tensor(stds, dtype=torch.float64)

    def marginal(self, a: float, s: float):
        """Components of p(x_i): weights, means a mu_k, stds sqrt(a^2 tau_k^2 + s^2)."""
        return self.w, a * self.mu, torch.sqrt(a * a * self.tau**2 + s * s)

    def sample_marginal(self, n: int, a: float, s: float, gen: torch.Generator) -> torch.Tensor:
        w, m, sd = self.marginal(a, s)
        k = torch.multinomial(w, n, replacement=True, generator=gen)
        return m[k] + sd[k] * torch.randn(n, generator=gen, dtype=torch.float64)

    def x0_mean(self, x: torch.Tensor, a: float, s: float) -> torch.Tensor:
        """E[x0 | x] = sum_k r_k(x) (mu_k + a tau_k^2 / (a^2 tau_k^2 + s^2) (x - a mu_k))."""
        w, m, sd = self.marginal(a, s)
        x = x.double()[:, None]
        logr = torch.log(w) - 0.5 * ((x - m) / sd) ** 2 - torch.log(sd)
        r = torch.softmax(logr, dim=1)
        post = self.mu + a * self.tau**2 / sd**2 * (x - m)
        return (r * post).sum(1)

    def cdf(self, x: float, a: float = 1.0, s: float = 0.0) -> float:
        w, m, sd = self.marginal(a, s)
        return float((w * 0.5 * (1 + torch.erf((x - m) / (sd * math.sqrt(2))))).sum())
