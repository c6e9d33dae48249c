"""Best-of-N wall time: the batched toolkit search against a one-at-a-time loop, and the
toolkit's overhead over the same denoiser, decode and verifier work timed alone.

Setting (issue 2): SD-1.5 architecture (UNet2DConditionModel, AutoencoderKL, CLIP text
encoder; random weights, real sizes), 512x512, 25 DDIM steps, CFG 7.5, N = 32, CLIP
ViT-L/14 verifier (random weights), fp16 on CUDA.

    python scripts/bench_best_of_n.py --out docs/bench_best_of_n.json          # GPU
    python scripts/bench_best_of_n.py --device cpu --size 64 --n 4 --steps 2 --tiny   # smoke

Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tts_diffusion.bench.timing import timed  # noqa: E402
from tts_diffusion.testing.sd15 import add_best_of_n_args, build_sd15  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_best_of_n_args(ap)
    ap.add_argument("--out", default="docs/bench_best_of_n.json")
    args = ap.parse_args()

    from tts_diffusion import TTSPipeline
    from tts_diffusion.core.process import DenoisingProcess
    from tts_diffusion.verifiers import CLIPVerifier

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = build_sd15(device, dtype, args.tiny)
    verifier = CLIPVerifier(model="RN50" if args.tiny else "ViT-L-14", pretrained=None, device=device)
    n, steps, size = args.n, args.steps, args.size
    tts = TTSPipeline(pipe)

    # --- (a) the toolkit: batched best-of-N ------------------------------------------
    def toolkit():
        return tts(PROMPT, verifier=verifier, budget=n * steps, seed=0, num_inference_steps=steps,
                   guidance_scale=args.guidance, height=size, width=size, max_batch=args.max_batch, progress=False)

    toolkit()  # warm-up (cudnn autotuning, allocator)
    t_tool, all_tool, res = timed(toolkit, device, args.repeats)

    # --- (b) the loop a user would write: one pipeline call + one verifier call per candidate
    seeds = [c.seed for c in res.candidates]

    def loop(seeds=seeds):
        best = -1e9
        for s in seeds:
            img = pipe(PROMPT, num_inference_steps=steps, guidance_scale=args.guidance, height=size, width=size,
                       generator=torch.Generator().manual_seed(s), output_type="pt").images
            best = max(best, float(verifier(img.float(), [PROMPT])[0]))
        return best

    loop(seeds[: max(2, n // 8)])  # warm-up on a few
    t_loop, all_loop, best_loop = timed(loop, device, max(1, args.repeats - 1))

    # --- (c) the same work alone: encode once, UNet+CFG, DDIM step, VAE decode, verifier -
    proc = DenoisingProcess.from_pipeline(pipe, steps, args.guidance, height=size, width=size, max_batch=args.max_batch)
    x_init = proc.noise_from_seeds(seeds)
    unet, vae, sched = pipe.unet, pipe.vae, pipe.scheduler
    with torch.no_grad():
        pos, neg = pipe.encode_prompt(PROMPT, device, 1, True, None)

    @torch.no_grad()
    def raw():
        sched.set_timesteps(steps, device=device)
        imgs = []
        for s in range(0, n, args.max_batch):
            lat = x_init[s : s + args.max_batch]
            b = lat.shape[0]
            emb = torch.cat([neg.expand(b, -1, -1), pos.expand(b, -1, -1)])
            for t in sched.timesteps:
                e = unet(torch.cat([lat, lat]), t, encoder_hidden_states=emb, return_dict=False)[0]
                u, c = e.chunk(2)
                lat = sched.step(u + args.guidance * (c - u), t, lat, return_dict=False)[0]
            for d in range(0, b, proc.decode_batch):
                img = vae.decode(lat[d : d + proc.decode_batch] / vae.config.scaling_factor, return_dict=False)[0]
                imgs.append((img.float() / 2 + 0.5).clamp(0, 1))
        images = torch.cat(imgs)
        return verifier(images, [PROMPT] * n)

    raw()
    t_raw, all_raw, raw_scores = timed(raw, device, args.repeats)
    agree = torch.allclose(raw_scores.cpu(), torch.tensor(res.scores), atol=2e-2)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = [
        ("toolkit best-of-N (batched)", t_tool),
        ("loop, one candidate at a time", t_loop),
        ("same work alone (no toolkit)", t_raw),
    ]
    print(f"\nbest-of-N, N={n}, {size}x{size}, {steps} steps, CFG {args.guidance}, max_batch {args.max_batch}, "
          f"{str(dtype)[6:]}, {dev_name}")
    print(f"{'variant':<34} {'median s':>9} {'img/s':>7}")
    for name, t in rows:
        print(f"{name:<34} {t:9.3f} {n / t:7.2f}")
    speedup, overhead = t_loop / t_tool, t_tool / t_raw - 1
    print(f"speed-up over the loop: {speedup:.2f}x   toolkit overhead over the same work: {overhead * 100:+.1f}%")
    print(f"toolkit phase times (last run): {res.timings}")
    print(f"raw and toolkit scores agree: {agree}")
    out = {
        "device": dev_name, "dtype": str(dtype), "n": n, "steps": steps, "size": size, "guidance": args.guidance,
        "max_batch": args.max_batch, "toolkit_s": all_tool, "loop_s": all_loop, "raw_s": all_raw,
        "toolkit_median_s": t_tool, "loop_median_s": t_loop, "raw_median_s": t_raw, "speedup_vs_loop": speedup,
        "overhead_vs_raw": overhead, "toolkit_phases": res.timings, "scores_agree": bool(agree),
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
