"""The status lines above the best image: one for each state a request can be in.

    error     one line in the page's words (a toggle's label, not `rgba=True`)
    waiting   its place in the demo's queue and how long it has waited
    starting  what runs, with which budget
    running   NFE of the budget, best score so far, seconds since it started; a search that
              has not reported for a while says so ("no candidate scored yet", "working
              (scoring or denoising), 6 s since the last report")
    done      best score, NFE, candidates, time, seed
"""
from __future__ import annotations

import re

from ..records.result import SearchResult
from ..core.state import Progress

#: the page's words for the API's (the call options behind toggles and boxes)
PAGE_WORDS = (
    (r"rgba=True \(--rgba\)", 'the "RGBA" toggle'),
    (r"\brgba=True\b", 'the "RGBA" toggle'),
    (r"--rgba\b", 'the "RGBA" toggle'),
    (r"\btgate=True\b|--tgate\b", 'the "T-GATE" toggle'),
    (r"\bnum_inference_steps\b", '"Steps"'),
    (r"\bguidance_scale\b", '"Guidance scale"'),
    (r"\bnegative_prompt\b", '"Negative prompt"'),
)
#: a silence longer than this is explained on the page
QUIET_AFTER = 2.0


def page_words(message: str) -> str:
    for pattern, words in PAGE_WORDS:
        message = re.sub(pattern, words, message)
    return message


def error_message(message: str) -> str:
    """The status line for bad input (one line, the error's own words in the page's)."""
    return f"⚠️ **Error:** {page_words(' '.join(str(message).split()))}"


def waiting_message(ahead: int, running: int, waited: float) -> str:
    """'Waiting in the queue: place 2, 1 request ahead of yours (1 running) · 4 s'."""
    others = f"{ahead} request{'s' if ahead != 1 else ''} ahead of yours" if ahead else "next in line"
    return (f"**Waiting in the queue**: place {ahead + 1}, {others} ({running} running) · {waited:.0f} s; "
            f"it starts by itself")


def starting_message(searcher: str, verifier: str, budget: int) -> str:
    return f"**Starting** {searcher} with {verifier}, budget {budget} NFE…"


def bar(frac: float, width: int = 20) -> str:
    filled = int(round(min(max(frac, 0.0), 1.0) * width))
    return "▰" * filled + "▱" * (width - filled)


def running_message(searcher: str, p: Progress | None, elapsed: float, quiet: float = 0.0) -> str:
    """Two lines: what runs and for how long; NFE of the budget and the best score so far,
    or why nothing has changed for a while."""
    head = f"**Running** {searcher} · {elapsed:.0f} s"
    if p is None:
        return f"{head}\n\n{bar(0.0)} working, no candidate scored yet"
    best = "no candidate scored yet" if p.best_score is None else f"best so far **{p.best_score:.3f}**"
    line = f"{bar(p.nfe / p.max_nfe if p.max_nfe > 0 else 0.0)} {p.nfe} / {p.max_nfe} NFE · {best}"
    if quiet >= QUIET_AFTER:  # the search reports after every denoiser call: most silences are scoring
        line += f" · working (scoring or denoising), {quiet:.0f} s since the last report"
    return f"{head}\n\n{line}"


def done_message(result: SearchResult) -> str:
    """One line under the image: score, NFE, candidates, time, seed."""
    seed = result.settings.get("seed")
    took = result.timings.get("total")
    n = len(result.candidates)
    parts = [f"best score **{result.best_score:.3f}**", f"{result.nfe} NFE", f"{n} candidate" + ("" if n == 1 else "s")]
    if took is not None:
        parts.append(f"{took:.1f} s")
    if seed is not None:
        parts.append(f"seed {seed}")
    return "Done: " + " · ".join(parts)
