"""Particle methods on the shapes world: oracle accuracy against NFE for SMC / FK steering,
FKC guidance, rollover budget forcing (and its per-step baselines SVDD and CoDe) against
random search (best-of-N) at equal NFE.

For every eval prompt (a category-balanced subset of assets/prompts/shapes_eval.json), every
method and every budget (multiples of one sample's NFE at the process's step count), the
method searches with a verifier (default: the exact oracle, i.e. the search optimises the
judge) and returns one image, which the oracle judges. A prompt's particles go through the
denoiser as one batch (`--max-batch` rows per call); `--workers N` splits the prompts over N
processes sharing the device (the small model leaves one process's GPU mostly idle).
Best-of-N is prefix-consistent (its run at budget B is the first part of its run at a larger
budget) and runs once at the largest budget; the other methods run once per budget. A budget
below a method's minimum is skipped.

`--paper` adds the setting of Kim et al. 2025 (Table 2: 10 steps, NFE 500; they report
RBF > SVDD > CoDe > best-of-N > SMC on FLUX): every method at 10 steps and NFE 500, and the
ranking measured here.

`--world gmm` runs the same comparison on the analytic 2-D Gaussian mixture of
tests/analytic.py (reward -|x - (1, -2.2)|^2, mean best reward instead of accuracy): no model
needed, seconds on a CPU.

    python scripts/bench_particles.py --prompts 108 --budgets 1,4,16,64 --paper --workers 14  # GPU, ~11 min
    python scripts/bench_particles.py --device cpu --smoke                            # quick check
    python scripts/bench_particles.py --world gmm --out docs/bench_particles_gmm      # analytic
    python scripts/bench_particles.py --merge a.json b.json --out docs/bench_particles  # join runs

Writes <out>.json and <out>.png (matplotlib) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from shapes_bench import aggregate, eval_prompts, fit_to_budget, run_records  # noqa: E402

METHODS = ("best_of_n", "smc", "fkc", "rbf", "svdd", "code")
PAPER_METHODS = ("rbf", "svdd", "code", "best_of_n", "smc")  # the paper's reported order, best first
PREFIX_CONSISTENT = {"best_of_n"}


def gmm_world(args):
    """The analytic 2-D mixture (tests/analytic.py): mean best reward against NFE."""
    from tts_diffusion import Budget, TTSInputError, load_searcher
    from tts_diffusion.testing.analytic import FunctionVerifier, analytic_process, four_modes_2d

    target = torch.tensor([1.0, -2.2], dtype=torch.float64)
    ver = FunctionVerifier(lambda x: -((x - target) ** 2).sum(1), 2)
    g = four_modes_2d()
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = [m for m in args.methods.split(",") if m != "fkc"]  # no CFG in this world
    results = {"world": "gmm", "reward": "-|x - (1, -2.2)|^2", "steps": args.steps or 10, "seeds": args.seeds,
               "budgets": budgets, "mean_best_reward": {}, "stderr": {}}
    for kind in ("flow", "vp"):
        proc = analytic_process({"": g, "a": g}, kind, args.steps or 10)
        for name in methods:
            vals = defaultdict(list)
            for b in budgets:
                for s in range(args.seeds):
                    try:
                        r = load_searcher(name)(proc, ver, "a", Budget(b * proc.num_steps), torch.Generator().manual_seed(s),
                                                **fit_to_budget(name, b * proc.num_steps, proc.num_steps, {}))
                    except TTSInputError:
                        continue
                    vals[b].append(r.best_score)
            key = f"{kind}/{name}"
            results["mean_best_reward"][key] = {b: sum(v) / len(v) for b, v in vals.items()}
            results["stderr"][key] = {b: float(torch.tensor(v).std() / len(v) ** 0.5) for b, v in vals.items()}
            print(f"{key:<16} " + "  ".join(f"{results['mean_best_reward'][key].get(b, float('nan')):8.3f}"
                                            for b in budgets), flush=True)
    return results


def plot(results: dict, out: str, steps: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot", file=sys.stderr)
        return
    guide = results.get("verifier", "oracle")
    panels = [(f"shapes world, {steps} steps, guided by the {guide}", "oracle accuracy",
               results["accuracy"], steps)] if results.get("accuracy") else []
    if "paper" in results:
        panels.append(("paper", "oracle accuracy (10 steps)", results["paper"]["accuracy"], 10))
    if "mean_best_reward" in results:  # plot the regret -reward = |x - x*|^2 on a log axis
        panels = [(k, "mean |x - x*|^2 of the returned sample",
                   {m: {b: -r for b, r in v.items()} for m, v in results["mean_best_reward"].items() if m.startswith(k)},
                   results["steps"]) for k in ("flow", "vp")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (title, ylabel, curves, n) in zip(axes[0], panels):
        if title == "paper":  # one budget: bars, best first
            acc = {m: next(iter(v.values())) for m, v in curves.items() if v}
            names = sorted(acc, key=lambda m: -acc[m])
            ax.bar(names, [acc[m] for m in names], color="tab:blue")
            ax.set_ylabel(ylabel)
            ax.set_title(f"Kim et al. 2025 setting: 10 steps, NFE {results['paper'].get('nfe', '')}\n"
                         f"guided by the {guide}, judged by the oracle", fontsize=10)
            ax.grid(alpha=0.3, axis="y")
            continue
        for name, acc in curves.items():
            bs = sorted(int(b) for b in acc)
            ax.plot([b * n for b in bs], [acc[b] if b in acc else acc[str(b)] for b in bs], marker="o", label=name)
        ax.set_xscale("log", base=2)
        if "mean_best_reward" in results:
            ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}.png", dpi=120)


def merge(files: list[str], out: str) -> None:
    """One result from several runs of this script (same prompts and budgets, other methods)."""
    keys = ("accuracy", "per_category", "seconds_per_search", "mean_nfe")
    merged: dict = {}
    for f in files:
        r = json.loads(Path(f).read_text())
        for k, v in r.items():
            if k in keys:
                merged.setdefault(k, {}).update(v)
            elif k == "paper":
                if "paper" in merged:
                    for kk in keys:
                        merged["paper"].setdefault(kk, {}).update(v.get(kk, {}))
                    acc = {m: a[str(v["nfe"] // 10)] if str(v["nfe"] // 10) in a else a[v["nfe"] // 10]
                           for m, a in merged["paper"]["accuracy"].items()}
                    ranking = sorted(acc, key=lambda m: -acc[m])
                    merged["paper"].update({"ranking": ranking, "agrees_with_paper": ranking == list(PAPER_METHODS)})
                else:
                    merged["paper"] = v
            elif k == "records":
                merged.setdefault("records", []).extend(v)
            elif k == "seconds":
                merged["seconds"] = merged.get("seconds", 0.0) + v
            else:
                merged.setdefault(k, v)
    merged["merged_from"] = files
    for k in keys:  # JSON turned the budget keys into strings
        for m, d in merged.get(k, {}).items():
            merged[k][m] = {int(b): x for b, x in d.items()}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(merged, indent=2))
    plot(merged, out, merged.get("steps", 20))
    print(f"wrote {out}.json and {out}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=("shapes", "gmm"), default="shapes")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default=None, help="diffusers folder (default: the embedded shapes model)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--budgets", default="1,4,16", help="multiples of one sample's NFE")
    ap.add_argument("--prompts", type=int, default=120)
    ap.add_argument("--steps", type=int, default=None, help="default: the model's own (shapes: 20)")
    ap.add_argument("--verifier", default="oracle", help="what guides the search; the oracle always judges")
    ap.add_argument("--paper", action="store_true", help="also the RBF paper's setting: 10 steps, NFE 500")
    ap.add_argument("--rbf-child-batch", type=int, default=1, help="children per RBF chain and batch (1: the paper)")
    ap.add_argument("--max-batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=1,
                    help="processes sharing the device, each with a share of the prompts (14 on an H100 for docs/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=16, help="gmm world: seeds per setting")
    ap.add_argument("--smoke", action="store_true", help="a few prompts and small budgets (CPU check)")
    ap.add_argument("--no-grid", action="store_true", help="only the --paper setting")
    ap.add_argument("--replot", default=None, help="redraw the PNG of a saved JSON")
    ap.add_argument("--merge", nargs="+", default=None, help="join the JSON of several runs (split to fit time limits)")
    ap.add_argument("--out", default=None, help="output prefix (default docs/bench_particles[_gmm])")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.out or "docs/bench_particles")
        return
    if args.replot:
        r = json.loads(Path(args.replot).read_text())
        for k in ("mean_best_reward", "accuracy"):
            for m, d in r.get(k, {}).items():
                r[k][m] = {int(b): x for b, x in d.items()}
        plot(r, str(Path(args.replot).with_suffix("")), r.get("steps", 20))
        return
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))

    if args.world == "gmm":
        out = args.out or "docs/bench_particles_gmm"
        if args.smoke:
            args.seeds, args.budgets = 2, "1,4"
        t0 = time.perf_counter()
        results = gmm_world(args)
        results["seconds"] = time.perf_counter() - t0
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{out}.json").write_text(json.dumps(results, indent=2))
        plot(results, out, results["steps"])
        print(f"wrote {out}.json and {out}.png")
        return

    out = args.out or "docs/bench_particles"
    if args.smoke:
        args.prompts, args.budgets = 6, "1,2"
        args.steps = args.steps or 4
    tts, model = load_world(args, "cpu")  # the parent only reads settings; workers load their own copy
    proc = tts.process(args.steps, max_batch=args.max_batch)
    prompts = eval_prompts(args.prompts)
    if args.smoke:
        prompts = prompts[:: max(1, len(prompts) // 2)][:2]
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    hyper = {"rbf": {"child_batch": args.rbf_child_batch}}
    if not proc.do_cfg and "fkc" in methods:
        methods.remove("fkc")
        print("guidance is off: fkc (guidance) skipped", file=sys.stderr)
    mult = 2 if args.smoke else 50
    paper_methods = [m for m in PAPER_METHODS if m in methods] if args.paper else []
    job = {"args": vars(args), "methods": [] if args.no_grid else methods, "budgets": budgets, "hyper": hyper,
           "paper_methods": paper_methods, "paper_mult": mult}
    indexed = list(enumerate(prompts))
    workers = max(1, min(args.workers, len(indexed)))
    t0 = time.perf_counter()
    if workers == 1:
        records = shard_worker((job, indexed, 0))
    else:  # one process per shard, all on the same device: the small model leaves the GPU mostly idle
        import multiprocessing as mp

        shards = [(job, indexed[w::workers], w) for w in range(workers)]
        with mp.get_context("spawn").Pool(workers) as pool:
            records = [r for part in pool.map(shard_worker, shards) for r in part]
    device = torch.device(args.device)
    results = {"model": model, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "steps": proc.num_steps, "guidance": proc.guidance_scale, "verifier": args.verifier,
               "prompts": len(prompts), "budgets": budgets, "nfe": [b * proc.num_steps for b in budgets],
               "seed": args.seed, "hyper": hyper, "workers": workers}
    print(f"{'method':<10} " + "  ".join(f"x{b:<4}" for b in budgets), flush=True)
    if not args.no_grid:
        results.update(aggregate([r for r in records if r["tag"] == "grid"], prompts, methods, budgets))
    if paper_methods:
        print(f"paper setting: 10 steps, NFE {10 * mult}", flush=True)
        paper = aggregate([r for r in records if r["tag"] == "paper"], prompts, paper_methods, [mult], label="  ")
        acc = {m: paper["accuracy"][m][mult] for m in paper_methods if mult in paper["accuracy"].get(m, {})}
        ranking = sorted(acc, key=lambda m: -acc[m])
        paper.update({"nfe": 10 * mult, "ranking": ranking, "paper_ranking": list(PAPER_METHODS),
                      "agrees_with_paper": ranking == list(PAPER_METHODS)})
        results["paper"] = paper
        print(f"ranking here: {' > '.join(ranking)}   (paper: {' > '.join(PAPER_METHODS)})", flush=True)
    results["seconds"] = time.perf_counter() - t0
    results["records"] = records
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(results, indent=2))
    plot(results, out, proc.num_steps)
    print(f"wrote {out}.json and {out}.png ({results['seconds']:.0f} s)")


def load_world(args, device: str):
    """The shapes pipeline (or, for --smoke without the model, a tiny random PixArt) on `device`."""
    from tts_diffusion import TTSPipeline

    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    try:
        tts = TTSPipeline.from_pretrained(args.model, torch_dtype=dtype)
        model = args.model or "assets/shapes-model"
    except Exception as e:  # noqa: BLE001
        if not args.smoke:
            raise
        from tts_diffusion.testing.tiny_pipelines import (
            make_tiny_pipeline,  # a random tiny PixArt: checks the plumbing only
        )

        print(f"no model ({str(e)[:120]}); smoke run on a tiny random pipeline", file=sys.stderr)
        tts, model = TTSPipeline(make_tiny_pipeline("pixart_sigma")), "tiny random pixart (smoke)"
    tts.set_progress_bar_config(disable=True)
    return tts.to(device), model


def shard_worker(payload) -> list[dict]:
    """Run every method on one shard of the prompts (a worker process, or the main one)."""
    job, indexed, w = payload
    args = argparse.Namespace(**job["args"])
    if args.workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.workers))
    from tts_diffusion.verifiers import load_verifier

    tts, _ = load_world(args, args.device)
    proc = tts.process(args.steps, max_batch=args.max_batch)
    oracle = load_verifier("oracle")
    guide = oracle if args.verifier == "oracle" else tts.get_verifier(args.verifier)
    by_oracle = args.verifier == "oracle"
    records = []
    for name in job["methods"]:
        t0 = time.perf_counter()
        records += run_records(proc, guide, oracle, indexed, name, job["budgets"], job["hyper"], args.seed, by_oracle,
                               PREFIX_CONSISTENT)
        print(f"  [worker {w}] {name}: {len(indexed)} prompts in {time.perf_counter() - t0:.0f} s", flush=True)
    if job["paper_methods"]:
        paper_proc = tts.process(10, max_batch=args.max_batch)
        for name in job["paper_methods"]:
            t0 = time.perf_counter()
            records += run_records(paper_proc, guide, oracle, indexed, name, [job["paper_mult"]], job["hyper"],
                                   args.seed, by_oracle, PREFIX_CONSISTENT, tag="paper")
            print(f"  [worker {w}] paper {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return records


if __name__ == "__main__":
    main()
