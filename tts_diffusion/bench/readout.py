"""What a sweep reads off a search: which candidate it returns at a budget, the judge's
verdict on that candidate, and the options a run at a budget uses."""
from __future__ import annotations

#: a judge score at least this high counts as a pass (the oracle scores 1.0 when every check passes)
PASS = 1.0 - 1e-6


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


def judge_score(candidate, prompt: str, judge, guide_is_judge: bool) -> float:
    """The judge's score of the candidate's image (0.0 for no candidate). When the search was
    guided by the judge itself, the candidate already holds that score."""
    if candidate is None:
        return 0.0
    if guide_is_judge:
        return float(candidate.score)
    image = candidate.image.float().div(255).unsqueeze(0).to(judge.device)
    return float(judge(image, [prompt])[0])


def fit_to_budget(name: str, nfe: int, steps: int, options: dict) -> dict:
    """The options of one run at `nfe`: rbf / svdd / code keep their declared chains and pool
    (num_particles, init_pool) where the budget pays for them, and use fewer chains / a
    smaller pool where it does not (the searchers raise rather than shrink a request; the
    benchmark shrinks explicitly, by this stated rule, and records the options it used)."""
    from ..searchers import searcher_params

    opts = dict(options)
    if name in ("rbf", "svdd", "code") and steps > 0:
        declared = searcher_params(name)
        k = max(1, min(int(opts.get("num_particles", declared.get("num_particles").default)), nfe // steps))
        opts["num_particles"] = k
        if name == "rbf":
            pool = int(opts.get("init_pool", declared.get("init_pool").default))
            opts["init_pool"] = max(1, min(pool, nfe // k - (steps - 1)))
    return opts

