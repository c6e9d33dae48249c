"""What the shapes-world benchmarks (bench_scaling.py, bench_particles.py) share: the
category-balanced prompt subset, running a searcher over prompts and budgets, which candidate
a search returns at a smaller budget, the oracle's verdict on it, and the accuracy tables."""
from __future__ import annotations

import json
import time
from collections import defaultdict

import torch


def eval_prompts(k: int) -> list[dict]:
    """k prompts of tts_diffusion/assets/prompts/shapes_eval.json, the same number from every category, in
    file order (so a larger k contains a smaller one's prompts)."""
    from tts_diffusion.paths import eval_prompts_path

    prompts = json.loads(eval_prompts_path().read_text())["prompts"]
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for p in prompts:
        by_cat[p["category"]].append(p)
    per = max(1, k // len(by_cat))
    return [p for cat in sorted(by_cat) for p in by_cat[cat][:per]]


def picked(result, budget_nfe: int, steps: int):
    """The candidate the search would have returned had it stopped at `budget_nfe`.
    Best-of-N's candidates of one round share the round's NFE stamp; its first k candidates
    are exactly best-of-k (seeds are drawn in order), so for it the prefix is used; for the
    others, the best candidate recorded within the budget."""
    if result.settings.get("searcher") == "best_of_n":
        within = result.candidates[: budget_nfe // steps]
    else:
        within = [c for c in result.candidates if c.nfe <= budget_nfe]
    return max(within, key=lambda c: c.score) if within else None


def judge(candidate, prompt: str, guided_by_oracle: bool, oracle) -> float:
    """1.0 if the oracle passes the candidate's image (score 1), else 0.0. A search guided by
    the oracle already holds its score; otherwise the kept image is judged."""
    if candidate is None:
        return 0.0
    if guided_by_oracle:
        return float(candidate.score >= 1.0 - 1e-6)
    image = candidate.image.float().div(255).unsqueeze(0).to(oracle.device)
    return float(oracle(image, [prompt])[0] >= 1.0 - 1e-6)


def fit_to_budget(name: str, nfe: int, steps: int, options: dict) -> dict:
    """The options of one run at `nfe`: rbf / svdd / code keep their defaults (2 chains, a
    pool of 25) where the budget pays for them, and use fewer chains / a smaller pool where
    it does not (the searchers raise rather than shrink a request; the benchmark shrinks
    explicitly, by the rule the searchers used to apply)."""
    opts = dict(options)
    if name in ("rbf", "svdd", "code") and steps > 0:
        k = max(1, min(int(opts.get("num_particles", 2)), nfe // steps))
        opts["num_particles"] = k
        if name == "rbf":
            opts["init_pool"] = max(1, min(int(opts.get("init_pool", 25)), nfe // k - (steps - 1)))
    return opts


def run_records(proc, guide, oracle, prompts, name, budgets, hyper, seed, guided_by_oracle,
                prefix_consistent=frozenset({"best_of_n"}), tag="grid") -> list[dict]:
    """One record per (budget, prompt) of method `name`: whether the oracle passed the returned
    image, the search's seconds and NFE. `prompts` are (global index, prompt) pairs: the index
    seeds the search, so results do not depend on how prompts are split over workers.
    Methods in `prefix_consistent` (a run at budget B is the first part of a run at a larger
    budget) run once at the largest budget and are read off at the others; the rest run once
    per budget, and a budget below a method's minimum (TTSInputError) gives no record."""
    from tts_diffusion import Budget, TTSInputError, load_searcher

    steps = proc.num_steps
    search = load_searcher(name)
    kw = {"keep_images": 1 if guided_by_oracle else 10**6, **hyper.get(name, {})}
    todo = [max(budgets)] if name in prefix_consistent else budgets
    records = []
    for k, p in prompts:
        gen_seed = seed * 100003 + k
        for b in todo:
            t0 = time.perf_counter()
            try:
                res = search(proc, guide, p["prompt"], Budget(b * steps), torch.Generator().manual_seed(gen_seed),
                             **fit_to_budget(name, b * steps, steps, kw))
            except TTSInputError:
                continue
            dt = time.perf_counter() - t0
            for bb in (budgets if name in prefix_consistent else [b]):
                hit = judge(picked(res, bb * steps, steps), p["prompt"], guided_by_oracle, oracle)
                records.append({"tag": tag, "method": name, "budget": bb, "prompt": k, "category": p["category"],
                                "hit": hit, "seconds": dt, "nfe": min(res.nfe, bb * steps)})
    return records


def aggregate(records, prompts, methods, budgets, label="", echo=True) -> dict:
    """accuracy[method][budget], per-category accuracy, mean seconds and NFE per search, over
    the budgets a method has records for; `echo` prints one row per method."""
    cats = sorted({p["category"] for p in prompts})
    n_cat = {c: sum(p["category"] == c for p in prompts) for c in cats}
    out = {"accuracy": {}, "per_category": {}, "seconds_per_search": {}, "mean_nfe": {}}
    for name in methods:
        mine = [r for r in records if r["method"] == name]
        done = [b for b in budgets if any(r["budget"] == b for r in mine)]
        at = {b: [r for r in mine if r["budget"] == b] for b in done}
        out["accuracy"][name] = {b: sum(r["hit"] for r in at[b]) / len(prompts) for b in done}
        out["per_category"][name] = {b: {c: sum(r["hit"] for r in at[b] if r["category"] == c) / n_cat[c]
                                         for c in cats} for b in done}
        out["seconds_per_search"][name] = {b: sum(r["seconds"] for r in at[b]) / len(at[b]) for b in done}
        out["mean_nfe"][name] = {b: sum(r["nfe"] for r in at[b]) / len(at[b]) for b in done}
        if echo:
            row = "  ".join(f"{out['accuracy'][name].get(b, float('nan')):.3f}" for b in budgets)
            print(f"{label}{name:<10} {row}", flush=True)
    return out
