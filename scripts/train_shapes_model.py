#!/usr/bin/env python
"""Train the embedded default text-to-image model of the shapes world, in one seeded command.

    python scripts/train_shapes_model.py --out tts_diffusion/assets/shapes-model          # ~9 min on one H100
    python scripts/train_shapes_model.py --out /tmp/m --smoke --device cpu   # a minute on a CPU

Stages (wall-clock bounded by --budget; the transformer stage takes what the others leave):

1. data: `sample_scenes` in worker processes, rendered on the device by `render` into a pool of
   uint8 images (one prompt each; GenEval's six categories, balanced).
2. VAE: `AutoencoderKL` (f = 4) trained on the pool (MSE + L1 + a tiny KL); the latent mean is
   folded into its quant convs and ``scaling_factor`` = 1 / latent std.
3. transformer + text encoder, jointly, on the pool's latents: rectified flow,
   ``x_t = (1 - t) x0 + t eps``, loss ``|v_theta(x_t, t, c) - (eps - x0)|^2`` (Esser et al.
   2024, eq. 3 and 6), t ~ logit-normal(0, 1) (their eq. 19), the prompt replaced by the empty
   prompt with probability --p-uncond (classifier-free guidance, Ho & Salimans 2022), bf16
   autocast, AdamW with warmup and cosine decay over the wall-clock budget, EMA of the weights.
4. save: the EMA weights as a diffusers ``PixArtSigmaPipeline`` (float32 safetensors) in --out.
5. evaluate: the flow shift is picked on validation prompts drawn from the grammar (not the
   eval split); then the oracle's accuracy per category on the eval split
   (tts_diffusion/assets/prompts/shapes_eval.json), one sample per prompt, fixed seed, default steps and
   guidance, plus a guidance sweep and generation timings. Everything goes to
   <out>/training_report.json and <out>/MODEL_CARD.md.

CPU timing of a saved model (run on the target machine; updates the report and the card):

    python scripts/train_shapes_model.py --benchmark tts_diffusion/assets/shapes-model --device cpu --threads 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent

from tts_diffusion.paths import default_model_path, eval_prompts_path  # noqa: E402
from tts_diffusion.shapes import model as M  # noqa: E402
from tts_diffusion.shapes.grammar import CATEGORIES, sample_scenes  # noqa: E402
from tts_diffusion.shapes.training import (  # noqa: E402
    autocast, device_name, generate, load_eval_prompts, lr_at, render_pool, scene_pool,
)

EVAL_PROMPTS = eval_prompts_path()
T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


# ----------------------------------------------------------------------------- data
def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (the VAE's range)."""
    return images_u8.float().div_(127.5).sub_(1.0)


# ----------------------------------------------------------------------------- VAE
def train_vae(vae, images_u8: torch.Tensor, args, device: torch.device) -> dict:
    vae.train().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    n = images_u8.shape[0] - args.holdout
    start, step, losses = time.time(), 0, []
    while True:
        frac = (time.time() - start) / args.vae_seconds
        if (args.vae_steps and step >= args.vae_steps) or (not args.vae_steps and frac >= 1.0):
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(args.vae_lr, step, 100, frac if not args.vae_steps else step / args.vae_steps)
        idx = torch.randint(0, n, (args.vae_batch,), device=device, generator=gen)
        x = to_float(images_u8[idx])
        with autocast(device):
            post = vae.encode(x).latent_dist
            z = post.sample(generator=gen)
            rec = vae.decode(z).sample
        rec = rec.float()
        mse = (rec - x).pow(2).mean()
        l1 = (rec - x).abs().mean()
        kl = post.kl().mean() / x[0].numel()
        loss = mse + 0.5 * l1 + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        losses.append(mse.item() if step % 50 == 0 else None)
        if step % 500 == 0:
            log(f"vae step {step} mse {mse.item():.5f} l1 {l1.item():.4f} kl {kl.item():.3f}")
        step += 1
    vae.eval()
    # held-out reconstruction with the posterior mean (what the transformer is trained on)
    with torch.no_grad():
        x = to_float(images_u8[n:])
        rec = torch.cat([vae.decode(vae.encode(c).latent_dist.mode()).sample.float() for c in x.split(256)])
        mse = (rec.clamp(-1, 1) - x).pow(2).mean().item()
    psnr = 10 * math.log10(4.0 / max(mse, 1e-12))  # range [-1, 1] -> peak-to-peak 2
    log(f"vae done: {step} steps in {time.time() - start:.0f}s, held-out PSNR {psnr:.1f} dB")
    return {"steps": step, "seconds": round(time.time() - start, 1), "heldout_psnr_db": round(psnr, 2),
            "batch": args.vae_batch}


