#!/usr/bin/env python
"""Throughput of the CLIP verifier: images/s on 512x512 float images already on the device.

Rows (batch 64 by default, one prompt, text embedding cached after warm-up):
  verifier  fp16 / fp32, torch preprocessing   -- the real call: verifier(images, prompt)
  verifier  fp16 / fp32, PIL preprocessing      -- tensor -> CPU -> PIL -> open_clip
                                                   preprocess -> tensor -> device -> model
  preprocess only (torch)                       -- clip_preprocess on the device
  encode_image only fp16 / fp32                 -- the image tower on ready inputs

Timing: warm-up calls, then `--repeats` timed calls, each bracketed by
torch.cuda.synchronize(); the median is reported. Matmul settings are torch's defaults
(TF32 state recorded in the JSON). On CUDA a profiled fp16 call lists the top kernels
(to see the attention backend, SDPA flash / memory-efficient) and forward hooks record
the dtype of every Linear / attention / conv input (to prove fp16 matmuls).

ImageReward rows (`--verifiers clip,image_reward`, the default): the same row set for the
ImageReward architecture -- BLIP ViT-L/16 at 224 + the 12-layer BERT with cross-attention
+ MLP head, random weights (`--ir-size large`; `--ir-model-dir` for real weights) -- where
the PIL path is upstream's: tensor -> CPU -> PIL -> torchvision Resize(224, bicubic) +
CenterCrop + ToTensor + Normalize -> device -> model. "encode_image only" is the whole
ImageReward network (ViT + text encoder + head) on ready pixels and cached tokens. The
ImageReward results go under the JSON key "image_reward"; the CLIP keys stay as they were.

GPU:   python scripts/bench_verifiers.py                       (ViT-L-14 + ImageReward, random weights)
CPU smoke: python scripts/bench_verifiers.py --device cpu --model tiny --batch 8 \\
               --repeats 2 --warmup 1 --threads 1 --out /tmp/bench.json
`--model` takes anything CLIPVerifier takes (architecture name, local directory);
`tiny` is a built-in 2-layer random model for smoke tests (and, with `--ir-size auto`, a
tiny ImageReward too).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import torch  # noqa: E402

from tts_diffusion.bench.timing import sync  # noqa: E402

TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}
PROMPT = "a photo of a red circle above a blue square"


def timeit(fn, device, warmup: int, repeats: int) -> dict:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def pil_batch(verifier, pil_transform, images):
    """The PIL round trip a PIL-based verifier does: uint8 images, `pil_transform` on each,
    stacked on the verifier's device and dtype."""
    import numpy as np
    from PIL import Image

    arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    x = torch.stack([pil_transform(Image.fromarray(np.ascontiguousarray(a))) for a in arr])
    return x.to(verifier.device, verifier.dtype, non_blocking=True)


def pil_path(verifier, pil_transform, images, prompt):
    """The PIL round trip a PIL-based verifier would do, then the same model and text."""
    x = pil_batch(verifier, pil_transform, images)
    with torch.no_grad():
        img = torch.nn.functional.normalize(verifier.model.encode_image(x).float(), dim=-1)
    txt = verifier.encode_texts([prompt] * len(images))
    return (img * txt).sum(-1)


def matmul_input_dtypes(verifier, images, prompt) -> dict:
    """dtype of the inputs of every Linear / MultiheadAttention / Conv2d during one call."""
    seen: dict[str, set] = {}

    def hook(mod, args):
        for a in args:
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                seen.setdefault(type(mod).__name__, set()).add(str(a.dtype).replace("torch.", ""))

    hooks = [
        m.register_forward_pre_hook(hook)
        for m in verifier.model.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.MultiheadAttention, torch.nn.Conv2d))
    ]
    try:
        if hasattr(verifier, "clear_text_cache"):
            verifier.clear_text_cache()
        verifier(images, prompt)
    finally:
        for h in hooks:
            h.remove()
    return {k: sorted(v) for k, v in sorted(seen.items())}


