"""Alfie RGBA generation: matte accuracy, centring, and cost.

Mode `shapes` (default; the embedded model, where the truth is known: the background colour
is fixed, so the true foreground of a generated image is its non-background pixels). For
eval-split prompts of the single-object, two-object and counting categories it runs one
best-of-8 search with the oracle, plain and with rgba=True (same seeds), and reports

- alpha IoU against the true foreground (alpha >= 0.5 vs pixels more than 0.2 from the
  background colour in some channel), for single samples (every candidate: no search) and for
  the oracle's pick of the 8 (search);
- the share of images whose subject touches the border (a foreground pixel within 2 px of
  the edge), rgba (centring) against plain generation;
- oracle accuracy (plain: the image; rgba: the subject composited on the background);
- seconds per sample, plain vs rgba (the rgba time includes the mattes), and the size of
  the attention accumulators.

Mode `matte` (issue #28): the first `--prompts` eval-split prompts of each of the default
model's six categories (24 -> 144 prompts), rgba best-of-`--n` with the oracle, generated once
into `--cache` (images and attention maps per prompt; the generation does not depend on the
matte, so matte variants are compared on the same images). Per category and overall, for
the contrast matte (rgba's) and Alfie's paper matte: alpha IoU with the true foreground
(mean, 5th percentile), subject kept (share of images with >= 98% of the foreground at
alpha > 0.5), background left (share with <= 2% of the rest at alpha > 0.1), border (2 px)
transparent, inverted mattes (opaque part closer to the complement of the foreground; an
image with no true foreground counts as `empty_truth` instead), the canvas colour left on
the cut-out's edge (`edge_canvas_share`, of the RGBA's decontaminated colours and of the raw
RGB's: the light outline) and what the cut-out changes at its edge when put back on its
canvas (`edge_composite_error`); search: the candidate the oracle, the alpha verifier and `ensemble members=oracle,alpha`
pick of 8 (prompts with 8 candidates) against one candidate; `--timing-prompts` prompts of
plain vs rgba best-of-n, alternating; `--sheet` a 24-image contact sheet.

    python scripts/bench_alfie.py --mode matte --prompts 24 --n 8 --threads 1 --timing-prompts 6 \
        --sheet docs/rgba-contact-sheet.png --out docs/bench_alfie_matte

Mode `pixart-xl` (for a GPU): a PixArt-Sigma-XL-size transformer (28 layers, 16 heads x 72,
patch 2) with random weights at 512 px (token grid 32x32), the SDXL-size VAE, and a one-layer
T5 with the real width (4096); times and peak GPU memory of plain sampling, rgba with the
model's background prompt (2 rows per step), and rgba with a known canvas (capture and
matte only), for `--particles` candidates. With `--compile` the denoiser and the VAE decoder
run under torch.compile (`--backend`, inductor by default): each mode runs twice, the first
compiling, and each run records the graphs dynamo compiled and the graph breaks (the capture
must add none on a second run: issue #13).

    python scripts/bench_alfie.py --mode shapes --prompts 6 --out docs/bench_alfie_shapes      # CPU, ~6 min
    python scripts/bench_alfie.py --mode shapes --prompts 2 --n 2 --out /tmp/alfie_smoke      # CPU smoke, ~30 s
    python scripts/bench_alfie.py --mode pixart-xl --device cuda --out docs/bench_alfie_pixart_xl   # H100
    python scripts/bench_alfie.py --mode pixart-xl --device cpu --size 64 --layers 2 --out /tmp/x   # CPU smoke
    python scripts/bench_alfie.py --mode pixart-xl --device cuda --compile --out docs/bench_alfie_pixart_xl_compiled
    python scripts/bench_alfie.py --mode pixart-xl --device cpu --size 64 --layers 2 --steps 4 --compile \
        --backend aot_eager --out /tmp/xc                                                       # CPU smoke
    python scripts/bench_alfie.py --mode capture --device cpu --threads 1 --size 256 --particles 4 --out /tmp/c
    python scripts/bench_alfie.py --mode capture --device cuda --particles 4 --out docs/bench_alfie_capture_gpu

Mode `capture` (micro-benchmark of one layer visit of the attention capture, PixArt-Sigma-XL
attention shapes: 16 heads x 72, width 1152, N = (size/16)^2 image tokens, 300 text tokens
with a padding mask, `--particles` conditional rows): the previous implementation (q/k
recomputed, fp32, one head at a time; kept here as the reference) against the current one
(all heads batched; with q/k recomputed, and with q/k given as the wrapped processor's
projections are; on CUDA also the model-dtype matmul with fp32 output), with the wrapped
SDPA attention itself (2 x rows for CFG) as the yardstick, and the largest deviation of each
from the reference.

Writes <out>.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

CATEGORIES = ("single_object", "two_object", "counting")


def foreground(image_u8: torch.Tensor, background, tol: float = 0.2) -> np.ndarray:
    """True foreground of a shapes image [3, H, W] uint8: pixels more than `tol` from the background colour."""
    img = image_u8.float().div(255)
    bg = torch.tensor(background).view(3, 1, 1)
    return ((img - bg).abs().amax(dim=0) > tol).numpy()


def touches_border(fg: np.ndarray, px: int = 2) -> bool:
    return bool(fg[:px].any() or fg[-px:].any() or fg[:, :px].any() or fg[:, -px:].any())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def shapes_prompts(per_category: int) -> list[dict]:
    from tts_diffusion.bench import SHAPES_EVAL, load_prompt_set

    prompts = load_prompt_set(SHAPES_EVAL)
    out = []
    for cat in CATEGORIES:
        out += [p for p in prompts if p["category"] == cat][:per_category]
    return out


def run_shapes(args) -> dict:
    from tts_diffusion import Budget
    from tts_diffusion.bench.default_model import load_default_model
    from tts_diffusion.pipelines.alfie import prepare_rgba
    from tts_diffusion.searchers import load_searcher
    from tts_diffusion.shapes.grammar import BACKGROUND
    from tts_diffusion.verifiers import load_verifier

    device = torch.device(args.device)
    tts = load_default_model(device)
    oracle = load_verifier("oracle").to(device)
    best_of_n = load_searcher("best_of_n")
    base = tts.process(None, max_batch=args.n)
    steps = base.num_steps
    records = []
    for j, p in enumerate(shapes_prompts(args.prompts)):
        prompt = p["prompt"]
        rec = {"prompt": prompt, "category": p["category"]}
        for mode in ("plain", "rgba"):
            proc = base.for_call()
            ver = oracle
            run = None
            if mode == "rgba":
                run = prepare_rgba(proc, prompt, oracle, canvas_color=BACKGROUND)
                ver = run.verifier
            t0 = time.perf_counter()
            res = best_of_n(proc, ver, prompt, Budget(args.n * steps), torch.Generator().manual_seed(args.seed + j),
                            num_samples=args.n, keep_images=args.n)
            if run is not None:
                run.finish(res)
            if device.type == "cuda":
                torch.cuda.synchronize()
            secs = time.perf_counter() - t0
            fgs = [foreground(c.image, BACKGROUND) for c in res.candidates]
            rec[mode] = {
                "seconds_per_sample": secs / args.n,
                "border_touch": [touches_border(f) for f in fgs],
                "oracle_pass": [c.score >= 1 - 1e-6 for c in res.candidates],
                "best_pass": res.best.score >= 1 - 1e-6,
            }
            if run is not None:
                ious, ious_any = [], []
                for c, f in zip(res.candidates, fgs):
                    alpha, _ = run.verifier.matte_of(c.image)
                    ious.append(iou(alpha >= 0.5, f))
                    ious_any.append(iou(alpha > 0, f))
                if args.variants:  # one round: candidate k is particle k of the call's maps
                    rec[mode]["variants"] = matte_variants(run, res.candidates, fgs)
                best_fg = foreground(res.best.image, BACKGROUND)
                rec[mode].update({
                    "alpha_iou": ious, "alpha_support_iou": ious_any,
                    "best_alpha_iou": iou(res.alpha.numpy() >= 128, best_fg),
                    "accumulator_bytes": run.capture.maps.nbytes(),
                    "grid": list(run.grid), "capture_steps": len(run.capture.steps),
                })
        records.append(rec)
        print(f"{j + 1:3d} {p['category']:<14} {prompt:<40} iou(single) {np.mean(rec['rgba']['alpha_iou']):.3f}"
              f"  iou(best) {rec['rgba']['best_alpha_iou']:.3f}"
              f"  border plain {np.mean(rec['plain']['border_touch']):.2f} rgba {np.mean(rec['rgba']['border_touch']):.2f}",
              flush=True)
    return {"records": records, "summary": summarise(records), "steps": steps, "n": args.n}


def matte_variants(run, candidates, fgs) -> dict:
    """Diagnostics: IoU of the GrabCut mask alone, of the soft alpha alone (>= 0.5), and of
    GrabCut seeded by a trimap of the self-attention-guided map ff instead of the cross maps."""
    from tts_diffusion.pipelines import matte

    out: dict = {"grabcut_only": [], "soft_only": [], "grabcut_ff_trimap": []}
    for k, (c, f) in enumerate(zip(candidates, fgs)):
        img = c.image.permute(1, 2, 0).numpy()
        cm = matte.subject_maps(run.capture.cross_map(k).cpu(), run.spans, run.grid)
        s = run.capture.self_map(k).cpu()
        size = img.shape[:2]
        out["grabcut_only"].append(iou(matte.grabcut(img, matte.trimap(cm, size))[0], f))
        out["soft_only"].append(iou(matte.soft_alpha(cm, s, size).numpy() >= 0.5, f))
        ff = matte.guided_map(cm, s)[None]
        out["grabcut_ff_trimap"].append(iou(matte.grabcut(img, matte.trimap(ff, size))[0], f))
    return out


def summarise(records: list[dict]) -> dict:
    out = {}
    for cat in (*CATEGORIES, "all"):
        rs = [r for r in records if cat == "all" or r["category"] == cat]
        if not rs:
            continue
        cat_out = {"prompts": len(rs)}
        for mode in ("plain", "rgba"):
            cat_out[mode] = {
                "border_touch_share": float(np.mean([b for r in rs for b in r[mode]["border_touch"]])),
                "oracle_single": float(np.mean([b for r in rs for b in r[mode]["oracle_pass"]])),
                "oracle_best_of_n": float(np.mean([r[mode]["best_pass"] for r in rs])),
                "seconds_per_sample": float(np.mean([r[mode]["seconds_per_sample"] for r in rs])),
            }
        cat_out["rgba"].update({
            "alpha_iou_single": float(np.mean([v for r in rs for v in r["rgba"]["alpha_iou"]])),
            "alpha_support_iou_single": float(np.mean([v for r in rs for v in r["rgba"]["alpha_support_iou"]])),
            "alpha_iou_best_of_n": float(np.mean([r["rgba"]["best_alpha_iou"] for r in rs])),
        })
        if all("variants" in r["rgba"] for r in rs):
            for key in rs[0]["rgba"]["variants"]:
                cat_out["rgba"][f"iou_{key}"] = float(np.mean([v for r in rs for v in r["rgba"]["variants"][key]]))
        out[cat] = cat_out
    return out


# ------------------------------------------------------------------------- matte (issue #28)
MATTE_CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def matte_prompts(per_category: int) -> list[tuple[int, dict]]:
    """(eval-split index, prompt) pairs: the first `per_category` of each category of the
    default model's grammar, interleaved (a shorter run covers every category)."""
    from tts_diffusion.bench import SHAPES_EVAL, load_prompt_set

    ps = load_prompt_set(SHAPES_EVAL)
    groups = [[(i, p) for i, p in enumerate(ps) if p["category"] == c][:per_category] for c in MATTE_CATEGORIES]
    return [ip for row in zip(*groups) for ip in row]


