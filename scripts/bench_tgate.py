"""T-GATE inside batched search: wall time with and without, and what it costs in accuracy.

Two parts (issue 11, "Measure"):

speed   best-of-N with the toolkit, T-GATE (gate 10, sp 5, fi 1, warm-up 2; PixArt: gate 15,
        sp 3, the reference's defaults) against the toolkit without, same run, same seeds,
        fp16, random weights at real sizes (no downloads):
          sd15    SD-1.5 UNet/VAE/CLIP-L text encoder, 512x512, 25 DDIM steps, CFG 7.5, N=32
          sdxl    SDXL-base UNet/VAE, 1024x1024, 25 steps, CFG 5 (N=--n-large)
          pixart  PixArt-Sigma XL/2 transformer/VAE, 1024x1024, 25 steps, CFG 4.5 (N=--n-large)
          sd3     SD3-medium MM-DiT (24 joint blocks, 24 heads x 64, joint dim 4096, pooled
                  2048, patch 2, 16 latent channels) and VAE, 1024x1024, 28 steps, CFG 7,
                  gate 11 (40% of the steps, as 10 of 25); 77 + 256 = 333 text tokens
                  (N=--n-large)
          flux    FLUX.1-dev-SHAPED, NOT FLUX-sized: 4 two-stream + 8 one-stream blocks at
                  width 3072 (24 heads x 128; FLUX.1-dev has 19 + 38), guidance-distilled
                  (no CFG), 512x512 (1024 image + 512 text tokens), 28 steps, guidance 3.5,
                  gate 11 (N=--n-large)
        verifier: CLIP ViT-L/14 architecture, random weights. SDXL's, PixArt's, SD3's and
        FLUX's text encoders are cut to 2 layers (the prompt is encoded once per search,
        off the denoising path; a full random T5-XXL would take minutes to initialise).
        MM-DiT models are gated through their text stream (features/tgate_mmdit.py). Each model
        also reports `fidelity`: per seed, the mean |gated - ungated| of the final images
        (pixels in [0, 1]) against the mean |ungated seed k - ungated seed k+1| as a scale.
shapes  the embedded default model on the eval split (600 prompts; --prompts to take fewer):
        oracle accuracy of best-of-1 and best-of-16 (guided by --guide, judged by the
        oracle), 20 steps, ungated and with gates {6, 10, 14}, plus seconds per search.

    python scripts/bench_tgate.py --out docs/bench_tgate.json                       # H100, all parts
    python scripts/bench_tgate.py --parts shapes --device cpu --prompts 60 --out /tmp/t.json
    python scripts/bench_tgate.py --device cpu --tiny --prompts 6 --out /tmp/t.json # smoke
    python scripts/bench_tgate.py --parts speed --models sd3,flux --out docs/bench_tgate_mmdit.json  # H100
    python scripts/bench_tgate.py --parts speed --models sd3,flux --smoke --out /tmp/m.json        # CPU smoke

Prints tables and writes JSON to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tts_diffusion.bench.timing import timed  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse"
#: reference defaults (REFERENCES 1.3): SD / SDXL gate 10 of 25 (sp 5), PixArt gate 15 of 25 (sp 3)
#: MM-DiT: gate at 40% of 28 steps (sp / fi / warm-up do not apply there)
GATES = {"sd15": dict(gate_step=10, sp_interval=5), "sdxl": dict(gate_step=10, sp_interval=5),
         "pixart": dict(gate_step=15, sp_interval=3), "sd3": dict(gate_step=11), "flux": dict(gate_step=11)}
GUIDANCE = {"sd15": 7.5, "sdxl": 5.0, "pixart": 4.5, "sd3": 7.0, "flux": 3.5}
SIZE = {"sd15": 512, "sdxl": 1024, "pixart": 1024, "sd3": 1024, "flux": 512}
STEPS = {"sd15": 25, "sdxl": 25, "pixart": 25, "sd3": 28, "flux": 28}
LABELS = {"sd15": "SD-1.5 size", "sdxl": "SDXL size", "pixart": "PixArt-Sigma-XL size", "sd3": "SD3-medium size",
          "flux": "FLUX.1-dev-shaped, 4 + 8 of its 19 + 38 blocks (~2.5B of 12B parameters)"}
TINY = {"sd15": "sd15", "sdxl": "sdxl", "pixart": "pixart_sigma", "sd3": "sd3", "flux": "flux"}


# ----------------------------------------------------------------------------- models
def _clip_te(hidden: int, layers: int, heads: int, proj: int | None = None, vocab: int = 49408):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, max_position_embeddings=77, projection_dim=proj or hidden,
                         hidden_act="gelu")
    return CLIPTextModelWithProjection(cfg) if proj else CLIPTextModel(cfg)


def _sd_vae(sample_size: int, scaling: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, sample_size=sample_size, scaling_factor=scaling)


def _ddim():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def build(model: str, device, dtype, tiny: bool):
    """A pipeline of `model`'s architecture with random weights (tiny: the test pipelines)."""
    torch.manual_seed(0)
    if tiny:
        from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

        pipe = make_tiny_pipeline(TINY[model])
    elif model == "sd15":
        from tts_diffusion.testing.sd15 import build_sd15

        return build_sd15(device, dtype, False)
    elif model == "sdxl":
        from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

        from tts_diffusion.testing.tiny_pipelines import clip_tokenizer

        unet = UNet2DConditionModel(  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
        tok = clip_tokenizer(num_merges=48894)
        pipe = StableDiffusionXLPipeline(
            vae=_sd_vae(1024, 0.13025), text_encoder=_clip_te(768, 2, 12), text_encoder_2=_clip_te(1280, 2, 20, 1280),
            tokenizer=tok, tokenizer_2=clip_tokenizer(num_merges=48894, pad_token="!"), unet=unet, scheduler=_ddim(),
            force_zeros_for_empty_prompt=True, add_watermarker=False)
    elif model in ("sd3", "flux"):
        pipe = _build_mmdit(model, device)
    else:
        from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel
        from transformers import T5Config, T5EncoderModel

        from tts_diffusion.testing.tiny_pipelines import t5_tokenizer

        tr = PixArtTransformer2DModel(  # PixArt-alpha/PixArt-Sigma-XL-2-1024-MS transformer/config.json
            sample_size=128, num_layers=28, attention_head_dim=72, num_attention_heads=16, in_channels=4,
            out_channels=8, patch_size=2, cross_attention_dim=1152, caption_channels=4096, norm_type="ada_norm_single",
            norm_elementwise_affine=False, norm_eps=1e-6, use_additional_conditions=False, interpolation_scale=2,
            attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000)
        tok = t5_tokenizer(model_max_length=300)
        te = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=4096, d_ff=10240, num_layers=2, num_heads=64,
                                     d_kv=64, feed_forward_proj="gated-gelu", is_encoder_decoder=False))
        pipe = PixArtSigmaPipeline(tokenizer=tok, text_encoder=te, vae=_sd_vae(1024, 0.13025), transformer=tr,
                                   scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)


