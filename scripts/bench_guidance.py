"""CPU benchmark: reward guidance (TFG), guided SMC and DriftLite against SMC on the analytic
1-D mixture (tts_diffusion/testing/analytic.py), whose targets are known exactly.

Targets: the tilt p(x) exp(lambda r(x)) with r(x) = -x, lambda = 1 (closed form), and the
annealed p(x)^2 (quadrature). Methods at 8 / 32 / 128 particles, 100 VP steps, eta = 1:

- smc: FK steering (potential "difference", resampling every 10 steps when ESS < K/2); for
  the annealed target G-SMC (driftlite control=none: the guided SDE with its Feynman-Kac
  weights, the same as fkc anneal);
- guidance: TFG guidance alone, no weights (tilt: preset mpgd, mu = 0.02; anneal: the
  annealed score drift without weights) -- biased by design;
- guided_smc: FK steering whose proposals are TFG-guided, with the weight correction (tilt);
- driftlite_vcg / driftlite_ecg: DriftLite, resampling when ESS < K/2.

Reported per method and K (mean over seeds): final KS distance of the weighted sample to the
exact CDF, ESS / K over time (min and final), NFE, reward-gradient rows, denoiser backward
rows (budget rule: core/budget.py) and seconds. One thread (`torch.set_num_threads(1)`).

    PYTHONPATH=. python scripts/bench_guidance.py --out docs/bench_guidance.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from tts_diffusion.core.budget import Budget
from tts_diffusion.features.guidance import enable_reward_guidance
from tts_diffusion.features.guidance_spec import RewardGuidance
from tts_diffusion.searchers.driftlite import driftlite_sample
from tts_diffusion.searchers.particles import ess
from tts_diffusion.searchers.smc import fk_steering
from tts_diffusion.testing.analytic import FunctionVerifier, analytic_process, bimodal_1d, geometric_target, weighted_ks

LAM, BETA = 1.0, 2.0


def one(method: str, target: str, k: int, steps: int, seed: int) -> dict:
    g = bimodal_1d()
    exact = g.tilt_linear(LAM, [-1.0]) if target == "tilt" else geometric_target([(g, BETA)])
    proc = analytic_process({"": g, "a": g}, "vp", steps).for_call()
    cond = proc.encode("a")
    ver = FunctionVerifier(lambda x: -x[:, 0], 1, differentiable=True)
    reward = lambda x0: ver(proc.decode(x0), "a").double()  # noqa: E731
    gen = torch.Generator().manual_seed(seed)
    budget = Budget(10**12)
    ess_trace: list[float] = []
    t0 = time.perf_counter()
    with proc.metered(budget):
        if method == "guidance" and target == "tilt":
            enable_reward_guidance(proc, ver, RewardGuidance.build(verifier="analytic", preset="mpgd", mu=0.02), cond)
            x, _ = proc.sample(proc.sample_noise(k, gen), cond, eta=1.0, generator=gen)
            log_w = None
        elif method in ("smc", "guided_smc") and target == "tilt":
            if method == "guided_smc":
                enable_reward_guidance(proc, ver, RewardGuidance.build(verifier="analytic", preset="mpgd", mu=0.02),
                                       cond)
            run = fk_steering(proc, cond, reward, k, gen, reward_scale=LAM, potential="difference",
                              resample_interval=10, window=(10, steps), resample_threshold=0.5)
            x, log_w, ess_trace = run.x, run.log_w, run.ess
        elif method in ("smc", "guidance", "driftlite_vcg", "driftlite_ecg"):
            control = {"smc": "none", "guidance": "none", "driftlite_vcg": "vcg", "driftlite_ecg": "ecg"}[method]
            run = driftlite_sample(proc, cond, ver, k, gen, control=control, target=target, reward_scale=LAM,
                                   beta=BETA, resample_threshold=0.0 if method == "guidance" else 0.5)
            x, log_w, ess_trace = run.x, (None if method == "guidance" else run.log_w), run.ess
        else:
            return {}
    seconds = time.perf_counter() - t0
    return {
        "ks": weighted_ks(x, log_w, exact.cdf),
        "final_ess": 1.0 if log_w is None else float(ess(log_w)) / k,
        "min_ess": 1.0 if log_w is None or not ess_trace else min(ess_trace) / k,
        "ess_trace": [e / k for e in ess_trace] if log_w is not None else [],
        "nfe": budget.nfe, "reward_grads": budget.reward_grads, "denoiser_backwards": budget.denoiser_backwards,
        "seconds": seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/bench_guidance.json")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--particles", default="8,32,128")
    args = ap.parse_args()
    torch.set_num_threads(1)
    methods = ("smc", "guidance", "guided_smc", "driftlite_vcg", "driftlite_ecg")
    rows = []
    for target in ("tilt", "anneal"):
        for k in [int(v) for v in args.particles.split(",")]:
            for method in methods:
                runs = [one(method, target, k, args.steps, s) for s in range(args.seeds)]
                if not runs[0]:
                    continue
                mean = {key: sum(r[key] for r in runs) / len(runs)
                        for key in ("ks", "final_ess", "min_ess", "nfe", "reward_grads", "denoiser_backwards",
                                    "seconds")}
                row = {"target": target, "particles": k, "method": method, **mean,
                       "ess_trace_seed0": runs[0]["ess_trace"]}
                rows.append(row)
                print(f"{target:6s} K={k:4d} {method:14s} KS {mean['ks']:.3f}  ESS/K min {mean['min_ess']:.2f} "
                      f"final {mean['final_ess']:.2f}  NFE {mean['nfe']:.0f}  grads {mean['reward_grads']:.0f}  "
                      f"backwards {mean['denoiser_backwards']:.0f}  {mean['seconds']:.2f} s", flush=True)
    out = {"what": "analytic 1-D mixture 0.3 N(-2, .4^2) + 0.7 N(1.5, .6^2); tilt r=-x, lambda=1; anneal beta=2",
           "steps": args.steps, "seeds": args.seeds, "machine": platform.processor() or platform.machine(),
           "threads": 1, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
