"""Particle methods on the shapes world: oracle accuracy against NFE for SMC / FK steering,
FKC guidance, rollover budget forcing (and its per-step baselines SVDD and CoDe) against
random search (best-of-N) at equal NFE.

For every eval prompt (a category-balanced subset of assets/prompts/shapes_eval.json), every
method and every budget (multiples of one sample's NFE at the process's step count), the
method searches with a verifier (default: the exact oracle, i.e. the search optimises the
judge) and returns one image, which the oracle judges. A prompt's particles go through the
denoiser as one batch (`--max-batch` rows per call). Best-of-N is prefix-consistent (its run
at budget B is the first part of its run at a larger budget) and runs once at the largest
budget; the other methods run once per budget. A budget below a method's minimum is skipped.

`--paper` adds the setting of Kim et al. 2025 (Table 2: 10 steps, NFE 500; they report
RBF > SVDD > CoDe > best-of-N > SMC on FLUX): every method at 10 steps and NFE 500, and the
ranking measured here.

`--world gmm` runs the same comparison on the analytic 2-D Gaussian mixture of
tests/analytic.py (reward -|x - (1, -2.2)|^2, mean best reward instead of accuracy): no model
needed, seconds on a CPU.

    python scripts/bench_particles.py --prompts 120 --budgets 1,4,16 --paper          # GPU
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

import torch  # noqa: E402

METHODS = ("best_of_n", "smc", "fkc", "rbf", "svdd", "code")
PAPER_METHODS = ("rbf", "svdd", "code", "best_of_n", "smc")  # the paper's reported order, best first
PREFIX_CONSISTENT = {"best_of_n"}


def stratified(prompts: list[dict], k: int) -> list[dict]:
    """k prompts, the same number from every category, in file order."""
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for p in prompts:
        by_cat[p["category"]].append(p)
    per = max(1, k // len(by_cat))
    return [p for cat in sorted(by_cat) for p in by_cat[cat][:per]]


def picked(result, budget_nfe: int):
    within = [c for c in result.candidates if c.nfe <= budget_nfe]
    return max(within, key=lambda c: c.score) if within else None


def judge(candidate, prompt: str, guided_by_oracle: bool, oracle) -> float:
    """1.0 if the oracle passes the image (score 1), else 0.0."""
    if candidate is None:
        return 0.0
    if guided_by_oracle:
        return float(candidate.score >= 1.0 - 1e-6)
    image = candidate.image.float().div(255).unsqueeze(0).to(oracle.device)
    return float(oracle(image, [prompt])[0] >= 1.0 - 1e-6)


def run_grid(proc, guide, oracle, prompts, methods, budgets, hyper, seed, guided_by_oracle, label=""):
    """accuracy[method][budget], per-category accuracy, mean seconds and NFE per search."""
    from tts_diffusion import Budget, TTSInputError, load_searcher

    steps = proc.num_steps
    cats = sorted({p["category"] for p in prompts})
    out = {"accuracy": {}, "per_category": {}, "seconds_per_search": {}, "mean_nfe": {}}
    for name in methods:
        search = load_searcher(name)
        hits = defaultdict(lambda: defaultdict(float))
        secs, nfes, runs = defaultdict(float), defaultdict(float), defaultdict(int)
        for k, p in enumerate(prompts):
            gen_seed = seed * 100003 + k
            kw = {"keep_images": 1 if guided_by_oracle else 10**6, **hyper.get(name, {})}
            todo = [max(budgets)] if name in PREFIX_CONSISTENT else budgets
            for b in todo:
                t0 = time.perf_counter()
                try:
                    res = search(proc, guide, p["prompt"], Budget(b * steps), torch.Generator().manual_seed(gen_seed), **kw)
                except TTSInputError:
                    continue
                dt = time.perf_counter() - t0
                for bb in (budgets if name in PREFIX_CONSISTENT else [b]):
                    hits[bb][p["category"]] += judge(picked(res, bb * steps), p["prompt"], guided_by_oracle, oracle)
                    secs[bb] += dt
                    nfes[bb] += min(res.nfe, bb * steps)
                    runs[bb] += 1
        n_cat = {c: sum(p["category"] == c for p in prompts) for c in cats}
        out["accuracy"][name] = {b: sum(hits[b].values()) / len(prompts) for b in budgets if runs[b]}
        out["per_category"][name] = {b: {c: hits[b][c] / n_cat[c] for c in cats} for b in budgets if runs[b]}
        out["seconds_per_search"][name] = {b: secs[b] / runs[b] for b in budgets if runs[b]}
        out["mean_nfe"][name] = {b: nfes[b] / runs[b] for b in budgets if runs[b]}
        row = "  ".join(f"{out['accuracy'][name].get(b, float('nan')):.3f}" for b in budgets)
        print(f"{label}{name:<10} {row}", flush=True)
    return out


def gmm_world(args):
    """The analytic 2-D mixture (tests/analytic.py): mean best reward against NFE."""
    from analytic import FunctionVerifier, analytic_process, four_modes_2d

    from tts_diffusion import Budget, TTSInputError, load_searcher

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
                        r = load_searcher(name)(proc, ver, "a", Budget(b * proc.num_steps), torch.Generator().manual_seed(s))
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
    panels = [("accuracy", "oracle accuracy", results.get("accuracy", {}), steps)]
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
            ax.set_title(f"Kim et al. 2025 setting: 10 steps, NFE {results['paper'].get('nfe', '')}")
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

    from tts_diffusion import TTSPipeline
    from tts_diffusion.paths import assets_dir
    from tts_diffusion.verifiers import load_verifier

    out = args.out or "docs/bench_particles"
    if args.smoke:
        args.prompts, args.budgets = 6, "1,2"
        args.steps = args.steps or 4
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    try:
        tts = TTSPipeline.from_pretrained(args.model, torch_dtype=dtype)
        model = args.model or "assets/shapes-model"
    except Exception as e:  # noqa: BLE001
        if not args.smoke:
            raise
        from tiny_pipelines import make_tiny_pipeline  # a random tiny PixArt: checks the plumbing only

        print(f"no model ({str(e)[:120]}); smoke run on a tiny random pipeline", file=sys.stderr)
        tts, model = TTSPipeline(make_tiny_pipeline("pixart_sigma")), "tiny random pixart (smoke)"
    tts.set_progress_bar_config(disable=True)
    tts.to(device)
    proc = tts.process(args.steps, max_batch=args.max_batch)
    prompts = stratified(json.loads((assets_dir() / "prompts" / "shapes_eval.json").read_text())["prompts"], args.prompts)
    if args.smoke:
        prompts = prompts[:: max(1, len(prompts) // 2)][:2]
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    oracle = load_verifier("oracle")
    guide = oracle if args.verifier == "oracle" else tts.get_verifier(args.verifier)
    hyper = {"rbf": {"child_batch": args.rbf_child_batch}}
    if not proc.do_cfg and "fkc" in methods:
        methods.remove("fkc")
        print("guidance is off: fkc (guidance) skipped", file=sys.stderr)
    t0 = time.perf_counter()
    print(f"{'method':<10} " + "  ".join(f"x{b:<4}" for b in budgets), flush=True)
    results = {"model": model, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "steps": proc.num_steps, "guidance": proc.guidance_scale, "verifier": args.verifier,
               "prompts": len(prompts), "budgets": budgets, "nfe": [b * proc.num_steps for b in budgets],
               "seed": args.seed, "hyper": hyper}
    if not args.no_grid:
        results.update(run_grid(proc, guide, oracle, prompts, methods, budgets, hyper, args.seed,
                                args.verifier == "oracle"))
    if args.paper:
        paper_proc = tts.process(10, max_batch=args.max_batch)
        mult = 2 if args.smoke else 50
        print(f"paper setting: 10 steps, NFE {10 * mult}", flush=True)
        paper = run_grid(paper_proc, guide, oracle, prompts, list(PAPER_METHODS), [mult], hyper, args.seed,
                         args.verifier == "oracle", label="  ")
        acc = {m: paper["accuracy"][m][mult] for m in PAPER_METHODS if mult in paper["accuracy"].get(m, {})}
        ranking = sorted(acc, key=lambda m: -acc[m])
        paper.update({"nfe": 10 * mult, "ranking": ranking, "paper_ranking": list(PAPER_METHODS),
                      "agrees_with_paper": ranking == list(PAPER_METHODS)})
        results["paper"] = paper
        print(f"ranking here: {' > '.join(ranking)}   (paper: {' > '.join(PAPER_METHODS)})", flush=True)
    results["seconds"] = time.perf_counter() - t0
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(results, indent=2))
    plot(results, out, proc.num_steps)
    print(f"wrote {out}.json and {out}.png ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
