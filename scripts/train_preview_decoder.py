"""Train a tiny preview decoder (diffusers AutoencoderTiny format, TAESD-style) for the
embedded shapes model: distilled from the model's own VAE decoder on the Tweedie estimates
x0 of the model's own stochastic sampling, so that intermediate rewards cost a fraction of
a full decode (`process_options={"preview_decoder": DIR}`, `tts-diffusion bench
--preview-decoder DIR`).

    python scripts/train_preview_decoder.py --out runs/shapes-preview                 # CPU, minutes
    python scripts/train_preview_decoder.py --device cuda --prompts 300 --iters 4000 --out runs/shapes-preview

Writes DIR/config.json + weights (AutoencoderTiny.save_pretrained) and DIR/training.json
(loss, held-out PSNR against the full decode, seconds).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tts_diffusion import TTSPipeline  # noqa: E402
from tts_diffusion.bench.prompts import balanced_subset, load_prompt_set  # noqa: E402
from tts_diffusion.shapes.grammar import model_grammar  # noqa: E402
from tts_diffusion.testing.latents import tweedie_estimates  # noqa: E402


def make_decoder(vae, width: int):
    """An AutoencoderTiny whose decoder upsamples like `vae` (one block per VAE block) and
    whose config carries the VAE's latent scaling, so the pipeline's decode math applies."""
    from diffusers import AutoencoderTiny

    n = len(vae.config.block_out_channels)
    cfg = vae.config
    return AutoencoderTiny(latent_channels=cfg.latent_channels, encoder_block_out_channels=(8,) * n,
                           num_encoder_blocks=(1,) * n, decoder_block_out_channels=(width,) * n,
                           num_decoder_blocks=(1,) * n, scaling_factor=cfg.scaling_factor,
                           shift_factor=cfg.shift_factor or 0.0, force_upcast=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--prompts", type=int, default=48, help="training prompts (category-balanced eval prompts)")
    ap.add_argument("--particles", type=int, default=4, help="stochastic trajectories per prompt")
    ap.add_argument("--every", type=int, default=2, help="keep the x0 estimate of every k-th step")
    ap.add_argument("--width", type=int, default=32, help="decoder channels")
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", default="runs/shapes-preview")
    ap.add_argument("--model", default=None, help="shapes model folder (default: the shipped one)")
    args = ap.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    device = torch.device(args.device)
    tts = TTSPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    tts.set_progress_bar_config(disable=True)
    tts.to(device)
    proc = tts.process()
    # the eval split of the model's grammar, grouped by category: take every k-th for a mix
    prompt_set = {"v1": "shapes_eval", "v2": "shapes_eval_v2"}[model_grammar(args.model)]
    prompts = [p["prompt"] for _, p in sorted(balanced_subset(load_prompt_set(prompt_set), None),
                                             key=lambda ip: (ip[1]["category"], ip[0]))]
    stride = max(1, len(prompts) // (args.prompts + 6))
    mixed = prompts[::stride]
    train_p, held_p = mixed[: args.prompts], mixed[args.prompts: args.prompts + 6]
    steps = list(range(0, proc.num_steps, args.every)) + [proc.num_steps - 1]
    z, _, _ = tweedie_estimates(proc, train_p, args.particles, steps, seed=0)
    zh, _, _ = tweedie_estimates(proc, held_p, 2, steps, seed=1)
    with torch.no_grad():  # targets: the full decode in [-1, 1], on the pipeline's own path
        y = torch.cat([proc.decode(z[s: s + 64]) for s in range(0, len(z), 64)]) * 2 - 1
        yh = torch.cat([proc.decode(zh[s: s + 64]) for s in range(0, len(zh), 64)]) * 2 - 1
    vae = tts.pipe.vae
    scale, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    u, uh = z / scale + shift, zh / scale + shift  # what vae.decode receives
    t_data = time.perf_counter() - t0
    print(f"{len(z)} training / {len(zh)} held-out latents {tuple(z.shape[1:])} -> images {tuple(y.shape[1:])} "
          f"({t_data:.0f} s)", flush=True)

    model = make_decoder(vae, args.width).to(device)
    opt = torch.optim.AdamW(model.decoder.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.iters)
    losses = []
    for it in range(args.iters):
        idx = torch.randint(0, len(u), (args.batch,))
        loss = F.mse_loss(model.decode(u[idx]).sample, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if it % 250 == 0 or it == args.iters - 1:
            print(f"iter {it:5d}  mse {sum(losses[-50:]) / len(losses[-50:]):.5f}", flush=True)
    model.eval()
    with torch.no_grad():
        mse = float(F.mse_loss(model.decode(uh).sample.clamp(-1, 1), yh))
    psnr = 10 * math.log10(4.0 / mse)  # images in [-1, 1]: peak-to-peak 2
    out = Path(args.out)
    model.save_pretrained(out)
    info = {"train_latents": len(z), "heldout_latents": len(zh), "iters": args.iters, "final_train_mse":
            sum(losses[-50:]) / 50, "heldout_mse": mse, "heldout_psnr_db": psnr, "seconds": time.perf_counter() - t0,
            "decoder_params": sum(p.numel() for p in model.decoder.parameters()),
            "vae_decoder_params": sum(p.numel() for p in vae.decoder.parameters()), "device": str(device)}
    (out / "training.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
