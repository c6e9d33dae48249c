"""Scaling curves on the shapes world: oracle accuracy against NFE for each searcher.

For every eval prompt (a category-balanced subset of tts_diffusion/assets/prompts/shapes_eval.json),
every searcher and every budget (multiples of one sample's NFE), the searcher picks one
image with a verifier and the exact oracle judges it. Verifiers:
  - oracle: the search optimises the judge itself (an upper bound on what search can do);
  - clip:   the domain CLIP guides the search, the oracle judges held-out (does search with
            a learned verifier keep the gain, or hack the verifier?).

Prefix-consistent searchers (best_of_n, zero_order: a run at budget B is the first part of a
run at a larger budget) run once at the largest budget and are read off at each budget from
the candidates' NFE; the others run once per budget. The image a search returns at budget B
is its best-scoring candidate within B; only that image is judged by the oracle.

    python scripts/bench_scaling.py --prompts 60 --budgets 1,4,16,64 --out docs/scaling   # GPU
    python scripts/bench_scaling.py --device cpu --prompts 6 --budgets 1,2 --steps 4 --smoke

Writes <out>.json and <out>.png and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes_bench import aggregate, eval_prompts, run_records  # noqa: E402

PREFIX_CONSISTENT = {"best_of_n", "zero_order"}  # a run at budget B is the prefix of a larger run
HYPER = {  # benchmark settings per searcher (defaults of the searcher otherwise)
    "best_of_n": {},
    "zero_order": {"num_children": 4, "step_size": 0.6},
    "paths": {"num_children": 4},
    "smc": {},
    "fkc": {},
    "rbf": {},
    "svdd": {},
    "code": {},
}


def plot(results: dict, out: str) -> None:
    """Accuracy against NFE, one panel per verifier, from a results dict (or its JSON)."""
    budgets, steps = results["budgets"], results["steps"]
    vnames = sorted({k.split("/")[0] for k in results["accuracy"]}, key=lambda v: v != "oracle")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(vnames), figsize=(5 * len(vnames), 4), squeeze=False)
    for ax, vname in zip(axes[0], vnames):
        for key, acc in results["accuracy"].items():
            if key.startswith(vname + "/"):
                pts = [(b * steps, acc[str(b)] if str(b) in acc else acc[b]) for b in budgets]
                pts = [p for p in pts if p[1] is not None]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key.split("/")[1])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("NFE")
        ax.set_ylabel("oracle accuracy")
        ax.set_title(f"verifier: {vname} (judge: oracle)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(f"{out}.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default=None, help="diffusers folder (default: the embedded shapes model)")
    ap.add_argument("--searchers", default="best_of_n,zero_order,paths")
    ap.add_argument("--verifiers", default="oracle,clip")
    ap.add_argument("--budgets", default="1,2,4,8,16,32,64", help="multiples of one sample's NFE")
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny run for a CPU check")
    ap.add_argument("--out", default="docs/scaling")
    ap.add_argument("--replot", default=None, help="only redraw the plot of a results JSON (written next to it)")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(Path(args.replot).read_text()), str(Path(args.replot).with_suffix("")))
        return

    from tts_diffusion import TTSPipeline, available_searchers

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    tts = TTSPipeline.from_pretrained(args.model, torch_dtype=dtype)
    tts.set_progress_bar_config(disable=True)
    tts.to(device)
    proc = tts.process(args.steps, max_batch=args.max_batch)
    steps = proc.num_steps
    prompts = eval_prompts(args.prompts)
    budgets = [int(b) for b in args.budgets.split(",")]
    searchers = [s for s in args.searchers.split(",") if s in available_searchers()]
    skipped = [s for s in args.searchers.split(",") if s not in available_searchers()]
    oracle = tts.get_verifier("oracle")
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "steps": steps, "guidance": proc.guidance_scale, "prompts": len(prompts), "budgets": budgets,
                     "skipped_searchers": skipped, "accuracy": {}, "per_category": {}, "seconds": {}}
    print(f"{'verifier/searcher':<24} " + "  ".join(f"{b:>4}x" for b in budgets) + f"   (x {steps} NFE)")
    for vname in args.verifiers.split(","):
        guide = oracle if vname == "oracle" else tts.get_verifier(vname)
        for sname in searchers:
            t0 = time.perf_counter()
            records = run_records(proc, guide, oracle, list(enumerate(prompts)), sname, budgets, HYPER, args.seed,
                                  vname == "oracle", PREFIX_CONSISTENT)
            agg = aggregate(records, prompts, [sname], budgets, echo=False)
            key = f"{vname}/{sname}"
            # None where the budget is below the method's minimum (e.g. one path of `paths`)
            results["accuracy"][key] = {b: agg["accuracy"][sname].get(b) for b in budgets}
            results["per_category"][key] = {b: agg["per_category"][sname].get(b) for b in budgets}
            results["seconds"][key] = time.perf_counter() - t0
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(f"{args.out}.json").write_text(json.dumps(results, indent=2))  # partial results survive a time-out
            row = "  ".join("  -  " if results["accuracy"][key][b] is None else f"{results['accuracy'][key][b]:.3f}"
                            for b in budgets)
            print(f"{key:<24} {row}   ({results['seconds'][key]:.0f} s)", flush=True)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out)
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
