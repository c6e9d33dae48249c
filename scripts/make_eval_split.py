"""Write the fixed prompt sets of the shapes world (tts_diffusion/assets/prompts/):

* shapes_eval.json     grammar v1: GenEval's six categories, 100 prompts each (600); the v1
                       model's numbers are measured on it
* shapes_eval_v2.json  grammar v2: all eleven categories, 60 prompts each (660)
* shapes_hard.json     the hard split: the five categories grammar v2 adds (counting_many,
                       size_attr, three_object, between, inside), 48 prompts each (240)

The hard split's rule looks at the grammar only, never at a model or a search result: the
categories v2 adds are the ones that bind more than any v1 category (five or six objects to
count, a size bound to each of two objects, three colour-shape bindings, a relation among
three objects, containment). Where a category has enough distinct prompts the hard split
avoids the v2 eval split's, so the two measure different prompts.

For each category the distinct prompts of the grammar (`enumerate_prompts`) are shuffled
with a generator seeded (seed, category index) and taken cyclically until the category has
its count, so every prompt of a small category appears equally often (as in GenEval, a
prompt may repeat: each item is one sample to generate and check). A prompt's index in its
set seeds its generation (`tts-diffusion bench`, scripts/oracle_generated.py).
Deterministic: the same seeds write the same files.

    python scripts/make_eval_split.py
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tts_diffusion.paths import eval_prompts_path
from tts_diffusion.shapes.grammar import CATEGORIES, GRAMMARS, V2_CATEGORIES, enumerate_prompts

PROMPTS_DIR = eval_prompts_path().parent
HARD_RULE = ("the five categories grammar v2 adds (counting_many, size_attr, three_object, between, inside), chosen"
             " from the grammar alone; prompts of the v2 eval split avoided where a category has enough others")


def _draw(category: str, k: int, seed: int, n: int, avoid: set[str] = frozenset()) -> list[dict]:
    """n items of `category`: its prompts (less `avoid` when at least n remain) in a seeded
    order, taken cyclically."""
    rng = np.random.default_rng([seed, k])
    prompts = enumerate_prompts(category)
    fresh = [p for p in prompts if p not in avoid]
    prompts = fresh if len(fresh) >= n else prompts
    order = rng.permutation(len(prompts))
    return [{"prompt": prompts[int(order[i % len(prompts)])], "category": category} for i in range(n)]


def make_split(seed: int = 0, per_category: int = 100) -> dict:
    """The v1 split as a JSON-ready dict: {"version": 1, "seed", "prompts": [{prompt, category}]}."""
    items = [it for k, c in enumerate(GRAMMARS["v1"]) for it in _draw(c, k, seed, per_category)]
    return {"version": 1, "seed": seed, "per_category": per_category, "prompts": items}


def make_split_v2(seed: int = 0, per_category: int = 60) -> dict:
    """The grammar v2 eval split: every category, `per_category` prompts each."""
    items = [it for k, c in enumerate(CATEGORIES) for it in _draw(c, k, seed, per_category)]
    return {"version": 2, "grammar": "v2", "seed": seed, "per_category": per_category, "prompts": items}


def make_hard_split(seed: int = 1, per_category: int = 48, eval_seed: int = 0, eval_per_category: int = 60) -> dict:
    """The hard split (module doc), avoiding the prompts of the v2 eval split drawn with
    (`eval_seed`, `eval_per_category`)."""
    avoid = {it["prompt"] for it in make_split_v2(eval_seed, eval_per_category)["prompts"]}
    items = [it for c in V2_CATEGORIES for it in _draw(c, CATEGORIES.index(c), seed, per_category, avoid)]
    return {"version": 2, "grammar": "v2", "seed": seed, "per_category": per_category, "rule": HARD_RULE,
            "prompts": items}


def to_json(split: dict) -> str:
    """JSON text with one prompt item per line (diff-friendly)."""
    head = {k: v for k, v in split.items() if k != "prompts"}
    lines = [json.dumps(item) for item in split["prompts"]]
    return json.dumps(head)[:-1] + ', "prompts": [\n  ' + ",\n  ".join(lines) + "\n]}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description="write the fixed shapes prompt sets")
    ap.add_argument("--seed", type=int, default=0, help="seed of the v1 and v2 eval splits")
    ap.add_argument("--hard-seed", type=int, default=1)
    ap.add_argument("--out-dir", type=Path, default=PROMPTS_DIR)
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, split in (("shapes_eval.json", make_split(args.seed)), ("shapes_eval_v2.json", make_split_v2(args.seed)),
                        ("shapes_hard.json", make_hard_split(args.hard_seed, eval_seed=args.seed))):
        (args.out_dir / name).write_text(to_json(split))
        print(f"wrote {len(split['prompts'])} prompts ({split['per_category']} per category) to {args.out_dir / name}")


if __name__ == "__main__":
    main()
