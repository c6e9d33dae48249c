"""Reflection on the shapes world: oracle accuracy of noise-only search (best-of-N) against
the reflection loop (searcher "reflect") refining the prompt, the image (SDEdit from the
chain head), or both, at equal NFE.

Two guidance settings, the oracle always judging the returned image:
  oracle  the oracle guides (scores candidates) and critiques (critic "feedback": its
          per-check text); runs stop at a score of 1 (the result is the same as running on)
  clip    the domain CLIP guides and the decomposed critic (claims scored by the domain
          CLIP) critiques; the oracle is held out and only judges
The prompt refiner is the rule-based one (critic and refiner names: --critic / --refiner).

Prompts are a category-balanced subset of the shapes eval split
(`tts_diffusion.bench.eval_prompts`), interleaved over categories so any prefix stays balanced; results are
written after every prompt (--out), so a run cut short still leaves a balanced table of the
prompts it finished. Best-of-N is prefix-consistent and runs once at the largest budget;
the reflect variants run once per budget. `--workers N` splits the prompts over processes.

    python scripts/bench_reflect.py --device cuda --prompts 108 --budgets 4,16,64 --workers 14 --out docs/bench_reflect_gpu.json
    python scripts/bench_reflect.py --device cpu --prompts 108 --budgets 4,16 --out docs/bench_reflect.json
    python scripts/bench_reflect.py --device cpu --smoke --out /tmp/bench_reflect_smoke.json

Prints a table per setting and writes JSON (accuracy[setting][method][budget], per category,
seconds and NFE per search, reflection statistics, every record)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tts_diffusion.bench import PASS, eval_prompts, format_table, judge_score, per_method, picked  # noqa: E402
from tts_diffusion.bench import summarize as summarize_records  # noqa: E402

METHODS = ("noise", "prompt", "image", "both")
SETTINGS = ("oracle", "clip")


def interleaved(prompts: list[dict]) -> list[dict]:
    """Round-robin over categories (prefixes stay balanced)."""
    cats = sorted({p["category"] for p in prompts})
    by = {c: [p for p in prompts if p["category"] == c] for c in cats}
    return [by[c][i] for i in range(max(len(v) for v in by.values())) for c in cats if i < len(by[c])]


def chain_stats(res, prompt: str) -> dict:
    """How often the refiner changed the prompt and how often a child replaced its head."""
    steps = [s for chain in res.chains for s in chain if s.round > 0]
    if not steps:
        return {"rounds": 0, "refined": 0.0, "accepted": 0.0, "improved": 0.0}
    improved = 0
    for chain in res.chains:
        best = chain[0].score
        for s in chain[1:]:
            improved += s.score > best
            best = max(best, s.score)
    return {"rounds": res.settings.get("rounds_run", 0), "refined": sum(s.prompt != prompt for s in steps) / len(steps),
            "accepted": sum(s.accepted for s in steps) / len(steps), "improved": improved / len(steps)}


def run_prompt(proc, guides, oracle, k: int, p: dict, budgets: list[int], methods: list[str], settings: list[str],
               args) -> list[dict]:
    from tts_diffusion import Budget, TTSInputError, load_searcher

    steps = proc.num_steps
    recs = []
    for setting in settings:
        guide, by_oracle = guides[setting], setting == "oracle"
        critic = args.critic or ("feedback" if by_oracle else "decomposed")
        for m in methods:
            name = "best_of_n" if m == "noise" else "reflect"
            kw: dict = {"keep_images": 1 if by_oracle else 10**6}
            if m != "noise":
                kw.update(refine=m, strength=args.strength, critic=critic, refiner=args.refiner)
                if by_oracle:
                    kw["stop_score"] = 1.0
            todo = [max(budgets)] if m == "noise" else budgets
            for b in todo:
                gen = torch.Generator().manual_seed(args.seed * 100003 + k)
                t0 = time.perf_counter()
                try:
                    res = load_searcher(name)(proc, guide, p["prompt"], Budget(b * steps), gen, **kw)
                except TTSInputError as e:
                    print(f"skip {setting}/{m} x{b}: {e}", file=sys.stderr)
                    continue
                dt = time.perf_counter() - t0
                stats = chain_stats(res, p["prompt"]) if m != "noise" else {}
                for bb in (budgets if m == "noise" else [b]):
                    hit = float(judge_score(picked(res, bb * steps, steps), p["prompt"], oracle, by_oracle) >= PASS)
                    recs.append({"setting": setting, "method": m, "budget": bb, "prompt": k, "category": p["category"],
                                 "hit": hit, "seconds": dt, "nfe": min(res.nfe, bb * steps), **stats})
    return recs


def summarize(records: list[dict], prompts: list[dict], budgets: list[int], methods: list[str],
              settings: list[str], echo: bool = True) -> dict:
    done = sorted({r["prompt"] for r in records})
    mine = [prompts[i] for i in done]
    out = {}
    for s in settings:
        recs = [r for r in records if r["setting"] == s]
        summary = summarize_records(recs, methods, budgets, steps=20)
        if echo:
            print(f"[{s}] {len(mine)} prompts", flush=True)
            print(format_table(summary), flush=True)
        agg = {"accuracy": per_method(summary), "per_category": per_method(summary, "per_category"),
               "seconds_per_search": per_method(summary, "seconds"), "mean_nfe": per_method(summary, "nfe")}
        refl = {}
        for m in methods:
            if m == "noise":
                continue
            rs = [r for r in recs if r["method"] == m]
            refl[m] = {b: {key: sum(r.get(key, 0) for r in rs if r["budget"] == b) / max(1, sum(r["budget"] == b for r in rs))
                           for key in ("rounds", "refined", "accepted", "improved")} for b in budgets}
        agg["reflection"] = refl
        out[s] = agg
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", type=int, default=108, help="eval prompts, balanced over the six categories")
    ap.add_argument("--budgets", default="4,16,64", help="multiples of one sample's NFE")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--settings", default=",".join(SETTINGS), help="oracle (guides) and/or clip (domain CLIP guides)")
    ap.add_argument("--strength", type=float, default=0.6, help="SDEdit strength for image / both")
    ap.add_argument("--critic", default=None, help="default: feedback with the oracle, decomposed with CLIP")
    ap.add_argument("--refiner", default="rules")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    ap.add_argument("--workers", type=int, default=1, help="processes, each with a share of the prompts")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds: stop handing out prompts, keep what finished (a balanced prefix)")
    ap.add_argument("--smoke", action="store_true", help="2 prompts, budgets 4, one setting each (CPU check)")
    ap.add_argument("--out", default=None, help="JSON output path")
    ap.add_argument("--markdown", default=None, help="print the tables of a saved JSON as markdown and exit")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    if not args.out:
        ap.error("--out is required")
    budgets = [int(b) for b in args.budgets.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    settings = [s for s in args.settings.split(",") if s]
    for bad in [m for m in methods if m not in METHODS] + [s for s in settings if s not in SETTINGS]:
        ap.error(f"unknown method or setting {bad!r}")
    if min(budgets) < 2:
        ap.error("budgets must be >= 2 samples (reflect needs one initial sample plus one round)")
    if args.smoke:
        args.prompts, budgets = 6, [4]
    prompts = interleaved(eval_prompts(args.prompts))
    if args.smoke:
        prompts = prompts[:2]
    indexed = list(enumerate(prompts))
    job = {"args": vars(args), "budgets": budgets, "methods": methods, "settings": settings}
    t0 = time.perf_counter()
    records: list[dict] = []
    deadline = t0 + args.time_limit if args.time_limit else None
    if args.workers > 1:
        import multiprocessing as mp

        # one model per worker process; prompts handed out one at a time in the interleaved
        # order, so what finishes first (and what a --time-limit keeps) stays balanced
        with mp.get_context("spawn").Pool(args.workers, initializer=init_worker, initargs=(job,)) as pool:
            results = pool.imap_unordered(run_one, indexed)
            for _ in indexed:
                try:
                    left = None if deadline is None else max(0.0, deadline - time.perf_counter())
                    records += results.next(timeout=left)
                except mp.TimeoutError:
                    print(f"-- time limit: stopping after {len({r['prompt'] for r in records})} prompts", flush=True)
                    pool.terminate()
                    break
                write(args, prompts, budgets, methods, settings, records, t0, final=False)
    else:
        init_worker(job)
        for item in indexed:
            if deadline is not None and time.perf_counter() > deadline:
                break
            records += run_one(item)
            write(args, prompts, budgets, methods, settings, records, t0, final=False)
    write(args, prompts, budgets, methods, settings, records, t0, final=True)


_WORKER: dict = {}


def run_one(item) -> list[dict]:
    """One prompt's records, in a process set up by `init_worker`."""
    w = _WORKER
    k, p = item
    return run_prompt(w["proc"], w["guides"], w["oracle"], k, p, w["job"]["budgets"], w["job"]["methods"],
                      w["job"]["settings"], w["args"])