def matte_metrics(alpha: np.ndarray, fg: np.ndarray, border_px: int = 2) -> dict:
    """The issue's measures for one matte [H, W] in [0, 1] against the true foreground.

    Inverted: the opaque part overlaps the complement of the foreground more than the
    foreground. Only defined where the image has a foreground: with none (the model drew
    nothing, or only a ghost fainter than the truth's tolerance) any opaque pixel would
    "overlap the complement more", so such an image is counted as `empty_truth` instead (its
    IoU is 0 unless the matte is empty too, and `left` measures what the matte kept)."""
    op = alpha >= 0.5
    edge = np.ones_like(fg)
    edge[border_px:-border_px, border_px:-border_px] = False
    out = {"iou": iou(op, fg),
           "kept": float((alpha[fg] > 0.5).mean()) if fg.any() else 1.0,
           "left": float((alpha[~fg] > 0.1).mean()),
           "border_clear": bool((alpha[edge] < 0.5 / 255).all()),
           "fg_share": float(fg.mean()),
           "empty_truth": not bool(fg.any())}
    out["inverted"] = bool(fg.any()) and iou(op, ~fg) > out["iou"]
    out["good"] = bool(out["kept"] >= 0.98 and out["left"] <= 0.02 and out["border_clear"] and not out["inverted"])
    return out


