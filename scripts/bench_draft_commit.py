"""draft_commit on the embedded shapes model, the exact oracle guiding and judging (CPU):
rank fidelity of each draft kind against full-compute scores (Spearman per prompt, top-1
and top-k agreement, CachedSearch's capture) and the share of best-of-N's accuracy gain
kept against its seconds. Both searches draw the same N seeds (proc.seeds on the same
generator), so best-of-N's candidates are the full-compute scores of the drafts' seeds.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python scripts/bench_draft_commit.py --num-prompts 6 --out runs/search/draft.json
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho with average ranks for ties; None when either side is constant."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((x - mb) ** 2 for x in rb)
    if va == 0 or vb == 0:
        return None
    return sum((x - ma) * (y - mb) for x, y in zip(ra, rb)) / math.sqrt(va * vb)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-prompts", type=int, default=6)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--draft-steps", type=int, default=5)
    ap.add_argument("--categories", default=None, help="only these categories (comma-separated), e.g. position,color_attr")
    ap.add_argument("--out", default="runs/search/draft.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tts_diffusion import TTSPipeline
    from tts_diffusion.bench import balanced_subset, load_prompt_set
    from tts_diffusion.bench.readout import PASS

    tts = TTSPipeline.from_pretrained()
    tts.set_progress_bar_config(disable=True)
    if args.categories:
        cats = args.categories.split(",")
        chosen = [p for p in load_prompt_set() if p["category"] in cats]
        prompts = [p["prompt"] for c in cats for p in [q for q in chosen if q["category"] == c][: args.num_prompts // len(cats)]]
    else:
        prompts = [p["prompt"] for _, p in balanced_subset(load_prompt_set(), args.num_prompts)]
    n, s = args.samples, args.steps
    kinds = {"steps": {"draft": "steps", "draft_steps": args.draft_steps},
             "preview": {"draft": "preview", "draft_steps": args.draft_steps},
             "tgate": {"draft": "tgate", "draft_gate": args.draft_steps}}
    rows = []
    for k, prompt in enumerate(prompts):
        common = dict(verifier="oracle", num_inference_steps=s, seed=1000 + k, progress=False)
        t0 = time.perf_counter()
        bon = tts(prompt, searcher="best_of_n", budget=n * s, keep_images=1, **common)
        bon_s = time.perf_counter() - t0
        full = {c.seed: c.score for c in bon.candidates}
        first = bon.candidates[0].score
        row = {"prompt": prompt, "full": list(full.values()), "one": first, "bon": bon.best_score, "bon_seconds": bon_s,
               "kinds": {}}
        for name, opts in kinds.items():
            t0 = time.perf_counter()
            dc = tts(prompt, searcher="draft_commit", budget=10**6, num_samples=n, top_k=args.top_k, **opts, **common)
            secs = time.perf_counter() - t0
            drafts = dc.settings["drafts"]
            assert [d["seed"] for d in drafts] == list(full), "draft and best-of-N seeds differ"
            d_scores = [d["draft_score"] for d in drafts]
            f_scores = [full[d["seed"]] for d in drafts]
            # a committed sample is the full sample of its seed: its score must be best-of-N's candidate's
            for c in dc.candidates:
                assert abs(c.score - full[c.seed]) < 1e-6, (name, c.score, full[c.seed])
            pick = max(range(n), key=lambda j: d_scores[j])
            top = sorted(range(n), key=lambda j: -d_scores[j])[: args.top_k]
            best_full = max(f_scores)
            mean_full = sum(f_scores) / n
            row["kinds"][name] = {
                "spearman": spearman(d_scores, f_scores), "top1": f_scores[pick] == best_full,
                "topk_has_best": any(f_scores[j] == best_full for j in top),
                "capture": None if best_full == mean_full else (f_scores[pick] - mean_full) / (best_full - mean_full),
                "result": dc.best_score, "seconds": secs, "nfe": dc.nfe, "model_rows": dc.model_rows,
                "phase_seconds": dc.settings["seconds"]}
        rows.append(row)
        print(json.dumps({"prompt": prompt, "bon": row["bon"], "one": first,
                          **{kk: round(v["result"], 3) for kk, v in row["kinds"].items()}}), flush=True)

    def acc(vals):
        return sum(v >= PASS for v in vals) / len(vals)

    summary = {"prompts": len(rows), "samples": n, "top_k": args.top_k, "steps": s, "draft_steps": args.draft_steps,
               "one_sample_acc": acc([r["one"] for r in rows]), "bon_acc": acc([r["bon"] for r in rows]),
               "bon_seconds": sum(r["bon_seconds"] for r in rows) / len(rows), "kinds": {}}
    gain = summary["bon_acc"] - summary["one_sample_acc"]
    for name in kinds:
        ks = [r["kinds"][name] for r in rows]
        rhos = [k["spearman"] for k in ks if k["spearman"] is not None]
        caps = [k["capture"] for k in ks if k["capture"] is not None]
        a = acc([k["result"] for k in ks])
        secs = sum(k["seconds"] for k in ks) / len(ks)
        summary["kinds"][name] = {
            "median_spearman": sorted(rhos)[len(rhos) // 2] if rhos else None, "spearman_n": len(rhos),
            "top1": sum(k["top1"] for k in ks) / len(ks), "topk_has_best": sum(k["topk_has_best"] for k in ks) / len(ks),
            "mean_capture": sum(caps) / len(caps) if caps else None, "acc": a,
            "gain_share": (a - summary["one_sample_acc"]) / gain if gain > 0 else None,
            "seconds": secs, "seconds_vs_bon": secs / summary["bon_seconds"],
            "nfe": sum(k["nfe"] for k in ks) / len(ks)}
    print(json.dumps(summary, indent=1))
    with open(args.out, "w") as f:
        json.dump({"summary": summary, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