def top_kernels(verifier, images, prompt, n: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    verifier(images, prompt)
    sync(images.device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        verifier(images, prompt)
        sync(images.device)
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t:
            rows.append({"name": e.key[:140], "device_us": round(t, 1), "calls": e.count})
    rows.sort(key=lambda r: -r["device_us"])
    return rows[:n]


DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def dtype_rows(args, device, v, images, row, encode_only, pil_scores) -> tuple[dict, dict]:
    """For every dtype of --dtypes: the encode-only row (`encode_only(v)` prepares its inputs
    at that dtype and returns the call to time), the verifier rows with torch and PIL
    preprocessing (`pil_scores()`), and the checks (matmul input dtypes, top CUDA kernels in
    fp16, torch-vs-PIL score difference), printed. Returns (checks, torch-path scores)."""
    pil_repeats = args.pil_repeats or max(1, min(args.repeats, 5))
    checks: dict = {}
    scores: dict = {}
    for dt in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
        v.to(DTYPES[dt])
        encode = encode_only(v)
        with torch.no_grad():
            row("encode_image only", dt, "-", encode, args.repeats)
        row("verifier", dt, "torch", lambda: v(images, PROMPT), args.repeats)
        if not args.no_pil:
            row("verifier", dt, "pil", pil_scores, pil_repeats)
        checks[dt] = {"matmul_input_dtypes": matmul_input_dtypes(v, images, PROMPT)}
        if device.type == "cuda" and dt == "fp16":
            checks[dt]["top_kernels"] = top_kernels(v, images, PROMPT)
        # agreement of the torch and PIL paths on this model
        s_t, s_p = v(images, PROMPT), pil_scores()
        checks[dt]["torch_vs_pil_max_abs_score_diff"] = float((s_t - s_p).abs().max())
        scores[dt] = s_t
    for dt, c in checks.items():
        print(f"  [{dt}] matmul inputs: {c['matmul_input_dtypes']}   torch-vs-PIL max |d score| "
              f"{c['torch_vs_pil_max_abs_score_diff']:.2e}")
        for k in c.get("top_kernels", [])[:8]:
            print(f"      {k['device_us']:>10.1f} us  x{k['calls']:<4} {k['name'][:100]}")
    return checks, scores


IR_TINY_VISION = {"img_size": 224, "patch_size": 32, "embed_dim": 64, "depth": 2, "num_heads": 4}
IR_TINY_MED = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def ir_pil_transform():
    """Upstream ImageReward's `_transform(224)` (torchvision on PIL images)."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    return Compose([
        Resize(224, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(224),
        ToTensor(),
        Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ])


def ir_pil_path(verifier, pil_transform, images, prompt):
    """The upstream PIL round trip, then the same ImageReward network and tokens."""
    x = pil_batch(verifier, pil_transform, images)
    return verifier.score_preprocessed(x, [prompt] * len(images))


def bench_image_reward(args, device, images, timeit_row, results) -> dict:
    """ImageReward rows (same layout as the CLIP rows); returns the JSON block."""
    from tts_diffusion.verifiers.blip import MED_CONFIG_BASE
    from tts_diffusion.verifiers.image_reward import ImageRewardVerifier
    from tts_diffusion.verifiers.preprocess import clip_preprocess

    size = args.ir_size if args.ir_size != "auto" else ("tiny" if args.model == "tiny" else "large")
    t0 = time.perf_counter()
    if args.ir_model_dir:
        v = ImageRewardVerifier(model_dir=args.ir_model_dir, device=device, dtype="fp32", chunk_size=args.batch)
        what = f"ImageReward from {args.ir_model_dir}"
    elif size == "tiny":
        v = ImageRewardVerifier(random_weights=True, vision_config=IR_TINY_VISION,
                                med_config={**MED_CONFIG_BASE, **IR_TINY_MED}, device=device, dtype="fp32",
                                chunk_size=args.batch)
        what = "ImageReward tiny (random weights)"
    else:
        v = ImageRewardVerifier(random_weights=True, device=device, dtype="fp32", chunk_size=args.batch)
        what = "ImageReward ViT-L/16 + BERT-base (random weights)"
    load_s = time.perf_counter() - t0
    nparams = sum(p.numel() for p in v.model.parameters())
    cfg = v.preprocess_cfg
    pil_tf = ir_pil_transform()
    print(f"{what}: {nparams / 1e6:.1f}M parameters, load={load_s:.1f}s", flush=True)
    start = len(results)
    timeit_row("preprocess only", "fp32", "torch", lambda: clip_preprocess(images, **cfg), args.repeats)

    def encode_only(v):
        x = v.preprocess(images)
        ids, mask = v.tokenize([PROMPT] * len(images))
        return lambda: v.model(x, ids, mask)

    checks, scores = dtype_rows(args, device, v, images, timeit_row, encode_only,
                                lambda: ir_pil_path(v, pil_tf, images, PROMPT))
    for dt, s_t in scores.items():
        checks[dt]["scores_finite"] = bool(torch.isfinite(s_t).all())
        scores[dt] = s_t.cpu()
    if "fp16" in scores and "fp32" in scores:
        # same (fp16-rounded, after the first cast) weights: the effect of fp16 activations
        d = float((scores["fp16"] - scores["fp32"]).abs().max())
        checks["fp16_vs_fp32_max_abs_score_diff"] = d
        print(f"  fp16 vs fp32 max |d score| {d:.2e} (score std {float(scores['fp32'].std()):.3f})")
    rows = results[start:]
    del results[start:]
    out = {"model": what, "parameters": nparams, "load_s": load_s, "model_input": cfg,
           "results": rows, "checks": checks}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-L-14", help="open_clip architecture, local dir, or 'tiny'")
    ap.add_argument("--pretrained", default=None, help="tag / file (default: random weights)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=512, help="input images are size x size")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--pil-repeats", type=int, default=None, help="repeats for the (slow) PIL rows")
    ap.add_argument("--dtypes", default="fp16,fp32")
    ap.add_argument("--no-pil", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--verifiers", default="clip,image_reward", help="which row sets: clip, image_reward")
    ap.add_argument("--ir-size", default="auto", choices=["auto", "tiny", "large"],
                    help="ImageReward architecture for random weights (auto: tiny iff --model tiny)")
    ap.add_argument("--ir-model-dir", default=None, help="folder with ImageReward.pt, med_config.json, vocab.txt")
    ap.add_argument("--out", default=str(REPO / "docs" / "bench_verifiers.json"))
    args = ap.parse_args()

    import open_clip

    from tts_diffusion.verifiers.clip import CLIPVerifier
    from tts_diffusion.verifiers.preprocess import clip_preprocess

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = args.model
    if model == "tiny":
        from open_clip import factory

        factory._MODEL_CONFIGS["tts-bench-tiny"] = json.loads(json.dumps(TINY_CFG))
        model = "tts-bench-tiny"
    which = {w.strip() for w in args.verifiers.split(",") if w.strip()}
    if not which or which - {"clip", "image_reward"}:
        ap.error(f"--verifiers takes clip and/or image_reward, got {args.verifiers!r}")

    g = torch.Generator(device="cpu").manual_seed(0)
    images = torch.rand(args.batch, 3, args.size, args.size, generator=g).to(device)
    B = args.batch

    results: list[dict] = []

    def row(name, dtype, prep, fn, repeats):
        r = timeit(fn, device, args.warmup if prep != "pil" else 1, repeats)
        r.update(name=name, dtype=dtype, preprocess=prep, images_per_s=B / r["median_s"])
        results.append(r)
        print(f"  {name:<22} {dtype:<5} {prep:<6} {r['images_per_s']:>10.1f} img/s"
              f"   median {1e3 * r['median_s']:8.2f} ms", flush=True)

    cfg: dict = {}
    load_s = None
    checks: dict = {}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    if "clip" in which:
        t0 = time.perf_counter()
        v = CLIPVerifier(model=model, pretrained=args.pretrained, device=device, dtype="fp32", chunk_size=args.batch)
        load_s = time.perf_counter() - t0
        cfg = v.preprocess_cfg
        pil_tf = open_clip.image_transform(
            cfg["image_size"], False, mean=cfg["mean"], std=cfg["std"],
            resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"], fill_color=cfg["fill_color"],
        )

        print(f"device={device} ({device_name}) "
              f"model={args.model} batch={B} input={args.size}x{args.size} load={load_s:.1f}s", flush=True)
        row("preprocess only", "fp32", "torch", lambda: clip_preprocess(images, **cfg), args.repeats)

        def encode_only(v):
            x = v.preprocess(images)
            v(images, PROMPT)  # fill the text cache
            return lambda: v.model.encode_image(x)

        checks, _ = dtype_rows(args, device, v, images, row, encode_only, lambda: pil_path(v, pil_tf, images, PROMPT))
        del v
        if device.type == "cuda":
            torch.cuda.empty_cache()

    ir_out = None
    if "image_reward" in which:
        print(f"device={device} ({device_name}) ImageReward batch={B} input={args.size}x{args.size}", flush=True)
        ir_out = bench_image_reward(args, device, images, row, results)

    out = {
        "model": args.model if "clip" in which else None,
        "pretrained": args.pretrained,
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "batch": B,
        "input_size": args.size,
        "model_input": cfg,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32 if device.type == "cuda" else None,
        "sdpa_flash_enabled": torch.backends.cuda.flash_sdp_enabled() if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "results": results,
        "checks": checks,
    }
    if ir_out is not None:
        out["image_reward"] = ir_out
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
