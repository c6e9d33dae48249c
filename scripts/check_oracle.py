"""Accuracy report for the shapes oracle.

Renders scenes from `sample_scenes`, perturbs every image (gaussian blur up to 1 px std at
64 px, scaled with the resolution, per-channel colour gain/offset jitter up to +-0.06,
gaussian noise up to 0.05 std), and measures per category:

* accepted: the oracle says "correct" for the image's own prompt (should be 100%),
* rejected: the oracle says "incorrect" for a mismatched prompt of the same category
  (wrong count / colour / shape, flipped / swapped / perpendicular relation, swapped
  colours or sizes, another middle object, the container inside what it contains; see
  `tts_diffusion.shapes.mismatch`), one per image, every alteration kind in turn,

for grammar v2 (all eleven categories) at 128 px, and for grammar v1 (its six) at 64 px,
the resolution of the v1 model. Prints a table and writes JSON (default
docs/oracle_accuracy.json); `--device cuda` runs the oracle on the GPU.

    python scripts/check_oracle.py            (seed 1234; default perturbation)

The results as run are in docs/oracle_accuracy.json (see its "reports").
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from tts_diffusion.shapes import GRAMMARS, render, sample_scenes
from tts_diffusion.shapes.mismatch import KINDS, mismatched_prompt
from tts_diffusion.shapes.detect import detect_batch
from tts_diffusion.shapes.oracle import evaluate
from tts_diffusion.shapes.phrasing import parse_prompt
from tts_diffusion.shapes.perturb import perturb


def measure(n: int, seed: int, size: int, grammar: str, strength: dict[str, float] | None = None, batch: int = 256,
            device: str = "cpu") -> dict:
    """Accept / reject rates per category (and per alteration kind) on `n` perturbed renders."""
    categories = GRAMMARS[grammar]
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device).manual_seed(seed)
    scenes = sample_scenes(n, generator=rng, categories=categories)
    stats: dict[str, dict] = {c: {"n": 0, "accepted": 0, "rejected": 0, "kinds": defaultdict(lambda: [0, 0])} for c in categories}
    failures: list[dict] = []
    seconds = 0.0
    for start in range(0, n, batch):
        chunk = scenes[start : start + batch]
        images = perturb(render(chunk, size=size, device=device), gen, **(strength or {}))
        wrong = []
        for k, s in enumerate(chunk):  # every alteration kind of a category in turn
            kinds = KINDS[s.category]
            wrong.append(mismatched_prompt(s, rng, kinds[((start + k) // len(categories)) % len(kinds)]))
        prompts = [s.prompt for s in chunk] + [p for p, _ in wrong]
        t0 = time.perf_counter()
        found = detect_batch(images)  # once per image, checked against both prompts
        results = [evaluate(parse_prompt(p), dets) for p, dets in zip(prompts, found + found)]
        seconds += time.perf_counter() - t0
        for i, scene in enumerate(chunk):
            st = stats[scene.category]
            ok, bad = results[i], results[len(chunk) + i]
            st["n"] += 1
            st["accepted"] += ok.correct
            st["rejected"] += not bad.correct
            kind = wrong[i][1]
            st["kinds"][kind][0] += 1
            st["kinds"][kind][1] += not bad.correct
            if not ok.correct:
                failures.append({"prompt": scene.prompt, "expected": True, "feedback": ok.feedback})
            if bad.correct:
                failures.append({"prompt": wrong[i][0], "expected": False, "feedback": bad.feedback})
    table = {}
    for c, st in stats.items():
        m = max(st["n"], 1)
        table[c] = {
            "n": st["n"],
            "accepted": st["accepted"] / m,
            "rejected": st["rejected"] / m,
            "rejected_by_kind": {k: {"n": v[0], "rejected": v[1] / max(v[0], 1)} for k, v in sorted(st["kinds"].items())},
        }
    return {"grammar": grammar, "size": size, "n": n, "seed": seed, "device": device, "oracle_seconds": round(seconds, 2),
            "categories": table, "failures": failures[:50]}


def print_table(report: dict) -> None:
    print(f"grammar {report['grammar']}, {report['size']} px, {report['n']} perturbed images"
          f" (oracle {report['oracle_seconds']} s on {report['device']}: detection once, two prompts checked)")
    print(f"{'category':14s} {'n':>4s}  {'accepted':>8s}  {'rejected':>8s}   rejected by alteration")
    for c, row in report["categories"].items():
        kinds = ", ".join(f"{k} {v['rejected']:.1%}" for k, v in row["rejected_by_kind"].items())
        print(f"{c:14s} {row['n']:4d}  {row['accepted']:8.2%}  {row['rejected']:8.2%}   {kinds}")
    for f in report["failures"][:10]:
        print(f"  failure: {f['prompt']!r} expected {'correct' if f['expected'] else 'incorrect'}: {f['feedback']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5500, help="grammar v2 images at --size (balanced over its 11 categories)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n-v1", type=int, default=3000, help="grammar v1 images at --v1-size (0 to skip)")
    ap.add_argument("--v1-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--noise", type=float, default=0.05, help="max gaussian noise std")
    ap.add_argument("--blur", type=float, default=1.0, help="max blur std in pixels (at 64 px)")
    ap.add_argument("--jitter", type=float, default=0.06, help="max per-channel gain / offset jitter")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("docs/oracle_accuracy.json"))
    args = ap.parse_args()

    t0 = time.time()
    strength = {"noise": args.noise, "blur": args.blur, "jitter": args.jitter}
    reports = [measure(args.n, args.seed, args.size, "v2", strength, device=args.device)]
    if args.n_v1 > 0:
        reports.append(measure(args.n_v1, args.seed + 1, args.v1_size, "v1", strength, device=args.device))
    for r in reports:
        print_table(r)
        print()
    worst_acc = min(row["accepted"] for r in reports for row in r["categories"].values())
    worst_rej = min(row["rejected"] for r in reports for row in r["categories"].values())
    print(f"worst category: accepted {worst_acc:.2%}, rejected {worst_rej:.2%} ({time.time() - t0:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    perturbation = {
        "blur_std_px_at_64": [0.0, args.blur],
        "color_gain": [1.0 - args.jitter, 1.0 + args.jitter],
        "color_offset": [-args.jitter, args.jitter],
        "noise_std": [0.0, args.noise],
    }
    # keep the sections other scripts add (check_oracle_other_renderer.py: "other_renderer")
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    old.update({"version": 2, "perturbation": perturbation, "reports": reports})
    args.out.write_text(json.dumps(old, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
