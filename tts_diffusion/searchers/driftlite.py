"""DriftLite (Ren, Gao, Ying, Rotskoff, Han, ICLR 2026, arXiv 2509.21655): particles on a
guided SDE whose potential is partly moved into a control drift fitted at every step.

Target path q_t ~ p_t^beta exp(r_t), r_t = kappa_t lambda r (kappa_t = i / n: 0 at the first
grid point, 1 at the clean end), so q at the clean end is p^beta exp(lambda r) ("tilt": beta =
1; "anneal": lambda = 0; "both"). With the Gaussian interpolant x = a x0 + s eps the forward
SDE has drift u = (d log a) x and diffusion U^2 = d s^2 - 2 (d log a) s^2; per step i -> i+1
(sampling direction) we use their exact integrals: -int u dt = c_i x with c_i = log(a_{i+1} /
a_i), and int U^2 dt = D_i = -2 `Family.pf_eta(i)`. Then (Prop. 2.1, Eq. 2.5; the x-constant
term (1 - beta) div u dropped, it cancels in self-normalised weights):

    guidance drift      v~ = -u + (U^2 + V^2)/2 (beta grad log p_t + grad r_t)        (Eq. 2.4)
    potential   G dt  = (kappa_{i+1} - kappa_i) lambda r + D_i/2 (Lap r_t - beta (1 - beta) |grad log p|^2)
                        + grad r_t . (c_i x + beta D_i grad log p + D_i/2 grad r_t)

Key identity (Prop. 3.1, Eq. 3.1): any extra drift b leaves the path unchanged if the potential
gets h(x; b) = grad log q . b + div b (= div(q b) / q, so E_q[h] = 0): `balancing_potential`.
Algorithm 1, per step, with weights w = softmax(l):

  1. bases: VCG (Eq. 3.3) vector fields s_1 = grad r_t, s_2 = grad log p_t, s_3 = x (the forward
     drift's direction); solve A theta = c, A_jk = E_w[h~_j h~_k], c_j = -E_w[g h~_j] (h~ centred,
     g = G - E_w G): the control minimising Var_w(g + h(b)). ECG (Eq. 3.4): scalar bases
     phi = r_t, log p_t (where the model gives log p: the analytic worlds), |x|^2 / 2;
     A_jk = E_w[grad phi_j . grad phi_k], c_j = E_w[g phi_j] (the Ritz form of
     div(q grad A) = -q g), b = sum theta_j grad phi_j. "none": b = 0 (G-SMC).
  2. H = G + h(b); l += H - E_w H.
  3. move: the process's stochastic step with the score beta grad log p + grad r_t (Family
     `transition`, eta; v~ above), plus b.
  4. resample when ESS < resample_threshold K (l = 0 after), every per-particle quantity
     through `proc.select`.

The reward is the verifier's score of the decoded state x itself (the paper's r(x); at the
clean end x is the sample), differentiable (core/reward_grad.py). Laplacians by Hutchinson
with Rademacher probes (exact in 1-D): of r, through verifier and
decoder as central differences of the reward gradient (no double backward needed); of log p
(VCG; ECG's log p basis), a vector-Jacobian product of the score through the denoiser. Costs
(core/budget.py): 1 NFE per particle-step (the forward, with a graph when div(score) is
needed) + 2 NFE per denoiser probe; reward: 1 reward-gradient row for (r, grad r) + 2 per probe. Seconds are reported per phase. Starts at q_0 ~ N(0, I / beta) (the process's
first point is close to pure noise). Where the first grid point is exactly pure noise (a = 0:
flow grids) a rescaled score has no x0: that step is the process's ODE step, unweighted, and
weighting starts at the next point (an approximation for beta != 1, as in fkc).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.budget import Budget
from ..core.process import Conditioning, DenoisingProcess
from ..core.reward_grad import check_differentiable_verifier, differentiable_reward
from ..errors import TTSInputError
from ..features.guidance import denoise_with_graph
from ..records.result import SearchResult
from ..verifiers.base import Verifier
from .common import SearchLog, full_samples, reached, stop_checks, unspent
from .driftlite_spec import CONTROLS, DRIFTLITE, TARGETS, nfe_per_step
from .particles import ess, normalize_log_weights, resample, should_resample
from .registry import register_searcher
from .vocabulary import RESAMPLING_SCHEMES

F64 = torch.float64


@dataclass
class DriftLiteRun:
    x: torch.Tensor  # [K, ...] final particles
    log_w: torch.Tensor  # [K] normalised final log-weights
    ancestors: torch.Tensor  # [K] final resampling
    ess: list[float] = field(default_factory=list)  # ESS after each step's weighting
    log_w_var: list[float] = field(default_factory=list)  # variance of the log-weights after each step
    resample_steps: list[int] = field(default_factory=list)
    thetas: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_at: int | None = None  # the grid point where stop_score was reached

    def resampled(self) -> torch.Tensor:
        return self.x[self.ancestors]


def balancing_potential(score_q: torch.Tensor, b: torch.Tensor, div_b: torch.Tensor) -> torch.Tensor:
    """h(x; b) = grad log q . b + div b (Prop. 3.1): the potential that balances the extra drift b.
    score_q, b: [K, D]; div_b: [K]."""
    return (score_q * b).sum(1) + div_b


def driftlite_potential(r, gr, lap_r, s, x, *, kappa: float, kappa_next: float, lam: float, beta: float,
                        c: float, d: float) -> torch.Tensor:
    """G integrated over one step (Prop. 2.1 in the interpolant's terms, module docstring).
    r, lap_r: [K]; gr, s, x: [K, D]."""
    k = kappa * lam
    g = (kappa_next - kappa) * lam * r + 0.5 * d * (k * lap_r - beta * (1 - beta) * (s * s).sum(1))
    return g + k * (gr * (c * x + beta * d * s + 0.5 * d * k * gr)).sum(1)


def _rademacher(shape, generator, device) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(device, F64)


def reward_terms(proc, verifier, x: torch.Tensor, prompt: str, probes: int, generator, fd_step: float = 1e-3):
    """(r [K], grad r [K, D], Lap r [K]) at the states x (decoded), float64. Lap r by Hutchinson
    with Rademacher probes z, each z . (grad r(x + e z) - grad r(x - e z)) / 2e (central
    differences of the reward gradient: exact for quadratic rewards, and it needs no double
    backward, which attention kernels such as CPU flash SDPA do not have). Charged as
    1 + 2 * probes reward-gradient rows a particle."""
    n = x.shape[0]
    if proc.budget is not None:
        proc.budget.charge_reward_grad(n * (1 + 2 * probes))

    def value_and_grad(xs: torch.Tensor):
        xg = xs.detach().requires_grad_(True)
        with torch.enable_grad(), proc.timings.phase("reward_grad"):
            r = differentiable_reward(proc, verifier, xg, prompt).to(F64)
            (g,) = torch.autograd.grad(r.sum(), xg)
        return r.detach(), g.detach()

    r, g = value_and_grad(x)
    # the step must move a half-precision state by more than its rounding (float16: 1e-3 is one ulp at 1)
    fd_step = max(fd_step, 8 * torch.finfo(x.dtype).eps)
    lap = torch.zeros(n, dtype=F64, device=x.device)
    for _ in range(probes):
        z = _rademacher(x.shape, generator, x.device).to(x.dtype)
        _, gpm = value_and_grad(torch.cat([x + fd_step * z, x - fd_step * z]))
        diff = (gpm[:n] - gpm[n:]).to(F64) * z.to(F64)
        lap = lap + diff.reshape(n, -1).sum(1) / (2 * fd_step)
    return r, g.reshape(n, -1).to(F64), lap / probes


def score_terms(proc, x: torch.Tensor, i: int, cond: Conditioning, probes: int, generator, with_lap: bool):
    """(prediction's eps [K, ...], score [K, D], Hutchinson Lap log p [K] or None) at grid point i.
    Charges the forward (1 NFE a row) and each probe (a denoiser backward, 2 NFE a row)."""
    n = x.shape[0]
    fam = proc.family
    a, s = fam.a(i), fam.s(i)
    if not with_lap:
        pred = proc.denoise(x, i, cond)
        return pred.eps, (-pred.eps.reshape(n, -1).to(F64) / s), None
    if proc.budget is not None:
        proc.budget.charge_nfe(n)
        proc.budget.charge_model_rows(n * (2 if proc.do_cfg else 1))
        for _ in range(probes):
            proc.budget.charge_denoiser_backward(n)
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        x0 = denoise_with_graph(proc, xg, i, cond)
        # s^2 * score = a x0 - x is O(1): its graph and Jacobian-vector products stay inside
        # float16's range, where the score itself (1 / s^2 ~ 1e4 near the data) overflows
        u = a * x0 - xg
        lap = torch.zeros(n, dtype=F64, device=x.device)
        with proc.timings.phase("denoise_grad"):
            for p in range(probes if u.requires_grad else 0):
                z = _rademacher(x.shape, generator, x.device).to(u.dtype)
                (jz,) = torch.autograd.grad((u * z).sum(), xg, retain_graph=p < probes - 1)
                lap = lap + (jz.to(F64) * z.to(F64)).reshape(n, -1).sum(1)
    score = u.detach().reshape(n, -1).to(F64) / (s * s)
    return (-s * score).reshape(x.shape).to(x.dtype), score, lap / (probes * s * s)


def _wmean(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Weighted mean over particles (dim 0) of v [K] or [K, m]."""
    return (w[:, None] * v).sum(0) if v.ndim == 2 else (w * v).sum()


def _solve(A: torch.Tensor, c: torch.Tensor, ridge: float) -> torch.Tensor:
    m = A.shape[0]
    scale = float(torch.diagonal(A).abs().mean()) if m else 0.0
    A = A + (ridge * scale + 1e-300) * torch.eye(m, dtype=A.dtype, device=A.device)
    return torch.linalg.lstsq(A, c[:, None]).solution[:, 0]


def check_target(target: str, control: str) -> None:
    if target == "product":
        raise TTSInputError("driftlite does not sample products of experts (future work in the DriftLite paper,"
                            " Sec. 5); use target tilt, anneal or both, or the fkc searcher with mode=product")
    if target not in TARGETS:
        raise TTSInputError(f"unknown driftlite target {target!r}; choose from tilt, anneal, both")
    if control not in CONTROLS:
        raise TTSInputError(f"unknown driftlite control {control!r}; choose from {', '.join(CONTROLS)}")


@torch.no_grad()
def driftlite_sample(proc: DenoisingProcess, cond: Conditioning, verifier: Verifier | None, num_particles: int,
                     generator: torch.Generator | None = None, *, control: str = "vcg", target: str = "tilt",
                     reward_scale: float = 1.0, beta: float = 2.0, probes: int = 1, ridge: float = 1e-6,
                     resample_threshold: float = 0.5, resampling: str = "systematic", eta: float = 1.0,
                     prompt: str | None = None, stop_score: float | None = None,
                     reward_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> DriftLiteRun:
    """Algorithm 1 over the whole grid (see the module docstring).

    stop_score (with reward_fn): stop when satisfied, as fkc does: at smc's default potential
    steps (`common.stop_checks`) the model's Tweedie estimates are scored; at the first where
    one reaches stop_score the population ends and that particle alone goes on to the clean
    end (`DriftLiteRun.stopped_at`: the step)."""
    check_target(target, control)
    if resampling not in RESAMPLING_SCHEMES:
        raise TTSInputError(f"unknown resampling scheme {resampling!r}; choose from {RESAMPLING_SCHEMES}")
    lam = 0.0 if target == "anneal" else float(reward_scale)
    beta = 1.0 if target == "tilt" else float(beta)
    use_reward = lam != 0.0
    if use_reward:
        check_differentiable_verifier(verifier)
    prompt = prompt if prompt is not None else cond.prompt
    log_p = getattr(proc.adapter, "log_prob", None)  # ECG's log p basis, where the model gives log p
    need_lap_logp = control == "vcg" or (control == "ecg" and log_p is not None)
    t0 = time.perf_counter()
    fam, n, k = proc.family, proc.num_steps, int(num_particles)
    x = proc.sample_noise(k, generator)
    if beta != 1.0:
        x = x / math.sqrt(beta)  # q_0 ~ N(0, I)^beta = N(0, I / beta)
    dev = x.device
    dim = x[0].numel()
    log_w = torch.zeros(k, dtype=F64, device=dev)
    run = DriftLiteRun(x, log_w, torch.arange(k, device=dev))
    checks = stop_checks(n) if stop_score is not None and reward_fn is not None else set()
    for i in range(n):
        kappa, kappa_next = i / n, (i + 1) / n
        kl = kappa * lam
        a, a_next = fam.a(i), float(fam.a_to[i])
        if a == 0.0:  # exactly pure noise (flow grids): no x0 for a rescaled score; the ODE step, unweighted
            x = proc.step(x, i, proc.denoise(x, i, cond), eta=0.0)
            continue
        c_i, d_i = math.log(a_next / a), -2.0 * fam.pf_eta(i)
        eps, s, lap_logp = score_terms(proc, x, i, cond, probes, generator, need_lap_logp)
        best = reached(reward_fn(fam.pred_from_eps(x, eps, i)[1]), stop_score) if i in checks else None
        if best is not None:
            # satisfied: the particle that reached it goes on alone, the rest of the population ends here
            x, eps, s, lap_logp = proc.select([best], x, eps, s, lap_logp)
            k, log_w, checks, run.stopped_at = 1, torch.zeros(1, dtype=F64, device=dev), set(), i
        xf = x.reshape(k, -1).to(F64)
        if use_reward:
            r, gr, lap_r = reward_terms(proc, verifier, x, prompt, probes, generator)
        else:
            r, gr, lap_r = (torch.zeros(k, dtype=F64, device=dev), torch.zeros_like(xf),
                            torch.zeros(k, dtype=F64, device=dev))
        G = driftlite_potential(r, gr, lap_r, s, xf, kappa=kappa, kappa_next=kappa_next, lam=lam, beta=beta,
                                c=c_i, d=d_i)
        score_q = beta * s + kl * gr
        w = torch.softmax(log_w, 0)
        # 1. the control: bases (vector fields and their divergences), then the small linear solve
        fields, divs, values = [], [], []
        if control == "vcg":
            if use_reward and kl != 0.0:
                fields.append(kl * gr), divs.append(kl * lap_r)
            fields.append(s), divs.append(lap_logp)
            fields.append(xf), divs.append(torch.full((k,), float(dim), dtype=F64, device=dev))
        elif control == "ecg":
            if use_reward and kl != 0.0:
                fields.append(kl * gr), divs.append(kl * lap_r), values.append(kl * r)
            if log_p is not None:
                lp = log_p(x, proc.model_timesteps[i], cond.cond).to(F64)
                fields.append(s), divs.append(lap_logp), values.append(lp)
            fields.append(xf), divs.append(torch.full((k,), float(dim), dtype=F64, device=dev))
            values.append(0.5 * (xf * xf).sum(1))
        b = torch.zeros_like(xf)
        h_b = torch.zeros(k, dtype=F64, device=dev)
        if fields:
            hs = torch.stack([balancing_potential(score_q, f, dv) for f, dv in zip(fields, divs)], 1)  # [K, m]
            g = G - _wmean(w, G)
            if control == "vcg":
                hc = hs - _wmean(w, hs)
                A = (w[:, None, None] * hc[:, :, None] * hc[:, None, :]).sum(0)
                c = -_wmean(w, g[:, None] * hc)
            else:
                grads = torch.stack(fields, 1)  # [K, m, D]
                A = (w[:, None, None] * torch.einsum("kmd,knd->kmn", grads, grads)).sum(0)
                phi = torch.stack(values, 1)
                c = _wmean(w, g[:, None] * (phi - _wmean(w, phi)))
            theta = _solve(A, c, ridge)
            run.thetas.append(theta.tolist())
            b = sum(t * f for t, f in zip(theta, fields))
            h_b = hs @ theta
        # 2. weights: H = G + h(b), centred
        H = G + h_b
        log_w = log_w + (H - _wmean(w, H))
        run.ess.append(float(ess(log_w)))
        run.log_w_var.append(float(log_w.var()) if log_w.numel() > 1 else 0.0)
        # 3. move: the stochastic step with the score of q_t, plus the control drift
        e = (-fam.s(i) * score_q).reshape(x.shape).to(x.dtype)
        out, x0 = fam.pred_from_eps(x, e, i)
        mean, std = fam.transition(x, i, out, x0, e, float(eta))
        x_new = mean + b.reshape(x.shape).to(x.dtype)
        if std > 0:
            x_new = x_new + std * proc.randn_like(x, generator)
        x = x_new
        # 4. resampling: every per-particle quantity follows its ancestor
        if i < n - 1 and should_resample(log_w, float(resample_threshold)):
            idx = resample(log_w, resampling, generator)
            x = proc.select(idx, x)
            log_w = torch.zeros_like(log_w)
            run.resample_steps.append(i)
    log_w = normalize_log_weights(log_w)
    run.x, run.log_w = x, log_w
    run.ancestors = resample(log_w, resampling, generator).to(dev)
    run.seconds = time.perf_counter() - t0
    return run


@register_searcher(DRIFTLITE)
def driftlite(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
              generator: torch.Generator | None, *, negative_prompt: str | None, control: str, target: str,
              reward_scale: float, beta: float, num_particles: int | None, probes: int, ridge: float,
              resample_threshold: float, resampling: str, eta: float, stop_score: float | None,
              keep_images: int) -> SearchResult:
    """Options: DRIFTLITE in driftlite_spec.py (`tts-diffusion list --searcher driftlite`). The
    verifier is the reward (differentiable: clip, image_reward, aesthetic, ...)."""
    check_target(target, control)
    if target != "anneal":
        check_differentiable_verifier(verifier)
    n = proc.num_steps
    per_step = nfe_per_step(control, probes)
    affordable = full_samples(budget, n, per_step)
    k = affordable if num_particles is None else int(num_particles)
    if k > affordable:
        raise TTSInputError(f"num_particles={k} needs {k * n * per_step} NFE but the budget has {budget.remaining_nfe}")
    cond = proc.encode(prompt, negative_prompt)
    log = SearchLog(proc, verifier, prompt, budget, keep_images)
    with proc.metered(budget):
        run = driftlite_sample(proc, cond, verifier, k, generator, control=control, target=target,
                               reward_scale=reward_scale, beta=beta, probes=probes, ridge=ridge,
                               resample_threshold=resample_threshold, resampling=resampling, eta=eta, prompt=prompt,
                               stop_score=stop_score, reward_fn=log.score_intermediate)
        images = proc.decode(run.x)
        scores = log.verify(images)
    kk = run.x.shape[0]
    counts = torch.bincount(run.ancestors.cpu(), minlength=kk).tolist()
    info = [{"particle": j, "log_weight": float(run.log_w[j]), "resampled_copies": counts[j]} for j in range(kk)]
    log.record(images, scores, None, info)
    stop = {"stopped_at": run.stopped_at, **unspent(budget, stop_score, log)} if stop_score is not None else {}
    return log.result({"num_particles": k, "resample_steps": run.resample_steps, "final_ess": float(ess(run.log_w)),
                       "min_ess": min(run.ess) if run.ess else float(k), "seconds": round(run.seconds, 4),
                       "reward_grads": budget.reward_grads, "denoiser_backwards": budget.denoiser_backwards, **stop})
