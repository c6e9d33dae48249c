"""What a critic says about one image: a text and per-claim results."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .claims import Claim


class ClaimResult(NamedTuple):
    """One checked claim: did the image satisfy it, and the critic's score for it
    (decomposed critic: the probe's margin over its best contrast; feedback critic: 1 / 0)."""

    claim: Claim
    passed: bool
    score: float


@dataclass
class Critique:
    """A critic's verdict on one image: `text` (what is wrong, in words) and `claims`."""

    text: str
    claims: list[ClaimResult] = field(default_factory=list)

    @property
    def failed(self) -> list[Claim]:
        return [c.claim for c in self.claims if not c.passed]

    def to_dict(self) -> dict:
        return {"text": self.text,
                "claims": [{"claim": c.claim.text, "kind": c.claim.kind, "passed": bool(c.passed),
                            "score": round(float(c.score), 6)} for c in self.claims]}
