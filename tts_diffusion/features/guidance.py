"""TFG reward guidance as a process feature (Ye et al. 2024, arXiv 2409.15761; the code's
`TFGGuidance.guide_step`, written for any Gaussian interpolant x = a x0 + s eps).

Turned on for a call (`enable_reward_guidance`), it replaces every `proc.step(x, i, pred)` of
whatever searcher runs by TFG's guided step, so best-of-N, SMC and every other sampling
searcher get guided proposals unchanged. At grid point i (a = a_i, a' = a_{i+1}; the
settings in guidance_spec.py):

    repeat n_recur times:                                    (recurrence, "time travel")
        Delta_t = rho_i grad_{x_i} log f~(x0_hat(x_i))        variance guidance, through the denoiser
        x0 = x0_hat; N_iter times: x0 += mu_i grad_x0 log f~(x0)   mean guidance, predictor only
        Delta_0 = x0 - x0_hat
        x_{i+1} = step(x_i, x0_hat) + (a'/a) Delta_t + a' Delta_0
        (tfg.py: x_prev += Delta_t / sqrt(alpha_t) + sqrt(alpha_bar_prev) Delta_0)
        if not the last pass: x_i = renoise(x_{i+1}, i+1 -> i), x0_hat = denoise(x_i)

with log f~(x) = logsumexp_k r(x + gamma_i eps_k) - log K (implicit dynamics; one set of K
noises per pass) and r the guiding verifier's score through the decoder
(core/reward_grad.py). Schedules: rho_i = rho * w_i / mean(w), w_i = alpha_i ("increase",
alpha_i = a_i^2 / a_{i+1}^2, TFG's per-step alpha), 1 - alpha_i ("decrease") or 1.

Guided SMC: with stochastic steps the guided step is the proposal q(x' | x) = N(m + d, std^2)
against the sampler's p(x' | x) = N(m, std^2), d = the shift above, so each particle's
log-weight gets log p/q = -(|d|^2 + 2 std d.z) / (2 std^2) (z the step's noise), kept per
particle (it follows `proc.select`) and taken by the particle searcher after each step
(`take_proposal_log_weights`). Steps without noise (the last one) are left unguided then, and
recurrence is refused (its proposal has no tractable density). Costs (core/budget.py): per
pass 1 NFE, plus with variance guidance 1 NFE (forward with graph) + 1 denoiser backward
(2 NFE); K reward-gradient rows per gradient.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..core.reward_grad import check_differentiable_verifier, differentiable_reward
from ..core.state import active_call
from ..errors import TTSInputError
from .guidance_spec import ENTRY, RewardGuidance

__all__ = ["TFGGuidance", "enable_reward_guidance", "take_proposal_log_weights", "schedule_weights",
           "tfg_beam_search"]


def schedule_weights(family, kind: str) -> torch.Tensor:
    """TFG's per-step strength profile w_i / mean(w) over the grid (mean 1)."""
    n = family.num_steps
    a = torch.tensor([family.a(i) for i in range(n)], dtype=torch.float64)
    a_next = torch.tensor([float(family.a_to[i]) for i in range(n)], dtype=torch.float64)
    alpha = torch.where(a_next > 0, (a / a_next.clamp_min(1e-300)) ** 2, torch.zeros_like(a))
    w = {"increase": alpha, "decrease": 1 - alpha, "constant": torch.ones_like(a)}[kind]
    total = float(w.sum())
    return w * (n / total) if total > 0 else torch.ones_like(w)


