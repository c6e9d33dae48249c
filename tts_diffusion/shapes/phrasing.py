"""Natural phrasings of shapes-world prompts -> the canonical prompt of the grammar.

The embedded model was trained on the canonical prompts of `grammar.format_prompt`
("a photo of two red circles", "a photo of a circle left of a square"); users type
"two red circles", "2 Red Circles!", "a circle to the left of a square". `canonical_prompt`
maps such text to the canonical prompt, or raises a one-line TTSInputError naming the
closest prompt that works.

Accepted variations (all combinable):
- Unicode compatibility forms (NFKC: full-width letters, non-breaking spaces), any case,
  extra whitespace, punctuation (trailing or between words);
- an optional lead-in: "a photo of", "an image of", "a picture of" (with or without the article);
- articles "a" / "an" / "the" or none before an object; digits 1-4 for counts;
- singular/plural agreement fixed from the count ("two circle" -> "two circles");
- relations "left of" / "to the left of" / "on the left of" (and right), "above" / "over" /
  "on top of", "below" / "under" / "beneath" / "underneath".
"""
from __future__ import annotations

import functools
import re
import unicodedata

from ..errors import TTSInputError
from .grammar import COLORS, NUMBERS, PLURALS, RELATIONS, SHAPES, ObjectSpec, enumerate_prompts, format_prompt, short

__all__ = ["canonical_prompt", "closest_prompt"]

_LEAD_INS = (("a", "photo", "of"), ("an", "image", "of"), ("a", "picture", "of"), ("an", "picture", "of"),
             ("a", "image", "of"), ("photo", "of"), ("image", "of"), ("picture", "of"))
_DIGITS = {str(v): k for k, v in NUMBERS.items()}
#: word sequences -> relation of the grammar (longest first when matching)
_RELATION_PHRASES: dict[tuple[str, ...], str] = {}
for _side in ("left", "right"):
    for _form in ((_side, "of"), ("to", "the", _side, "of"), ("on", "the", _side, "of"), ("to", "the", _side, "side", "of"),
                  ("on", "the", _side, "side", "of")):
        _RELATION_PHRASES[_form] = f"{_side} of"
for _form in (("above",), ("over",), ("on", "top", "of")):
    _RELATION_PHRASES[_form] = "above"
for _form in (("below",), ("under",), ("beneath",), ("underneath",)):
    _RELATION_PHRASES[_form] = "below"
assert set(_RELATION_PHRASES.values()) == set(RELATIONS)
_ARTICLES = ("a", "an", "the")
#: counts above the world's maximum, read as the largest count for the closest-prompt guess
_BIG_COUNTS = {w: "four" for w in ("five", "six", "seven", "eight", "nine", "ten", "many", "several")} | {
    str(n): "four" for n in range(5, 100)}
_PLURAL_TO_SHAPE = {p: s for s, p in PLURALS.items()}


def _words(prompt: str) -> list[str]:
    """NFKC, case-folded, punctuation dropped, digits 1-4 spelled out."""
    text = unicodedata.normalize("NFKC", prompt).casefold()
    text = re.sub(r"[^\w\s]|_", " ", text)
    return [_DIGITS.get(w, w) for w in text.split()]


def _strip_lead_in(words: list[str]) -> list[str]:
    for lead in _LEAD_INS:
        if tuple(words[: len(lead)]) == lead:
            return words[len(lead):]
    return words


def _split(words: list[str]) -> tuple[list[str], str | None, list[str] | None]:
    """(first phrase, 'and' | relation | None, second phrase or None)."""
    for i in range(len(words)):
        if words[i] == "and":
            return words[:i], "and", words[i + 1:]
        for phrase in sorted(_RELATION_PHRASES, key=len, reverse=True):
            if tuple(words[i: i + len(phrase)]) == phrase:
                return words[:i], _RELATION_PHRASES[phrase], words[i + len(phrase):]
    return words, None, None