def _t5_te(tok, layers: int = 2):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tok), d_model=4096, d_ff=10240, num_layers=layers, num_heads=64,
                                   d_kv=64, feed_forward_proj="gated-gelu", is_encoder_decoder=False))


def _mmdit_vae(scaling: float, shift: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=scaling, shift_factor=shift,
                         use_quant_conv=False, use_post_quant_conv=False)


def _build_mmdit(model: str, device):
    """SD3-medium-sized or FLUX-shaped pipeline; the modules are initialised on `device`
    (random init of ~2.5B parameters on the CPU takes minutes), the scheduler on the CPU."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from tts_diffusion.testing.tiny_pipelines import clip_tokenizer, t5_tokenizer

    tok_t5 = t5_tokenizer(model_max_length=512)
    tok, tok_2 = clip_tokenizer(num_merges=48894), clip_tokenizer(num_merges=48894, pad_token="!")
    if model == "sd3":
        from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

        with torch.device(device):
            tr = SD3Transformer2DModel(  # stabilityai/stable-diffusion-3-medium-diffusers transformer/config.json
                sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
                num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                pooled_projection_dim=2048, pos_embed_max_size=192)
            parts = dict(transformer=tr, vae=_mmdit_vae(1.5305, 0.0609), text_encoder=_clip_te(768, 2, 12, 768),
                         text_encoder_2=_clip_te(1280, 2, 20, 1280), text_encoder_3=_t5_te(tok_t5))
        return StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), tokenizer=tok,
                                        tokenizer_2=tok_2, tokenizer_3=tok_t5, **parts)
    from diffusers import FluxPipeline, FluxTransformer2DModel

    with torch.device(device):
        tr = FluxTransformer2DModel(  # black-forest-labs/FLUX.1-dev at width 3072, with 4 + 8 of its 19 + 38 blocks
            patch_size=1, in_channels=64, num_layers=4, num_single_layers=8, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
            axes_dims_rope=(16, 56, 56))
        parts = dict(transformer=tr, vae=_mmdit_vae(0.3611, 0.1159), text_encoder=_clip_te(768, 2, 12),
                     text_encoder_2=_t5_te(tok_t5))
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    return FluxPipeline(scheduler=sched, tokenizer=tok, tokenizer_2=tok_t5, **parts)


# ----------------------------------------------------------------------------- speed
def fidelity(plain, gated) -> dict:
    """How far T-GATE moves each final image: mean |gated - ungated| per seed (pixels in
    [0, 1]), against the mean |ungated seed k - ungated seed k+1| as the scale of a change
    of noise; and whether the search picks the same winner."""
    a = {c.seed: c.image.float() / 255 for c in plain.candidates if c.image is not None}
    b = {c.seed: c.image.float() / 255 for c in gated.candidates if c.image is not None}
    seeds = [s for s in a if s in b]
    diff = [float((a[s] - b[s]).abs().mean()) for s in seeds]
    across = [float((a[s] - a[t]).abs().mean()) for s, t in zip(seeds, seeds[1:])]
    mean = lambda v: sum(v) / len(v) if v else None  # noqa: E731
    return {"images": len(seeds), "mean_abs_diff": mean(diff), "max_abs_diff_per_image": max(diff, default=None),
            "mean_abs_diff_between_seeds": mean(across),
            "same_best_seed": max(plain.candidates, key=lambda c: c.score).seed
            == max(gated.candidates, key=lambda c: c.score).seed}
def speed(model: str, args, device, dtype) -> dict:
    from tts_diffusion import TGate, TTSPipeline
    from tts_diffusion.verifiers import CLIPVerifier

    pipe = build(model, device, dtype, args.tiny)
    verifier = CLIPVerifier(model="RN50" if args.tiny else "ViT-L-14", pretrained=None, device=device)
    tts = TTSPipeline(pipe)
    n = args.n if model == "sd15" else args.n_large
    steps, size = (args.steps or 4, 32) if args.tiny else (args.steps or STEPS[model], SIZE[model])
    tg = TGate(**({"gate_step": 2, "sp_interval": 1} if args.tiny and not args.steps else GATES[model]))
    max_batch = args.max_batch if model == "sd15" else args.max_batch_large
    kw = dict(verifier=verifier, budget=n * steps, seed=0, num_inference_steps=steps, guidance_scale=GUIDANCE[model],
              height=size, width=size, max_batch=max_batch, progress=False)
    if model != "sd15":  # 1024x1024 decodes run the VAE in float32 (force_upcast): two at a time
        kw["process_options"] = {"decode_batch": 2, **({"max_sequence_length": 300} if model == "pixart" else {})}
    if args.tiny and model in ("sd3", "flux"):
        from tts_diffusion.testing.tiny_pipelines import T5_MAX_SEQUENCE_LENGTH

        kw["process_options"] = {"max_sequence_length": T5_MAX_SEQUENCE_LENGTH}
    out = {"n": n, "steps": steps, "size": size, "max_batch": max_batch, "tgate": tg.describe()}
    results = {}
    for name, option in (("plain", None), ("tgate", tg)):
        tts(PROMPT, tgate=option, **kw)  # warm-up
        t, all_t, res = timed(lambda o=option: tts(PROMPT, tgate=o, **kw), device, args.repeats)
        results[name] = res
        out[name] = {"median_s": t, "seconds": all_t, "model_rows": res.model_rows, "nfe": res.nfe,
                     "phases": res.timings, "best_score": res.best_score}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out["speedup"] = out["plain"]["median_s"] / out["tgate"]["median_s"]
    out["model_rows_ratio"] = out["plain"]["model_rows"] / out["tgate"]["model_rows"]
    out["fidelity"] = fidelity(results["plain"], results["tgate"])
    out["label"] = LABELS[model]
    fid = out["fidelity"]
    print(f"{model:<7} N={n:<3} {size}x{size} {steps} steps  plain {out['plain']['median_s']:8.3f} s"
          f"  tgate {out['tgate']['median_s']:8.3f} s  speed-up {out['speedup']:.2f}x"
          f"  model rows {out['plain']['model_rows']} -> {out['tgate']['model_rows']}"
          f"  |gated - ungated| {fid['mean_abs_diff']:.4f} (seed to seed {fid['mean_abs_diff_between_seeds']:.4f})",
          flush=True)
    del pipe, tts
    return out


# ----------------------------------------------------------------------------- shapes
def shapes(args, device) -> dict:
    from tts_diffusion import TTSPipeline
    from tts_diffusion.bench import eval_prompts, format_table, per_method, run_cell, summarize
    from tts_diffusion.request import SearchRequest
    from tts_diffusion.verifiers import load_verifier

    tts = TTSPipeline.from_pretrained(device=device)
    tts.set_progress_bar_config(disable=True)
    oracle = load_verifier("oracle").to(device)
    guide = oracle if args.guide == "oracle" else tts.get_verifier("clip")
    steps = 20
    prompts = list(enumerate(eval_prompts(args.prompts)))
    budgets = [1, args.best_of]
    gates = [None] + [g for g in args.gates if g < steps]
    methods, records = [], []
    for g in gates:
        tgate = None if g is None else {"gate_step": g, "sp_interval": args.sp_interval}
        name = "ungated" if g is None else f"gate{g}"
        methods.append(name)
        for k, p in prompts:
            request = SearchRequest(p["prompt"], searcher="best_of_n", verifier=guide, num_inference_steps=steps,
                                    max_batch=args.shapes_max_batch, tgate=tgate)
            recs = run_cell(tts, request, oracle, k, p, args.seed, budgets, steps,
                            guide_is_judge=args.guide == "oracle")
            for r in recs:
                r["method"] = name
            records.extend(recs)
    print(f"\nshapes model, {len(prompts)} eval prompts, {steps} steps, guide {args.guide}, judged by the oracle")
    summary = summarize(records, methods, budgets, steps)
    print(format_table(summary))
    agg = {"accuracy": per_method(summary), "per_category": per_method(summary, "per_category"),
           "seconds_per_search": per_method(summary, "seconds"), "mean_nfe": per_method(summary, "nfe")}
    secs = agg["seconds_per_search"]
    for m in methods[1:]:
        agg.setdefault("speedup", {})[m] = secs["ungated"][args.best_of] / secs[m][args.best_of]
        print(f"{m:<10} speed-up over ungated (best-of-{args.best_of} search): {agg['speedup'][m]:.2f}x")
    ok = [m for m in methods[1:] if all(agg["accuracy"]["ungated"][b] - agg["accuracy"][m][b] <= 0.02 for b in budgets)]
    agg["within_2_points"] = ok
    agg["suggested_default_gate"] = min(ok, key=lambda m: int(m[4:])) if ok else None
    print(f"gates within 2 points of ungated at every budget: {ok or 'none'};"
          f" suggested default (earliest such gate): {agg['suggested_default_gate']}")
    return {"prompts": len(prompts), "steps": steps, "sp_interval": args.sp_interval, "budgets": budgets, "guide": args.guide, **agg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--parts", default="speed,shapes", help="comma list of: speed, shapes")
    ap.add_argument("--models", default="sd15,sdxl,pixart",
                    help="speed part: comma list of sd15, sdxl, pixart, sd3, flux (sd3 / flux: MM-DiT, not in the default)")
    ap.add_argument("--n", type=int, default=32, help="best-of-N for sd15")
    ap.add_argument("--n-large", type=int, default=8, help="best-of-N for sdxl, pixart, sd3 and flux")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: 25; sd3 and flux 28)")
    ap.add_argument("--max-batch", type=int, default=32, help="rows per denoiser call, sd15")
    ap.add_argument("--max-batch-large", type=int, default=8, help="rows per denoiser call, sdxl / pixart / sd3 / flux")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", "--smoke", action="store_true",
                    help="speed part with the tiny test pipelines, 32 px, 4 steps, gate 2 (CPU smoke);"
                         " with --steps: that many steps and the model's real gate")
    ap.add_argument("--prompts", type=int, default=600, help="shapes: eval prompts (category-balanced subset)")
    ap.add_argument("--gates", type=lambda s: [int(v) for v in s.split(",")], default=[6, 10, 14])
    ap.add_argument("--best-of", type=int, default=16)
    ap.add_argument("--sp-interval", type=int, default=5, help="shapes: T-GATE sp_interval (1: no self-attention reuse)")
    ap.add_argument("--guide", choices=["clip", "oracle"], default="clip",
                    help="shapes: verifier the search maximises (the domain CLIP, or the oracle itself)")
    ap.add_argument("--shapes-max-batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"speed", "shapes"}:
        ap.error(f"--parts takes speed and/or shapes, got {args.parts!r}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not set(models) <= set(SIZE):
        ap.error(f"--models takes {', '.join(SIZE)}, got {args.models!r}")
    if args.prompts < 1 or args.best_of < 1 or args.sp_interval < 1 or any(g < 1 for g in args.gates):
        ap.error("--prompts, --best-of, --sp-interval and --gates must be positive")

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = {"device": dev_name, "dtype": str(dtype), "torch": torch.__version__, "argv": sys.argv[1:]}
    if "speed" in parts:
        print(f"speed: toolkit best-of-N with and without T-GATE, {str(dtype)[6:]}, {dev_name}")
        out["speed"] = {m: speed(m, args, device, dtype) for m in models}
    if "shapes" in parts:
        out["shapes"] = shapes(args, device)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
