"""How well preview rewards agree with full-decode rewards: the Tweedie estimates x0 of the
embedded model's own stochastic sampling, decoded by the full VAE and by a preview decoder
(scripts/train_preview_decoder.py, or any TAESD-format folder for other models), scored by
the same verifier; Spearman rank correlation per step and overall, and decode time per
image for each.

    python scripts/bench_preview.py --preview runs/shapes-preview --out docs/bench_preview.json   # GPU
    python scripts/bench_preview.py --device cpu --preview /tmp/shapes-preview --prompts 6 --out /tmp/p.json

Accuracy and time per search with and without previews, in the same run, come from
`tts-diffusion bench` (printed at the end as commands).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tts_diffusion import TTSPipeline  # noqa: E402
from tts_diffusion.bench import eval_prompts  # noqa: E402
from tts_diffusion.bench.agreement import spearman  # noqa: E402
from tts_diffusion.testing.latents import tweedie_estimates  # noqa: E402


def timed_decode(proc, z: torch.Tensor, preview: bool, batch: int) -> tuple[torch.Tensor, float]:
    sync = torch.cuda.synchronize if proc.device.type == "cuda" else (lambda: None)
    proc.decode(z[:batch], preview=preview)  # warm-up
    sync()
    t0 = time.perf_counter()
    out = torch.cat([proc.decode(z[s: s + batch], preview=preview) for s in range(0, len(z), batch)])
    sync()
    return out, (time.perf_counter() - t0) / len(z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preview", required=True, help="preview decoder folder (AutoencoderTiny format)")
    ap.add_argument("--model", default=None, help="diffusers folder (default: the embedded shapes model)")
    ap.add_argument("--verifier", default="oracle")
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--particles", type=int, default=8)
    ap.add_argument("--at", default="2,5,10,15,19", help="grid points whose x0 estimates are scored")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default="docs/bench_preview.json")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    tts = TTSPipeline.from_pretrained(args.model, torch_dtype=dtype)
    tts.set_progress_bar_config(disable=True)
    tts.to(device)
    proc = tts.process(preview_decoder=args.preview)
    ver = tts.get_verifier(args.verifier)
    at = [min(int(i), proc.num_steps - 1) for i in args.at.split(",")]
    prompts = [p["prompt"] for p in eval_prompts(args.prompts)]
    z, who, when = tweedie_estimates(proc, prompts, args.particles, at, seed=0)
    full, t_full = timed_decode(proc, z, False, args.batch)
    prev, t_prev = timed_decode(proc, z, True, args.batch)
    texts = [prompts[k] for k in who]
    b = args.batch
    s_full = torch.cat([ver(full[s: s + b], texts[s: s + b]).cpu() for s in range(0, len(z), b)])
    s_prev = torch.cat([ver(prev[s: s + b], texts[s: s + b]).cpu() for s in range(0, len(z), b)])
    when_t, who_t = torch.tensor(when), torch.tensor(who)
    per_step = {}
    for i in at:
        m = when_t == i
        # within-prompt ranking is what a search uses: correlate per prompt, then average
        within = [spearman(s_full[m & (who_t == k)], s_prev[m & (who_t == k)]) for k in range(len(prompts))]
        within = [w for w in within if w is not None]
        per_step[i] = {"spearman_all": spearman(s_full[m], s_prev[m]),
                       "spearman_within_prompt_mean": sum(within) / len(within) if within else None,
                       "prompts_with_varying_scores": len(within),
                       "mean_abs_score_diff": float((s_full[m] - s_prev[m]).abs().mean())}
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "verifier": args.verifier,
           "prompts": len(prompts), "particles": args.particles, "latents": len(z), "preview": args.preview,
           "spearman_overall": spearman(s_full, s_prev), "per_step": per_step,
           "decode_ms_per_image": {"full": 1e3 * t_full, "preview": 1e3 * t_prev}}
    print(f"{len(z)} x0 estimates ({len(prompts)} prompts x {args.particles} trajectories x steps {at}), "
          f"verifier {args.verifier}")
    print(f"{'step':>5} {'spearman':>9} {'within-prompt':>14} {'|diff|':>8}")
    for i, r in per_step.items():
        f = lambda v: "   -" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{i:>5} {f(r['spearman_all']):>9} {f(r['spearman_within_prompt_mean']):>14} "
              f"{r['mean_abs_score_diff']:8.3f}")
    print(f"overall spearman {res['spearman_overall']}; decode per image: full {1e3 * t_full:.2f} ms, "
          f"preview {1e3 * t_prev:.2f} ms")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}\naccuracy and time per search, same settings, with and without previews:")
    for tag, extra in (("full", ""), ("preview", f" --preview-decoder {args.preview}")):
        print(f"  tts-diffusion bench --methods smc,svdd --budgets 4,16 --num-prompts {args.prompts}{extra} "
              f"--out bench_preview_{tag}.jsonl")


if __name__ == "__main__":
    main()
