"""What the shapes-world benchmarks (bench_scaling.py, bench_particles.py) share: the
category-balanced prompt subset, which candidate a search returns at a smaller budget, and
the oracle's verdict on it."""
from __future__ import annotations

import json
from collections import defaultdict


def eval_prompts(k: int) -> list[dict]:
    """k prompts of assets/prompts/shapes_eval.json, the same number from every category, in
    file order (so a larger k contains a smaller one's prompts)."""
    from tts_diffusion.paths import assets_dir

    prompts = json.loads((assets_dir() / "prompts" / "shapes_eval.json").read_text())["prompts"]
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for p in prompts:
        by_cat[p["category"]].append(p)
    per = max(1, k // len(by_cat))
    return [p for cat in sorted(by_cat) for p in by_cat[cat][:per]]


def picked(result, budget_nfe: int, steps: int):
    """The candidate the search would have returned had it stopped at `budget_nfe`.
    Best-of-N's candidates of one round share the round's NFE stamp; its first k candidates
    are exactly best-of-k (seeds are drawn in order), so for it the prefix is used; for the
    others, the best candidate recorded within the budget."""
    if result.settings.get("searcher") == "best_of_n":
        within = result.candidates[: budget_nfe // steps]
    else:
        within = [c for c in result.candidates if c.nfe <= budget_nfe]
    return max(within, key=lambda c: c.score) if within else None


def judge(candidate, prompt: str, guided_by_oracle: bool, oracle) -> float:
    """1.0 if the oracle passes the candidate's image (score 1), else 0.0. A search guided by
    the oracle already holds its score; otherwise the kept image is judged."""
    if candidate is None:
        return 0.0
    if guided_by_oracle:
        return float(candidate.score >= 1.0 - 1e-6)
    image = candidate.image.float().div(255).unsqueeze(0).to(oracle.device)
    return float(oracle(image, [prompt])[0] >= 1.0 - 1e-6)