def init_worker(job) -> None:
    args = argparse.Namespace(**job["args"])
    torch.set_num_threads(max(1, args.threads))
    from tts_diffusion import TTSPipeline
    from tts_diffusion.verifiers import load_verifier

    dtype = torch.float16 if torch.device(args.device).type == "cuda" else torch.float32
    tts = TTSPipeline.from_pretrained(torch_dtype=dtype).to(args.device)
    tts.set_progress_bar_config(disable=True)
    proc = tts.process(None, max_batch=args.max_batch)
    oracle = load_verifier("oracle")
    guides = {"oracle": oracle}
    if "clip" in job["settings"]:
        from tts_diffusion.paths import domain_clip_path

        guides["clip"] = load_verifier("clip", model=str(domain_clip_path()), device=args.device)
    _WORKER.update(proc=proc, guides=guides, oracle=oracle, job=job, args=args)


def write(args, prompts, budgets, methods, settings, records, t0, final: bool) -> None:
    done = len({r["prompt"] for r in records})
    cats = {prompts[i]["category"] for i in {r["prompt"] for r in records}}
    if not final:
        print(f"-- {done} prompts, {time.perf_counter() - t0:.0f} s", flush=True)
    device = torch.device(args.device)
    res = {"model": "embedded shapes model (TTSPipeline.from_pretrained())",
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "threads": args.threads, "workers": args.workers, "steps": 20, "budgets": budgets,
           "prompts_done": done, "prompts_planned": len(prompts), "categories": sorted(cats),
           "strength": args.strength, "refiner": args.refiner, "critic": args.critic or "feedback (oracle) / decomposed (clip)",
           "seed": args.seed, "seconds": time.perf_counter() - t0,
           "command": "python scripts/bench_reflect.py " + " ".join(sys.argv[1:]),
           "results": summarize(records, prompts, budgets, methods, settings, echo=final or done % 6 == 0),
           "records": records}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    if final:
        print(f"wrote {args.out} ({res['seconds']:.0f} s)")


