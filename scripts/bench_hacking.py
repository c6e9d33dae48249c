"""Verifier hacking on the embedded shapes world: a learned verifier (the domain CLIP) guides,
the exact oracle judges (held out). Issue #31.

Stage `pool`: for each eval prompt, N = 64 candidates of the default model (20 steps, its
defaults), each scored by the domain CLIP (its own score, plus the score under small
pixel-shift views, for uncertainty-penalised selection), its CLIP image embedding and the
oracle's verdict. Best-of-N at 1/4/16/64x and the other *selection rules* are read off that
pool: at budget k the pool's 64/k disjoint blocks of k candidates are k-candidate searches
(the block mean is an unbiased estimate of the accuracy of one search; 64x has one block).

Stage `noise_opt`: the `noise_opt` searcher, guided by the domain CLIP, at the same budgets
in NFE (its budget rule: core/budget.py), judged by the oracle.

Stage `das`: the `das` searcher (tempered SMC, DAS), guided by the domain CLIP, at the same
budgets in NFE, judged by the oracle: the image it returns (its particle of largest final
weight), the final particle the CLIP likes best, and the oracle accuracy of the final weighted
population (what a draw from DAS's target p(x) exp(lambda r(x)) gets right). `--device cuda`
runs it on a GPU, `--workers N` splits the prompts over N processes (each writes OUT.partW,
merged into OUT at the end; a rerun resumes).

Stage `report`: the table (held-out oracle accuracy +- standard error over prompts, and the
verifier's own score of what was picked) into JSON.

    python scripts/bench_hacking.py pool --num-prompts 24 --out docs/hacking_pool.pt
    python scripts/bench_hacking.py noise_opt --num-prompts 24 --out docs/hacking_noise_opt.json
    python scripts/bench_hacking.py das --num-prompts 24 --budgets 4 16 64 --out docs/hacking_das.json
    python scripts/bench_hacking.py das --limit 2 --budgets 4 16 --out /tmp/das_smoke.json   # CPU smoke, 2 prompts
    python scripts/bench_hacking.py das --num-prompts 108 --device cuda --workers 8 --out das_gpu.json
    python scripts/bench_hacking.py report --das docs/hacking_das.json --out docs/bench_hacking.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

BUDGETS = (1, 4, 16, 64)
PASS = 1.0 - 1e-6
SHIFTS = ((2, 0), (-2, 0), (0, 2), (0, -2))  # pixel shifts of the views (no flips: positions matter)


def shifted(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """The image moved by (dx, dy) pixels, the uncovered border filled by edge replication."""
    pad = max(abs(dx), abs(dy))
    p = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    h, w = images.shape[-2:]
    return p[..., pad - dy : pad - dy + h, pad - dx : pad - dx + w]


def load_world(threads: int, device: str = "cpu"):
    torch.set_num_threads(threads)
    from tts_diffusion.bench.default_model import load_default_model
    from tts_diffusion.bench.prompts import eval_prompts

    tts = load_default_model(device)
    return tts, tts.get_verifier("clip"), tts.get_verifier("oracle"), eval_prompts


def interleaved(prompts: list[dict]) -> list[int]:
    """Prompt indices round-robin over the categories (the set is grouped by category)."""
    cats: dict[str, list[int]] = {}
    for k, p in enumerate(prompts):
        cats.setdefault(p["category"], []).append(k)
    lists = list(cats.values())
    return [ks[j] for j in range(max(map(len, lists))) for ks in lists if j < len(ks)]


def stage_pool(args) -> None:
    tts, clip, oracle, eval_prompts = load_world(args.threads, args.device)
    prompts = eval_prompts(args.num_prompts)
    proc = tts.process()
    out = {"prompts": prompts, "n": args.n, "steps": proc.num_steps, "shifts": SHIFTS, "rows": []}
    if os.path.exists(args.out):  # resume
        out = torch.load(args.out, map_location="cpu")
    done = {r.get("k", 0) for r in out["rows"]}
    t0 = time.perf_counter()
    for k in interleaved(prompts):  # any prefix of the run covers the categories evenly
        p = prompts[k]
        if k in done:
            continue
        g = torch.Generator().manual_seed(1000 + k)
        cond = proc.encode(p["prompt"])
        seeds = proc.seeds(args.n, g)
        x, _ = proc.sample(proc.noise_from_seeds(seeds), cond)
        images = proc.decode(x)
        with torch.no_grad():
            emb = clip.encode_images(images)
            txt = clip.encode_texts([p["prompt"]])
            score = clip.scale * (emb @ txt.T)[:, 0]
            views = torch.stack([clip(shifted(images, dx, dy), p["prompt"]) for dx, dy in SHIFTS], 1)
        hit = (oracle(images, p["prompt"]) >= PASS).float()
        out["rows"].append({"k": k, "category": p["category"], "seeds": seeds, "clip": score.cpu(), "views": views.cpu(),
                            "emb": emb.half().cpu(), "hit": hit.cpu()})  # CPU tensors: the pool loads anywhere
        torch.save(out, args.out)
        print(f"[{len(out['rows'])}/{len(prompts)}] {p['category']:16s} acc1 {hit.mean():.2f} best-clip hit {hit[score.argmax()]:.0f}"
              f"  {time.perf_counter() - t0:.0f}s", flush=True)


# ---------------------------------------------------------------- selection rules on the pool
def sel_best(r, idx):
    return idx[int(torch.argmax(r["clip"][idx]))]


def sel_views_mean(r, idx):
    """rank by the mean CLIP score over the original and the shifted views (a test-time ensemble)"""
    s = torch.cat([r["clip"][idx, None], r["views"][idx]], 1).mean(1)
    return idx[int(torch.argmax(s))]


def sel_lcb(r, idx, k=1.0):
    """mean minus k std over the views (uncertainty-penalised)"""
    v = torch.cat([r["clip"][idx, None], r["views"][idx]], 1)
    return idx[int(torch.argmax(v.mean(1) - k * v.std(1)))]


def sel_rank_avg(r, idx):
    """rank averaging over the views (each view ranks the candidates; mean rank)"""
    v = torch.cat([r["clip"][idx, None], r["views"][idx]], 1)
    ranks = v.argsort(0).argsort(0).float().mean(1)
    return idx[int(torch.argmax(ranks))]


def sel_medoid(r, idx, top=0.25):
    """consensus: among the top quarter by CLIP (at least 1), the candidate whose image embedding
    is closest on average to the others of that top set (self-consistency / a medoid)"""
    m = max(1, int(math.ceil(top * len(idx))))
    order = torch.argsort(r["clip"][idx], descending=True)[:m]
    top_idx = idx[order]
    e = r["emb"][top_idx].float()
    sim = (e @ e.T).mean(1)
    return top_idx[int(torch.argmax(sim))]


def sel_holdout(r, idx):
    """early stopping on a validation verifier: guide by the original view, but stop adding
    candidates once the picked one's score on held-out views stops improving (blocks of 4)"""
    best_val, pick = -math.inf, idx[0]
    val = r["views"].mean(1)
    for s in range(0, len(idx), 4):
        cand = sel_best(r, idx[: s + 4])
        if val[cand] <= best_val:
            break
        best_val, pick = float(val[cand]), cand
    return pick


