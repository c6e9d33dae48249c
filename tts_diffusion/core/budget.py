"""NFE and verifier-call accounting.

The budget is charged by the `DenoisingProcess` itself (one NFE per row passed through the
denoiser, classifier-free guidance's doubled batch counted once; the model cost, rows the
denoiser actually forwards with CFG rows counted twice, is kept beside it in `model_rows`,
so T-GATE's savings after its gate show) and by the verifier
wrapper (one call per scored image), so a searcher cannot under-report what it spends.
Charging past the limit raises `BudgetExceeded` *before* the work is done.

Gradients (reward guidance, DriftLite, noise optimisation) are charged by one rule:

- a **reward gradient row** (decode the x0 estimate, score it, backward through the verifier
  and the decoder into the latent; `core/reward_grad.py`) is one verifier call and is counted
  in `reward_grads`; it passes no denoiser, so it costs no NFE;
- a **denoiser backward row** (a vector-Jacobian product through the denoiser: TFG's
  variance guidance, one Hutchinson probe of a score divergence) costs `BACKWARD_NFE` = 2 NFE
  (a backward pass costs about two forward passes) and is counted in `denoiser_backwards`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import BudgetExceeded

#: NFE charged for one row of a backward pass through the denoiser (a VJP ~ 2 forwards)
BACKWARD_NFE = 2


@dataclass
class Budget:
    """A hard limit on denoiser evaluations (NFE) and, optionally, verifier calls."""

    max_nfe: int
    max_verifier_calls: int | None = None
    nfe: int = 0
    verifier_calls: int = 0
    #: model cost: rows forwarded through the denoiser (CFG batch = 2 rows per NFE; 1 after a T-GATE gate)
    model_rows: int = 0
    #: reward-gradient rows (decode + verifier forward and backward; 1 verifier call each)
    reward_grads: int = 0
    #: rows of backward passes through the denoiser (BACKWARD_NFE NFE each)
    denoiser_backwards: int = 0
    #: called as `on_charge(nfe_added)` after each NFE charge (progress bars)
    on_charge: Callable[[int], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_nfe < 0:
            raise ValueError(f"max_nfe must be >= 0, got {self.max_nfe}")

    @property
    def remaining_nfe(self) -> int:
        return self.max_nfe - self.nfe

    def can_afford(self, nfe: int) -> bool:
        return self.nfe + nfe <= self.max_nfe

    def charge_nfe(self, n: int) -> None:
        if n < 0:
            raise ValueError("cannot charge a negative NFE")
        if self.nfe + n > self.max_nfe:
            raise BudgetExceeded(
                f"NFE budget exceeded: {self.nfe} spent + {n} requested > {self.max_nfe} allowed"
            )
        self.nfe += n
        if self.on_charge is not None and n:
            self.on_charge(n)

    def credit(self, n: int) -> None:
        """Give back n NFE charged for work the model did not do: the process charges a denoiser
        call in full before it runs, and a cache hook (draft_commit's draft=cache) may skip
        most of the model; the hook's own count of computed blocks says how much."""
        if not 0 <= n <= self.nfe:
            raise ValueError(f"cannot credit {n} NFE of {self.nfe} spent")
        self.nfe -= n

    def charge_model_rows(self, n: int) -> None:
        """Record denoiser rows forwarded (not limited: NFE is the unit users budget in)."""
        if n < 0:
            raise ValueError("cannot charge negative model rows")
        self.model_rows += n

    def charge_verifier(self, n: int) -> None:
        if self.max_verifier_calls is not None and self.verifier_calls + n > self.max_verifier_calls:
            raise BudgetExceeded(
                f"verifier budget exceeded: {self.verifier_calls} spent + {n} requested"
                f" > {self.max_verifier_calls} allowed"
            )
        self.verifier_calls += n

    def charge_reward_grad(self, n: int) -> None:
        """n reward-gradient rows: n verifier calls (limited like any), counted in `reward_grads`."""
        if n < 0:
            raise ValueError("cannot charge a negative number of reward gradients")
        self.charge_verifier(n)
        self.reward_grads += n

    def charge_denoiser_backward(self, n: int) -> None:
        """n rows of a backward pass through the denoiser: BACKWARD_NFE * n NFE (limited)."""
        if n < 0:
            raise ValueError("cannot charge a negative number of denoiser backward rows")
        self.charge_nfe(BACKWARD_NFE * n)
        self.denoiser_backwards += n
