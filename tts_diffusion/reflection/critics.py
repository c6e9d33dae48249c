"""Critics: image, prompt, verdict -> Critique (text + per-claim results).

One interface, batched over images (a reflection loop critiques all chain heads at once):

    critic.check_prompt(prompt)                  # before any sampling: can it judge this prompt?
    critiques = critic(images, prompt, verdict)  # images [B,3,H,W] in [0,1]; verdict of the guide

* `feedback`: the guiding verifier's own per-check feedback (the shapes oracle: "expected
  3 circles, found 2"); refused for verifiers that give none and prompts they cannot judge.
* `decomposed`: split the prompt into atomic claims (claims.py) and score each with a
  verifier that reads free text (CLIP, the domain CLIP, or the oracle on shapes prompts).
  A claim passes when the prompt scores at least as high as every contrast (the prompt
  with that claim made false):
      margin = s(image, prompt) - max_c s(image, contrast_c) >= threshold  (default 0),
  i.e. the image is at least as close to the claim as to any alternative to it, which needs
  no calibration of CLIP's absolute cosine (a threshold > 0 asks for a clearer win).
* `vlm`: a vision-language model from a local folder (vlm.py).
* `none`: no critique (empty text, no claims): with refine="image" the loop is then
  verify -> SDEdit the chain heads -> verify, for any verifier and any prompt.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import torch

from ..catalog.searchers import CRITICS
from ..core.budget import Budget
from ..errors import TTSInputError
from ..verifiers.base import Verdict, Verifier
from .claims import Claim, parse_claims
from .critique import ClaimResult, Critique


class Critic(Protocol):
    name: str

    def check_prompt(self, prompt: str) -> None: ...

    def __call__(self, images: torch.Tensor, prompt: str, verdict: Verdict | None = None) -> list[Critique]: ...


def gives_feedback(verifier: Verifier) -> bool:
    """Whether a verifier's `verdict` adds feedback text (it overrides the base verdict)."""
    return type(verifier).verdict is not Verifier.verdict


