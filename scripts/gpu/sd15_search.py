"""Search costs at SD-1.5 size on one GPU (random weights, real shapes; time and memory only):

- draft:     best-of-N against draft_commit (each draft kind) at the same N, seconds (issue #30's
             "<= 60% of best-of-N's seconds" at SD-1.5 size);
- noise_opt: one gradient iteration of noise_opt (512 px, 25 steps, fp16), peak GPU memory and
             seconds with and without gradient checkpointing (issue #31);
- guidance:  best-of-N with and without TFG reward guidance (the CLIP's gradient through the
             VAE decoder), seconds and peak memory (issue #33).

Every stage runs in one process on a pipeline built once; each timed search is preceded by a
warm-up of the same search. One JSON file, and a table at the end.

    python scripts/gpu/sd15_search.py --out $OUT/sd15_search.json                  # one H100, ~4 min
    python scripts/gpu/sd15_search.py --smoke --out /tmp/sd15_search.json          # CPU, tiny models
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402


def timed_search(fn, device, repeats: int) -> dict:
    """Warm-up call, then `bench.timing.timed` (median of `repeats`); peak memory over the timed calls."""
    from tts_diffusion.bench.timing import timed

    fn()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    median, times, res = timed(fn, device, repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"seconds": median, "all_seconds": times, "peak_gib": peak, "nfe": res.nfe,
            "best_score": res.best_score, "best_seed": res.best.seed if hasattr(res.best, "seed") else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default="draft,noise_opt,guidance")
    ap.add_argument("--n", type=int, default=32, help="best-of-N's N and the drafts' N")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny models, 64 px, N=4, 4 steps")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        torch.set_num_threads(1)
        args.n, args.steps, args.size, args.max_batch, args.repeats = 4, 4, 64, 4, 1
    dtype = torch.float16 if device.type == "cuda" else torch.float32

    from tts_diffusion import TTSPipeline
    from tts_diffusion.features.guidance_spec import RewardGuidance
    from tts_diffusion.testing.sd15 import build_sd15
    from tts_diffusion.verifiers import CLIPVerifier

    pipe = build_sd15(device, dtype, args.smoke)
    tts = TTSPipeline(pipe)
    tts.set_progress_bar_config(disable=True)
    verifier = CLIPVerifier(model="RN50" if args.smoke else "ViT-L-14", pretrained=None, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    setting = dict(prompt="a photo of a cat on a red sofa", verifier=verifier, num_inference_steps=args.steps,
                   height=args.size, width=args.size, max_batch=args.max_batch)
    out = {"device": name, "torch": torch.__version__, "n": args.n, "steps": args.steps, "size": args.size,
           "dtype": str(dtype), "rows": []}
    print(f"{name}, torch {torch.__version__}, {args.size} px, {args.steps} steps, N={args.n}, {dtype}", flush=True)

    def search(searcher, budget, **kw):
        def run():
            return tts(searcher=searcher, budget=budget, generator=torch.Generator().manual_seed(0), **setting, **kw)
        return run

    def add(stage, variant, fn):
        t = time.perf_counter()
        try:
            row = {"stage": stage, "variant": variant, **timed_search(fn, device, args.repeats)}
        except Exception as e:  # a variant that cannot run here is reported, the others still run
            row = {"stage": stage, "variant": variant, "error": f"{type(e).__name__}: {e}"[:300]}
        row["wall_s"] = time.perf_counter() - t
        out["rows"].append(row)
        print(json.dumps(row), flush=True)
        json.dump(out, open(args.out, "w"), indent=1)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    stages = args.stages.split(",")
    full = args.n * args.steps
    if "draft" in stages:
        add("draft", f"best_of_n N={args.n}", search("best_of_n", full))
        half = max(1, args.steps // 2)
        for kind, opt in (("steps", {"draft_steps": max(1, args.steps // 4)}), ("steps", {"draft_steps": half}),
                          ("tgate", {"draft_gate": max(1, args.steps // 5)}), ("tgate", {"draft_gate": half})):
            label = f"draft_commit {kind} {opt} top_k=2"
            add("draft", label, search("draft_commit", 4 * full, num_samples=args.n, top_k=2, draft=kind, **opt))
    if "noise_opt" in stages:
        for ckpt in (True, False):
            budget = args.steps * (3 + ckpt) + args.steps  # one iteration (core/budget.py's rule) + the final sample
            add("noise_opt", f"1 iteration, checkpointing={ckpt}",
                search("noise_opt", budget, num_iterations=1, checkpointing=ckpt))
    if "guidance" in stages:
        n = min(4, args.n)
        add("guidance", f"best_of_n N={n}", search("best_of_n", n * args.steps))
        for preset in ("mpgd", "tfg"):
            g = RewardGuidance.build(preset=preset)
            add("guidance", f"best_of_n N={n} + reward guidance {preset}",
                search("best_of_n", n * args.steps * (g.nfe_per_step() + 1), num_samples=n, reward_guidance=g))
    print(f"\n{'stage':10s} {'variant':58s} {'s':>8s} {'peak GiB':>9s} {'NFE':>6s}")
    for r in out["rows"]:
        if "error" in r:
            print(f"{r['stage']:10s} {r['variant'][:58]:58s} error: {r['error'][:80]}")
        else:
            pk = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
            print(f"{r['stage']:10s} {r['variant'][:58]:58s} {r['seconds']:8.3f} {pk:>9s} {r['nfe']:6d}")


if __name__ == "__main__":
    main()
