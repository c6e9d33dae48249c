"""Write the fixed evaluation split of the shapes world: tts_diffusion/assets/prompts/shapes_eval.json.

For each of GenEval's six categories, the distinct prompts of the grammar
(`enumerate_prompts`) are shuffled with a seeded generator and taken cyclically until the
category has `--per-category` items, so every prompt of a small category appears equally
often (as in GenEval, a prompt may repeat: each item is one sample to generate and check).
Deterministic: the same seed writes the same file.

    python scripts/make_eval_split.py --seed 0
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tts_diffusion.paths import eval_prompts_path
from tts_diffusion.shapes.grammar import GRAMMARS, enumerate_prompts

DEFAULT_OUT = eval_prompts_path()


def make_split(seed: int = 0, per_category: int = 100) -> dict:
    """The split as a JSON-ready dict: {"version": 1, "seed", "prompts": [{prompt, category}]}."""
    items = []
    for k, category in enumerate(GRAMMARS["v1"]):
        rng = np.random.default_rng([seed, k])
        prompts = enumerate_prompts(category)
        order = rng.permutation(len(prompts))
        for i in range(per_category):
            items.append({"prompt": prompts[int(order[i % len(prompts)])], "category": category})
    return {"version": 1, "seed": seed, "per_category": per_category, "prompts": items}


def to_json(split: dict) -> str:
    """JSON text with one prompt item per line (diff-friendly)."""
    head = {k: v for k, v in split.items() if k != "prompts"}
    lines = [json.dumps(item) for item in split["prompts"]]
    return json.dumps(head)[:-1] + ', "prompts": [\n  ' + ",\n  ".join(lines) + "\n]}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description="write the fixed shapes evaluation split")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-category", type=int, default=100)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    split = make_split(args.seed, args.per_category)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(to_json(split))
    print(f"wrote {len(split['prompts'])} prompts ({args.per_category} per category) to {args.out}")


if __name__ == "__main__":
    main()
