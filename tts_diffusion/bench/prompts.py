"""Prompt sets for sweeps: the shipped shapes eval split, or a file of the user's.

Each prompt is a dict {"prompt": str, "category": str}; its position in the set (its index)
seeds its searches, so a prompt's result does not depend on which process ran it."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..errors import TTSInputError

#: the name of the shipped 600-prompt shapes eval split (grammar v1: GenEval categories)
SHAPES_EVAL = "shapes_eval"
#: the shipped prompt sets (scripts/make_eval_split.py): the v1 split, the grammar v2 split
#: (660 prompts, 11 categories) and the hard split (240 prompts of the 5 categories v2 adds)
PROMPT_SETS: tuple[str, ...] = (SHAPES_EVAL, "shapes_eval_v2", "shapes_hard")


def load_prompt_set(spec: str = SHAPES_EVAL) -> list[dict]:
    """A shipped set by name (PROMPT_SETS), a .json file ({"prompts": [...]} or a list; items
    are strings or {"prompt", "category"} dicts) or a text file (one prompt a line)."""
    from ..paths import eval_prompts_path

    path = eval_prompts_path().parent / f"{spec}.json" if spec in PROMPT_SETS else Path(spec).expanduser()
    if not path.is_file():
        raise TTSInputError(f"prompt set {spec!r} is neither one of {', '.join(PROMPT_SETS)} nor an existing .json / .txt file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TTSInputError(f"prompt set {path} is not valid JSON ({e.msg}, line {e.lineno})") from None
        items = data.get("prompts") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise TTSInputError(f"prompt set {path} must hold a list of prompts or {{\"prompts\": [...]}}")
    else:
        items = [line.strip() for line in text.splitlines() if line.strip()]
    prompts = []
    for i, p in enumerate(items):
        if isinstance(p, str):
            p = {"prompt": p}
        if not isinstance(p, dict) or not isinstance(p.get("prompt"), str) or not p["prompt"].strip():
            raise TTSInputError(f"prompt set {path}: item {i} is not a prompt string or {{\"prompt\": ...}}")
        prompts.append({"prompt": p["prompt"], "category": str(p.get("category", "all"))})
    if not prompts:
        raise TTSInputError(f"prompt set {path} holds no prompts")
    return prompts


def balanced_subset(prompts: list[dict], k: int | None) -> list[tuple[int, dict]]:
    """(index, prompt) pairs: k prompts, the same number from every category, in set order
    (a larger k contains a smaller one's prompts); k=None: all. Indices are positions in the
    full set, so the same prompt keeps its seed in any subset."""
    indexed = list(enumerate(prompts))
    if k is None or k >= len(prompts):
        return indexed
    by_cat: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for i, p in indexed:
        by_cat[p["category"]].append((i, p))
    per = max(1, k // len(by_cat))
    return sorted(ip for cat in sorted(by_cat) for ip in by_cat[cat][:per])


def eval_prompts(k: int) -> list[dict]:
    """k prompts of the shapes eval split, the same number from every category, grouped by
    category (the order the earlier benchmark scripts used)."""
    chosen = balanced_subset(load_prompt_set(SHAPES_EVAL), k)
    return [p for _, p in sorted(chosen, key=lambda ip: (ip[1]["category"], ip[0]))]