def sel_quantile(r, idx, q=0.9):
    """satisficing: the candidate at the q-quantile of CLIP scores, not the argmax"""
    s = r["clip"][idx]
    order = torch.argsort(s)
    return idx[int(order[min(len(idx) - 1, int(q * len(idx)))])]


RULES = {"best_of_n": sel_best, "views_mean": sel_views_mean, "lcb_k1": sel_lcb,
         "lcb_k2": lambda r, i: sel_lcb(r, i, 2.0), "rank_avg_views": sel_rank_avg, "medoid_top25": sel_medoid,
         "early_stop_views": sel_holdout, "quantile_0.9": sel_quantile}


def mean_se(values):
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=True) / math.sqrt(len(t))) if len(t) > 1 else 0.0


def pool_table(pool, ks=None) -> dict:
    """Each rule's accuracy and verifier score per budget (over the pool's prompts, or those
    with index in `ks`)."""
    key = {tuple(r["seeds"]): r["k"] for r in pool["rows"] if "k" in r}
    unique = {}
    for r in pool["rows"]:  # a prompt run twice counts once (same seeds); the first run's first row is k=0
        unique.setdefault(key.get(tuple(r["seeds"]), 0), r)
    rows = [r for k, r in sorted(unique.items()) if ks is None or k in ks]
    table = {}
    for name, rule in RULES.items():
        row = {}
        for b in BUDGETS:
            acc, ver = [], []
            for r in rows:
                blocks = [torch.arange(s, s + b) for s in range(0, pool["n"] - b + 1, b)]
                picks = [rule(r, blk) for blk in blocks]
                acc.append(float(torch.stack([r["hit"][int(i)] for i in picks]).mean()))
                ver.append(float(torch.stack([r["clip"][int(i)] for i in picks]).mean()))
            a, ase = mean_se(acc)
            v, vse = mean_se(ver)
            row[str(b)] = {"acc": a, "acc_se": ase, "verifier": v, "verifier_se": vse}
        table[name] = row
    return table


