"""Particle methods on the analytic 2-D Gaussian mixture (tts_diffusion/testing/analytic.py):
mean best reward -|x - (1, -2.2)|^2 against NFE for SMC / FK steering, rollover budget
forcing, SVDD, CoDe and best-of-N, in the flow and VP parametrisations. No model needed:
seconds on a CPU.

    python scripts/bench_particles.py --out docs/bench_particles_gmm
    python scripts/bench_particles.py --smoke --out /tmp/gmm

The shapes-world comparison that used to live here is `tts-diffusion bench` (README,
"Sweeps"; docs/benchmarks.md gives the commands). Writes <out>.json and <out>.png.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from tts_diffusion import Budget, TTSInputError, load_searcher
from tts_diffusion.bench import fit_to_budget
from tts_diffusion.testing.analytic import FunctionVerifier, analytic_process, four_modes_2d

METHODS = ("best_of_n", "smc", "rbf", "svdd", "code")  # fkc needs CFG, which this world lacks


def gmm_world(methods: list[str], budgets: list[int], steps: int, seeds: int) -> dict:
    """Mean (and standard error of the) best reward of each method at each budget."""
    target = torch.tensor([1.0, -2.2], dtype=torch.float64)
    ver = FunctionVerifier(lambda x: -((x - target) ** 2).sum(1), 2)
    g = four_modes_2d()
    results = {"world": "gmm", "reward": "-|x - (1, -2.2)|^2", "steps": steps, "seeds": seeds,
               "budgets": budgets, "mean_best_reward": {}, "stderr": {}}
    for kind in ("flow", "vp"):
        proc = analytic_process({"": g, "a": g}, kind, steps)
        for name in methods:
            vals = defaultdict(list)
            for b in budgets:
                for s in range(seeds):
                    try:
                        r = load_searcher(name)(proc, ver, "a", Budget(b * steps), torch.Generator().manual_seed(s),
                                                **fit_to_budget(name, b * steps, steps, {}))
                    except TTSInputError:
                        continue
                    vals[b].append(r.best_score)
            key = f"{kind}/{name}"
            results["mean_best_reward"][key] = {b: sum(v) / len(v) for b, v in vals.items()}
            results["stderr"][key] = {b: float(torch.tensor(v).std() / len(v) ** 0.5) for b, v in vals.items()}
            print(f"{key:<16} " + "  ".join(f"{results['mean_best_reward'][key].get(b, float('nan')):8.3f}"
                                            for b in budgets), flush=True)
    return results


def plot(results: dict, out: str) -> None:
    """The regret |x - x*|^2 = -reward against NFE, log-log, one panel per parametrisation."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    steps = results["steps"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    for ax, kind in zip(axes[0], ("flow", "vp")):
        for key, curve in results["mean_best_reward"].items():
            if key.startswith(kind + "/"):
                bs = sorted(int(b) for b in curve)
                ax.plot([b * steps for b in bs], [-curve[b] if b in curve else -curve[str(b)] for b in bs],
                        marker="o", label=key.split("/")[1])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel("mean |x - x*|^2 of the returned sample")
        ax.set_title(kind)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--budgets", default="1,4,16", help="multiples of one sample's NFE")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=16, help="seeds per setting")
    ap.add_argument("--smoke", action="store_true", help="2 seeds, budgets 1,4")
    ap.add_argument("--out", default="docs/bench_particles_gmm", help="output prefix")
    args = ap.parse_args()
    if args.smoke:
        args.seeds, args.budgets = 2, "1,4"
    t0 = time.perf_counter()
    results = gmm_world([m for m in args.methods.split(",") if m], [int(b) for b in args.budgets.split(",")],
                        args.steps, args.seeds)
    results["seconds"] = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out)
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
