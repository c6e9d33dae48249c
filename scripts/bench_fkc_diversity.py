"""How many distinct final images FKC's particles end as, on the shapes world.

FKC (classifier-free guidance as the product p_u^(1-w) p_c^w) resamples its particles by
weight; when the weights are uneven, the population collapses onto a few ancestors and a
verifier picking the best final particle has few images to choose from. For every eval prompt
and every particle count K this runs `fkc` with the default settings and counts the distinct
final images (identical uint8 images count once), the oracle accuracy of the best one, and
the fraction of final particles the oracle passes.

    python scripts/bench_fkc_diversity.py --prompts 12 --particles 4,16 --out docs/fkc_diversity   # CPU, ~3 min

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", type=int, default=12)
    ap.add_argument("--particles", default="4,16", help="particle counts K (budget K samples)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/fkc_diversity")
    args = ap.parse_args()
    try:
        counts = [int(x) for x in args.particles.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        ap.error(f"--particles takes comma-separated positive counts, got {args.particles!r}")
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))

    from tts_diffusion import Budget, load_searcher
    from tts_diffusion.bench.default_model import load_default_model
    from tts_diffusion.verifiers import load_verifier

    device = torch.device(args.device)
    tts = load_default_model(device)
    proc = tts.process(None)
    oracle, fkc = load_verifier("oracle"), load_searcher("fkc")
    prompts = eval_prompts(args.prompts)
    t0 = time.perf_counter()
    rows = []
    for k in counts:
        distinct, best_right, frac_right = [], [], []
        for i, p in enumerate(prompts):
            res = fkc(proc, oracle, p["prompt"], Budget(k * proc.num_steps),
                      torch.Generator().manual_seed(args.seed * 100003 + i), keep_images=10**6)
            distinct.append(len({c.image.numpy().tobytes() for c in res.candidates}))
            best_right.append(float(res.best_score >= 1 - 1e-6))
            frac_right.append(sum(c.score >= 1 - 1e-6 for c in res.candidates) / len(res.candidates))
        n = len(prompts)
        rows.append({"particles": k, "distinct_final_images": sum(distinct) / n, "accuracy": sum(best_right) / n,
                     "fraction_of_particles_right": sum(frac_right) / n})
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "steps": proc.num_steps, "guidance": proc.guidance_scale, "prompts": len(prompts), "rows": rows,
           "seconds": time.perf_counter() - t0}
    print(f"fkc, {proc.num_steps} steps, w = {proc.guidance_scale}, {len(prompts)} prompts")
    print(f"{'K':>4} {'distinct images':>16} {'accuracy':>9} {'particles right':>16}")
    for r in rows:
        print(f"{r['particles']:>4} {r['distinct_final_images']:>16.2f} {r['accuracy']:>9.3f} "
              f"{r['fraction_of_particles_right']:>16.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}.json ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