@torch.no_grad()
def encode_pool(vae, images_u8: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Posterior means of the pool, unscaled, float32 [N, C, h, w]."""
    out = []
    for i in range(0, images_u8.shape[0], chunk):
        with autocast(images_u8.device):
            out.append(vae.encode(to_float(images_u8[i : i + chunk])).latent_dist.mode().float())
    return torch.cat(out)


# ----------------------------------------------------------------------------- flow model
class EMA:
    """Exponential moving average of parameters (decay warmed up as (1 + n) / (10 + n))."""

    def __init__(self, params, decay: float):
        self.params = [p for p in params]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.decay, self.n = decay, 0

    @torch.no_grad()
    def update(self) -> None:
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - d)

    @torch.no_grad()
    def copy_to(self) -> None:
        for p, s in zip(self.params, self.shadow):
            p.copy_(s.to(p.dtype))


def train_flow(transformer, text_encoder, latents, prompt_idx, ids, mask, empty_ids, empty_mask, args,
               device: torch.device, deadline: float) -> dict:
    """Joint rectified-flow training of the transformer and the text encoder until `deadline`
    (or --steps). `latents` are scaled [N, C, h, w]; prompt i of the pool has tokens ids[prompt_idx[i]]."""
    transformer.train().to(device)
    text_encoder.train().to(device)
    params = list(transformer.parameters()) + list(text_encoder.parameters())
    decay, no_decay = [], []
    for p in params:
        (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-8, fused=device.type == "cuda")
    ema = EMA(params, args.ema)
    gen = torch.Generator(device=device).manual_seed(args.seed + 2)
    n = latents.shape[0]
    B = args.batch
    added = {"resolution": None, "aspect_ratio": None}
    fwd_tr, fwd_te = transformer, text_encoder
    if args.compile:  # fuses the many small element-wise ops of a narrow model (~2x on an H100)
        fwd_tr, fwd_te = torch.compile(transformer), torch.compile(text_encoder)
    start, step, hist = time.time(), 0, []
    budget = max(1.0, deadline - start)
    while True:
        frac = step / args.steps if args.steps else (time.time() - start) / budget
        if frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(args.lr, step, args.warmup, frac)
        idx = torch.randint(0, n, (B,), device=device, generator=gen)
        x0 = latents[idx].float()
        pi = prompt_idx[idx]
        tok, msk = ids[pi], mask[pi]
        drop = torch.rand(B, device=device, generator=gen) < args.p_uncond
        tok = torch.where(drop[:, None], empty_ids[None], tok)
        msk = torch.where(drop[:, None], empty_mask[None], msk)
        t = torch.sigmoid(torch.randn(B, device=device, generator=gen))  # logit-normal(0, 1)
        eps = torch.randn(x0.shape, device=device, generator=gen)
        tt = t.view(-1, 1, 1, 1)
        xt = (1.0 - tt) * x0 + tt * eps
        target = eps - x0
        def flow_loss(tr, te):
            with autocast(device):
                enc = te(input_ids=tok, attention_mask=msk).last_hidden_state
                v = tr(xt, encoder_hidden_states=enc, encoder_attention_mask=msk, timestep=t * 1000.0,
                       added_cond_kwargs=added, return_dict=False)[0]
            return (v.float() - target).pow(2).mean()

        if step == 0 and fwd_tr is not transformer:
            try:
                loss = flow_loss(fwd_tr, fwd_te)
                log(f"compiled the transformer and the text encoder in {time.time() - start:.0f}s")
            except Exception as e:  # never lose a run to the compiler
                log(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); training eagerly")
                fwd_tr, fwd_te = transformer, text_encoder
                loss = flow_loss(fwd_tr, fwd_te)
        else:
            loss = flow_loss(fwd_tr, fwd_te)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update()
        if step % 100 == 0:
            hist.append((step, round(time.time() - start, 1), loss.item()))
        if step % 1000 == 0:
            rate = step * B / max(1e-6, time.time() - start)
            log(f"flow step {step} loss {loss.item():.4f} gnorm {gn.item():.2f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{rate:,.0f} samples/s")
        step += 1
    ema.copy_to()
    transformer.eval()
    text_encoder.eval()
    secs = time.time() - start
    tail = [h[2] for h in hist[-10:]]
    log(f"flow done: {step} steps x {B} in {secs:.0f}s, final loss ~{np.mean(tail):.4f}")
    return {"steps": step, "batch": B, "seconds": round(secs, 1), "samples_seen": step * B,
            "compiled": fwd_tr is not transformer,
            "final_loss": round(float(np.mean(tail)), 5), "loss_curve": hist[:: max(1, len(hist) // 50)]}


# ----------------------------------------------------------------------------- evaluation
def oracle_accuracy(images: torch.Tensor, prompts: list[str], categories: list[str]) -> dict:
    from tts_diffusion.shapes.oracle import check_batch

    res = check_batch(images.float().cpu(), prompts)
    correct = np.array([r.correct for r in res], dtype=bool)
    score = np.array([r.score for r in res], dtype=float)
    per = {}
    cats = np.array(categories)
    for c in CATEGORIES:
        m = cats == c
        if m.any():
            per[c] = round(float(correct[m].mean()), 4)
    return {"overall": round(float(correct.mean()), 4), "per_category": per,
            "mean_score": round(float(score.mean()), 4), "n": int(len(prompts)), "correct": correct.tolist()}


def set_shift(pipe, shift: float) -> None:
    pipe.scheduler = M.build_scheduler(shift)


def time_generation(pipe, device: torch.device, repeats: int = 3) -> dict:
    """Seconds for one image and for a batch of 32 at the model's defaults (best of `repeats`)."""
    kw = M.pipe_call_kwargs(pipe)
    res = {}
    for n in (1, 32):
        prompts = ["a photo of a red square and a green triangle"] * n
        best = float("inf")
        for r in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            pipe(prompts, generator=torch.Generator().manual_seed(r), output_type="pt", **kw)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r > 0:  # the first call warms up
                best = min(best, time.perf_counter() - t)
        res[f"batch_{n}_s"] = round(best, 4)
    res.update({"num_inference_steps": kw["num_inference_steps"], "guidance_scale": kw["guidance_scale"],
                "max_sequence_length": kw["max_sequence_length"]})
    return res


def evaluate(pipe, args, device: torch.device, report: dict) -> None:
    cfg = M.ShapesModelConfig.from_dict(report["config"])
    # 1. pick the flow shift on validation prompts from the grammar (disjoint seed from training)
    val = sample_scenes(args.val_prompts, seed=args.seed + 4242)
    vp, vc = [s.prompt for s in val], [s.category for s in val]
    sweep = {}
    for shift in args.shifts:
        set_shift(pipe, shift)
        acc = oracle_accuracy(generate(pipe, vp, seed=args.seed + 99, batch=args.eval_batch), vp, vc)
        sweep[str(shift)] = {"overall": acc["overall"], "per_category": acc["per_category"]}
        log(f"val shift {shift}: {acc['overall']:.3f} {acc['per_category']}")
    best = max(args.shifts, key=lambda s: (sweep[str(s)]["overall"], -abs(s - 1.0)))
    set_shift(pipe, best)
    report["defaults"]["shift"] = best
    report["validation"] = {"n": len(vp), "seed": args.seed + 4242, "shift_sweep": sweep, "chosen_shift": best}
    # 2. the eval split at the defaults, then a guidance sweep
    prompts, cats, source = load_eval_prompts(Path(args.eval_prompts), args.smoke, args.seed)
    t = time.time()
    imgs = generate(pipe, prompts, seed=args.eval_seed, batch=args.eval_batch)
    gen_s = time.time() - t
    acc = oracle_accuracy(imgs, prompts, cats)
    log(f"eval split ({len(prompts)} prompts, shift {best}, steps {cfg.num_inference_steps}, "
        f"cfg {cfg.guidance_scale}): overall {acc['overall']:.3f} {acc['per_category']}")
    gsweep = {}
    for g in args.guidance_sweep:
        if g == cfg.guidance_scale:
            continue
        a = oracle_accuracy(generate(pipe, prompts, seed=args.eval_seed, batch=args.eval_batch, guidance_scale=g),
                            prompts, cats)
        gsweep[str(g)] = {"overall": a["overall"], "per_category": a["per_category"]}
        log(f"eval guidance {g}: {a['overall']:.3f}")
    gsweep[str(cfg.guidance_scale)] = {"overall": acc["overall"], "per_category": acc["per_category"]}
    report["eval"] = {
        "source": source, "n": acc["n"], "seed": args.eval_seed, "samples_per_prompt": 1,
        "num_inference_steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale, "shift": best,
        "overall": acc["overall"], "per_category": acc["per_category"], "mean_oracle_score": acc["mean_score"],
        "generation_seconds": round(gen_s, 2), "guidance_sweep": dict(sorted(gsweep.items(), key=lambda kv: float(kv[0]))),
    }
    report["timing"][device.type] = {"device": device_name(device), **time_generation(pipe, device)}
    log(f"timing on {device.type}: {report['timing'][device.type]}")


# ----------------------------------------------------------------------------- report / card
def dir_files(path: Path) -> dict:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def write_model_card(path: Path, report: dict) -> None:
    cfg, d = report["config"], report["defaults"]
    params = report["parameters"]
    ev = report.get("eval", {})
    files = dir_files(path)
    weights = {k: v for k, v in files.items() if k.endswith(".safetensors")}
    lines = [
        "# shapes-model: the embedded default text-to-image model",
        "",
        "A small text-to-image flow model of the shapes world (coloured shapes on a plain background,",
        "GenEval's prompt categories), in the PixArt-Sigma layout, so that every method of",
        "tts-diffusion runs offline and on a CPU, and search can be scored by the exact oracle",
        "(`tts_diffusion.shapes.oracle`). It is deliberately imperfect: search has room to help.",
        "",
        "## Load and call",
        "",
        "```python",
        "import torch",
        "from diffusers import DiffusionPipeline",
        "pipe = DiffusionPipeline.from_pretrained(str(tts_diffusion.paths.default_model_path()))   # PixArtSigmaPipeline, float32, CPU",
        "images = pipe(",
        "    \"a photo of a red circle left of a blue square\",",
        f"    num_inference_steps={d['num_inference_steps']}, guidance_scale={d['guidance_scale']},",
        f"    height={cfg['image_size']}, width={cfg['image_size']}, max_sequence_length={d['max_sequence_length']},",
        "    use_resolution_binning=False, clean_caption=False,",
        "    generator=torch.Generator().manual_seed(0), output_type=\"pt\",   # [B, 3, 64, 64] in [0, 1]",
        ").images",
        "```",
        "",
        "or `tts_diffusion.shapes.model.load_pipeline()` and `pipe_call_kwargs(pipe)`, which return",
        "exactly these arguments. Why each one:",
        "",
        "- `use_resolution_binning=False`: the pipeline's aspect-ratio bins exist only for transformer",
        "  sample sizes 32/64/128/256; ours is 16 (latents), so the default `True` raises.",
        "- `clean_caption=False`: the default `True` needs `bs4` and `ftfy` and otherwise warns and",
        "  falls back; grammar prompts need no cleaning.",
        f"- `max_sequence_length={d['max_sequence_length']}`: prompts are at most 10 words + `</s>`. The",
        "  pipeline's default 300 gives the same images (padding is masked in the encoder and in",
        "  cross-attention) but runs the text encoder and the cross-attention key/value projections",
        "  on 300 tokens, several times slower on a CPU.",
        f"- steps {d['num_inference_steps']} and guidance {d['guidance_scale']} are the model's defaults (also",
        "  the pipeline's own defaults); the negative prompt is the pipeline's default `\"\"`, which is",
        "  what the model saw as the unconditional prompt during training.",
        "",
        "## Sampler",
        "",
        "Rectified flow: `x_t = (1 - t) x0 + t eps`; the transformer predicts the velocity",
        "`v = eps - x0` at `timestep = 1000 t`. The scheduler is",
        f"`DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type=\"flow_prediction\", solver_order=1, flow_shift={d['shift']})`:",
        "first-order DPM-Solver++ (DDIM) on this interpolant is exactly the Euler step",
        "`x_t' = x_t + (t' - t) v`. `FlowMatchEulerDiscreteScheduler` would be the natural class, but",
        "in diffusers 0.42.1 it lacks `init_noise_sigma` and `scale_model_input`, which",
        "`PixArtSigmaPipeline.__call__` calls, so the pipeline fails with it. The grid is",
        f"`t = linspace(0.999, 0)` warped by `shift` (`t -> s t / (1 + (s - 1) t)`), s = {d['shift']}",
        "(picked on validation prompts, see below); the transformer receives integer timesteps",
        "`floor(1000 t)`. `out_channels == in_channels`, so the pipeline splits no learned sigma.",
        "",
        "## Architecture",
        "",
        "| component | class | configuration | parameters |",
        "| --- | --- | --- | --- |",
        f"| transformer | `PixArtTransformer2DModel` | {cfg['layers']} blocks, width {cfg['heads'] * cfg['head_dim']} "
        f"({cfg['heads']} heads x {cfg['head_dim']}), patch {cfg['patch_size']} on 16x16x{cfg['latent_channels']} latents "
        f"({(cfg['image_size'] // (2 ** (len(cfg['vae_channels']) - 1)) // cfg['patch_size']) ** 2} tokens), "
        f"cross-attention to the text, adaLN-single | {params['transformer']:,} |",
        f"| text encoder | `T5EncoderModel` | T5 v1.1 (gated GELU), {cfg['text_layers']} layers, d_model {cfg['text_dim']}, "
        f"{cfg['text_heads']} heads x {cfg['text_head_dim']}, d_ff {cfg['text_ff']}, trained from scratch with the transformer "
        f"| {params['text_encoder']:,} |",
        f"| VAE | `AutoencoderKL` | channels {tuple(cfg['vae_channels'])}, {cfg['vae_layers_per_block']} resnet/level, "
        f"f = {2 ** (len(cfg['vae_channels']) - 1)}, {cfg['latent_channels']} latent channels, "
        f"scaling_factor {report['vae_scaling_factor']:.4f} (latent mean folded into the quant convs) | {params['vae']:,} |",
        f"| tokenizer | `PreTrainedTokenizerFast` | word level over the grammar's {len(cfg['vocabulary'])} words; "
        f"`<pad>`=0, `</s>`=1 (appended), `<unk>`=2; model_max_length {cfg['max_length']} | - |",
        "",
        "Weights (float32 safetensors): " + ", ".join(f"`{k}` {v / 2**20:.1f} MiB" for k, v in weights.items())
        + f"; {sum(weights.values()) / 2**20:.1f} MiB in all, {len(files)} files in the folder.",
        "",
        "## Training",
        "",
        f"Command: `{report['command']}` (seed {report['seed']}), on {report['train_device']}, "
        f"torch {report['versions']['torch']}, diffusers {report['versions']['diffusers']}, transformers "
        f"{report['versions']['transformers']}; the transformer and text encoder "
        f"{'ran under torch.compile' if report['flow'].get('compiled') else 'ran eagerly'}.",
        f"Wall clock {report['train_seconds']:.0f} s to the saved model "
        f"({report.get('total_seconds', report['train_seconds']):.0f} s with the evaluation below): "
        f"data {report['data']['seconds']:.0f} s "
        f"({report['data']['pool_size']:,} rendered scenes), VAE {report['vae']['seconds']:.0f} s "
        f"({report['vae']['steps']} steps x {report['vae']['batch']}, held-out PSNR {report['vae']['heldout_psnr_db']} dB), "
        f"transformer + text encoder {report['flow']['seconds']:.0f} s ({report['flow']['steps']} steps x "
        f"{report['flow']['batch']}, {report['flow']['samples_seen']:,} samples, final loss {report['flow']['final_loss']}).",
        "Rectified-flow loss, t ~ logit-normal(0, 1), bf16 autocast, AdamW (lr "
        f"{report['hparams']['lr']}, warmup {report['hparams']['warmup']}, cosine over the wall-clock budget), "
        f"EMA {report['hparams']['ema']}, the prompt replaced by `\"\"` with probability {report['hparams']['p_uncond']} "
        "(classifier-free guidance). The transformer stage is bounded by wall-clock time, so the number of",
        "steps (recorded above) depends on the machine; `--steps N` fixes it.",
        "",
        "To rebuild: `python scripts/train_shapes_model.py --out tts_diffusion/assets/shapes-model` (about 9 minutes on one",
        "H100, evaluation included), then `python scripts/train_shapes_model.py --benchmark tts_diffusion/assets/shapes-model",
        "--device cpu --threads 2` for the CPU timing below.",
        "",
    ]
    if ev:
        cats = list(ev["per_category"])
        lines += [
            "## Oracle accuracy (no search)",
            "",
            f"Eval split `{Path(ev['source']).name}` ({ev['n']} prompts), one sample per prompt (noise of prompt i from",
            f"`torch.Generator().manual_seed({ev['seed']} + i)`), {ev['num_inference_steps']} steps, guidance "
            f"{ev['guidance_scale']}, shift {ev['shift']}:",
            "",
            "| overall | " + " | ".join(cats) + " |",
            "| --- | " + " | ".join("---" for _ in cats) + " |",
            f"| {ev['overall']:.3f} | " + " | ".join(f"{ev['per_category'][c]:.3f}" for c in cats) + " |",
            "",
            "Guidance sweep (same seeds and steps):",
            "",
            "| guidance | overall | " + " | ".join(cats) + " |",
            "| --- | --- | " + " | ".join("---" for _ in cats) + " |",
        ]
        for g, a in ev["guidance_sweep"].items():
            lines.append(f"| {g} | {a['overall']:.3f} | " + " | ".join(f"{a['per_category'].get(c, float('nan')):.3f}" for c in cats) + " |")
        val = report.get("validation", {})
        if val:
            lines += ["", f"Shift chosen on {val['n']} validation prompts sampled from the grammar (seed {val['seed']}): "
                      + ", ".join(f"shift {s}: {a['overall']:.3f}" for s, a in val["shift_sweep"].items()) + "."]
        lines.append("")
    if report.get("timing"):
        lines += ["## Generation time", "",
                  "Defaults as above (CFG doubles the batch), best of 3 runs after a warm-up, float32:", "",
                  "| device | 1 image | batch of 32 |", "| --- | --- | --- |"]
        for dev, t in report["timing"].items():
            lines.append(f"| {t['device']} | {t['batch_1_s']:.3f} s | {t['batch_32_s']:.3f} s |")
        lines += ["", "CPU rows: `torch.set_num_threads(n)`, measured with `--benchmark` (see the script's docstring);",
                  "on a machine shared with other busy processes they come out several times higher.", ""]
    lines += ["## Files", "",
              "`training_report.json` holds every number above (and the loss curve); the sampling defaults",
              "in its `defaults` entry are what `pipe_call_kwargs` returns. The domain CLIP trained on the",
              "same world (`scripts/train_shapes_clip.py`) lives in `tts_diffusion/assets/shapes-clip`.", ""]
    (path / "MODEL_CARD.md").write_text("\n".join(lines))


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(default_model_path()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget", type=float, default=560.0, help="wall-clock seconds for the whole run")
    p.add_argument("--eval-reserve", type=float, default=50.0, help="seconds kept for saving and evaluation")
    p.add_argument("--pool", type=int, default=400_000, help="rendered training scenes")
    p.add_argument("--holdout", type=int, default=1024)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--vae-seconds", type=float, default=60.0)
    p.add_argument("--vae-steps", type=int, default=0, help="fixed VAE steps instead of --vae-seconds")
    p.add_argument("--vae-batch", type=int, default=256)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=2e-5, help="weight of the per-pixel KL")
    p.add_argument("--steps", type=int, default=0, help="fixed flow steps instead of the wall-clock budget")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--wd", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--ema", type=float, default=0.9995)
    p.add_argument("--p-uncond", type=float, default=0.1)
    p.add_argument("--eval-prompts", default=str(EVAL_PROMPTS))
    p.add_argument("--eval-seed", type=int, default=1234)
    p.add_argument("--eval-batch", type=int, default=512)
    p.add_argument("--val-prompts", type=int, default=600)
    p.add_argument("--shifts", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    p.add_argument("--guidance-sweep", type=float, nargs="+", default=[1.0, 2.5, 4.5, 7.0])
    p.add_argument("--compile", type=int, default=-1, help="torch.compile the flow models (1/0; -1: on CUDA)")
    p.add_argument("--smoke", action="store_true", help="tiny run to test the script")
    p.add_argument("--benchmark", metavar="DIR", help="only time generation of the saved model in DIR")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    a = p.parse_args(argv)
    if a.compile < 0:
        a.compile = int(a.device.startswith("cuda"))
    if a.smoke:
        a.pool, a.holdout, a.vae_steps, a.vae_batch, a.steps, a.batch = 600, 64, 4, 8, 6, 16
        a.warmup, a.val_prompts, a.eval_batch, a.shifts, a.guidance_sweep = 2, 12, 64, [1.0, 2.0], [1.0, 4.5]
        a.workers = min(a.workers, 2)
    return a


def benchmark(args) -> None:
    device = torch.device(args.device)
    path = Path(args.benchmark)
    pipe = M.load_pipeline(path, device=device)
    t = {"device": device_name(device), **time_generation(pipe, device)}
    print(json.dumps(t, indent=2))
    f = path / M.MODEL_DEFAULTS_FILE
    report = json.loads(f.read_text())
    key = device.type if device.type == "cuda" else f"cpu_{torch.get_num_threads()}_threads"
    report.setdefault("timing", {})[key] = t
    f.write_text(json.dumps(report, indent=2) + "\n")
    write_model_card(path, report)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.benchmark:
        return benchmark(args)
    deadline = T0 + args.budget
    out = Path(args.out)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    # 1. data (scenes are sampled in forked workers before CUDA starts)
    t = time.time()
    scenes = scene_pool(args.pool, args.seed, args.workers)
    log(f"sampled {len(scenes):,} scenes with {args.workers} workers in {time.time() - t:.1f}s")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    cfg = M.ShapesModelConfig()
    images = render_pool(scenes, cfg.image_size, device)
    tok = M.build_tokenizer(cfg.vocabulary, cfg.max_length)
    uniq = sorted({s.prompt for s in scenes})
    where = {p: i for i, p in enumerate(uniq)}
    prompt_idx = torch.tensor([where[s.prompt] for s in scenes], device=device)
    ids, mask = (x.to(device) for x in M.encode_prompts(tok, uniq, cfg.max_length))
    e_ids, e_mask = (x[0].to(device) for x in M.encode_prompts(tok, [""], cfg.max_length))
    n_unk = int((ids == tok.unk_token_id).sum())
    if n_unk:
        raise RuntimeError(f"{n_unk} unknown tokens in training prompts: the tokenizer misses grammar words")
    data = {"pool_size": len(scenes), "unique_prompts": len(uniq), "seconds": round(time.time() - t, 1)}
    log(f"rendered {len(scenes):,} images, {len(uniq)} unique prompts ({data['seconds']}s)")
    del scenes

    # 2. VAE
    torch.manual_seed(args.seed)
    vae = M.build_vae(cfg)
    vae_info = train_vae(vae, images, args, device)
    with torch.no_grad():
        z = encode_pool(vae, images[: min(len(images), 50_000)])
        mean = z.mean(dim=(0, 2, 3))
        std = (z - mean.view(1, -1, 1, 1)).std().item()
    M.fold_latent_mean(vae, mean)
    sf = 1.0 / std
    vae.register_to_config(scaling_factor=sf)
    latents = encode_pool(vae, images) * sf
    log(f"latents {tuple(latents.shape)}: channel means {mean.tolist()} folded, std {std:.4f} -> scaling {sf:.4f}, "
        f"check mean {latents[:4096].float().mean().item():.3f} std {latents[:4096].float().std().item():.3f}")
    del images

    # 3. transformer + text encoder
    torch.manual_seed(args.seed + 3)
    transformer = M.build_transformer(cfg)
    M.init_transformer_weights(transformer)
    text_encoder = M.build_text_encoder(cfg, len(tok))
    flow_deadline = deadline - args.eval_reserve
    flow_info = train_flow(transformer, text_encoder, latents, prompt_idx, ids, mask, e_ids, e_mask, args, device,
                           flow_deadline)
    del latents

    # 4. save
    sched = M.build_scheduler(cfg.shift)
    pipe = M.assemble_pipeline(tok, text_encoder, transformer, vae.to(device), sched).to(device)
    report = {
        "command": "python scripts/train_shapes_model.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "train_device": device_name(device),
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
                     "transformers": __import__("transformers").__version__},
        "config": cfg.to_dict(),
        "parameters": {k: sum(p.numel() for p in m.parameters()) for k, m in
                       (("transformer", transformer), ("text_encoder", text_encoder), ("vae", vae))},
        "defaults": {"num_inference_steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale,
                     "max_sequence_length": cfg.max_length, "shift": cfg.shift},
        "vae_scaling_factor": sf,
        "hparams": {k: getattr(args, k) for k in ("lr", "wd", "warmup", "ema", "p_uncond", "batch", "pool",
                                                     "vae_lr", "vae_kl", "vae_batch")},
        "data": data, "vae": vae_info, "flow": flow_info, "timing": {},
        "train_seconds": round(time.time() - T0, 1),
    }
    M.save_pipeline(pipe, out, report)
    log(f"saved pipeline to {out} ({sum(dir_files(out).values()) / 2**20:.1f} MiB)")

    # 5. evaluate (reload from disk: what ships is what is measured)
    pipe = M.load_pipeline(out, device=device)
    try:
        evaluate(pipe, args, device, report)
    finally:
        pipe.scheduler.save_pretrained(out / "scheduler")
        report["total_seconds"] = round(time.time() - T0, 1)
        (out / M.MODEL_DEFAULTS_FILE).write_text(json.dumps(report, indent=2) + "\n")
        write_model_card(out, report)
    ev = report.get("eval", {})
    summary = {"overall": ev.get("overall"), "per_category": ev.get("per_category"),
               "shift": report["defaults"]["shift"], "flow_steps": flow_info["steps"],
               "train_seconds": report["train_seconds"], "total_seconds": report["total_seconds"],
               "timing": report["timing"], "files": dir_files(out)}
    print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
