#!/usr/bin/env python
"""Score gap of the verifiers in half precision against float32 (upstream scores in fp32).

For CLIP (ViT-L/14 by default) and ImageReward (BLIP ViT-L/16 + BERT-base), full-size
random weights unless real ones are given, on natural-looking images made in code
(tts_diffusion/testing/natural_images.py, `--size` px, resized to 224 by the verifier's own torch
preprocessing) with DrawBench-style prompts (image i gets prompt number i // `--group`):

    the fp32 verifier scores every image; a deep copy cast to each `--dtypes` entry
    (fp16, bf16) scores the same inputs. Rows: max |gap|, mean |gap|, both also in units
    of the fp32 score std across the images (the yardstick: how far apart the images
    are), Spearman rank correlation over all images, and the share of best-of-`--group`
    picks (argmax within each group of `--group` images of one prompt) that agree.

Matmul settings are torch's defaults (TF32 off for fp32 matmuls: recorded in the JSON).

GPU (H100):  python scripts/bench_verifier_precision.py --device cuda --out docs/verifier_precision.json
CPU smoke:   python scripts/bench_verifier_precision.py --device cpu --model tiny --images 16 --size 256 \\
                 --dtypes bf16 --out /tmp/precision.json
Real weights: --clip-pretrained openai (from the local open_clip / hub cache), --ir-model-dir DIR.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from tts_diffusion.bench.agreement import gap_stats
from tts_diffusion.testing.natural_images import natural_images, to_float

PROMPTS = [
    "A red colored car.",
    "A black apple and a green backpack. The apple is on the left of the backpack.",
    "An emoji of a baby panda wearing a red hat, green gloves, red shirt, and green pants.",
    "A storefront with 'Deep Learning' written on it.",
    "Two cars on the street.",
    "A triangular purple flower pot.",
    "New York Skyline with 'Google Research Pizza Cafe' written with fireworks on the sky.",
    "A couch on the left of a chair.",
]
TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 128, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}
TINY_IR_VISION = {"img_size": 224, "patch_size": 32, "embed_dim": 64, "depth": 2, "num_heads": 4}
TINY_IR_MED = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def build(which: str, args, device: torch.device):
    """The fp32 verifier and a description."""
    if which == "clip":
        from tts_diffusion.verifiers.clip import CLIPVerifier

        model = args.model
        if model == "tiny":
            from open_clip import factory

            factory._MODEL_CONFIGS["tts-precision-tiny"] = json.loads(json.dumps(TINY_CLIP))
            model = "tts-precision-tiny"
        torch.manual_seed(args.seed)
        v = CLIPVerifier(model=model, pretrained=args.clip_pretrained, device=device, dtype="fp32",
                         chunk_size=args.batch)
        return v, f"CLIP {model} ({args.clip_pretrained or 'random weights'})"
    from tts_diffusion.verifiers.blip import MED_CONFIG_BASE
    from tts_diffusion.verifiers.image_reward import ImageRewardVerifier

    if args.ir_model_dir:
        return (ImageRewardVerifier(model_dir=args.ir_model_dir, device=device, dtype="fp32", chunk_size=args.batch),
                f"ImageReward from {args.ir_model_dir}")
    if args.model == "tiny":
        v = ImageRewardVerifier(random_weights=True, vision_config=TINY_IR_VISION, med_config={**MED_CONFIG_BASE, **TINY_IR_MED},
                                device=device, dtype="fp32", chunk_size=args.batch, seed=args.seed)
        return v, "ImageReward tiny (random weights)"
    v = ImageRewardVerifier(random_weights=True, device=device, dtype="fp32", chunk_size=args.batch, seed=args.seed)
    return v, "ImageReward ViT-L/16 + BERT-base (random weights)"


@torch.no_grad()
def scores(v, images: torch.Tensor, prompts: list[str], batch: int, device: torch.device) -> torch.Tensor:
    out = [v(images[i:i + batch].to(device), prompts[i:i + batch]) for i in range(0, len(images), batch)]
    return torch.cat(out).float().cpu()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--verifiers", default="clip,image_reward", help="comma list of clip, image_reward")
    ap.add_argument("--model", default="ViT-L-14", help="open_clip architecture, or 'tiny' (tiny CLIP and ImageReward)")
    ap.add_argument("--clip-pretrained", default=None, help="open_clip pretrained tag or file (default: random weights)")
    ap.add_argument("--ir-model-dir", default=None, help="folder with ImageReward.pt, med_config.json, vocab.txt")
    ap.add_argument("--dtypes", default="fp16,bf16", help="comma list compared against fp32")
    ap.add_argument("--images", type=int, default=256, help="number of images (multiple of --group)")
    ap.add_argument("--group", type=int, default=8, help="images per prompt (best-of-group agreement)")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels before the verifier's 224 resize")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    which = [w.strip() for w in args.verifiers.split(",") if w.strip()]
    if not which or set(which) - {"clip", "image_reward"}:
        ap.error(f"--verifiers takes clip and/or image_reward, got {args.verifiers!r}")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    from tts_diffusion.verifiers.base import resolve_dtype

    try:
        [resolve_dtype(d, torch.device("cpu")) for d in dtypes]
    except Exception as e:
        ap.error(str(e))
    if args.images < 2 or args.group < 1 or args.images % args.group or args.batch < 1 or args.size < 8:
        ap.error("--images must be >= 2 and a multiple of --group; --batch >= 1; --size >= 8")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    t0 = time.perf_counter()
    images = to_float(natural_images(args.images, args.size, seed=args.seed))
    prompts = [PROMPTS[(i // args.group) % len(PROMPTS)] for i in range(args.images)]
    print(f"{args.images} natural-looking images at {args.size}px ({time.perf_counter() - t0:.1f}s); "
          f"{len(set(prompts))} prompts, groups of {args.group}", flush=True)

    result: dict = {
        "settings": vars(args),
        "env": {"torch": torch.__version__, "python": platform.python_version(),
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32},
        "verifiers": {},
    }
    header = f"{'verifier':<48} {'dtype':<5} {'max|d|':>9} {'mean|d|':>9} {'std32':>8} {'max/std':>8} {'mean/std':>9} {'spearman':>9} {'best-of agree':>13}"
    lines = [header, "-" * len(header)]
    for w in which:
        v, what = build(w, args, device)
        ref = scores(v, images, prompts, args.batch, device)
        block = {"what": what, "fp32_scores": ref.tolist(), "dtypes": {}}
        for d in dtypes:
            low_v = copy.deepcopy(v).to(resolve_dtype(d, device))
            low = scores(low_v, images, prompts, args.batch, device)
            del low_v
            st = gap_stats(ref, low, args.group)
            block["dtypes"][d] = {**st, "scores": low.tolist()}
            lines.append(f"{what[:48]:<48} {d:<5} {st['max_abs']:>9.2e} {st['mean_abs']:>9.2e} {st['score_std_fp32']:>8.4f} "
                         f"{st['max_abs_over_std']:>8.4f} {st['mean_abs_over_std']:>9.4f} {st['spearman']:>9.5f} "
                         f"{st['best_of_group_agreement']:>9.3f} ({st['groups']})")
        result["verifiers"][w] = block
        del v
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
