#!/usr/bin/env python
"""Train the embedded text-to-image model of the shapes world: seeded, wall-clock bounded,
resumable across sessions from small sharded checkpoints.

    # one session (a GPU call of at most ~10 minutes): data, VAE, then the transformer until
    # --budget runs out; the checkpoint goes to --ckpt (files <= 15 MiB each)
    python scripts/train_shapes_model.py --arch v2 --budget 540 --flow-seconds 1200 \\
        --ckpt $OUT/ckpt --out $OUT/model --cache /tmp/shapes-cache
    # the next session resumes (same command plus --resume); the run that completes
    # --flow-seconds of transformer training saves the pipeline to --out and evaluates it
    python scripts/train_shapes_model.py --arch v2 --budget 540 --flow-seconds 1200 \\
        --resume .ckpt/v2/ckpt --ckpt $OUT/ckpt --out $OUT/model --cache /tmp/shapes-cache
    python scripts/train_shapes_model.py --out /tmp/m --smoke --device cpu     # a minute on a CPU

    # evaluation of a saved pipeline (any device); CPU timing
    python scripts/train_shapes_model.py --evaluate DIR --device cpu
    python scripts/train_shapes_model.py --benchmark DIR --device cpu --threads 2

Stages (--arch v1: the 64-px model of MODEL_CARD v1; v2: 128 px, 16x16 tokens; see
`tts_diffusion.shapes.model.ARCHITECTURES`):

1. data: `sample_scenes` in worker processes (seeded chunks: the same pool for any number of
   workers), rendered on the device into uint8 images (one prompt each, categories balanced
   over --categories, repeat a name to weight it).
2. VAE (first session only): `AutoencoderKL` trained on the pool (MSE + L1 + a tiny KL); the
   latent mean is folded into its quant convs and ``scaling_factor`` = 1 / latent std. The pool
   is encoded once (posterior means); --cache keeps the latents on the machine for a later
   session on the same (warm) machine, else a resumed session re-renders and re-encodes them.
3. transformer + text encoder, jointly, on the pool's latents: rectified flow,
   ``x_t = (1 - t) x0 + t eps``, loss ``|v_theta(x_t, t, c) - (eps - x0)|^2`` (Esser et al.
   2024, eq. 3 and 6), t ~ logit-normal(0, 1) (their eq. 19), the prompt replaced by the empty
   prompt with probability --p-uncond (classifier-free guidance, Ho & Salimans 2022), bf16
   autocast, AdamW, EMA of the weights. The learning rate warms up, then decays by a cosine over
   --flow-seconds of training *in total* (summed over sessions, recorded in the checkpoint), so
   a run split into sessions follows one schedule. A resumed session restores the optimizer from
   --cache when the machine still has it, else starts a fresh AdamW with --resume-warmup steps
   of warm-up (the checkpoint that travels holds weights and EMA only, in float16).
4. checkpoint: every --ckpt-every seconds and at the end, to --ckpt: ``meta.json`` (config,
   progress, numbers), ``vae-NN.safetensors`` (float32), ``flow-NN`` and ``ema-NN`` (float16).
5. once --flow-seconds are done (or with --finish): the EMA weights as a diffusers
   ``PixArtSigmaPipeline`` in --out (float16 safetensors, loaded as float32), then `evaluate`:
   one sample per prompt (prompt i's noise from ``torch.Generator().manual_seed(seed + i)``) of
   validation prompts sampled from the grammar at each --shifts (the shift is picked there, never
   on the eval splits), then each --eval-prompts set at every shift and a guidance sweep, scored
   by the oracle; numbers to <out>/training_report.json and <out>/MODEL_CARD.md.
"""
from __future__ import annotations

import argparse
import hashlib
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
from tts_diffusion.shapes.grammar import GRAMMARS, sample_scenes  # noqa: E402
from tts_diffusion.shapes.training import (  # noqa: E402
    EMA, autocast, device_name, generate, load_eval_prompts, load_sharded, lr_at, render_pool, save_sharded,
    scene_pool,
)

T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f}s] {msg}", flush=True)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (the VAE's range)."""
    return images_u8.float().div_(127.5).sub_(1.0)


# ----------------------------------------------------------------------------- data
def build_pool(cfg: M.ShapesModelConfig, args, device: torch.device) -> dict:
    """Sample and render the training pool: uint8 images on `device`, the scenes' prompts."""
    t = time.time()
    scenes = scene_pool(args.pool, args.seed, args.workers, categories=args.categories)
    t_sample = time.time() - t
    images = render_pool(scenes, cfg.image_size, device)
    prompts = [s.prompt for s in scenes]
    cats = sorted({s.category for s in scenes})
    info = {"pool_size": len(scenes), "unique_prompts": len(set(prompts)), "categories": cats,
            "category_weights": {c: args.categories.count(c) for c in cats} if args.categories else None,
            "sample_seconds": round(t_sample, 1), "seconds": round(time.time() - t, 1)}
    log(f"pool: {len(scenes):,} scenes sampled in {t_sample:.1f}s ({args.workers} workers), rendered at "
        f"{cfg.image_size} px; {info['unique_prompts']} distinct prompts, {len(cats)} categories")
    return {"images": images, "prompts": prompts, "info": info}


def tokenize_pool(tok, prompts: list[str], max_length: int, device: torch.device):
    """Distinct prompts' token ids and masks on `device`, each scene's index into them, and the
    empty prompt's ids (the unconditional prompt)."""
    uniq = sorted(set(prompts))
    where = {p: i for i, p in enumerate(uniq)}
    prompt_idx = torch.tensor([where[p] for p in prompts], device=device)
    ids, mask = (x.to(device) for x in M.encode_prompts(tok, uniq, max_length))
    n_unk = int((ids == tok.unk_token_id).sum())
    if n_unk:
        raise RuntimeError(f"{n_unk} unknown tokens in training prompts: the tokenizer misses grammar words")
    longest = int(mask.sum(1).max())
    if longest >= max_length:  # the last token must be </s>, not a cut word
        raise RuntimeError(f"a training prompt takes {longest} tokens, max_length is {max_length}")
    e_ids, e_mask = (x[0].to(device) for x in M.encode_prompts(tok, [""], max_length))
    return prompt_idx, ids, mask, e_ids, e_mask