def stage_noise_opt(args) -> None:
    tts, clip, oracle, eval_prompts = load_world(args.threads)
    from tts_diffusion.core.budget import Budget
    from tts_diffusion.searchers.registry import load_searcher

    prompts = eval_prompts(args.num_prompts)
    search = load_searcher("noise_opt")
    opts = dict(kv.split("=", 1) for kv in args.option)
    opts = {k: (v == "true") if v in ("true", "false") else float(v) if "." in v else int(v) for k, v in opts.items()}
    out = {"options": opts, "budgets": list(args.budgets), "rows": []}
    if os.path.exists(args.out):
        out = json.load(open(args.out))
    done = {r["k"] for r in out["rows"]}
    t0 = time.perf_counter()
    for k in interleaved(prompts)[: args.limit]:  # any prefix covers the categories evenly
        p = prompts[k]
        if k in done:
            continue
        row = {"k": k, "prompt": p["prompt"], "category": p["category"]}
        for b in args.budgets:
            proc = tts.process().for_call()
            budget = Budget(max_nfe=b * proc.num_steps)
            t = time.perf_counter()
            res = search(proc, clip, p["prompt"], budget, torch.Generator().manual_seed(1000 + k), **opts)
            img = res.best.image.float()[None] / 255  # uint8 [3, H, W] (records/result.py)
            hit = float(oracle(img, p["prompt"])[0] >= PASS)
            row[str(b)] = {"hit": hit, "verifier": res.best.score, "nfe": res.nfe, "seconds": time.perf_counter() - t,
                           "iterations": res.settings.get("num_iterations")}
        out["rows"].append(row)
        json.dump(out, open(args.out, "w"), indent=1)
        print(f"[{len(out['rows'])}/{len(prompts)}] " + " ".join(f"{b}x:{row[str(b)]['hit']:.0f}" for b in args.budgets)
              + f"  {time.perf_counter() - t0:.0f}s", flush=True)


def parse_options(pairs: list[str]) -> dict:
    opts = dict(kv.split("=", 1) for kv in pairs)
    return {k: (v == "true") if v in ("true", "false") else float(v) if "." in v or "e" in v else v if v.isalpha()
            else int(v) for k, v in opts.items()}


