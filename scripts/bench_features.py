"""diffusers' features under search (issue 32, items 4 and 5): per model and feature, the
time of a best-of-N search, its peak GPU memory against a 24 GB card, and what the feature
does to the picks, in one run with the no-feature baseline first (same seeds, same weights).

Models (random weights at real sizes; nothing is downloaded):
  flux  FLUX.1-dev size: 19 two-stream + 38 one-stream blocks at width 3072 (~12B parameters,
        24 GB in bf16), guidance-distilled, 1024x1024, 28 steps, guidance 3.5, bf16
  sd3   SD3-medium size (scripts/bench_tgate.py), 1024x1024, 28 steps, CFG 7, fp16
  sdxl  SDXL-base size (scripts/bench_tgate.py), 1024x1024, 25 steps, CFG 5, fp16
Text encoders are cut to 2 layers (encoded once per search, off the denoising path).

Features (`--features`, each on a freshly built pipeline with the same weights):
  none               everything on the GPU (the baseline)
  model_offload      pipe.enable_model_cpu_offload()
  group_offload      denoiser.enable_group_offload(block_level, 1 block per group, CUDA stream),
                     the other components on the GPU
  layerwise_fp8      denoiser.enable_layerwise_casting(float8_e4m3fn storage, model dtype compute)
  first_block_cache  denoiser.enable_cache(FirstBlockCacheConfig(threshold=0.08))   FLUX only
  taylorseer         denoiser.enable_cache(TaylorSeerCacheConfig(cache_interval=5))  FLUX only
  lora               pipe.load_lora_weights(a random rank-16 LoRA on the attention projections)
  lora_fused         the same, then pipe.fuse_lora()
  compile_blocks     denoiser.compile_repeated_blocks() (SDXL's UNet, FLUX; not SD3 in diffusers 0.42)

Per feature: the first search (setup costs such as compiling land here), the median of
`--repeats` more, the peak GPU memory of the searches (torch.cuda.max_memory_allocated after a
reset; the CPU smoke reports the process's peak RSS instead), whether it fits `--budget-gb`,
the winner's seed and whether it is the baseline's, the largest |score - baseline score| over
the candidates and the mean |image - baseline image| (pixels in [0, 1]). The verifier is the
mean brightness (testing/helpers.py): exact and free, so time and memory are the model's.

    python scripts/bench_features.py --out docs/bench_features_h100.json               # one H100
    python scripts/bench_features.py --models flux --features none,group_offload,layerwise_fp8
    python scripts/bench_features.py --tiny --device cpu --out docs/bench_features_tiny_cpu.json  # smoke
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/bench_tgate.py's builders

PROMPT = "a photograph of an astronaut riding a horse"
FEATURES = ("none", "model_offload", "group_offload", "layerwise_fp8", "first_block_cache", "taylorseer", "lora",
            "lora_fused", "compile_blocks")
SIZE = {"flux": 1024, "sd3": 1024, "sdxl": 1024}
STEPS = {"flux": 28, "sd3": 28, "sdxl": 25}
GUIDANCE = {"flux": 3.5, "sd3": 7.0, "sdxl": 5.0}
DTYPE = {"flux": torch.bfloat16, "sd3": torch.float16, "sdxl": torch.float16}
TINY = {"flux": "flux", "sd3": "sd3", "sdxl": "sdxl"}
GIB = 1024 ** 3


def dtype_of(model: str, args) -> torch.dtype:
    return getattr(torch, args.dtype) if args.dtype else DTYPE[model]


def denoiser(pipe):
    return pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.unet


# ----------------------------------------------------------------------------- models
def _random_(module: torch.nn.Module, seed: int = 0) -> None:
    """Fill a module built on the meta device: N(0, 0.02) weights, zero biases, unit norms.
    The numbers are drawn on the GPU where there is one (12B of them take minutes on the CPU),
    so every build of a run, on the GPU or offloaded to the CPU, gets the same weights."""
    where = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator(device=where).manual_seed(seed)
    for name, p in module.named_parameters():
        if p.dim() == 1 and ("norm" in name or name.endswith("scale")):
            p.data.fill_(1.0)
        elif p.dim() == 1:
            p.data.zero_()
        else:
            p.data.copy_(torch.randn(p.shape, generator=g, device=where).mul_(0.02))


def build_flux_dev(home: str, dtype: torch.dtype, blocks: tuple[int, int] = (19, 38)):
    """FLUX.1-dev-sized pipeline with random weights on `home` (the CPU when offloading);
    `blocks`: two-stream and one-stream blocks (FLUX.1-dev: 19 and 38)."""
    from bench_tgate import _clip_te, _mmdit_vae, _t5_te
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    from tts_diffusion.testing.tiny_pipelines import clip_tokenizer, t5_tokenizer

    with torch.device("meta"):
        tr = FluxTransformer2DModel(  # black-forest-labs/FLUX.1-dev transformer/config.json
            patch_size=1, in_channels=64, num_layers=blocks[0], num_single_layers=blocks[1], attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
            axes_dims_rope=(16, 56, 56))
    tr = tr.to_empty(device=home).to(dtype)
    _random_(tr)
    tok_t5 = t5_tokenizer(model_max_length=512)
    torch.manual_seed(0)
    parts = dict(vae=_mmdit_vae(0.3611, 0.1159), text_encoder=_clip_te(768, 2, 12), text_encoder_2=_t5_te(tok_t5))
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=sched, tokenizer=clip_tokenizer(num_merges=48894), tokenizer_2=tok_t5,
                        transformer=tr, **{k: v.to(home, dtype) for k, v in parts.items()})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build(model: str, feature: str, args):
    """A fresh pipeline (same weights every time) placed for `feature`: on the CPU when the
    feature offloads, else on the device."""
    offload = feature in ("model_offload", "group_offload")
    home = "cpu" if offload else args.device
    if args.tiny:
        from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

        pipe = make_tiny_pipeline(TINY[model]).to(home)
    elif model == "flux":
        pipe = build_flux_dev(home, dtype_of(model, args), tuple(int(b) for b in args.flux_blocks.split(",")))
    else:
        from bench_tgate import build as build_other

        pipe = build_other(model, "cpu" if offload else args.device, dtype_of(model, args), False)
        pipe = pipe.to(home)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def apply_feature(pipe, model: str, feature: str, args, lora_dir: str) -> str | None:
    """Turn `feature` on; returns why it does not apply to this model, else None."""
    den = denoiser(pipe)
    cpu = torch.device(args.device).type == "cpu"
    if feature == "model_offload":
        pipe.enable_model_cpu_offload(device=args.device if not cpu else "cpu")
    elif feature == "group_offload":
        onload = torch.device(args.device)
        den.enable_group_offload(onload_device=onload, offload_device=torch.device("cpu"), offload_type="block_level",
                                 num_blocks_per_group=1, use_stream=not cpu)
        for name, comp in pipe.components.items():  # the rest: moved to the device while it runs
            if isinstance(comp, torch.nn.Module) and comp is not den:
                comp.to(onload)
    elif feature == "layerwise_fp8":
        compute = torch.float32 if args.tiny else dtype_of(model, args)
        den.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
    elif feature in ("first_block_cache", "taylorseer"):
        if not hasattr(den, "enable_cache"):
            return f"{type(den).__name__} has no enable_cache in diffusers 0.42"
        from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

        den.enable_cache(FirstBlockCacheConfig(threshold=0.08) if feature == "first_block_cache"
                         else TaylorSeerCacheConfig(cache_interval=5, disable_cache_before_step=3))
    elif feature in ("lora", "lora_fused"):
        if not hasattr(pipe, "load_lora_weights"):
            return f"{type(pipe).__name__} has no LoRA loader"
        pipe.load_lora_weights(lora_dir)
        if feature == "lora_fused":
            pipe.fuse_lora()
    elif feature == "compile_blocks":
        if not getattr(den, "_repeated_blocks", None):
            return f"{type(den).__name__} has no _repeated_blocks in diffusers 0.42"
        den.compile_repeated_blocks(**({"backend": "aot_eager"} if cpu else {}))
    return None


def make_lora(model: str, args, folder: str) -> None:
    """A random rank-16 LoRA (rank 4 for the tiny models) on the denoiser's attention projections."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    if args.tiny:
        from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

        pipe = make_tiny_pipeline(TINY[model])
    else:
        pipe = build(model, "none", args)
    den = denoiser(pipe)
    torch.manual_seed(1)
    den.add_adapter(LoraConfig(r=4 if args.tiny else 16, lora_alpha=16, init_lora_weights=False,
                               target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    key = "transformer_lora_layers" if getattr(pipe, "transformer", None) is not None else "unet_lora_layers"
    type(pipe).save_lora_weights(folder, **{key: get_peft_model_state_dict(den)})
    del pipe, den
    gc.collect()


# ----------------------------------------------------------------------------- measuring
def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB, process peak RSS


def run_feature(model: str, feature: str, args, lora_dir: str) -> dict:
    from tts_diffusion import TTSPipeline
    from tts_diffusion.testing.helpers import BrightnessVerifier

    device = torch.device(args.device)
    pipe = build(model, feature, args)
    skipped = apply_feature(pipe, model, feature, args, lora_dir)
    if skipped:
        return {"feature": feature, "skipped": skipped}
    tts = TTSPipeline(pipe, verifier=BrightnessVerifier())
    size = args.size or (32 if args.tiny else SIZE[model])
    steps = args.steps or (4 if args.tiny else STEPS[model])
    kw = dict(budget=args.n * steps, num_inference_steps=steps, guidance_scale=GUIDANCE[model], height=size,
              width=size, output_type="pt", progress=False, max_batch=args.max_batch, seed=0)
    if args.tiny and model in ("sd3", "flux"):
        kw["process_options"] = {"max_sequence_length": 32}
    peak_reset(device)
    t = time.perf_counter()
    result = tts(PROMPT, **kw)
    first = time.perf_counter() - t
    times = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        result = tts(PROMPT, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    out = {"feature": feature, "first_s": round(first, 3),
           "median_s": round(statistics.median(times), 3) if times else None,
           "peak_gb": round(peak_gb(device), 2), "peak_kind": "cuda max_memory_allocated (all searches)"
           if device.type == "cuda" else "process peak RSS (CPU smoke)",
           "candidates": [{"seed": c.seed, "score": c.score} for c in result.candidates],
           "winner_seed": result.best.seed, "settings": {k: v for k, v in result.settings.items()
                                                        if k in ("diffusers_cache", "dtype", "device")}}
    out["images"] = result.images.float().cpu()
    out["fits_budget"] = out["peak_gb"] <= args.budget_gb if device.type == "cuda" else None
    del tts, pipe, result
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def compare(row: dict, base: dict) -> None:
    """The picks against the baseline's: same winner, score and image distances per candidate."""
    if "skipped" in row or "skipped" in base:
        return
    a = {c["seed"]: c["score"] for c in base["candidates"]}
    diffs = [abs(c["score"] - a[c["seed"]]) for c in row["candidates"] if c["seed"] in a]
    row["same_winner"] = row["winner_seed"] == base["winner_seed"]
    row["max_score_diff"] = max(diffs) if diffs else None
    row["mean_image_diff"] = float((row["images"] - base["images"]).abs().mean()) \
        if row["images"].shape == base["images"].shape else None  # best first: the kept candidates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="flux,sd3,sdxl")
    ap.add_argument("--features", default=",".join(FEATURES))
    ap.add_argument("--n", type=int, default=4, help="best-of-N candidates")
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None, help="default: the model's (tiny: 4)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default=None, help="e.g. float32 for a CPU check (default: the model's)")
    ap.add_argument("--size", type=int, default=None, help="pixels (default: the model's; tiny: 32)")
    ap.add_argument("--flux-blocks", default="19,38", help="FLUX two-stream,one-stream blocks (FLUX.1-dev: 19,38)")
    ap.add_argument("--budget-gb", type=float, default=24.0, help="the card the peak memory must fit")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="the tiny test pipelines (CPU smoke)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if torch.device(args.device).type == "cpu":
        torch.set_num_threads(1)
    features = [f for f in args.features.split(",") if f]
    unknown = set(features) - set(FEATURES)
    if unknown:
        ap.error(f"unknown features {sorted(unknown)}; choose from {', '.join(FEATURES)}")
    if features[0] != "none":
        features = ["none"] + [f for f in features if f != "none"]  # the baseline first, same run
    report = {"device": torch.cuda.get_device_name(0) if torch.device(args.device).type == "cuda" else "cpu",
              "torch": torch.__version__, "args": vars(args), "models": {}}
    for model in args.models.split(","):
        rows = []
        with tempfile.TemporaryDirectory() as lora_dir:
            if any(f.startswith("lora") for f in features):
                make_lora(model, args, lora_dir)
            for feature in features:
                try:
                    row = run_feature(model, feature, args, lora_dir)
                except Exception as e:  # noqa: BLE001 - one failing feature does not end the run
                    row = {"feature": feature, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
                rows.append(row)
                if rows[0].get("images") is not None and row is not rows[0] and "error" not in row:
                    compare(row, rows[0])
                print(model, {k: v for k, v in row.items() if k not in ("candidates", "images")}, flush=True)
        for row in rows:
            row.pop("images", None)
        report["models"][model] = rows
    print(f"\n{'model':6} {'feature':18} {'first s':>8} {'median s':>9} {'peak GB':>8} {'winner':>7} {'max dscore':>11}")
    for model, rows in report["models"].items():
        for r in rows:
            if "skipped" in r or "error" in r:
                print(f"{model:6} {r['feature']:18} {r.get('skipped') or r.get('error')}")
                continue
            same = "base" if r["feature"] == "none" else ("same" if r.get("same_winner") else "other")
            d = r.get("max_score_diff")
            print(f"{model:6} {r['feature']:18} {r['first_s']:8.2f} {r['median_s'] or 0:9.2f} {r['peak_gb']:8.2f}"
                  f" {same:>7} {'' if d is None else f'{d:.2e}':>11}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
