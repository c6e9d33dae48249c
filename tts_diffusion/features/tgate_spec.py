"""T-GATE's settings and its schedule, without torch (the caching itself is in tgate.py).

`TGate` is what `tgate=` / `--tgate` / `--tgate-option` take (`TGATE_PARAMS` declares its
options, params.py); `TGate.plan(s)` is the reference's `tgate_scheduler`: what
cross-attention and self-attention do at step s."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

from ..errors import TTSInputError
from ..params import Param, ParamSpec

#: T-GATE's name among a call's features (`CallState.features`) and its option's name
ENTRY = "tgate"

TGATE_PARAMS = ParamSpec("T-GATE", [
    Param("gate_step", int, 10, "step g from which cross-attention (MM-DiT: the text stream) is cached"
                                " and CFG is dropped (at or past the number of steps: never gate)", low=1),
    Param("sp_interval", int, 5, "before the gate, recompute self-attention every sp_interval steps"
                                 " after warm_up and reuse it in between (TGATE-V2; 1 = every step;"
                                 " no effect on MM-DiT)", low=1),
    Param("fi_interval", int, 1, "after the gate, recompute self-attention every fi_interval steps"
                                 " (1 = every step; no effect on MM-DiT)", low=1),
    Param("warm_up", int, 2, "first steps with self-attention always computed (no effect on MM-DiT)", low=0),
])

COMPUTE, CACHE, REUSE = "compute", "cache", "reuse"
#: what a model is gated through (`model_kind`)
CROSS, MMDIT = "cross-attention", "mm-dit"


@dataclass(frozen=True)
class TGate:
    """T-GATE settings (the reference's defaults: SD / SDXL gate 10 of 25, sp 5, fi 1,
    warm-up 2; PixArt gate 15 of 25 with sp 3)."""

    gate_step: int = 10
    sp_interval: int = 5
    fi_interval: int = 1
    warm_up: int = 2

    def __post_init__(self) -> None:
        TGATE_PARAMS.validate(asdict(self))

    @classmethod
    def parse(cls, value: Any) -> "TGate | None":
        """What `tgate=` accepts: None / False (off), True (the defaults), a gate step (int),
        a dict of TGate fields, or a TGate."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, TGate):
            return value
        if isinstance(value, int):
            return cls(gate_step=value)
        if isinstance(value, dict):
            return cls(**TGATE_PARAMS.validate(value))
        raise TTSInputError(f"tgate={value!r} is not valid: pass a gate step (an integer >= 1), a dict of"
                            f" {', '.join(TGATE_PARAMS.names())}, or a TGate")

    @classmethod
    def from_cli(cls, gate_step: int | None, options: Iterable[str] = ()) -> "TGate | None":
        """`--tgate GATE_STEP` and `--tgate-option KEY=VALUE` (options need --tgate)."""
        opts = TGATE_PARAMS.parse(options)
        if gate_step is None:
            if opts:
                raise TTSInputError("--tgate-option needs --tgate GATE_STEP")
            return None
        return cls(**{**opts, "gate_step": TGATE_PARAMS.get("gate_step").validate(gate_step, "T-GATE")})

    def active(self, num_steps: int) -> bool:
        """Whether the gate falls inside a sampling run of `num_steps` steps."""
        return self.gate_step < num_steps

    def plan(self, s: int) -> tuple[str, str, bool]:
        """(cross-attention mode, self-attention mode, average CFG halves) at step s:
        the reference's `tgate_scheduler`, line for line."""
        g = self.gate_step
        if s < g - 1:  # semantics planning
            if s < self.warm_up:
                sa = COMPUTE
            elif s == self.warm_up or s % self.sp_interval == 0:
                sa = CACHE
            else:
                sa = REUSE
            return COMPUTE, sa, False
        if s == g - 1:  # the gate: cache (uncond + cond) / 2
            return CACHE, CACHE, True
        return REUSE, (CACHE if s % self.fi_interval == 0 else REUSE), False  # fidelity improving

    def phases(self, num_steps: int) -> set[tuple[str, str]]:
        """The distinct (cross-attention, self-attention) modes of a run of `num_steps`
        steps (at most six): the reference's plan; a compiled denoiser needs one graph per
        `model_phases` entry and batch shape."""
        return {self.plan(s)[:2] for s in range(num_steps)}

    def model_phases(self, num_steps: int, kind: str = CROSS) -> set[tuple[str, str]]:
        """`phases` as a compiled denoiser of `kind` meets them (its graphs per batch shape): an
        MM-DiT (no self-attention column) has three, (COMPUTE, COMPUTE) before the gate (the
        ungated graph), the gate, after. A cross-attention model's hooks branch only on what
        they reuse (features/tgate.py), so within a frame COMPUTE runs as CACHE does; the
        warm-up's (COMPUTE, COMPUTE) has no frame and is the ungated graph."""
        if kind == MMDIT:
            return {(ca, COMPUTE) for ca, _ in self.phases(num_steps)}
        return {(ca, sa) if (ca, sa) == (COMPUTE, COMPUTE) else
                tuple(REUSE if m == REUSE else CACHE for m in (ca, sa)) for ca, sa in self.phases(num_steps)}

    def describe(self) -> dict[str, int]:
        return asdict(self)