def das_rows(args, ks: list[int], part: str, worker: int = 0) -> None:
    """Run das on the prompts `ks` at every budget; append each prompt's row to the JSON list in
    `part` (resumable). One process: its own model copy on args.device."""
    if args.device.startswith("cuda") and torch.cuda.device_count() > 1:
        args.device = f"cuda:{worker % torch.cuda.device_count()}"
    tts, clip, oracle, eval_prompts = load_world(args.threads, args.device)
    from tts_diffusion.core.budget import Budget
    from tts_diffusion.errors import TTSInputError
    from tts_diffusion.searchers.registry import load_searcher, min_budget

    prompts = eval_prompts(args.num_prompts)
    search = load_searcher("das")
    opts = {"keep_images": 1 << 16, **parse_options(args.option)}  # every final particle's image, for the oracle
    rows = json.load(open(part)) if os.path.exists(part) else []
    done = {r["k"] for r in rows}
    t0 = time.perf_counter()
    for k in ks:
        if k in done:
            continue
        p = prompts[k]
        row = {"k": k, "prompt": p["prompt"], "category": p["category"]}
        for b in args.budgets:
            proc = tts.process().for_call()
            budget = Budget(max_nfe=b * proc.num_steps)
            if budget.max_nfe < min_budget("das", proc.num_steps, **opts):
                row[str(b)] = {"skipped": f"below das's minimum budget ({min_budget('das', proc.num_steps, **opts)} NFE)"}
                continue
            t = time.perf_counter()
            try:
                res = search(proc, clip, p["prompt"], budget, torch.Generator().manual_seed(1000 + k), **opts)
            except TTSInputError as e:
                row[str(b)] = {"skipped": str(e)}
                continue
            seconds = time.perf_counter() - t
            final = [c for c in res.candidates if "log_weight" in c.info]
            images = torch.stack([c.image for c in final]).float().to(args.device) / 255
            hits = (oracle(images, p["prompt"]) >= PASS).float().cpu()
            w = torch.softmax(torch.tensor([c.info["log_weight"] for c in final], dtype=torch.float64), 0)
            scores = torch.tensor([c.score for c in final])
            j, top = res.settings["picked_particle"], int(torch.argmax(scores))
            row[str(b)] = {"hit": float(hits[j]), "verifier": final[j].score, "hit_best_clip": float(hits[top]),
                           "verifier_best_clip": final[top].score, "hit_target": float((w * hits.double()).sum()),
                           "verifier_target": float((w * scores.double()).sum()), "nfe": res.nfe,
                           "particles": res.settings["num_particles"], "resamples": len(res.settings["resample_steps"]),
                           "final_ess": res.settings["final_ess"], "ess_min": min(res.settings["ess"]),
                           "ess_mean": sum(res.settings["ess"]) / len(res.settings["ess"]), "seconds": seconds}
        rows.append(row)
        json.dump(rows, open(part, "w"), indent=1)
        print(f"[w{worker} {len(rows)}] {p['category']:16s} " + " ".join(
            f"{b}x:{row[str(b)]['hit']:.0f}/{row[str(b)]['hit_target']:.2f}" for b in args.budgets if "hit" in row[str(b)])
            + f"  {time.perf_counter() - t0:.0f}s", flush=True)


def stage_das(args) -> None:
    """das on the first LIMIT prompts (interleaved), split over --workers processes."""
    from tts_diffusion.bench.prompts import eval_prompts

    ks = interleaved(eval_prompts(args.num_prompts))[: args.limit]
    out = {"options": parse_options(args.option), "budgets": list(args.budgets), "device": args.device,
           "workers": args.workers, "rows": []}
    if os.path.exists(args.out):
        out["rows"] = json.load(open(args.out))["rows"]
    done = {r["k"] for r in out["rows"]}
    ks = [k for k in ks if k not in done]
    parts = [f"{args.out}.part{w}" for w in range(args.workers)]
    t0 = time.perf_counter()
    if args.workers <= 1:
        das_rows(args, ks, parts[0])
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=das_rows, args=(args, ks[w :: args.workers], parts[w], w)) for w in range(args.workers)]
        for pr in procs:
            pr.start()
        for pr in procs:
            pr.join()
        failed = [w for w, pr in enumerate(procs) if pr.exitcode != 0]
        if failed:
            print(f"workers {failed} failed; their finished prompts are kept in the part files (rerun to resume)")
    for part in parts:
        if os.path.exists(part):
            out["rows"] += [r for r in json.load(open(part)) if r["k"] not in done]
            done |= {r["k"] for r in out["rows"]}
    out["wall_seconds"] = time.perf_counter() - t0
    json.dump(out, open(args.out, "w"), indent=1)
    for part in parts:
        if os.path.exists(part):
            os.remove(part)
    print(f"{len(out['rows'])} prompts in {args.out}; this run {out['wall_seconds']:.0f}s on {args.device} with "
          f"{args.workers} worker(s)")


def stage_memory(args) -> None:
    """Bytes the autograd graph keeps for noise_opt's backward (saved tensors, counted by
    `torch.autograd.graph.saved_tensors_hooks`) on the shapes model, one noise, with and
    without checkpointing, at 5 / 10 / 20 steps."""
    tts, clip, _, _ = load_world(args.threads)
    from tts_diffusion.core.reward_grad import differentiable_reward
    from tts_diffusion.searchers.noise_opt import sample_with_grad
    from tts_diffusion.testing.helpers import saved_tensor_bytes

    rows = []
    for steps in (5, 10, 20):
        proc = tts.process(num_inference_steps=steps).for_call()
        grid = proc.with_grid(proc.family, proc.model_timesteps)
        cond = proc.encode("a photo of a red circle")
        z = proc.noise_from_seeds([0]).requires_grad_(True)
        for ckpt in (False, True):
            total = saved_tensor_bytes(lambda: differentiable_reward(
                grid, clip, sample_with_grad(grid, z, cond, checkpointing=ckpt), "a photo of a red circle"))
            rows.append({"steps": steps, "checkpointing": ckpt, "saved_MiB": total / 2**20})
            print(rows[-1], flush=True)
    json.dump({"command": "python scripts/bench_hacking.py memory --out " + args.out, "rows": rows},
              open(args.out, "w"), indent=1)