def text_scores(verifier: Verifier, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """Scores [B, T] of every image against every text. CLIP-like verifiers (with
    `encode_images` / `encode_texts`) encode each image once and return cosines; any
    other verifier is called once per text."""
    images = images.to(verifier.device)
    if hasattr(verifier, "encode_images") and hasattr(verifier, "encode_texts"):
        with torch.no_grad():
            img = verifier.encode_images(images)
            txt = verifier.encode_texts(list(texts))
        return (img @ txt.T).float().cpu()
    cols = [verifier(images, [t] * images.shape[0]).float().cpu() for t in texts]
    return torch.stack(cols, dim=1)


class NoCritic:
    """No critique: every image gets an empty one (nothing for a refiner to act on)."""

    name = "none"

    def check_prompt(self, prompt: str) -> None:
        return None

    def __call__(self, images: torch.Tensor, prompt: str, verdict: Verdict | None = None) -> list[Critique]:
        return [Critique("") for _ in range(images.shape[0])]


class FeedbackCritic:
    """The guiding verifier's per-check feedback (the oracle's checks and its one line)."""

    name = "feedback"

    def __init__(self, verifier: Verifier, budget: Budget | None = None):
        self.verifier, self.budget = verifier, budget

    def check_prompt(self, prompt: str) -> None:
        if not gives_feedback(self.verifier):
            raise TTSInputError(f"critic 'feedback' needs a verifier that explains its scores (e.g. oracle);"
                                f" verifier {self.verifier.name!r} gives none: use critic=decomposed")
        self.verifier.check_prompt(prompt)

    def __call__(self, images: torch.Tensor, prompt: str, verdict: Verdict | None = None) -> list[Critique]:
        if hasattr(self.verifier, "results"):  # per-check results (the oracle)
            if self.budget is not None:
                self.budget.charge_verifier(images.shape[0])
            nouns = [o.noun for o in parse_claims(prompt).objects]
            out = []
            for r in self.verifier.results(images.to(self.verifier.device), prompt):
                claims = [ClaimResult(_check_claim(desc, nouns), bool(ok), float(ok)) for desc, ok in r.checks]
                out.append(Critique(r.feedback, claims))
            return out
        if verdict is None or verdict.feedback is None:
            if self.budget is not None:
                self.budget.charge_verifier(images.shape[0])
            verdict = self.verifier.verdict(images.to(self.verifier.device), prompt)
        return [Critique(text) for text in (verdict.feedback or [""] * images.shape[0])]


def _check_claim(description: str, nouns: Sequence[str]) -> Claim:
    """An oracle check ("exactly 3 red circles", "the circle is left of the square") as a Claim."""
    found = sorted((description.find(n), n) for n in set(nouns) if n in description)
    about = tuple(n for _, n in found)
    if description.startswith("exactly"):
        kind = "count"
    elif len(about) >= 2 and any(r in description for r in (" left of ", " right of ", " above ", " below ", " bigger than ",
                                                            " between ", " inside ")):
        kind = "relation"
    elif description.endswith("present"):
        kind = "object"
    else:
        kind = "color"
    return Claim(kind, description, "", (), about)


class DecomposedCritic:
    """Atomic claims scored with any verifier (see the module doc for the pass rule)."""

    name = "decomposed"

    def __init__(self, verifier: Verifier, threshold: float | None = None, budget: Budget | None = None):
        self.verifier, self.budget = verifier, budget
        self.threshold = float(threshold or 0.0)

    def claims(self, prompt: str) -> list[Claim]:
        """The prompt's claims, keeping only captions this verifier can read."""
        out = []
        for c in parse_claims(prompt).claims:
            if not self._readable(c.probe):
                continue
            contrasts = tuple(t for t in c.contrasts if self._readable(t))
            if not contrasts:
                continue
            out.append(Claim(c.kind, c.text, c.probe, contrasts, c.nouns))
        return out

    def _readable(self, text: str) -> bool:
        try:
            self.verifier.check_prompt(text)
        except TTSInputError:
            return False
        return True

    def check_prompt(self, prompt: str) -> None:
        if not self.claims(prompt):
            raise TTSInputError(f"critic 'decomposed' found no claim in {prompt!r} that verifier"
                                f" {self.verifier.name!r} can score; write objects like 'a red car', 'two dogs'")

    def __call__(self, images: torch.Tensor, prompt: str, verdict: Verdict | None = None) -> list[Critique]:
        claims = self.claims(prompt)
        texts = list(dict.fromkeys(t for c in claims for t in (c.probe, *c.contrasts)))
        col = {t: k for k, t in enumerate(texts)}
        if self.budget is not None:
            self.budget.charge_verifier(images.shape[0] * len(texts))
        s = text_scores(self.verifier, images, texts)  # [B, T]
        out = []
        for b in range(images.shape[0]):
            results, problems = [], []
            for c in claims:
                alt = [float(s[b, col[t]]) for t in c.contrasts]
                k = max(range(len(alt)), key=alt.__getitem__)
                score = float(s[b, col[c.probe]]) - alt[k]
                passed = score >= self.threshold
                results.append(ClaimResult(c, passed, score))
                if not passed:
                    problems.append(f"{c.text} fails (looks more like '{c.contrasts[k]}')")
            text = "; ".join(problems) if problems else "all claims hold"
            out.append(Critique(text, results))
        return out


def make_critic(name: str, verifier: Verifier, *, budget: Budget | None = None, model: str | None = None,
                threshold: float | None = None, device: torch.device | str | None = None) -> Critic:
    """A critic by name: feedback | decomposed | vlm (`model`: the VLM's local folder) | none."""
    if name == "none":
        return NoCritic()
    if name == "feedback":
        return FeedbackCritic(verifier, budget)
    if name == "decomposed":
        return DecomposedCritic(verifier, threshold, budget)
    if name == "vlm":
        from .vlm import VLMCritic

        return VLMCritic(model, device=device)
    raise TTSInputError(f"unknown critic {name!r}; choose from {', '.join(CRITICS)}")