class _Corrections:
    """Per-particle proposal log-weights accumulated since the searcher last took them."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def select(self, idx: torch.Tensor) -> None:
        if self.value is not None:
            self.value = self.value[idx.to(self.value.device)]

    def reset(self, num_particles: int) -> None:
        self.value = None


class TFGGuidance:
    """The guided step of one call (see the module docstring)."""

    def __init__(self, verifier: Any, config: RewardGuidance, cond: Any, prompt: str | None = None):
        check_differentiable_verifier(verifier)
        self.verifier, self.config, self.cond = verifier, config, cond
        self.prompt = prompt if prompt is not None else cond.prompt
        self.weighted = False  # set by a particle searcher that reads proposal weights
        self.corrections = _Corrections()
        self._profiles: dict[str, torch.Tensor] = {}

    # ---------------------------------------------------------------- settings
    def nfe_per_step(self) -> int:
        return self.config.nfe_per_step()

    def require_weights(self, eta: float) -> None:
        """A particle searcher will weight by `take_proposal_log_weights`: stochastic steps and
        no recurrence needed (one line otherwise)."""
        if self.config.n_recur > 1:
            raise TTSInputError("reward guidance with a weighted particle searcher needs n_recur=1: a recurrent"
                                " (time-travel) step has no tractable proposal density for the weight correction")
        if eta == 0.0:
            raise TTSInputError("guided SMC needs stochastic steps (eta > 0): a deterministic guided step has no"
                                " proposal density to correct the weights with")
        self.weighted = True

    def _strength(self, proc, what: str, i: int) -> float:
        c = self.config
        bar = {"rho": c.rho, "mu": c.mu}[what]
        if bar == 0.0:
            return 0.0
        kind = {"rho": c.rho_schedule, "mu": c.mu_schedule}[what]
        if kind not in self._profiles:
            self._profiles[kind] = schedule_weights(proc.family, kind)
        return bar * float(self._profiles[kind][i])

    def _gamma(self, proc, i: int) -> float:
        c = self.config
        return c.gamma * (proc.family.s(i) if c.gamma_schedule == "decrease" else 1.0)

    # ---------------------------------------------------------------- gradients
    def _smoothed_log_f(self, proc, x0: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
        """log f~(x0) [B] with graph: logsumexp_k r(x0 + eps_k) - log K (eps [K, B, ...] or None)."""
        if eps is None:
            return differentiable_reward(proc, self.verifier, x0, self.prompt).to(torch.float64)
        k = eps.shape[0]
        y = (x0.unsqueeze(0) + eps).reshape(-1, *x0.shape[1:])
        r = differentiable_reward(proc, self.verifier, y, self.prompt).to(torch.float64).reshape(k, -1)
        return torch.logsumexp(r, 0) - math.log(k)

    def _eps(self, proc, x0: torch.Tensor, i: int, generator) -> torch.Tensor | None:
        g = self._gamma(proc, i)
        if g == 0.0 or self.config.samples < 1:
            return None
        k = self.config.samples
        return g * torch.stack([proc.randn_like(x0, generator) for _ in range(k)])

    def _charge_grads(self, proc, rows: int, eps: torch.Tensor | None) -> None:
        if proc.budget is not None:
            proc.budget.charge_reward_grad(rows * (1 if eps is None else eps.shape[0]))

    def variance_guidance(self, proc, x: torch.Tensor, i: int, eps) -> torch.Tensor:
        """rho_i grad_{x_i} log f~(x0_hat(x_i)), through the denoiser (Delta_t)."""
        n = x.shape[0]
        if proc.budget is not None:  # a forward with graph, then its backward (core/budget.py)
            proc.budget.charge_nfe(n)
            proc.budget.charge_denoiser_backward(n)
        self._charge_grads(proc, n, eps)
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            x0 = denoise_with_graph(proc, xg, i, self.cond)
            logf = self._smoothed_log_f(proc, x0, eps)
            (g,) = torch.autograd.grad(logf.sum(), xg)
        return self._strength(proc, "rho", i) * g.detach()

    def mean_guidance(self, proc, x0_hat: torch.Tensor, i: int, eps) -> torch.Tensor:
        """Delta_0: N_iter steps x0 += mu_i grad_x0 log f~(x0) from the x0 estimate."""
        mu = self._strength(proc, "mu", i)
        x0 = x0_hat.detach()
        for _ in range(self.config.iterations):
            self._charge_grads(proc, x0.shape[0], eps)
            xg = x0.detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(self._smoothed_log_f(proc, xg, eps).sum(), xg)
            x0 = x0 + mu * g.detach().to(x0.dtype)
        return x0 - x0_hat

    # ---------------------------------------------------------------- the step
    def __call__(self, proc, x: torch.Tensor, i: int, pred, eta: float = 0.0, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        a, a_next = proc.family.a(i), float(proc.family.a_to[i])
        std = proc.family.transition(x, i, pred.out, pred.x0, pred.eps, eta)[1] if eta > 0 else 0.0
        if self.weighted and std == 0.0:
            return proc._step(x, i, pred, eta, noise, generator)  # no proposal density: unguided
        rho_on = self._strength(proc, "rho", i) != 0.0 and a > 0
        mu_on = self._strength(proc, "mu", i) != 0.0 and self.config.iterations > 0
        passes = self.config.n_recur
        for r in range(passes):
            if r > 0:  # recurrence: back to grid point i and a fresh x0 estimate there
                x = proc.renoise(x_next, i + 1, i, generator)
                pred = proc.denoise(x, i, self.cond)
            eps = self._eps(proc, pred.x0, i, generator) if (rho_on or mu_on) else None
            shift = torch.zeros_like(x)
            if rho_on:
                shift = shift + (a_next / a) * self.variance_guidance(proc, x, i, eps).to(x.dtype)
            if mu_on:
                shift = shift + a_next * self.mean_guidance(proc, pred.x0, i, eps).to(x.dtype)
            z = noise if (noise is not None or std == 0.0) else proc.randn_like(x, generator)
            x_next = proc._step(x, i, pred, eta, z, generator) + shift
            if self.weighted:
                d = shift.reshape(shift.shape[0], -1).to(torch.float64)
                zz = z.reshape(z.shape[0], -1).to(torch.float64)
                lw = -((d * d).sum(1) + 2 * std * (d * zz).sum(1)) / (2 * std * std)
                c = self.corrections
                c.value = lw if c.value is None else c.value + lw.to(c.value.device)
        return x_next

    def settings(self) -> dict[str, Any]:
        return self.config.settings()


def denoise_with_graph(proc, x: torch.Tensor, i: int, cond) -> torch.Tensor:
    """The x0 estimate at grid point i with the autograd graph back to x (the process's
    `denoise` runs without one); charged by the caller."""
    cfg = proc.do_cfg and all(f.keeps_cfg(i) for f in proc.call.features.values())
    outs = []
    with torch.enable_grad(), proc.timings.phase("denoise_grad"), active_call(proc.call):
        proc.call.step = i
        for s in range(0, x.shape[0], proc.max_batch):
            xc = x[s : s + proc.max_batch]
            proc.call.rows = slice(s, s + xc.shape[0])
            outs.append(proc._guided(xc, i, cond, cfg)[0])
        proc.call.rows = None
        x0, _ = proc.family.to_x0_eps(x, torch.cat(outs), i)
    return x0


def enable_reward_guidance(proc, verifier: Any, config: RewardGuidance | Any, cond: Any) -> TFGGuidance:
    """Turn TFG guidance on for this call view of `proc`: every `proc.step` becomes the guided step."""
    config = RewardGuidance.parse(config)
    guide = TFGGuidance(verifier, config, cond)
    proc.call.step_hook = guide
    proc.call.register(ENTRY, guide.corrections)
    return guide


def take_proposal_log_weights(proc, num_particles: int, device=None) -> torch.Tensor | None:
    """The proposal log-weights log p/q accumulated since the last call (None when the call
    has no weighted guidance), reset to zero."""
    guide = proc.call.step_hook
    if not isinstance(guide, TFGGuidance) or not guide.weighted:
        return None
    v = guide.corrections.value
    guide.corrections.value = None
    if v is None:
        return torch.zeros(num_particles, dtype=torch.float64, device=device)
    return v.to(device) if device is not None else v


def tfg_beam_search(evaluate, start: dict[str, float] | None = None, rounds: int = 6, top_k: int = 2,
                    caps: dict[str, float] | None = None) -> tuple[dict[str, float], list[tuple[dict, float]]]:
    """TFG's hyper-parameter search (searching.py): beam search over (rho, mu, gamma). Start at
    rho = mu = 0.25, gamma = 0.001; each round every kept configuration proposes children that
    multiply one parameter by 2 (rho, mu; capped at 8) or 10 (gamma; capped at 1); all are
    scored by `evaluate(config) -> float` (higher is better; e.g. a verifier's mean on 64
    samples) and the `top_k` best kept. Returns (best config, every (config, score) tried)."""
    start = dict(start or {"rho": 0.25, "mu": 0.25, "gamma": 0.001})
    caps = dict(caps or {"rho": 8.0, "mu": 8.0, "gamma": 1.0})
    factor = {"rho": 2.0, "mu": 2.0, "gamma": 10.0}
    key = lambda c: tuple(sorted((k, round(v, 12)) for k, v in c.items()))  # noqa: E731
    seen: dict[tuple, float] = {key(start): float(evaluate(dict(start)))}
    tried = [(dict(start), seen[key(start)])]
    beam = [start]
    for _ in range(rounds):
        children = []
        for c in beam:
            for p in c:
                if p not in factor or c[p] * factor[p] > caps.get(p, math.inf) + 1e-12:
                    continue
                child = {**c, p: c[p] * factor[p]}
                if key(child) not in seen:
                    seen[key(child)] = float(evaluate(dict(child)))
                    tried.append((child, seen[key(child)]))
                    children.append(child)
        if not children:
            break
        pool = {key(c): c for c in beam + children}
        beam = sorted(pool.values(), key=lambda c: -seen[key(c)])[:top_k]
    best = max(tried, key=lambda t: t[1])[0]
    return best, tried