def edge_canvas_share(colours: np.ndarray, image: np.ndarray, alpha: np.ndarray, fg: np.ndarray, canvas,
                      radius: int = 3) -> float | None:
    """How much canvas colour the cut-out's edge carries (the light outline; measuring only,
    with the known canvas colour K and the true foreground): over the matte's edge pixels
    (alpha > 0, not in its core: alpha 1 with all 8 neighbours alpha 1), the alpha-weighted mean
    of 1 - t, t = <c - K, F - K> / |F - K|^2 clipped to [0, 1], c the RGBA's colour (uint8
    [H, W, 3]) and F the mean of the image's true-foreground core within `radius` px. 0: edge
    colours are the subject's; 0.5: opaque edge pixels half canvas. None without such pixels."""
    import cv2

    k3 = np.ones((3, 3), np.uint8)
    edge = (alpha > 0) & ~cv2.erode((alpha >= 1).astype(np.uint8), k3).astype(bool)
    core = cv2.erode(fg.astype(np.uint8), k3).astype(bool)
    x = image.astype(np.float32) / 255
    k = (2 * radius + 1, 2 * radius + 1)
    n = cv2.boxFilter(core.astype(np.float32), -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    f = np.stack([cv2.boxFilter(x[..., c] * core, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
                  for c in range(3)], -1) / np.maximum(n, 1e-6)[..., None]
    kc = np.asarray(canvas, np.float32)
    d = f - kc
    dd = (d * d).sum(-1)
    ok = edge & (n > 0) & (dd > 0.01)
    if not ok.any():
        return None
    t = np.clip(((colours.astype(np.float32) / 255 - kc) * d).sum(-1) / np.maximum(dd, 1e-6), 0, 1)
    return float((alpha[ok] * (1 - t[ok])).sum() / alpha[ok].sum())


def edge_composite_error(colours: np.ndarray, image: np.ndarray, alpha: np.ndarray, canvas) -> float | None:
    """What the cut-out changes where it is put back on its own canvas (measuring only): over
    the matte's edge pixels (as `edge_canvas_share`), the mean of the largest channel
    difference between alpha c + (1 - alpha) K and the RGB. Decontaminated colours at alpha 1
    on a half-covered pixel draw the edge bolder than the RGB; this says by how much."""
    import cv2

    edge = (alpha > 0) & ~cv2.erode((alpha >= 1).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if not edge.any():
        return None
    a = alpha[..., None]
    comp = a * colours.astype(np.float32) / 255 + (1 - a) * np.asarray(canvas, np.float32)
    return float(np.abs(comp - image.astype(np.float32) / 255).max(-1)[edge].mean())


def generate_cached(args, chosen) -> list[dict]:
    """rgba samples (best-of-n, the oracle on composites) with their images and attention maps,
    one file per prompt under --cache (reused when present: the generation does not depend on
    the matte, so matte variants are compared on the same images)."""
    from tts_diffusion import Budget
    from tts_diffusion.bench.default_model import load_default_model
    from tts_diffusion.pipelines.alfie import prepare_rgba
    from tts_diffusion.searchers import load_searcher
    from tts_diffusion.shapes.grammar import BACKGROUND
    from tts_diffusion.verifiers import load_verifier

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    tts = oracle = search = base = None
    out = []
    for j, (i, p) in enumerate(chosen):
        f = cache / f"{i}.pt"
        if not f.exists():
            if tts is None:
                tts = load_default_model(args.device)
                oracle, search = load_verifier("oracle"), load_searcher("best_of_n")
                base = tts.process(None, max_batch=args.n)
            proc = base.for_call()
            run = prepare_rgba(proc, p["prompt"], oracle, canvas_color=BACKGROUND)
            t0 = time.perf_counter()
            res = search(proc, run.verifier, p["prompt"], Budget(args.n * base.num_steps),
                         torch.Generator().manual_seed(i), num_samples=args.n, keep_images=args.n)
            secs = time.perf_counter() - t0
            n = len(res.candidates)
            torch.save({"prompt": p["prompt"], "category": p["category"], "index": i,
                        "images": torch.stack([c.image for c in res.candidates]),
                        "cross": torch.stack([run.capture.cross_map(k).cpu() for k in range(n)]),
                        "self": torch.stack([run.capture.self_map(k).cpu() for k in range(n)]),
                        "spans": run.spans, "grid": run.grid, "words": run.words, "seconds": secs,
                        "seeds": [c.seed for c in res.candidates]}, f)
            print(f"{j + 1:3d} generated {p['category']:<14} {p['prompt']} ({secs:.1f} s)", flush=True)
        out.append(torch.load(f))
    return out


def time_plain_vs_rgba(args, chosen) -> dict:
    """Seconds per sample of best-of-n, plain and rgba (mattes included), same seeds, alternating."""
    from tts_diffusion import Budget
    from tts_diffusion.bench.default_model import load_default_model
    from tts_diffusion.pipelines.alfie import prepare_rgba
    from tts_diffusion.searchers import load_searcher
    from tts_diffusion.shapes.grammar import BACKGROUND
    from tts_diffusion.verifiers import load_verifier

    tts = load_default_model(args.device)
    oracle, search = load_verifier("oracle"), load_searcher("best_of_n")
    base = tts.process(None, max_batch=args.n)
    secs = {"plain": [], "rgba": []}
    for j, (i, p) in enumerate(chosen):
        for mode in (("plain", "rgba") if j % 2 == 0 else ("rgba", "plain")):
            proc, ver = base.for_call(), oracle
            if mode == "rgba":
                ver = prepare_rgba(proc, p["prompt"], oracle, canvas_color=BACKGROUND).verifier
            t0 = time.perf_counter()
            search(proc, ver, p["prompt"], Budget(args.n * base.num_steps), torch.Generator().manual_seed(i),
                   num_samples=args.n)
            secs[mode].append((time.perf_counter() - t0) / args.n)
    return {"prompts": len(chosen), "n": args.n, "plain_seconds_per_sample": float(np.mean(secs["plain"])),
            "rgba_seconds_per_sample": float(np.mean(secs["rgba"])),
            "rgba_over_plain": float(np.sum(secs["rgba"]) / np.sum(secs["plain"]))}


def paper_matte(img, d, k):
    from tts_diffusion.pipelines import matte

    c = matte.subject_maps(d["cross"][k], d["spans"], d["grid"])
    return matte.alpha_matte(img, c, d["self"][k])[0]


def run_matte(args) -> dict:
    """Issue #28: the contrast matte (and Alfie's paper matte) against the true foreground,
    per category and overall; what search adds (alpha / oracle / oracle+alpha picks of 8)."""
    from tts_diffusion.pipelines import matte
    from tts_diffusion.shapes.grammar import BACKGROUND
    from tts_diffusion.verifiers import load_verifier
    from tts_diffusion.verifiers.alpha import scoring_alphas

    chosen = matte_prompts(args.prompts)
    data = generate_cached(args, chosen)
    pickers = {"oracle": load_verifier("oracle"), "alpha": load_verifier("alpha"),
               "oracle+alpha": load_verifier("ensemble", members="oracle,alpha")}
    bg = torch.tensor(BACKGROUND).view(1, 3, 1, 1)
    records = []
    for d in data:
        imgs = d["images"]
        n = imgs.shape[0]
        lat = d["grid"][0] * 2  # the default model: patch 2
        border = matte.border_tokens(tuple(d["grid"]), (lat, lat), 2)
        rec = {"prompt": d["prompt"], "category": d["category"], "index": d["index"], "n": n, "variants": {}}
        for variant in args.matte_variants.split(","):
            alphas, colours, ms, secs, colour_secs = [], [], [], 0.0, 0.0
            for k in range(n):
                img = imgs[k].permute(1, 2, 0).numpy()
                fg = foreground(imgs[k], BACKGROUND)
                t0 = time.perf_counter()
                if variant == "contrast":
                    a, info = matte.contrast_matte(img, d["cross"][k], d["self"][k], tuple(d["grid"]), border)
                else:
                    a, info = paper_matte(img, d, k), {}
                secs += time.perf_counter() - t0
                t0 = time.perf_counter()
                cols = matte.foreground_colours(img, a)  # the RGBA's colours (edge decontaminated)
                colour_secs += time.perf_counter() - t0
                m = matte_metrics(a, fg)
                m["inverted_fixed"] = bool(info.get("inverted_fixed", False))
                m["edge_canvas"] = edge_canvas_share(cols, img, a, fg, BACKGROUND)
                m["edge_canvas_raw"] = edge_canvas_share(img, img, a, fg, BACKGROUND)
                m["edge_composite_error"] = edge_composite_error(cols, img, a, BACKGROUND)
                m["edge_composite_error_raw"] = edge_composite_error(img, img, a, BACKGROUND)
                alphas.append(torch.from_numpy(a))
                colours.append(torch.from_numpy(cols).permute(2, 0, 1))
                ms.append(m)
            v = {"candidates": ms, "matte_seconds": secs / n, "colour_seconds": colour_secs / n}
            if n > 1:  # search: which candidate each verifier picks (scores of the composites, as rgba scores them)
                al = torch.stack(alphas)
                comp = torch.stack(colours).float() / 255 * al[:, None] + bg * (1 - al[:, None])
                v["picks"] = {}
                for name, ver in pickers.items():
                    with scoring_alphas(al):
                        s = ver(comp, [d["prompt"]] * n).float()
                    v["picks"][name] = int(torch.argmax(s))
            rec["variants"][variant] = v
        records.append(rec)
    out = {"records": records, "summary": summarise_matte(records, args.matte_variants.split(",")),
           "truth": "pixels more than 0.2 from the canvas colour in some channel (bench_alfie.foreground)"}
    if args.timing_prompts:
        out["timing"] = time_plain_vs_rgba(args, chosen[: args.timing_prompts])
    if args.sheet:
        contact_sheet(data, args.sheet)
        out["sheet"] = args.sheet
    if args.edge_sheet:
        edge_sheet(data, args.edge_sheet)
        out["edge_sheet"] = args.edge_sheet
    return out


def _agg(ms: list[dict]) -> dict:
    ious = np.array([m["iou"] for m in ms])
    out = {"images": len(ms), "iou_mean": float(ious.mean()), "iou_p5": float(np.percentile(ious, 5)),
           "kept_98_share": float(np.mean([m["kept"] >= 0.98 for m in ms])),
           "left_2_share": float(np.mean([m["left"] <= 0.02 for m in ms])),
           "border_clear_share": float(np.mean([m["border_clear"] for m in ms])),
           "inverted": int(sum(m["inverted"] for m in ms)),
           "inverted_fixed": int(sum(m.get("inverted_fixed", False) for m in ms)),
           "empty_truth": int(sum(m.get("empty_truth", False) for m in ms)),
           "good_share": float(np.mean([m["good"] for m in ms]))}
    for key in ("edge_canvas", "edge_canvas_raw", "edge_composite_error", "edge_composite_error_raw"):
        vals = np.array([m[key] for m in ms if m.get(key) is not None])
        if len(vals):
            out[key + "_mean"], out[key + "_p95"] = float(vals.mean()), float(np.percentile(vals, 95))
    return out


def summarise_matte(records: list[dict], variants: list[str]) -> dict:
    out: dict = {}
    for variant in variants:
        vs: dict = {}
        for cat in (*MATTE_CATEGORIES, "all"):
            rs = [r for r in records if cat == "all" or r["category"] == cat]
            if not rs:
                continue
            s = _agg([m for r in rs for m in r["variants"][variant]["candidates"]])
            s["prompts"] = len(rs)
            s["matte_seconds"] = float(np.mean([r["variants"][variant]["matte_seconds"] for r in rs]))
            s["colour_seconds"] = float(np.mean([r["variants"][variant].get("colour_seconds", 0.0) for r in rs]))
            searched = [r for r in rs if "picks" in r["variants"][variant] and r["n"] >= 8]
            if searched:
                s["search"] = {"prompts": len(searched), "one_candidate": _agg(
                    [m for r in searched for m in r["variants"][variant]["candidates"]])}
                for name in searched[0]["variants"][variant]["picks"]:
                    s["search"][f"best_of_{searched[0]['n']}_{name}"] = _agg(
                        [r["variants"][variant]["candidates"][r["variants"][variant]["picks"][name]] for r in searched])
            vs[cat] = s
        out[variant] = vs
    return out


def checkerboard(h: int, w: int, cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    light = ((yy // cell + xx // cell) % 2 == 0)
    return np.where(light[..., None], 0.85, 0.6).astype(np.float32) * np.ones(3, np.float32)


def contact_sheet(data: list[dict], path: str, per_category: int = 4, scale: int = 4) -> None:
    """24 images (candidate 0 of the first `per_category` prompts of each category): the RGBA
    (the decontaminated colours with the matte, as `SearchResult.rgba`) over a checkerboard,
    the matte, the RGB; 4x nearest; each row captioned with IoU."""
    from PIL import Image, ImageDraw

    from tts_diffusion.pipelines import matte
    from tts_diffusion.shapes.grammar import BACKGROUND

    picked = []
    for cat in MATTE_CATEGORIES:
        picked += [d for d in data if d["category"] == cat][:per_category]
    h, w = data[0]["images"].shape[-2:]
    cw, ch = w * scale, h * scale
    cols = 2  # two images side by side per row, three panels each
    rows = (len(picked) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (3 * cw + 16), rows * (ch + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    board = checkerboard(h * scale, w * scale, 4 * scale)
    for j, d in enumerate(picked):
        img = d["images"][0].permute(1, 2, 0).numpy()
        lat = d["grid"][0] * 2
        a, _ = matte.contrast_matte(img, d["cross"][0], d["self"][0], tuple(d["grid"]),
                                    matte.border_tokens(tuple(d["grid"]), (lat, lat), 2))
        m = matte_metrics(a, foreground(d["images"][0], BACKGROUND))
        up = lambda x: np.repeat(np.repeat(x, scale, 0), scale, 1)  # noqa: E731
        fgc = up(matte.foreground_colours(img, a).astype(np.float32) / 255)  # the RGBA's colours
        rgb, al = up(img.astype(np.float32) / 255), up(a)[..., None]
        panels = [fgc * al + board * (1 - al), np.repeat(al, 3, -1), rgb]
        x0, y0 = (j % cols) * (3 * cw + 16), (j // cols) * (ch + 16)
        for c, p in enumerate(panels):
            sheet.paste(Image.fromarray(np.round(np.clip(p, 0, 1) * 255).astype(np.uint8)), (x0 + c * cw, y0 + 14))
        draw.text((x0 + 2, y0 + 1), f"{d['prompt'].replace('a photo of ', '')}  IoU {m['iou']:.2f}", fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def edge_sheet(data: list[dict], path: str, scale: int = 4) -> None:
    """The light outline, before and after: candidate 0 of the first prompt of each category,
    the cut-out with the RGB's own colours and with the decontaminated ones (as the RGBA has
    them), each over the checkerboard and over a dark grey; 4x nearest."""
    from PIL import Image, ImageDraw

    from tts_diffusion.pipelines import matte

    picked = [next(d for d in data if d["category"] == cat) for cat in MATTE_CATEGORIES
              if any(d["category"] == cat for d in data)]
    h, w = data[0]["images"].shape[-2:]
    cw, ch = w * scale, h * scale
    sheet = Image.new("RGB", (4 * cw + 6, len(picked) * (ch + 16) + 16), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(("RGB colours, checkerboard", "RGB colours, dark", "decontaminated, checkerboard",
                               "decontaminated, dark")):
        draw.text((c * (cw + 2) + 2, 2), title, fill="black")
    board = checkerboard(ch, cw, 4 * scale)
    dark = np.full((ch, cw, 3), 0.15, np.float32)
    up = lambda x: np.repeat(np.repeat(x, scale, 0), scale, 1)  # noqa: E731
    for j, d in enumerate(picked):
        img = d["images"][0].permute(1, 2, 0).numpy()
        lat = d["grid"][0] * 2
        a, _ = matte.contrast_matte(img, d["cross"][0], d["self"][0], tuple(d["grid"]),
                                    matte.border_tokens(tuple(d["grid"]), (lat, lat), 2))
        al = up(a)[..., None]
        y0 = 16 + j * (ch + 16)
        draw.text((2, y0 + 1), d["prompt"].replace("a photo of ", ""), fill="black")
        for c, (cols, under) in enumerate([(img, board), (img, dark), (matte.foreground_colours(img, a), board),
                                           (matte.foreground_colours(img, a), dark)]):
            p = up(cols.astype(np.float32) / 255) * al + under * (1 - al)
            sheet.paste(Image.fromarray(np.round(np.clip(p, 0, 1) * 255).astype(np.uint8)), (c * (cw + 2), y0 + 14))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


# ------------------------------------------------------------------------- PixArt-XL
def build_pixart_xl(device: torch.device, dtype: torch.dtype, size: int, layers: int):
    """PixArt-Sigma-XL-size pipeline with random weights (transformer at full size)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from tts_diffusion.shapes.model import build_tokenizer

    words = "a photo of an orange cat sitting on sofa white background the dog red car".split()
    tok = build_tokenizer(words, max_length=300)
    with torch.device(device):
        torch.manual_seed(0)
        text = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=4096, d_kv=64, d_ff=1024, num_layers=1,
                                       num_heads=8, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                                       use_cache=False, pad_token_id=0, eos_token_id=1)).to(dtype)
        tr = PixArtTransformer2DModel(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                                      num_layers=layers, cross_attention_dim=1152, caption_channels=4096,
                                      sample_size=size // 8, patch_size=2, attention_bias=True,
                                      activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                                      norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
                                      use_additional_conditions=False).to(dtype)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                            scaling_factor=0.13025).to(dtype)
    pipe = PixArtSigmaPipeline(tokenizer=tok, text_encoder=text, vae=vae, transformer=tr,
                               scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def run_pixart_xl(args) -> dict:
    from tts_diffusion import Budget, TTSPipeline
    from tts_diffusion.pipelines.alfie import prepare_rgba
    from tts_diffusion.searchers import load_searcher
    from tts_diffusion.verifiers.base import Verifier

    class Brightness(Verifier):
        name = "brightness"

        def score(self, images, prompts):
            return images.float().mean(dim=(1, 2, 3))

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = build_pixart_xl(device, dtype, args.size, args.layers)
    tts = TTSPipeline(pipe, defaults={"max_sequence_length": 300, "num_inference_steps": args.steps})
    prompt = "a photo of an orange cat sitting on a sofa"
    k = args.particles
    counter = None
    if args.compile:
        from torch._dynamo.testing import CompileCounterWithBackend
        from torch._dynamo.utils import counters

        torch._dynamo.reset()
        counters.clear()
        counter = CompileCounterWithBackend(args.backend)
        tts.compile(True, backend=counter)
    base = tts.process(args.steps, 4.5, height=args.size, width=args.size, max_batch=k)
    search = load_searcher("best_of_n")
    ver = Brightness().to(device)
    out = {}
    modes = ("plain", "rgba_canvas", "rgba_model_background", "plain")
    if args.compile:  # the first run of each mode compiles; the second is kept
        modes = ("plain", "plain", "rgba_canvas", "rgba_canvas", "rgba_model_background", "rgba_model_background")
    for mode in modes:
        graphs_before = counter.frame_count if counter is not None else 0
        proc = base.for_call()
        v, run = ver, None
        if mode == "rgba_canvas":
            run = prepare_rgba(proc, prompt, ver, canvas_color=(1.0, 1.0, 1.0))
        elif mode == "rgba_model_background":
            run = prepare_rgba(proc, prompt, ver)
        if run is not None:
            v = run.verifier
        rows = run.rows_per_step if run else 1
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start_mem = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        res = search(proc, v, prompt, Budget(k * args.steps), torch.Generator().manual_seed(0), num_samples=k)
        if run is not None:
            run.finish(res)
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        rec = {"seconds": secs, "nfe_rows": res.nfe, "timings": res.timings,
               "particles": k}
        if device.type == "cuda":
            rec["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            rec["peak_over_start_gib"] = (torch.cuda.max_memory_allocated() - start_mem) / 2**30
        if run is not None:
            rec["accumulator_mib"] = run.capture.maps.nbytes() / 2**20
            rec["grid"] = list(run.grid)
        if counter is not None:
            rec["new_graphs"] = counter.frame_count - graphs_before
            rec["graph_breaks"] = sum(counters["graph_break"].values())
            if mode in out:
                rec["first_run_seconds"] = out[mode]["seconds"]
                rec["first_run_new_graphs"] = out[mode]["new_graphs"]
        out[mode] = rec  # each mode's second run (plain without --compile: the first warms up) is kept
        print(f"{mode:<24} {secs:8.2f} s  " + (f"peak {rec.get('peak_gib', float('nan')):.2f} GiB  " if "peak_gib" in rec else "")
              + (f"maps {rec['accumulator_mib']:.1f} MiB  " if "accumulator_mib" in rec else "")
              + (f"new graphs {rec['new_graphs']}, graph breaks so far {rec['graph_breaks']}" if counter else ""),
              flush=True)
    n_tok = (args.size // 8 // 2) ** 2
    out["analytic"] = {"tokens": n_tok, "text_tokens": 300,
                       "self_map_mib_per_particle": n_tok * n_tok * 4 / 2**20,
                       "cross_map_mib_per_particle": n_tok * 300 * 4 / 2**20,
                       "transient_head_map_mib_per_row": n_tok * n_tok * 4 / 2**20,
                       "alfie_original_self_maps_gib": args.layers * 16 * n_tok * n_tok * 4 / 2**30}
    out["settings"] = {"size": args.size, "layers": args.layers, "steps": args.steps, "device": str(device),
                       "compile": args.backend if args.compile else None,
                       "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    return out


def legacy_probs(attn, hs, ctx, mask) -> torch.Tensor:
    """The capture's previous implementation: q/k recomputed, fp32, one head at a time."""
    b, n, _ = hs.shape
    m = ctx.shape[1]
    q, k = attn.to_q(hs), attn.to_k(ctx)
    h = attn.heads
    d = k.shape[-1] // h
    q, k = q.view(b, n, h, d).transpose(1, 2), k.view(b, m, h, d).transpose(1, 2)
    bias = None if mask is None else attn.prepare_attention_mask(mask, m, b).view(b, h, -1, m).float()
    out = torch.zeros((b, n, m), dtype=torch.float32, device=q.device)
    for j in range(h):
        sc = torch.einsum("bnd,bmd->bnm", q[:, j].float(), k[:, j].float()) * float(attn.scale)
        if bias is not None:
            sc = sc + bias[:, j]
        out += sc.softmax(dim=-1)
    return out / h


def run_capture(args) -> dict:
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from tts_diffusion.features.attention_capture import (accumulate_probs, chunking, default_chunk_bytes, half_matmul_ok,
                                                      mask_bias, project_qk)

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    width, heads, text = 1152, 16, 300
    n = (args.size // 16) ** 2
    r = args.particles
    hs = torch.randn(2 * r, n, width, device=device, dtype=dtype)
    ctx = torch.randn(2 * r, text, width, device=device, dtype=dtype)
    mask = torch.zeros(2 * r, 1, text, device=device, dtype=dtype)
    mask[:, :, 12:] = -10000.0  # a 12-token prompt padded to 300, PixArt's bias

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn, reps):
        fn()
        sync()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts))

    out: dict = {}
    for kind in ("self", "cross"):
        with torch.device(device):
            attn = Attention(query_dim=width, cross_attention_dim=None if kind == "self" else width, heads=heads,
                             dim_head=72, bias=True, processor=AttnProcessor2_0()).to(dtype)
        c = hs if kind == "self" else ctx
        mk = mask if kind == "cross" else None
        m = c.shape[1]
        cond_h, cond_c = hs[-r:], c[-r:]
        cond_m = None if mk is None else mk[-r:]
        q_full, k_full = attn.to_q(hs), attn.to_k(c)  # what the wrapped processor computes anyway
        bias = mask_bias(attn, cond_m, r, m)

        def current(tapped: bool, model_dtype: bool) -> torch.Tensor:
            q, k = project_qk(attn, cond_h, cond_c, q_full[-r:] if tapped else None, k_full[-r:] if tapped else None)
            acc = torch.zeros((r, n, m), dtype=torch.float32, device=device)
            accumulate_probs(q, k, float(attn.scale), bias, acc, model_dtype_matmul=model_dtype)
            return acc

        variants = {
            "legacy_per_head": lambda: legacy_probs(attn, cond_h, cond_c, cond_m),
            "batched_recompute_fp32": lambda: current(False, False),
            "batched_tapped_fp32": lambda: current(True, False),
        }
        if half_matmul_ok(device, dtype):
            variants["batched_tapped_model_dtype"] = lambda: current(True, True)
        with torch.no_grad():
            ref = variants["legacy_per_head"]()
            rec = {"tokens": n, "keys": m, "rows": r,
                   "chunk_rows_heads": list(chunking(r, heads, n, m, default_chunk_bytes(device))),
                   "sdpa_forward_ms": 1e3 * timed(lambda: attn(hs, None if kind == "self" else c, mk), args.reps)}
            for name, fn in variants.items():
                rec[name + "_ms"] = 1e3 * timed(fn, args.reps)
                rec[name + "_max_abs_diff"] = float((fn() - ref).abs().max())
            rec["speedup_vs_legacy"] = rec["legacy_per_head_ms"] / min(rec[v + "_ms"] for v in variants if v != "legacy_per_head")
        out[kind] = rec
        print(f"{kind:<6} N={n} M={m} rows={r}: sdpa {rec['sdpa_forward_ms']:.1f} ms | "
              + " | ".join(f"{v} {rec[v + '_ms']:.1f} ms (diff {rec[v + '_max_abs_diff']:.1e})" for v in variants),
              flush=True)
    out["settings"] = {"size": args.size, "particles": r, "dtype": str(dtype), "reps": args.reps,
                       "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("shapes", "matte", "pixart-xl", "capture"), default="shapes")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", type=int, default=6, help="shapes: prompts per category")
    ap.add_argument("--n", type=int, default=8, help="shapes: candidates per search (best-of-n)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=512, help="pixart-xl: image size in pixels")
    ap.add_argument("--layers", type=int, default=28, help="pixart-xl: transformer layers")
    ap.add_argument("--steps", type=int, default=20, help="pixart-xl: denoising steps")
    ap.add_argument("--particles", type=int, default=4, help="pixart-xl: candidates sampled together")
    ap.add_argument("--reps", type=int, default=5, help="capture: timed repetitions (median)")
    ap.add_argument("--compile", action="store_true",
                    help="pixart-xl: denoiser and VAE decoder under torch.compile; each mode runs twice, graphs counted")
    ap.add_argument("--backend", default="inductor", choices=("inductor", "aot_eager"),
                    help="pixart-xl --compile: torch.compile backend (aot_eager: a quick CPU check)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--variants", action="store_true",
                    help="shapes: also the IoU of GrabCut alone, soft alpha alone, and GrabCut from a trimap of ff")
    ap.add_argument("--cache", default="/tmp/bench_alfie_matte_cache",
                    help="matte: folder of generated candidates and maps (one file per prompt; reused)")
    ap.add_argument("--matte-variants", dest="matte_variants", default="contrast,paper",
                    help="matte: mattes to measure (contrast: rgba's; paper: Alfie's soft alpha x GrabCut)")
    ap.add_argument("--timing-prompts", type=int, default=0, help="matte: prompts timed plain vs rgba")
    ap.add_argument("--sheet", default=None, help="matte: write a 24-image contact sheet PNG here")
    ap.add_argument("--edge-sheet", dest="edge_sheet", default=None,
                    help="matte: write the edge colours before / after decontamination (6 images) as a PNG here")
    ap.add_argument("--out", required=True, help="output path without extension (<out>.json)")
    args = ap.parse_args()
    for name in ("prompts", "n", "size", "layers", "steps", "particles", "reps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.size % 16:
        ap.error(f"--size must be a multiple of 16 (VAE factor 8 x patch 2), got {args.size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = {"shapes": run_shapes, "matte": run_matte, "pixart-xl": run_pixart_xl, "capture": run_capture}[args.mode](args)
    data["command"] = " ".join(["python", "scripts/bench_alfie.py", *sys.argv[1:]])
    data["device"] = str(args.device)
    data["threads"] = torch.get_num_threads()
    data["wall_seconds"] = time.perf_counter() - t0
    if args.mode == "shapes":
        print(f"\n{'category':<14} {'IoU single':>10} {'IoU best-of-' + str(args.n):>13} {'border plain':>12}"
              f" {'border rgba':>11} {'oracle plain':>12} {'oracle rgba':>11} {'s/sample plain':>14} {'rgba':>6}")
        for cat, s in data["summary"].items():
            print(f"{cat:<14} {s['rgba']['alpha_iou_single']:10.3f} {s['rgba']['alpha_iou_best_of_n']:13.3f}"
                  f" {s['plain']['border_touch_share']:12.3f} {s['rgba']['border_touch_share']:11.3f}"
                  f" {s['plain']['oracle_single']:12.3f} {s['rgba']['oracle_single']:11.3f}"
                  f" {s['plain']['seconds_per_sample']:14.3f} {s['rgba']['seconds_per_sample']:6.3f}")
    if args.mode == "matte":
        for variant, vs in data["summary"].items():
            print(f"\n{variant}: {'category':<14} {'images':>6} {'IoU mean':>8} {'IoU p5':>7} {'kept>=98%':>9}"
                  f" {'left<=2%':>8} {'border':>6} {'inverted':>8} {'empty':>5} {'edge canvas raw -> rgba':>23}")
            for cat, s in vs.items():
                print(f"{'':<{len(variant) + 2}}{cat:<14} {s['images']:6d} {s['iou_mean']:8.3f} {s['iou_p5']:7.3f}"
                      f" {s['kept_98_share']:9.3f} {s['left_2_share']:8.3f} {s['border_clear_share']:6.3f} {s['inverted']:8d}"
                      f" {s['empty_truth']:5d} {s.get('edge_canvas_raw_mean', float('nan')):11.3f} ->"
                      f" {s.get('edge_canvas_mean', float('nan')):.3f}  composite error on the canvas"
                      f" {s.get('edge_composite_error_raw_mean', float('nan')):.3f} ->"
                      f" {s.get('edge_composite_error_mean', float('nan')):.3f}")
            if "search" in vs.get("all", {}):
                for key, s in vs["all"]["search"].items():
                    if key != "prompts":
                        print(f"  search ({vs['all']['search']['prompts']} prompts) {key:<24} IoU {s['iou_mean']:.3f}"
                              f" p5 {s['iou_p5']:.3f} good {s['good_share']:.3f}")
        if "timing" in data:
            print("timing", data["timing"])
    out = Path(args.out).with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