def markdown(res: dict) -> str:
    """Accuracy tables (per setting: method x budget, then per category) and reflection stats."""
    lines = []
    for setting, agg in res["results"].items():
        budgets = [b for b in res["budgets"]]
        lines += [f"**{setting}** ({res['prompts_done']} prompts)", "",
                  "| method | " + " | ".join(f"x{b} ({b * res['steps']} NFE)" for b in budgets) + " | s / search |",
                  "|---|" + "---|" * (len(budgets) + 1)]
        for m, acc in agg["accuracy"].items():
            secs = agg["seconds_per_search"][m]
            lines.append(f"| {m} | " + " | ".join(f"{acc.get(str(b), acc.get(b, float('nan'))):.3f}" for b in budgets)
                         + f" | {sum(secs.values()) / max(1, len(secs)):.1f} |")
        b = budgets[-1]
        cats = sorted(next(iter(agg["per_category"].values()))[str(b) if str(b) in next(iter(agg["per_category"].values())) else b])
        lines += ["", f"per category at x{b}:", "", "| method | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
        for m, per in agg["per_category"].items():
            row = per.get(str(b), per.get(b, {}))
            lines.append(f"| {m} | " + " | ".join(f"{row.get(c, float('nan')):.2f}" for c in cats) + " |")
        if agg.get("reflection"):
            lines += ["", f"reflection at x{b} (means per search):", "",
                      "| method | rounds run | prompt changed | child kept | child beat head |", "|---|---|---|---|---|"]
            for m, st in agg["reflection"].items():
                r = st.get(str(b), st.get(b, {}))
                lines.append(f"| {m} | {r.get('rounds', 0):.2f} | {r.get('refined', 0):.2f} | {r.get('accepted', 0):.2f} |"
                             f" {r.get('improved', 0):.2f} |")
        recs = [r for r in res["records"] if r["setting"] == setting and r["budget"] == b]
        hit = {(r["method"], r["prompt"]): r["hit"] for r in recs}
        pairs = []
        for m in agg["accuracy"]:
            if m == "noise":
                continue
            both = [k for (mm, k) in hit if mm == m and ("noise", k) in hit]
            win = sum(hit[(m, k)] > hit[("noise", k)] for k in both)
            loss = sum(hit[(m, k)] < hit[("noise", k)] for k in both)
            pairs.append(f"{m} {win}/{loss}")
        lines += ["", f"paired against noise at x{b} (prompts where the method is right and noise wrong / the reverse): "
                  + ", ".join(pairs), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