# ----------------------------------------------------------------------------- VAE
def train_vae(vae, images_u8: torch.Tensor, args, device: torch.device) -> dict:
    vae.train().to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    n = images_u8.shape[0] - args.holdout
    start, step = time.time(), 0
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
        if step % 250 == 0:
            log(f"vae step {step} mse {mse.item():.5f} l1 {l1.item():.4f} kl {kl.item():.3f}")
        step += 1
    vae.eval()
    psnr = vae_psnr(vae, images_u8[n:])
    log(f"vae done: {step} steps x {args.vae_batch} in {time.time() - start:.0f}s, held-out PSNR {psnr:.1f} dB")
    return {"steps": step, "seconds": round(time.time() - start, 1), "heldout_psnr_db": round(psnr, 2),
            "batch": args.vae_batch}


@torch.no_grad()
def vae_psnr(vae, images_u8: torch.Tensor) -> float:
    """Held-out reconstruction PSNR (dB) through the posterior mean (what the transformer is trained on)."""
    x = to_float(images_u8)
    rec = torch.cat([vae.decode(vae.encode(c).latent_dist.mode()).sample.float() for c in x.split(256)])
    mse = (rec.clamp(-1, 1) - x).pow(2).mean().item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))  # range [-1, 1] -> peak-to-peak 2