def _object(words: list[str]) -> tuple[ObjectSpec, int | None] | str:
    """[article | number] [colour] noun -> (object with count 1, explicit count or None),
    or a reason why not."""
    count = None
    rest = list(words)
    if rest and rest[0] in _ARTICLES:
        rest = rest[1:]
    elif rest and rest[0] in NUMBERS:
        count, rest = NUMBERS[rest[0]], rest[1:]
    color = None
    if rest and rest[0] in COLORS:
        color, rest = rest[0], rest[1:]
    if len(rest) != 1:
        return f"expected [a | number] [colour] shape, got {' '.join(words) or 'nothing'!r}"
    noun = rest[0]
    shape = noun if noun in SHAPES else _PLURAL_TO_SHAPE.get(noun)
    if shape is None:
        return f"unknown shape {noun!r} (shapes: {', '.join(SHAPES)})"
    if count is None and noun in _PLURAL_TO_SHAPE:
        return f"{noun!r} needs a count (one to four), e.g. 'two {noun}'"
    return ObjectSpec(shape, color), count


def _canonical_or_reason(prompt: str) -> tuple[str | None, str]:
    words = _strip_lead_in(_words(prompt))
    if not words:
        return None, "no object named"
    first, sep, second = _split(words)
    a = _object(first)
    if isinstance(a, str):
        return None, a
    obj_a, count_a = a
    if sep is None:
        if count_a is not None:  # counting: "three stars", "one circle"
            return format_prompt([ObjectSpec(obj_a.shape, obj_a.color, count_a)], counting=True), ""
        return format_prompt([obj_a]), ""
    b = _object(second or [])
    if isinstance(b, str):
        return None, b
    obj_b, count_b = b
    if (count_a or 1) != 1 or (count_b or 1) != 1:
        return None, "counts are only for one kind of shape ('three stars'); two objects take 'a'"
    if obj_a == obj_b:
        how = f"use a count, e.g. 'two {PLURALS[obj_a.shape]}'" if sep == "and" else "give them different shapes or colours"
        return None, f"the two objects are the same; {how}"
    return format_prompt([obj_a, obj_b], None if sep == "and" else sep), ""


@functools.lru_cache(maxsize=4096)
def canonical_prompt(prompt: str) -> str:
    """The canonical prompt of the shapes grammar for a natural phrasing of it.

    >>> canonical_prompt("2 Red circles!")
    'a photo of two red circles'
    >>> canonical_prompt("a circle to the left of a square")
    'a photo of a circle left of a square'

    Raises TTSInputError (one line, naming the closest prompt that works) for a prompt
    outside the world."""
    if not isinstance(prompt, str):
        raise TTSInputError(f"prompt must be a string, got {type(prompt).__name__}")
    text, why = _canonical_or_reason(prompt)
    if text is None:
        raise TTSInputError(
            f"prompt {short(prompt)} is outside the shapes grammar: {short(why, 160)[1:-1]}; the closest prompt"
            f" that works is "
            f"{closest_prompt(prompt)!r} (shapes: {', '.join(SHAPES)}; colours: {', '.join(COLORS)}; "
            f"counts one to four; relations: and, left of, right of, above, below)"
        )
    return text


@functools.lru_cache(maxsize=1)
def _candidates() -> tuple[tuple[str, tuple[str, ...]], ...]:
    from .grammar import CATEGORIES

    out = []
    for category in CATEGORIES:
        for p in enumerate_prompts(category):
            out.append((p, tuple(_strip_lead_in(p.split()))))
    return tuple(out)


def _edit_distance(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Levenshtein distance over words."""
    prev = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        cur = [i]
        for j, wb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wa != wb)))
        prev = cur
    return prev[-1]


def closest_prompt(prompt: str) -> str:
    """The canonical prompt (of every prompt the eval categories enumerate) at the smallest
    word edit distance from `prompt` after normalisation (articles dropped, relation phrases
    and digits mapped to the grammar's words); ties go to the simpler prompt."""
    words = [_BIG_COUNTS.get(w, w) for w in _strip_lead_in(_words(prompt))]
    first, sep, second = _split(words)
    norm = [w for w in first if w not in _ARTICLES]
    if sep is not None:
        norm += sep.split() + [w for w in (second or []) if w not in _ARTICLES]
    norm_t = tuple(norm)
    best = min(_candidates(), key=lambda c: (_edit_distance(norm_t, tuple(w for w in c[1] if w not in _ARTICLES)), len(c[1])))
    return best[0]