def stage_report(args) -> None:
    pool = torch.load(args.pool, map_location="cpu")
    table = pool_table(pool)
    for path in args.noise_opt:
        d = json.load(open(path))
        name = "noise_opt(" + ",".join(f"{k}={v}" for k, v in d["options"].items()) + ")"
        row = {}
        for b in d["budgets"]:
            a, ase = mean_se([r[str(b)]["hit"] for r in d["rows"]])
            v, vse = mean_se([r[str(b)]["verifier"] for r in d["rows"]])
            s = sum(r[str(b)]["seconds"] for r in d["rows"]) / len(d["rows"])
            row[str(b)] = {"acc": a, "acc_se": ase, "verifier": v, "verifier_se": vse, "seconds": s}
        table[name] = row
        same = pool_table(pool, {r["k"] for r in d["rows"]})  # best_of_n on the same prompts
        table[f"best_of_n on the {len(d['rows'])} noise_opt prompts"] = same["best_of_n"]
    for path in args.das:
        d = json.load(open(path))
        opts = ",".join(f"{k}={v}" for k, v in d["options"].items())
        runs = {"": ("hit", "verifier"), " best-CLIP particle": ("hit_best_clip", "verifier_best_clip"),
                " weighted population": ("hit_target", "verifier_target")}
        for suffix, (hit, ver) in runs.items():
            row = {}
            for b in d["budgets"]:
                done = [r[str(b)] for r in d["rows"] if "hit" in r[str(b)]]
                if not done:
                    continue
                a, ase = mean_se([c[hit] for c in done])
                v, vse = mean_se([c[ver] for c in done])
                row[str(b)] = {"acc": a, "acc_se": ase, "verifier": v, "verifier_se": vse,
                               "seconds": sum(c["seconds"] for c in done) / len(done),
                               "particles": done[0]["particles"]}
            table[f"das({opts}){suffix}"] = row
        same = pool_table(pool, {r["k"] for r in d["rows"]})
        table[f"best_of_n on the {len(d['rows'])} das prompts"] = same["best_of_n"]
        table[f"early_stop_views on the {len(d['rows'])} das prompts"] = same["early_stop_views"]
    res = {"command": " ".join(["python scripts/bench_hacking.py"] + args.argv),
           "prompts": len({tuple(r["seeds"]) for r in pool["rows"]}),
           "pool_n": pool["n"], "steps": pool["steps"], "machine": "CPU, torch.set_num_threads(1)", "table": table}
    json.dump(res, open(args.out, "w"), indent=1)
    print(f"| method | " + " | ".join(f"{b}x acc (CLIP)" for b in BUDGETS) + " |")
    for name, row in table.items():
        cells = [f"{row[str(b)]['acc']:.3f} +- {row[str(b)]['acc_se']:.3f} ({row[str(b)]['verifier']:.3f})"
                 if str(b) in row else "-" for b in BUDGETS]
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["pool", "noise_opt", "das", "report", "memory"])
    ap.add_argument("--num-prompts", type=int, default=24)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--limit", type=int, default=None, help="noise_opt, das: the first LIMIT prompts (interleaved)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    ap.add_argument("-o", "--option", action="append", default=[], help="noise_opt / das option key=value")
    ap.add_argument("--device", default="cpu", help="pool, das: cpu or cuda (das: each worker takes its own GPU"
                    " where there are several)")
    ap.add_argument("--workers", type=int, default=1, help="das: processes splitting the prompts")
    ap.add_argument("--das", nargs="*", default=[], help="report: das stage outputs")
    ap.add_argument("--pool", default="docs/hacking_pool.pt")
    ap.add_argument("--noise-opt", nargs="*", default=[])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    {"pool": stage_pool, "noise_opt": stage_noise_opt, "das": stage_das, "report": stage_report,
     "memory": stage_memory}[args.stage](args)


if __name__ == "__main__":
    main()
