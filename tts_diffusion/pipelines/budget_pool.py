"""A shared NFE budget over a list of prompts (adaptive compute: RAISE 2026, the ComfyUI
selectors' stop threshold): prompts that succeed early give what they did not spend to the
ones that do not. Torch-free; `TTSPipeline(prompts, budget_pool=T, stop_score=s)` and
`tts-diffusion bench --pool` use it.

The allocation rule (deterministic, so a pooled run is reproducible from its seed):

    pass 1  prompts in the order given; prompt i gets the even split of what is left,
            floor(left / prompts not yet searched), and searches with stop_score; what it
            does not spend goes back to the pool
    pass 2  what is left is split the same way over the prompts that did not reach
            stop_score, in the order given; each gets a second search (its generator goes on,
            so new seeds) when its share pays for the searcher's minimum; the prompt keeps the
            better of its two results (the first on a tie)

The total spent never exceeds T. Without stop_score no search stops early, pass 1 spends
the pool evenly (up to rounding) and pass 2 has only the rounding left over."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TTSInputError

RULE = "pass 1: even split of what is left, in prompt order; pass 2: the rest split the same way over the prompts below stop_score"


@dataclass
class BudgetPool:
    """The pool's ledger: `take` an allotment, `give_back` what a search left unspent."""

    total: int
    num_prompts: int
    left: int = field(init=False)
    allotted: list[list[int]] = field(init=False)
    spent: list[list[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.left = self.total
        self.allotted = [[] for _ in range(self.num_prompts)]
        self.spent = [[] for _ in range(self.num_prompts)]

    @staticmethod
    def check(total: object, num_prompts: int, minimum: int, given_budget: object) -> int:
        """The pool as an int, or one line saying what is wrong (before any model work)."""
        if isinstance(total, bool) or not isinstance(total, int) or total < 1:
            raise TTSInputError(f"budget_pool must be a positive integer (NFE shared by the prompts), got {total!r}")
        if given_budget is not None:
            raise TTSInputError("pass either budget (NFE per prompt) or budget_pool (NFE shared by all prompts), not both")
        if total < num_prompts * minimum:
            raise TTSInputError(f"budget_pool={total} NFE is below {num_prompts} prompt(s) x the searcher's minimum of"
                                f" {minimum} NFE; raise it to at least {num_prompts * minimum}")
        return total

    def take(self, prompt: int, among: int) -> int:
        """Prompt `prompt`'s allotment: the even split of what is left over `among` prompts."""
        share = self.left // max(1, among)
        self.left -= share
        self.allotted[prompt].append(share)
        return share

    def give_back(self, prompt: int, share: int, used: int) -> None:
        if used > share:
            raise RuntimeError(f"a search spent {used} NFE of an allotment of {share}")
        self.left += share - used
        self.spent[prompt].append(used)

    def record(self, prompt: int) -> dict:
        """What prompt `prompt`'s result records about the pool."""
        return {"total": self.total, "rule": RULE, "allotted": self.allotted[prompt], "spent": self.spent[prompt]}
