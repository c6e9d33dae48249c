"""Prompt refiners: (prompt, critique) -> prompt.

* `rules`: rewrite toward the failed claims without a model.
  - Prompts of the shapes grammar stay inside it (checked with its parser, same meaning):
    the object of the first failed claim moves to the front ("a photo of a square and a
    red triangle" -> "a photo of a red triangle and a square"; lists of three and size
    pairs alike); a failed relation between objects that are both present is said from
    the other side ("a circle above a triangle" -> "a triangle below a circle"); "A between
    B and C" names a failed C first. Single-object, colour, counting and "inside" prompts
    have one phrasing in the grammar and stay as they are.
  - Other prompts: each failed claim is restated explicitly after the prompt ("...; make sure: there are exactly two
    dogs; the car is red"), counts as numbers in words. A restatement from an earlier round
    is replaced, not appended to.
* `lm`: a causal language model from a local folder (lm.py).

The verifier always judges the original prompt; a refined prompt only conditions the
generator."""
from __future__ import annotations

from typing import Protocol

from ..catalog.searchers import REFINERS
from ..errors import TTSInputError
from ..shapes import grammar
from ..shapes.phrasing import parse_prompt
from .claims import Claim, parse_claims
from .critique import Critique

EMPHASIS = "; make sure: "


class Refiner(Protocol):
    name: str

    def __call__(self, prompt: str, critique: Critique) -> str: ...


class RuleRefiner:
    """Rule-based rewrite toward the failed claims (module doc)."""

    name = "rules"

    def __call__(self, prompt: str, critique: Critique) -> str:
        failed = critique.failed
        if not failed:
            return prompt
        try:
            spec = parse_prompt(prompt)
        except TTSInputError:
            return self._plain(prompt, failed)
        return shapes_rewrite(spec, failed)

    def _plain(self, prompt: str, failed: list[Claim]) -> str:
        base = prompt.split(EMPHASIS)[0].rstrip(" .")
        return base + EMPHASIS + "; ".join(restate(c) for c in failed)


def restate(claim: Claim) -> str:
    """A failed claim as an explicit instruction."""
    if claim.kind == "object":
        return f"there is {claim.text}"
    if claim.kind == "count":
        return f"there {'is' if claim.text.split()[1:2] == ['one'] else 'are'} {claim.text}"
    return claim.text


def _meaning(spec: grammar.Spec) -> tuple:
    """What a shapes prompt says, up to the order its grammar lets objects come in: a list of
    objects ("and", "A, B and C") in any order, the two around "between" in any order, a
    position relation said from either side."""
    objs = spec.objects
    if spec.relation in ("right of", "below"):  # said from the other side
        return spec.category, objs[::-1], CONVERSE[spec.relation]
    if spec.relation == grammar.BETWEEN:
        return spec.category, objs[0], tuple(sorted(objs[1:], key=repr)), spec.relation
    if spec.relation is None and len(objs) > 1:
        return spec.category, tuple(sorted(objs, key=repr)), None
    return spec.category, objs, spec.relation


def _same_meaning(a: grammar.Spec, b: grammar.Spec) -> bool:
    return _meaning(a) == _meaning(b)


CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def shapes_rewrite(spec: grammar.Spec, failed: list[Claim]) -> str:
    """The grammar rewrite of the module doc; the result parses to the same meaning. A
    list of objects or a size pair puts the object of the first failed claim first; "A
    between B and C" names the failed end first ("A between C and B"); counts and "inside"
    have one phrasing and stay as they are."""
    first = failed[0]
    objs = list(spec.objects)
    if len(objs) < 2 or spec.relation == grammar.INSIDE:
        return spec.prompt
    target = first.nouns[0] if first.nouns else None
    relation = spec.relation
    if spec.relation == grammar.BETWEEN:
        if objs[1] == objs[2] or first.kind == "relation" or target != objs[2].shape:
            return spec.prompt
        objs = [objs[0], objs[2], objs[1]]
    elif first.kind == "relation" and spec.relation in CONVERSE:
        objs, relation = objs[::-1], CONVERSE[spec.relation]
    else:
        idx = next((k for k, o in enumerate(objs) if o.shape == target), 0)
        if idx == 0:
            return spec.prompt
        if spec.relation in CONVERSE:
            objs, relation = objs[::-1], CONVERSE[spec.relation]
        else:
            objs = [objs[idx]] + objs[:idx] + objs[idx + 1:]
    new = grammar.format_prompt(objs, relation)
    if not _same_meaning(spec, parse_prompt(new)):
        raise RuntimeError(f"rule refiner changed the meaning of {spec.prompt!r} to {new!r}")
    return new


def make_refiner(name: str, *, model: str | None = None, device=None, max_new_tokens: int = 48) -> Refiner:
    """A refiner by name: rules | lm (`model`: the language model's local folder)."""
    if name == "rules":
        return RuleRefiner()
    if name == "lm":
        from .lm import LMRefiner

        return LMRefiner(model, device=device, max_new_tokens=max_new_tokens)
    raise TTSInputError(f"unknown refiner {name!r}; choose from {', '.join(REFINERS)}")


__all__ = ["REFINERS", "Refiner", "RuleRefiner", "make_refiner", "parse_claims", "restate", "shapes_rewrite"]
