"""How much the verifier's score of a Tweedie estimate x0_hat at step i tells about the final
sample, on the shapes world with the exact oracle.

In-loop methods (SMC potentials, SVDD / CoDe / RBF children) choose among particles by the
verifier's score of x0_hat at intermediate steps. This measures whether that choice can work:
for every eval prompt it draws `--samples` trajectories of the embedded model (stochastic
steps, eta 1 by default, as those methods use), scores x0_hat at several steps with the oracle,
and reports, per step, the ROC-AUC of that score for "the final image is correct" (0.5: no
signal), the fraction of x0_hat the oracle already passes, and how often those end correct.

    python scripts/bench_tweedie_signal.py --prompts 36 --samples 8 --out docs/tweedie_signal   # CPU, ~2 min

Writes <out>.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent

import torch  # noqa: E402

from tts_diffusion.bench import eval_prompts  # noqa: E402


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counted half; nan without both classes."""
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    gt = (pos[:, None] > neg[None]).double().mean()
    eq = (pos[:, None] == neg[None]).double().mean()
    return float(gt + 0.5 * eq)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", type=int, default=36)
    ap.add_argument("--samples", type=int, default=8, help="trajectories per prompt")
    ap.add_argument("--eta", type=float, default=1.0, help="noise of the steps (0: the ODE)")
    ap.add_argument("--probes", default="1,3,6,10,15", help="steps whose x0_hat is scored")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/tweedie_signal")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))

    from tts_diffusion.bench.default_model import load_default_model
    from tts_diffusion.verifiers import load_verifier

    device = torch.device(args.device)
    tts = load_default_model(device)
    proc = tts.process(None)
    oracle = load_verifier("oracle")
    try:
        probes = [int(i) for i in args.probes.split(",")]
    except ValueError:
        ap.error(f"--probes takes comma-separated step indices, got {args.probes!r}")
    bad = [i for i in probes if not 0 <= i < proc.num_steps]
    if bad:
        ap.error(f"probe steps {bad} are outside 0..{proc.num_steps - 1}; pass --probes within the grid")
    s = args.samples
    scores: dict[int, list[float]] = {i: [] for i in probes}
    final: list[bool] = []
    t0 = time.perf_counter()
    prompts = eval_prompts(args.prompts)
    for k, p in enumerate(prompts):
        cond = proc.encode(p["prompt"], None)
        gen = torch.Generator().manual_seed(args.seed * 100003 + k)
        x = proc.sample_noise(s, gen)
        for i in range(proc.num_steps):
            pred = proc.denoise(x, i, cond)
            if i in scores:
                scores[i] += oracle(proc.decode(pred.x0), [p["prompt"]] * s).tolist()
            x = proc.step(x, i, pred, eta=args.eta, generator=gen)
        final += (oracle(proc.decode(x), [p["prompt"]] * s) >= 1 - 1e-6).tolist()
    right = torch.tensor(final, dtype=torch.bool)
    rows = []
    for i in probes:
        sc = torch.tensor(scores[i], dtype=torch.float64)
        passed = sc >= 1 - 1e-6
        rows.append({"step": i, "auc": roc_auc(sc, right), "x0_passes": float(passed.double().mean()),
                     "final_right_given_pass": float(right[passed].double().mean()) if passed.any() else None})
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "steps": proc.num_steps, "eta": args.eta, "prompts": len(prompts), "samples_per_prompt": s,
           "final_accuracy": float(right.double().mean()), "rows": rows, "seconds": time.perf_counter() - t0}
    print(f"final accuracy {out['final_accuracy']:.3f} over {len(final)} samples ({proc.num_steps} steps, eta {args.eta})")
    print(f"{'step':>6} {'AUC':>6} {'x0 passes':>10} {'P(right | x0 passes)':>22}")
    for r in rows:
        cond_p = "-" if r["final_right_given_pass"] is None else f"{r['final_right_given_pass']:.3f}"
        print(f"{r['step']:>6} {r['auc']:>6.3f} {r['x0_passes']:>10.3f} {cond_p:>22}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}.json ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