@torch.no_grad()
def encode_pool(vae, images_u8: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Posterior means of the pool, unscaled, float32 [N, C, h, w]."""
    out = []
    for i in range(0, images_u8.shape[0], chunk):
        with autocast(images_u8.device):
            out.append(vae.encode(to_float(images_u8[i : i + chunk])).latent_dist.mode().float())
    return torch.cat(out)


def center_vae(vae, images_u8: torch.Tensor) -> float:
    """Fold the pool's latent channel means into the VAE and set ``scaling_factor`` = 1 / std."""
    with torch.no_grad():
        z = encode_pool(vae, images_u8[: min(len(images_u8), 50_000)])
        mean = z.mean(dim=(0, 2, 3))
        std = (z - mean.view(1, -1, 1, 1)).std().item()
    M.fold_latent_mean(vae, mean)
    vae.register_to_config(scaling_factor=1.0 / std)
    log(f"latent channel means {[round(v, 3) for v in mean.tolist()]} folded, std {std:.4f} -> scaling {1 / std:.4f}")
    return 1.0 / std


def state_hash(sd: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- flow model
def flow_state(transformer, text_encoder) -> dict[str, torch.Tensor]:
    sd = {f"transformer.{k}": v for k, v in transformer.state_dict().items()}
    sd.update({f"text_encoder.{k}": v for k, v in text_encoder.state_dict().items()})
    return sd


def load_flow_state(transformer, text_encoder, sd: dict[str, torch.Tensor]) -> None:
    for prefix, mod in (("transformer.", transformer), ("text_encoder.", text_encoder)):
        part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        missing, unexpected = mod.load_state_dict(part, strict=False)
        # T5 ties encoder.embed_tokens to shared: one of the two may be absent from a state dict
        missing = [k for k in missing if k not in ("encoder.embed_tokens.weight", "shared.weight")]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint does not match the {prefix[:-1]}: missing {missing[:4]}, "
                               f"unexpected {unexpected[:4]}")


def flow_params(transformer, text_encoder) -> list[torch.nn.Parameter]:
    """Parameters in a fixed order (the EMA's shadow order), shared tensors once."""
    seen, out = set(), []
    for p in list(transformer.parameters()) + list(text_encoder.parameters()):
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class FlowTrainer:
    """Joint rectified-flow training of the transformer and the text encoder, resumable."""

    def __init__(self, transformer, text_encoder, args, device: torch.device):
        self.tr, self.te, self.args, self.device = transformer.to(device), text_encoder.to(device), args, device
        self.params = flow_params(transformer, text_encoder)
        decay = [p for p in self.params if p.ndim >= 2]
        no_decay = [p for p in self.params if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=args.lr, betas=(0.9, 0.98), eps=1e-8, fused=device.type == "cuda")
        self.ema = EMA(self.params, args.ema)
        self.step, self.seconds, self.samples, self.hist = 0, 0.0, 0, []
        self.warm_from, self.warmup = 0, args.warmup  # warm-up counts from `warm_from`

    def ema_state(self) -> dict[str, torch.Tensor]:
        names = {id(p): n for n, p in list(self.tr.named_parameters(prefix="transformer"))
                 + list(self.te.named_parameters(prefix="text_encoder"))}
        return {names[id(p)]: s for p, s in zip(self.params, self.ema.shadow)}

    def load_ema_state(self, sd: dict[str, torch.Tensor]) -> None:
        names = {id(p): n for n, p in list(self.tr.named_parameters(prefix="transformer"))
                 + list(self.te.named_parameters(prefix="text_encoder"))}
        for i, p in enumerate(self.params):
            self.ema.shadow[i].copy_(sd[names[id(p)]].to(self.ema.shadow[i]))

    def train(self, latents, prompt_idx, ids, mask, e_ids, e_mask, until: float, on_checkpoint=None) -> None:
        """Train until wall-clock time `until`, --flow-seconds of training in total or --steps."""
        args, device = self.args, self.device
        self.tr.train()
        self.te.train()
        gen = torch.Generator(device=device).manual_seed(args.seed + 2 + 7919 * self.step)
        n, B = latents.shape[0], args.batch
        added = {"resolution": None, "aspect_ratio": None}
        fwd_tr, fwd_te = self.tr, self.te
        if args.compile:  # fuses the many small element-wise ops of a narrow model (~2x on an H100)
            fwd_tr, fwd_te = torch.compile(self.tr), torch.compile(self.te)

        def flow_loss(tr, te, tok, msk, xt, t, target):
            with autocast(device):
                enc = te(input_ids=tok, attention_mask=msk).last_hidden_state
                v = tr(xt, encoder_hidden_states=enc, encoder_attention_mask=msk, timestep=t * 1000.0,
                       added_cond_kwargs=added, return_dict=False)[0]
            return (v.float() - target).pow(2).mean()

        first, last_ckpt, t_prev = True, time.time(), time.time()
        self.ema.n = max(self.ema.n, self.step)
        while True:
            done = self.seconds / args.flow_seconds if not args.steps else self.step / args.steps
            if done >= 1.0 or time.time() >= until:
                break
            for g in self.opt.param_groups:
                g["lr"] = lr_at(args.lr, self.step - self.warm_from, self.warmup, done)
            idx = torch.randint(0, n, (B,), device=device, generator=gen)
            x0 = latents[idx].float()
            pi = prompt_idx[idx]
            tok, msk = ids[pi], mask[pi]
            drop = torch.rand(B, device=device, generator=gen) < args.p_uncond
            tok = torch.where(drop[:, None], e_ids[None], tok)
            msk = torch.where(drop[:, None], e_mask[None], msk)
            t = torch.sigmoid(torch.randn(B, device=device, generator=gen))  # logit-normal(0, 1)
            eps = torch.randn(x0.shape, device=device, generator=gen)
            tt = t.view(-1, 1, 1, 1)
            xt = (1.0 - tt) * x0 + tt * eps
            target = eps - x0
            if first and fwd_tr is not self.tr:
                tc = time.time()
                try:
                    loss = flow_loss(fwd_tr, fwd_te, tok, msk, xt, t, target)
                    log(f"compiled the transformer and the text encoder in {time.time() - tc:.0f}s")
                except Exception as e:  # never lose a run to the compiler
                    log(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); training eagerly")
                    fwd_tr, fwd_te = self.tr, self.te
                    loss = flow_loss(fwd_tr, fwd_te, tok, msk, xt, t, target)
            else:
                loss = flow_loss(fwd_tr, fwd_te, tok, msk, xt, t, target)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.ema.update()
            now = time.time()
            if not first:  # the first step (compilation) does not count as training time
                self.seconds += now - t_prev
            first, t_prev = False, now
            self.samples += B
            if self.step % 100 == 0:
                self.hist.append((self.step, round(self.seconds, 1), round(loss.item(), 5)))
            if self.step % 1000 == 0 or self.step in (self.warm_from + 50, self.warm_from + 200):
                last = getattr(self, "_last_log", None)
                rate = B * (self.step - last[0]) / max(1e-6, now - last[1]) if last else 0.0
                self._last_log = (self.step, now)
                log(f"flow step {self.step} loss {loss.item():.4f} gnorm {gn.item():.2f} "
                    f"lr {self.opt.param_groups[0]['lr']:.2e} trained {self.seconds:.0f}/{args.flow_seconds:.0f}s "
                    f"{rate:,.0f} samples/s")
            self.step += 1
            if on_checkpoint is not None and now - last_ckpt >= args.ckpt_every:
                on_checkpoint()
                last_ckpt = time.time()
                t_prev = last_ckpt  # checkpoint time is not training time
        self.tr.eval()
        self.te.eval()

    def info(self) -> dict:
        tail = [h[2] for h in self.hist[-10:]]
        return {"steps": self.step, "batch": self.args.batch, "seconds": round(self.seconds, 1),
                "samples_seen": self.samples, "final_loss": round(float(np.mean(tail)), 5) if tail else None,
                "loss_curve": self.hist[:: max(1, len(self.hist) // 60)]}


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(folder: Path, meta: dict, vae, trainer: FlowTrainer, cache: Path | None) -> None:
    """Sharded checkpoint in `folder` (what travels); full state with the optimizer in `cache`."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = dict(meta, flow=trainer.info(), ema_n=trainer.ema.n, saved_at=round(time.time() - T0, 1))
    save_sharded(vae.state_dict(), folder, "vae")
    save_sharded(flow_state(trainer.tr, trainer.te), folder, "flow", dtype=torch.float16)
    save_sharded(trainer.ema_state(), folder, "ema", dtype=torch.float16)
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        torch.save({"step": trainer.step, "opt": trainer.opt.state_dict(),
                    "flow": flow_state(trainer.tr, trainer.te), "ema": trainer.ema_state()}, cache / "state.pt")
    log(f"checkpoint: step {trainer.step}, {trainer.seconds:.0f}s of flow training -> {folder}")


# ----------------------------------------------------------------------------- evaluation
def oracle_accuracy(images: torch.Tensor, prompts: list[str], categories: list[str], chunk: int = 256) -> dict:
    """The oracle's verdicts on `images` (scored on their device, in chunks), overall and per category."""
    from tts_diffusion.shapes.oracle import check_batch

    res = [r for i in range(0, len(prompts), chunk)
           for r in check_batch(images[i : i + chunk].float(), prompts[i : i + chunk])]
    correct = np.array([r.correct for r in res], dtype=bool)
    score = np.array([r.score for r in res], dtype=float)
    cats = np.array(categories)
    per = {c: round(float(correct[cats == c].mean()), 4) for c in dict.fromkeys(categories)}
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


def validation_prompts(args, cfg: M.ShapesModelConfig) -> tuple[list[str], list[str]]:
    """Prompts sampled from the model's grammar, balanced over its categories (seed + 4242,
    disjoint from the training pool's seed and from the eval splits)."""
    cats = GRAMMARS[cfg.grammar]
    val = sample_scenes(args.val_prompts - args.val_prompts % len(cats), seed=args.seed + 4242, categories=cats)
    return [s.prompt for s in val], [s.category for s in val]


@torch.no_grad()
def generate_latents(pipe, prompts: list[str], seed: int, batch: int) -> torch.Tensor:
    """Final latents (scaled, as the pipeline holds them before decoding) of `generate`'s samples."""
    kw = M.pipe_call_kwargs(pipe)
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(chunk))]
        out.append(pipe(chunk, generator=gens, output_type="latent", **kw).images.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Images in [0, 1] of `generate_latents`' latents, decoded by the pipeline's VAE."""
    vae = pipe.vae
    dev, dt = vae.device, vae.dtype
    out = [vae.decode(c.to(dev, dt) / vae.config.scaling_factor).sample.float().cpu() for c in latents.split(batch)]
    return torch.cat(out).div_(2).add_(0.5).clamp_(0, 1)


#: the shipped prompt sets each grammar's model is evaluated on
EVAL_SETS = {"v1": ("shapes_eval",), "v2": ("shapes_eval_v2", "shapes_hard", "shapes_eval")}


def eval_sets(args, cfg: M.ShapesModelConfig) -> dict[str, dict]:
    """name -> {prompts, categories, seed, source}: "val" (sampled from the grammar, seed + 99
    for the noise) and each --eval-prompts set (seed --eval-seed)."""
    vp, vc = validation_prompts(args, cfg)
    sets = {"val": {"prompts": vp, "categories": vc, "seed": args.seed + 99, "source": "sampled"}}
    paths = args.eval_prompts
    if paths is None:
        paths = [str(eval_prompts_path().parent / f"{name}.json") for name in EVAL_SETS[cfg.grammar]]
    for path in paths:
        prompts, pcats, source = load_eval_prompts(Path(path), args.smoke, args.seed)
        name = Path(source).stem if Path(source).is_file() else "sampled"
        sets[name] = {"prompts": prompts, "categories": pcats, "seed": args.eval_seed, "source": source}
    return sets


def dump_latents(pipe, args, cfg: M.ShapesModelConfig, folder: Path) -> None:
    """Final latents (float16) of every `eval_sets` prompt at every --shifts (default guidance),
    one file per shift, for scoring elsewhere (`--evaluate DIR --from-dump FOLDER`): a GPU machine
    without the oracle generates, the oracle scores where it runs."""
    sets = eval_sets(args, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    for shift in args.shifts:
        set_shift(pipe, shift)
        out = {name: {**st, "latents": generate_latents(pipe, st["prompts"], st["seed"], args.eval_batch).half()}
               for name, st in sets.items()}
        torch.save(out, folder / f"latents_s{shift}.pt")
    sizes = ", ".join(f"{k} ({len(v['prompts'])})" for k, v in sets.items())
    log(f"latents of {sizes} at shifts {args.shifts} -> {folder}")


def images_of(pipe, args, st: dict, shift: float, guidance: float | None = None) -> torch.Tensor:
    """`st`'s images at `shift` (and the default guidance): decoded from --from-dump's latents
    when it holds them, else generated."""
    if args.from_dump and guidance is None:
        f = Path(args.from_dump) / f"latents_s{shift}.pt"
        dumped = torch.load(f, weights_only=False) if f.is_file() else {}
        for d in dumped.values():
            if d["prompts"] == st["prompts"] and d["seed"] == st["seed"]:
                return decode_latents(pipe, d["latents"])
    set_shift(pipe, shift)
    kw = {} if guidance is None else {"guidance_scale": guidance}
    return generate(pipe, st["prompts"], seed=st["seed"], batch=args.eval_batch, **kw)


def evaluate(pipe, args, device: torch.device, report: dict) -> None:
    """The shift is picked on validation prompts from the grammar; then each eval set at that
    shift, and a guidance sweep there (images from --from-dump's latents where it has them)."""
    cfg = M.ShapesModelConfig.from_dict(report["config"])
    sets = eval_sets(args, cfg)
    val = sets.pop("val")
    sweep = {}
    for shift in args.shifts:
        acc = oracle_accuracy(images_of(pipe, args, val, shift), val["prompts"], val["categories"])
        sweep[str(shift)] = {"overall": acc["overall"], "per_category": acc["per_category"]}
        log(f"val shift {shift}: {acc['overall']:.3f} {acc['per_category']}")
    best = max(args.shifts, key=lambda s: (sweep[str(s)]["overall"], -abs(s - 1.0)))
    report["defaults"]["shift"] = best
    report["validation"] = {"n": len(val["prompts"]), "seed": args.seed + 4242, "shift_sweep": sweep,
                            "chosen_shift": best}
    report["eval"] = {}
    for name, st in sets.items():
        gsweep, t = {}, time.time()
        for g in sorted(set(args.guidance_sweep) | {cfg.guidance_scale}):
            images = images_of(pipe, args, st, best, None if g == cfg.guidance_scale else g)
            acc = oracle_accuracy(images, st["prompts"], st["categories"])
            gsweep[str(g)] = {"overall": acc["overall"], "per_category": acc["per_category"]}
            if g == cfg.guidance_scale:
                chosen = acc
        report["eval"][name] = {
            "source": st["source"], "n": chosen["n"], "seed": st["seed"], "samples_per_prompt": 1,
            "num_inference_steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale, "shift": best,
            "overall": chosen["overall"], "per_category": chosen["per_category"],
            "mean_oracle_score": chosen["mean_score"], "correct": chosen["correct"], "guidance_sweep": gsweep,
            "scored_on": device_name(device), "seconds": round(time.time() - t, 1),
        }
        log(f"{name} ({len(st['prompts'])} prompts, shift {best}): {chosen['overall']:.3f} {chosen['per_category']}")
    set_shift(pipe, best)
    report["timing"][device.type] = {"device": device_name(device), **time_generation(pipe, device)}
    log(f"timing on {device.type}: {report['timing'][device.type]}")


# ----------------------------------------------------------------------------- report / card
def dir_files(path: Path) -> dict:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def _table(rows: list[tuple[str, dict]], cats: list[str]) -> list[str]:
    lines = ["| | overall | " + " | ".join(cats) + " |", "| --- | --- | " + " | ".join("---" for _ in cats) + " |"]
    for label, a in rows:
        lines.append(f"| {label} | {a['overall']:.3f} | "
                     + " | ".join(f"{a['per_category'][c]:.3f}" if c in a["per_category"] else "-" for c in cats) + " |")
    return lines


def write_model_card(path: Path, report: dict) -> None:
    cfg, d = report["config"], report["defaults"]
    params = report["parameters"]
    files = dir_files(path)
    weights = {k: v for k, v in files.items() if k.endswith(".safetensors")}
    mc = M.ShapesModelConfig.from_dict(cfg)
    size, lat, grid = mc.image_size, mc.latent_size, mc.tokens
    wdt = report.get("weights_dtype", "float32")
    lines = [
        "# shapes-model: the embedded default text-to-image model",
        "",
        "A small text-to-image flow model of the shapes world (coloured shapes on a plain background,",
        f"prompt grammar {cfg['grammar']}), in the PixArt-Sigma layout, so that every method of",
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
        f"    height={size}, width={size}, max_sequence_length={d['max_sequence_length']},",
        "    use_resolution_binning=False, clean_caption=False,",
        f"    generator=torch.Generator().manual_seed(0), output_type=\"pt\",   # [B, 3, {size}, {size}] in [0, 1]",
        ").images",
        "```",
        "",
        "or `tts_diffusion.shapes.model.load_pipeline()` and `pipe_call_kwargs(pipe)`, which return",
        "exactly these arguments. Why each one:",
        "",
        "- `use_resolution_binning=False`: the pipeline's aspect-ratio bins exist only for transformer",
        f"  sample sizes 32/64/128/256; ours is {lat} (latents), so the default `True` raises.",
        "- `clean_caption=False`: the default `True` needs `bs4` and `ftfy` and otherwise warns and",
        "  falls back; grammar prompts need no cleaning.",
        f"- `max_sequence_length={d['max_sequence_length']}`: the longest prompt of the grammar and `</s>` fit. The",
        "  pipeline's default 300 gives the same images (padding is masked in the encoder and in",
        "  cross-attention) but runs the text encoder and the cross-attention key/value projections",
        "  on 300 tokens, several times slower on a CPU.",
        f"- steps {d['num_inference_steps']} and guidance {d['guidance_scale']} are the model's defaults; the negative",
        "  prompt is the pipeline's default `\"\"`, which is what the model saw as the unconditional",
        "  prompt during training.",
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
        f"({cfg['heads']} heads x {cfg['head_dim']}), patch {cfg['patch_size']} on {lat}x{lat}x{cfg['latent_channels']} "
        f"latents ({grid}x{grid} = {grid * grid} tokens), cross-attention to the text, adaLN-single | {params['transformer']:,} |",
        f"| text encoder | `T5EncoderModel` | T5 v1.1 (gated GELU), {cfg['text_layers']} layers, d_model {cfg['text_dim']}, "
        f"{cfg['text_heads']} heads x {cfg['text_head_dim']}, d_ff {cfg['text_ff']}, trained from scratch with the transformer "
        f"| {params['text_encoder']:,} |",
        f"| VAE | `AutoencoderKL` | channels {tuple(cfg['vae_channels'])}, {cfg['vae_layers_per_block']} resnet/level, "
        f"f = {mc.vae_scale_factor}, {cfg['latent_channels']} latent channels, "
        f"{'mid-block attention, ' if cfg.get('vae_mid_attention', True) else 'no mid-block attention, '}"
        f"scaling_factor {report['vae_scaling_factor']:.4f} (latent mean folded into the quant convs) | {params['vae']:,} |",
        f"| tokenizer | `PreTrainedTokenizerFast` | word level over the grammar's {len(cfg['vocabulary'])} words; "
        f"`<pad>`=0, `</s>`=1 (appended), `<unk>`=2; model_max_length {cfg['max_length']} | - |",
        "",
        f"Weights ({wdt} safetensors; `from_pretrained` gives float32 unless a dtype is asked for): "
        + ", ".join(f"`{k}` {v / 2**20:.1f} MiB" for k, v in weights.items())
        + f"; {sum(weights.values()) / 2**20:.1f} MiB in all, {len(files)} files in the folder.",
        "",
    ]
    if report.get("architecture_notes"):
        lines += report["architecture_notes"] + [""]
    fl, vae, data = report["flow"], report["vae"], report["data"]
    lines += [
        "## Training",
        "",
        f"Commands (seed {report['seed']}), on {', '.join(report['train_devices'])}, torch {report['versions']['torch']}, "
        f"diffusers {report['versions']['diffusers']}, transformers {report['versions']['transformers']}:",
        "",
        "```",
        *report["commands"],
        "```",
        "",
        f"Data: {data['pool_size']:,} rendered scenes ({data['unique_prompts']:,} distinct prompts, categories "
        f"{', '.join(data['categories'])}). VAE: {vae['steps']} steps x {vae['batch']} in {vae['seconds']:.0f} s, "
        f"held-out PSNR {vae['heldout_psnr_db']} dB. Transformer + text encoder: {fl['steps']} steps x {fl['batch']} "
        f"({fl['samples_seen']:,} samples) in {fl['seconds']:.0f} s of training over {len(report['commands'])} "
        f"session(s), final loss {fl['final_loss']}.",
        "Rectified-flow loss, t ~ logit-normal(0, 1), bf16 autocast, AdamW (lr "
        f"{report['hparams']['lr']}, warmup {report['hparams']['warmup']}, cosine over {report['hparams']['flow_seconds']:.0f} s "
        f"of training), EMA {report['hparams']['ema']}, the prompt replaced by `\"\"` with probability "
        f"{report['hparams']['p_uncond']} (classifier-free guidance). Sessions resume from a checkpoint of weights and EMA; "
        "the optimizer state is restored when the machine kept it, else a fresh AdamW warms up for "
        f"{report['hparams']['resume_warmup']} steps.",
        "",
    ]
    ev = report.get("eval", {})
    val = report.get("validation", {})
    if val:
        vcats = list(next(iter(val["shift_sweep"].values()))["per_category"])
        lines += ["## Oracle accuracy (no search)", "",
                  f"Shift picked on {val['n']} validation prompts sampled from the grammar (seed {val['seed']}), "
                  f"one sample each: s = {val['chosen_shift']}.", "",
                  *_table([(f"shift {s}", a) for s, a in val["shift_sweep"].items()], vcats), ""]
    for name, e in ev.items():
        cats = list(e["per_category"])
        lines += [f"### {name} ({e['n']} prompts)", "",
                  f"`{Path(e['source']).name}`, one sample per prompt (noise of prompt i from "
                  f"`torch.Generator().manual_seed({e['seed']} + i)`), {e['num_inference_steps']} steps, guidance "
                  f"{e['guidance_scale']}, shift {e['shift']} (chosen above), scored on {e['scored_on']}; "
                  "other guidance scales for reference:", "",
                  *_table([(f"guidance {g}" + (" (default)" if float(g) == e["guidance_scale"] else ""), a)
                           for g, a in e["guidance_sweep"].items()], cats), ""]
    if report.get("timing"):
        lines += ["## Generation time", "",
                  "Defaults as above (CFG doubles the batch), best of 3 runs after a warm-up, float32:", "",
                  "| device | 1 image | batch of 32 |", "| --- | --- | --- |"]
        for t in report["timing"].values():
            lines.append(f"| {t['device']} | {t['batch_1_s']:.3f} s | {t['batch_32_s']:.3f} s |")
        lines += ["", "CPU rows: `torch.set_num_threads(n)`, measured with `--benchmark` (see the script's docstring);",
                  "on a machine shared with other busy processes they come out several times higher.", ""]
    lines += ["## Files", "",
              "`training_report.json` holds every number above (the loss curve and each eval prompt's",
              "result too); the sampling defaults in its `defaults` entry are what `pipe_call_kwargs` returns.",
              "The domain CLIP trained on the same world (`scripts/train_shapes_clip.py`) lives in",
              "`tts_diffusion/assets/shapes-clip`.", ""]
    (path / "MODEL_CARD.md").write_text("\n".join(lines))


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="v2", help="model version (tts_diffusion.shapes.model.ARCHITECTURES)")
    p.add_argument("--out", default=str(default_model_path()), help="where the finished pipeline is saved")
    p.add_argument("--ckpt", default=None, help="checkpoint folder written by this run (default: <out>.ckpt)")
    p.add_argument("--resume", default=None, help="checkpoint folder to resume from")
    p.add_argument("--cache", default=None, help="machine-local folder for the encoded pool and optimizer state")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget", type=float, default=560.0, help="wall-clock seconds for this run")
    p.add_argument("--ckpt-reserve", type=float, default=15.0, help="seconds kept for the last checkpoint")
    p.add_argument("--eval-reserve", type=float, default=60.0, help="seconds kept for saving and evaluation")
    p.add_argument("--ckpt-every", type=float, default=150.0, help="seconds between checkpoints")
    p.add_argument("--pool", type=int, default=400_000, help="rendered training scenes")
    p.add_argument("--categories", nargs="+", default=None, help="training categories (repeat one to weight it; "
                   "default: the architecture's grammar, balanced)")
    p.add_argument("--holdout", type=int, default=1024)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--vae-seconds", type=float, default=60.0)
    p.add_argument("--vae-steps", type=int, default=0, help="fixed VAE steps instead of --vae-seconds")
    p.add_argument("--vae-batch", type=int, default=128)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-kl", type=float, default=2e-5, help="weight of the per-pixel KL")
    p.add_argument("--flow-seconds", type=float, default=360.0, help="transformer training seconds in total (all sessions)")
    p.add_argument("--steps", type=int, default=0, help="fixed flow steps in total instead of --flow-seconds")
    p.add_argument("--finish", action="store_true", help="save and evaluate at the end of this run in any case")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--wd", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--resume-warmup", type=int, default=200, help="warm-up steps of a fresh optimizer on resume")
    p.add_argument("--ema", type=float, default=0.9995)
    p.add_argument("--p-uncond", type=float, default=0.1)
    p.add_argument("--weights-dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--eval-prompts", nargs="*", default=None, help="prompt set files (default: the shipped sets of "
                   "the model's grammar: v2 shapes_eval_v2, shapes_hard and the v1 shapes_eval; v1 shapes_eval)")
    p.add_argument("--eval-seed", type=int, default=1234)
    p.add_argument("--eval-batch", type=int, default=512)
    p.add_argument("--val-prompts", type=int, default=880, help="validation prompts (balanced over the categories)")
    p.add_argument("--shifts", type=float, nargs="+", default=[1.5, 2.25, 3.0])
    p.add_argument("--guidance-sweep", type=float, nargs="*", default=[3.0, 4.5, 6.0])
    p.add_argument("--no-eval", action="store_true", help="save the finished pipeline without evaluating it")
    p.add_argument("--dump", metavar="FOLDER", help="with --no-eval: save the validation and eval prompts' final "
                   "latents at every --shifts here (scored later by --evaluate DIR --from-dump FOLDER)")
    p.add_argument("--from-dump", metavar="FOLDER", help="evaluation: decode images from these latents where they "
                   "hold them instead of generating")
    p.add_argument("--export", action="store_true", help="with --resume: save the checkpoint's EMA weights as the "
                   "pipeline in --out (no training), then evaluate unless --no-eval")
    p.add_argument("--compile", type=int, default=-1, help="torch.compile the flow models (1/0; -1: on CUDA)")
    p.add_argument("--smoke", action="store_true", help="tiny run to test the script")
    p.add_argument("--evaluate", metavar="DIR", help="only evaluate the saved pipeline in DIR (report and card updated)")
    p.add_argument("--benchmark", metavar="DIR", help="only time generation of the saved model in DIR")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave)")
    a = p.parse_args(argv)
    if a.compile < 0:
        a.compile = int(a.device.startswith("cuda"))
    if a.smoke:
        a.pool, a.holdout, a.vae_steps, a.vae_batch, a.batch = 600, 64, 4, 8, 16
        a.steps = a.steps or 6
        a.warmup, a.val_prompts, a.eval_batch, a.shifts, a.guidance_sweep = 2, 22, 64, [1.0, 2.0], [1.0, 4.5]
        a.workers = min(a.workers, 2)
    a.ckpt = a.ckpt or str(Path(a.out).with_suffix(".ckpt"))
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


def evaluate_saved(args) -> None:
    device = torch.device(args.device)
    path = Path(args.evaluate)
    report = json.loads((path / M.MODEL_DEFAULTS_FILE).read_text())
    report.setdefault("timing", {})
    pipe = M.load_pipeline(path, device=device)
    try:
        evaluate(pipe, args, device, report)
    finally:
        finish_report(pipe, path, report)


def finish_report(pipe, out: Path, report: dict) -> None:
    """Write the chosen shift (scheduler, tts_defaults.json), the report and the card."""
    pipe.scheduler = M.build_scheduler(report["defaults"]["shift"])
    pipe.scheduler.save_pretrained(out / "scheduler")
    report["total_seconds"] = round(time.time() - T0, 1)
    (out / M.MODEL_DEFAULTS_FILE).write_text(json.dumps(report, indent=2) + "\n")
    tts = json.loads((out / M.TTS_DEFAULTS_FILE).read_text())
    (out / M.TTS_DEFAULTS_FILE).write_text(json.dumps(tts) + "\n")
    write_model_card(out, report)


def load_data(cfg, args, meta: dict | None, vae, device: torch.device, cache: Path | None) -> tuple[dict, dict, float]:
    """The encoded training pool (from the cache when this machine encoded it with this VAE),
    training the VAE first when there is no checkpoint. Returns (pool, vae info, scaling factor)."""
    cache_key = f"{cfg.grammar}-{cfg.image_size}-{args.seed}-{args.pool}-{'.'.join(args.categories)}"
    cached = cache / f"pool-{hashlib.sha256(cache_key.encode()).hexdigest()[:12]}.pt" if cache else None
    if cached is not None and cached.is_file() and meta:  # encoded on this machine by an earlier session
        pool = torch.load(cached, map_location="cpu", weights_only=False)
        log(f"pool from the cache {cached}")
    else:  # scenes are sampled in forked workers, before the models touch CUDA
        pool = build_pool(cfg, args, device)
    vae.to(device)
    if meta:
        vae_info, sf = meta["vae"], meta["vae_scaling_factor"]
    else:
        torch.manual_seed(args.seed)
        vae_info = train_vae(vae, pool["images"], args, device)
        sf = center_vae(vae, pool["images"])
    vae_key = state_hash(vae.state_dict())
    if "images" not in pool and pool.get("vae") != vae_key:  # cached latents of another VAE
        pool = build_pool(cfg, args, device)
    if "latents" not in pool or pool.get("vae") != vae_key:
        t = time.time()
        pool["latents"] = (encode_pool(vae, pool["images"]) * sf).to(torch.bfloat16)
        pool["vae"] = vae_key
        lat = pool["latents"][:4096].float()
        log(f"encoded the pool to latents {tuple(pool['latents'].shape)} in {time.time() - t:.0f}s "
            f"(mean {lat.mean().item():.3f}, std {lat.std().item():.3f})")
        if cached is not None:
            cache.mkdir(parents=True, exist_ok=True)
            torch.save({k: pool[k].cpu() if k == "latents" else pool[k] for k in ("prompts", "info", "latents", "vae")},
                       cached)
    pool.pop("images", None)
    return pool, vae_info, sf


def restore(trainer: FlowTrainer, meta: dict, resume: Path, cache: Path | None, args) -> None:
    """Weights, EMA and progress from the checkpoint; the optimizer and float32 weights from the
    cache when it holds this checkpoint's step (else a fresh AdamW that warms up again)."""
    load_flow_state(trainer.tr, trainer.te, load_sharded(resume, "flow"))
    trainer.load_ema_state(load_sharded(resume, "ema"))
    fl = meta["flow"]
    trainer.step, trainer.seconds, trainer.samples = fl["steps"], fl["seconds"], fl["samples_seen"]
    trainer.hist = [tuple(h) for h in meta.get("loss_history", [])]
    trainer.ema.n = meta.get("ema_n", fl["steps"])
    state = cache / "state.pt" if cache else None
    if state is not None and state.is_file():
        st = torch.load(state, map_location=trainer.device, weights_only=False)
        if st["step"] == trainer.step:  # the same run's last checkpoint: exact resume
            load_flow_state(trainer.tr, trainer.te, st["flow"])
            trainer.load_ema_state(st["ema"])
            trainer.opt.load_state_dict(st["opt"])
            trainer.warmup = 0
            log(f"optimizer state and float32 weights from the cache (step {st['step']})")
    if trainer.warmup:
        trainer.warm_from, trainer.warmup = trainer.step, args.resume_warmup
        log(f"resumed at step {trainer.step} ({trainer.seconds:.0f}s trained) with a fresh AdamW "
            f"({args.resume_warmup} warm-up steps)")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.benchmark:
        return benchmark(args)
    if args.evaluate:
        return evaluate_saved(args)
    if args.export and not args.resume:
        raise SystemExit("--export needs --resume CKPT")
    deadline = T0 + args.budget
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    resume = Path(args.resume) if args.resume else None
    meta = json.loads((resume / "meta.json").read_text()) if resume else None
    cfg = M.ShapesModelConfig.from_dict(meta["config"]) if meta else M.architecture(args.arch)
    if meta:  # the data and schedule a checkpoint was made with are part of the run
        args.seed, args.pool = meta["seed"], meta["data"]["pool_size"]
        args.categories = meta["categories_arg"]
    args.categories = args.categories or list(GRAMMARS[cfg.grammar])
    cache = Path(args.cache) if args.cache else None
    ckpt = Path(args.ckpt)
    command = "python scripts/train_shapes_model.py " + " ".join(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    tok = M.build_tokenizer(cfg.vocabulary, cfg.max_length)
    torch.manual_seed(args.seed)
    vae = M.build_vae(cfg)
    if meta:
        vae.load_state_dict(load_sharded(resume, "vae"))
        vae.register_to_config(scaling_factor=meta["vae_scaling_factor"])
    torch.manual_seed(args.seed + 3)
    transformer = M.build_transformer(cfg)
    M.init_transformer_weights(transformer)
    text_encoder = M.build_text_encoder(cfg, len(tok))

    if args.export:
        run_meta = meta
        trainer = FlowTrainer(transformer, text_encoder, args, device)
        restore(trainer, meta, resume, None, args)
    else:
        # 1-2. data, VAE (first session), the encoded pool
        if args.pool < 0:
            raise SystemExit("--pool must be >= 0")
        pool, vae_info, sf = load_data(cfg, args, meta, vae, device, cache)
        latents = pool["latents"].to(device)
        prompt_idx, ids, mask, e_ids, e_mask = tokenize_pool(tok, pool["prompts"], cfg.max_length, device)
        # 3. transformer + text encoder
        trainer = FlowTrainer(transformer, text_encoder, args, device)
        if meta:
            restore(trainer, meta, resume, cache, args)
        devices = sorted(set((meta or {}).get("train_devices", [])) | {device_name(device)})
        run_meta = {"config": cfg.to_dict(), "seed": args.seed, "categories_arg": args.categories,
                    "data": pool["info"], "vae": vae_info, "vae_scaling_factor": sf,
                    "commands": (meta or {}).get("commands", []) + [command], "train_devices": devices,
                    "hparams": {k: getattr(args, k) for k in ("lr", "wd", "warmup", "resume_warmup", "ema", "p_uncond",
                                                               "batch", "pool", "flow_seconds", "steps", "vae_lr",
                                                               "vae_kl", "vae_batch")}}

        def checkpoint():
            run_meta["loss_history"] = trainer.hist
            save_checkpoint(ckpt, run_meta, vae, trainer, cache)

        # finishing in this run needs the evaluation reserve; otherwise only the checkpoint's
        left_flow = (args.flow_seconds - trainer.seconds) if not args.steps else float("inf")
        finishing = args.finish or (time.time() + left_flow + args.eval_reserve + args.ckpt_reserve < deadline)
        until = deadline - args.ckpt_reserve - (args.eval_reserve if finishing else 0.0)
        trainer.train(latents, prompt_idx, ids, mask, e_ids, e_mask, until, on_checkpoint=checkpoint)
        checkpoint()
        done = trainer.seconds >= args.flow_seconds if not args.steps else trainer.step >= args.steps
        del latents, pool
        if not (done or args.finish):
            summary = {"finished": False, "flow": {k: v for k, v in trainer.info().items() if k != "loss_curve"},
                       "ckpt": str(ckpt), "seconds": round(time.time() - T0, 1)}
            print("SUMMARY " + json.dumps(summary), flush=True)
            return

    # 4. save the EMA weights as the pipeline
    trainer.ema.copy_to()
    out = Path(args.out)
    pipe = M.assemble_pipeline(tok, text_encoder, transformer, vae, M.build_scheduler(cfg.shift)).to(device)
    report = {
        **{k: run_meta[k] for k in ("seed", "commands", "train_devices", "config", "data", "vae", "vae_scaling_factor",
                                    "hparams")},
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
                     "transformers": __import__("transformers").__version__},
        "parameters": {k: sum(p.numel() for p in m.parameters()) for k, m in
                       (("transformer", transformer), ("text_encoder", text_encoder), ("vae", vae))},
        "defaults": {"num_inference_steps": cfg.num_inference_steps, "guidance_scale": cfg.guidance_scale,
                     "max_sequence_length": cfg.max_length, "shift": cfg.shift},
        "flow": trainer.info(), "weights_dtype": args.weights_dtype, "timing": {},
    }
    M.save_pipeline(pipe, out, report, weights_dtype=getattr(torch, args.weights_dtype))
    log(f"saved pipeline to {out} ({sum(dir_files(out).values()) / 2**20:.1f} MiB)")

    # 5. evaluate (reload from disk: what ships is what is measured)
    pipe = M.load_pipeline(out, device=device)
    try:
        if not args.no_eval:
            evaluate(pipe, args, device, report)
        elif args.dump:
            dump_latents(pipe, args, cfg, Path(args.dump))
    finally:
        finish_report(pipe, out, report)
    summary = {"finished": True, "eval": {k: (e["overall"], e["per_category"]) for k, e in report.get("eval", {}).items()},
               "shift": report["defaults"]["shift"], "flow_steps": trainer.step, "total_seconds": report["total_seconds"],
               "timing": report["timing"], "files": dir_files(out)}
    print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
