#!/usr/bin/env python
"""CPU search time of two shapes models at equal NFE, in one run (issue 25: a v2 search takes
at most 3x a v1 search).

    git show main:tts_diffusion/assets/shapes-model/...   # a v1 copy outside the package, e.g.:
    python scripts/bench_model_cpu.py --base .v1/shapes-model --threads 1 --out docs/bench_model_cpu.json
    python scripts/bench_model_cpu.py --base .v1/shapes-model --smoke

Each repeat runs every (searcher, prompt) with the base model, then with the model
(default: the shipped one): same seed, budget, verifier (the oracle) and thread count, so a
change of load on a shared machine hits both alike. Per search the sidecar's timings
(denoise, decode, verify, total) are kept; the table gives the median total of each model and
their ratio. The prompts must be in both models' grammars (v1-type prompts for a v1 base).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

PROMPTS = ("a photo of a red circle left of a blue square", "a photo of three stars",
           "a photo of a green triangle and a yellow square")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the reference model folder (e.g. a v1 copy)")
    p.add_argument("--model", default=None, help="the model folder to compare (default: the shipped one)")
    p.add_argument("--searchers", default="best_of_n", help="comma-separated searchers")
    p.add_argument("--budget", type=int, default=160, help="NFE per search (both models: 20 steps a sample)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    p.add_argument("--out", default=None, help="JSON path for the results")
    p.add_argument("--smoke", action="store_true", help="40 NFE, one repeat, one prompt")
    args = p.parse_args(argv)
    if args.smoke:
        args.budget, args.repeats, args.prompts = 40, 1, args.prompts[:1]

    import torch

    from tts_diffusion import TTSPipeline
    from tts_diffusion.paths import default_model_path

    torch.set_num_threads(args.threads)
    model = args.model or str(default_model_path())
    pipes = {"base": TTSPipeline.from_pretrained(args.base, device="cpu"),
             "model": TTSPipeline.from_pretrained(model, device="cpu")}
    searchers = [s for s in args.searchers.split(",") if s]
    for tts in pipes.values():
        tts.set_progress_bar_config(disable=True)
        tts(args.prompts[0], searcher=searchers[0], verifier="oracle", budget=20, progress=False)  # warm-up
    runs: dict[tuple[str, str], list[dict]] = {(k, s): [] for k in pipes for s in searchers}
    load_before = os.getloadavg()
    for r in range(args.repeats):
        for s in searchers:
            for i, prompt in enumerate(args.prompts):
                for k, tts in pipes.items():
                    res = tts(prompt, searcher=s, verifier="oracle", budget=args.budget, seed=1000 * r + i,
                              progress=False)
                    runs[(k, s)].append({"prompt": prompt, "seed": 1000 * r + i, "nfe": res.nfe,
                                         "timings": res.timings})
    load_after = os.getloadavg()
    rows = []
    for s in searchers:
        med = {k: statistics.median(x["timings"]["total"] for x in runs[(k, s)]) for k in pipes}
        parts = {k: {ph: statistics.median(x["timings"].get(ph, 0.0) for x in runs[(k, s)])
                     for ph in ("denoise", "decode", "verify")} for k in pipes}
        rows.append({"searcher": s, "base_median_s": med["base"], "model_median_s": med["model"],
                     "ratio": med["model"] / med["base"], "phases_median_s": parts})
    print(f"{args.budget} NFE, {args.threads} thread(s), {args.repeats} repeats x {len(args.prompts)} prompts, "
          f"load {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print(f"{'searcher':<12} {'base s':>8} {'model s':>8} {'ratio':>6}   model phases (denoise/decode/verify)")
    for row in rows:
        ph = row["phases_median_s"]["model"]
        print(f"{row['searcher']:<12} {row['base_median_s']:>8.2f} {row['model_median_s']:>8.2f} {row['ratio']:>6.2f}"
              f"   {ph['denoise']:.2f} / {ph['decode']:.2f} / {ph['verify']:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "command": " ".join(["python", *sys.argv]), "base": args.base, "model": model, "budget": args.budget,
            "threads": args.threads, "repeats": args.repeats, "prompts": args.prompts, "cpu_count": os.cpu_count(),
            "loadavg_before": load_before, "loadavg_after": load_after, "torch": torch.__version__, "rows": rows,
            "runs": {f"{k}/{s}": v for (k, s), v in runs.items()}}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
