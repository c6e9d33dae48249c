"""Natural phrasings of shapes-world prompts -> the canonical prompt of the grammar.

The embedded model was trained on the canonical prompts of `grammar.format_prompt`
("a photo of two red circles", "a photo of a circle left of a square"); users type
"two red circles", "2 Red Circles!", "a circle to the left of a square". `canonical_prompt`
maps such text to the canonical prompt of a grammar version (the model's: v1 or v2), or
raises a one-line TTSInputError naming the closest prompt that works in that version.
`parse_prompt` is the same mapping followed by `grammar.parse_canonical`.

Accepted variations (all combinable):
- Unicode compatibility forms (NFKC: full-width letters, non-breaking spaces), any case,
  extra whitespace, punctuation (trailing or between words);
- an optional lead-in: "a photo of", "an image of", "a picture of" (with or without the article);
- articles "a" / "an" / "the" or none before an object; digits 1-6 for counts;
- singular/plural agreement fixed from the count ("two circle" -> "two circles");
- relations "left of" / "to the left of" / "on the left of" (and right), "above" / "over" /
  "on top of", "below" / "under" / "beneath" / "underneath";
- (v2) size words "big" / "large" / "huge" and "small" / "little" / "tiny", in either order
  with the colour; one size word of two objects implies the other ("a big red circle and a
  blue square" -> "... and a small blue square");
- (v2) lists "A, B and C" / "A and B and C"; "between" / "in between", "between A and B",
  "between two Bs"; "inside" / "inside of" / "in" / "within", and "B containing A" / "B that
  contains A" for "A inside B" (size words there must say the inner object is the small one,
  and are dropped: "inside" says it).
"""
from __future__ import annotations

import functools
import re
import unicodedata

import numpy as np

from ..errors import TTSInputError
from .grammar import (
    BETWEEN,
    COLORS,
    GRAMMARS,
    INSIDE,
    MAX_COUNT,
    MAX_COUNT_MANY,
    NUMBER_WORDS,
    NUMBERS,
    PLURALS,
    RELATIONS,
    SHAPES,
    ObjectSpec,
    OutsideGrammar,
    Spec,
    check_grammar,
    enumerate_prompts,
    format_prompt,
    parse_canonical,
    short,
)

__all__ = ["canonical_prompt", "closest_prompt", "parse_prompt"]

_LEAD_INS = (("a", "photo", "of"), ("an", "image", "of"), ("a", "picture", "of"), ("an", "picture", "of"),
             ("a", "image", "of"), ("photo", "of"), ("image", "of"), ("picture", "of"))
_DIGITS = {str(v): k for k, v in NUMBERS.items()}
_CONTAINS = "containing"
#: word sequences -> link of the grammar: a relation, BETWEEN, INSIDE, or _CONTAINS (inside, reversed)
_LINK_PHRASES: dict[tuple[str, ...], str] = {}
for _side in ("left", "right"):
    for _form in ((_side, "of"), ("to", "the", _side, "of"), ("on", "the", _side, "of"), ("to", "the", _side, "side", "of"),
                  ("on", "the", _side, "side", "of")):
        _LINK_PHRASES[_form] = f"{_side} of"
for _form in (("above",), ("over",), ("on", "top", "of")):
    _LINK_PHRASES[_form] = "above"
for _form in (("below",), ("under",), ("beneath",), ("underneath",)):
    _LINK_PHRASES[_form] = "below"
assert set(_LINK_PHRASES.values()) == set(RELATIONS)
for _form in (("between",), ("in", "between")):
    _LINK_PHRASES[_form] = BETWEEN
for _form in (("inside",), ("inside", "of"), ("in",), ("within",)):
    _LINK_PHRASES[_form] = INSIDE
for _form in (("containing",), ("contains",), ("that", "contains"), ("which", "contains")):
    _LINK_PHRASES[_form] = _CONTAINS
_LINKS_LONGEST_FIRST = sorted(_LINK_PHRASES, key=len, reverse=True)
_ARTICLES = ("a", "an", "the")
_SIZE_WORDS = {"big": "big", "large": "big", "huge": "big", "small": "small", "little": "small", "tiny": "small"}
_PLURAL_TO_SHAPE = {p: s for s, p in PLURALS.items()}
_NOUNS = set(SHAPES) | set(_PLURAL_TO_SHAPE)
#: the largest count of each grammar version
_MAX_COUNTS = {"v1": MAX_COUNT, "v2": MAX_COUNT_MANY}


def _words(prompt: str) -> list[str]:
    """NFKC, case-folded, punctuation dropped, digits 1-6 spelled out."""
    text = unicodedata.normalize("NFKC", prompt).casefold()
    text = re.sub(r"[^\w\s]|_", " ", text)
    return [_DIGITS.get(w, w) for w in text.split()]


def _strip_lead_in(words: list[str]) -> list[str]:
    for lead in _LEAD_INS:
        if tuple(words[: len(lead)]) == lead:
            return words[len(lead):]
    return words


def _link_at(words: list[str], i: int) -> tuple[str, int] | None:
    """(link, number of words) of the longest link phrase starting at words[i], or None."""
    if words[i] == "and":
        return "and", 1
    for phrase in _LINKS_LONGEST_FIRST:
        if tuple(words[i: i + len(phrase)]) == phrase:
            return _LINK_PHRASES[phrase], len(phrase)
    return None


def _items(words: list[str]) -> list[tuple[str, object]]:
    """The words as a sequence of ("obj", words of one object phrase) and ("link", link):
    an object phrase runs up to its shape noun (or to the next link)."""
    items: list[tuple[str, object]] = []
    i = 0
    while i < len(words):
        link = _link_at(words, i)
        if link is not None:
            items.append(("link", link[0]))
            i += link[1]
            continue
        j = i
        while j < len(words) and words[j] not in _NOUNS and _link_at(words, j) is None:
            j += 1
        end = j + 1 if j < len(words) and words[j] in _NOUNS else j
        items.append(("obj", words[i:end]))
        i = end
    return items


def _object(words: list[str]) -> tuple[ObjectSpec, int | None] | str:
    """[article | number] [size] [colour] noun (size and colour in either order) ->
    (object with count 1, explicit count or None), or a reason why not."""
    count = None
    rest = list(words)
    if rest and rest[0] in _ARTICLES:
        rest = rest[1:]
    elif rest and rest[0] in NUMBERS:
        count, rest = NUMBERS[rest[0]], rest[1:]
    color = size = None
    for _ in range(2):
        if rest and rest[0] in COLORS and color is None:
            color, rest = rest[0], rest[1:]
        elif rest and rest[0] in _SIZE_WORDS and size is None:
            size, rest = _SIZE_WORDS[rest[0]], rest[1:]
    if len(rest) != 1:
        return f"expected [a | number] [size] [colour] shape, got {' '.join(words) or 'nothing'!r}"
    noun = rest[0]
    shape = noun if noun in SHAPES else _PLURAL_TO_SHAPE.get(noun)
    if shape is None:
        return f"unknown shape {noun!r} (shapes: {', '.join(SHAPES)})"
    if count is None and noun in _PLURAL_TO_SHAPE:
        return f"{noun!r} needs a count (one to six), e.g. 'two {noun}'"
    return ObjectSpec(shape, color, 1, size), count


def _canonical_or_reason(prompt: str) -> tuple[str | None, str]:
    """The canonical (v2) text of a natural phrasing, or (None, the reason it has none)."""
    words = _strip_lead_in(_words(prompt))
    if not words:
        return None, "no object named"
    items = _items(words)
    objs: list[tuple[ObjectSpec, int | None]] = []
    links: list[str] = []
    for kind, value in items:
        if kind == "obj":
            parsed = _object(value)  # type: ignore[arg-type]
            if isinstance(parsed, str):
                return None, parsed
            objs.append(parsed)
        else:
            links.append(value)  # type: ignore[arg-type]
    pattern = tuple("O" if kind == "obj" else value for kind, value in items)
    counts = [c for _, c in objs]
    specs = [o for o, _ in objs]

    if pattern == ("O",):
        (o, n) = objs[0]
        if n is not None:  # counting: "three stars", "one circle"
            if o.size:
                return None, "a count takes no size word; size words compare two objects ('a big circle and a small square')"
            return format_prompt([ObjectSpec(o.shape, o.color, n)], counting=True), ""
        return _checked(format_prompt([o]))
    if pattern == ("O", BETWEEN, "O") and counts[1] == 2:  # "A between two Bs"
        return _checked(format_prompt([specs[0], specs[1], specs[1]], BETWEEN), counts[:1])
    if pattern == ("O", BETWEEN, "O", "and", "O"):
        return _checked(format_prompt(specs, BETWEEN), counts)
    if pattern in (("O", "O", "and", "O"), ("O", "and", "O", "and", "O")):
        return _checked(format_prompt(specs), counts)
    if len(pattern) == 3 and pattern[0] == pattern[2] == "O":
        link = pattern[1]
        if link in (INSIDE, _CONTAINS):
            inner, outer = specs if link == INSIDE else specs[::-1]
            if inner.size not in (None, "small") or outer.size not in (None, "big"):
                return None, "the object inside must be the smaller one ('a small star inside a big circle')"
            plain = [ObjectSpec(o.shape, o.color) for o in (inner, outer)]
            return _checked(format_prompt(plain, INSIDE), counts)
        if link == "and":
            a, b = specs
            if (a.size is None) != (b.size is None):  # one size word implies the other
                other = {"big": "small", "small": "big"}[a.size or b.size]
                a, b = (a, ObjectSpec(b.shape, b.color, 1, other)) if a.size else (ObjectSpec(a.shape, a.color, 1, other), b)
            return _checked(format_prompt([a, b]), counts)
        if link in RELATIONS:
            return _checked(format_prompt(specs, link), counts)
    if not links:
        return None, "expected one object, or objects joined by 'and', a relation, 'between' or 'inside'"
    if BETWEEN in links:
        return None, "'between' reads 'A between B and C' or 'A between two Bs'"
    return None, (f"expected 'A and B', 'A, B and C', 'A <relation> B' (left of, right of, above, below), "
                  f"'A between B and C' or 'A inside B'; got {' '.join(words)!r}")


def _checked(text: str, counts: list[int | None] = ()) -> tuple[str | None, str]:
    """`text` if the grammar takes it, else (None, why); counts above one in a multi-object
    prompt are refused first."""
    if any((c or 1) != 1 for c in counts):
        return None, "counts are only for one kind of shape ('three stars'); other objects take 'a'"
    try:
        parse_canonical(text)
    except OutsideGrammar as e:
        return None, e.reason
    return text, ""


@functools.lru_cache(maxsize=4096)
def canonical_prompt(prompt: str, grammar: str = "v2") -> str:
    """The canonical prompt of the shapes grammar version `grammar` for a natural phrasing.

    >>> canonical_prompt("2 Red circles!")
    'a photo of two red circles'
    >>> canonical_prompt("a circle to the left of a square")
    'a photo of a circle left of a square'

    Raises TTSInputError (one line, naming the closest prompt that works in `grammar`) for a
    prompt outside it."""
    if not isinstance(prompt, str):
        raise TTSInputError(f"prompt must be a string, got {type(prompt).__name__}")
    check_grammar(grammar)
    text, why = _canonical_or_reason(prompt)
    if text is not None:
        category = parse_canonical(text).category
        if category not in GRAMMARS[grammar]:
            text, why = None, f"{category} prompts need grammar v2, and this model speaks {grammar}"
    if text is None:
        counts = "one to four" if grammar == "v1" else "one to six"
        more = "" if grammar == "v1" else "; big, small; 'A, B and C', between, inside"
        raise TTSInputError(
            f"prompt {short(prompt)} is outside the shapes grammar: {short(why, 160)[1:-1]}; the closest prompt"
            f" that works is "
            f"{closest_prompt(prompt, grammar)!r} (shapes: {', '.join(SHAPES)}; colours: {', '.join(COLORS)}; "
            f"counts {counts}; relations: and, left of, right of, above, below{more})"
        )
    return text


def parse_prompt(prompt: str, grammar: str = "v2") -> Spec:
    """Parse a prompt of the shapes world (any phrasing `canonical_prompt` accepts) into the
    `Spec` the oracle checks; its `prompt` is the canonical text. Raises TTSInputError
    naming the closest working prompt for text outside `grammar`."""
    return parse_canonical(canonical_prompt(prompt, grammar))


# ----------------------------------------------------------------- closest prompt
@functools.lru_cache(maxsize=None)
def _candidates(grammar: str) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Every prompt the grammar's categories enumerate (and, for v2's multi-object
    categories, the same prompts without colours), with its words after the lead-in as ids
    (articles dropped; padded with -1), those words' count, and the tie-break length (words
    after the lead-in, articles included)."""
    prompts = [p for category in GRAMMARS[grammar] for p in enumerate_prompts(category)]
    plain = {}
    for category in ("size_attr", "three_object", "between", "inside"):
        if category in GRAMMARS[grammar]:
            for p in enumerate_prompts(category):
                spec = parse_canonical(p)
                objs = [ObjectSpec(o.shape, None, o.count, o.size) for o in spec.objects]
                plain.setdefault(format_prompt(objs, spec.relation), None)
    prompts += [p for p in plain if _parses(p)]
    vocab: dict[str, int] = {}
    rows = []
    lengths = []
    for p in prompts:
        words = _strip_lead_in(_words(p))
        lengths.append(len(words))
        rows.append([vocab.setdefault(w, len(vocab)) for w in words if w not in _ARTICLES])
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return prompts, ids, np.array([len(r) for r in rows]), np.array(lengths), vocab


def _parses(text: str) -> bool:
    try:
        parse_canonical(text)
    except OutsideGrammar:
        return False
    return True


def _edit_distances(query: list[int], ids: np.ndarray, n_words: np.ndarray) -> np.ndarray:
    """Levenshtein distance over words from `query` to every row of `ids` (its first
    `n_words` entries), all rows at once (the dynamic programme vectorised over rows)."""
    n, width = ids.shape
    prev = np.broadcast_to(np.arange(width + 1), (n, width + 1)).copy()
    for i, w in enumerate(query, 1):
        cur = np.empty_like(prev)
        cur[:, 0] = i
        sub = prev[:, :-1] + (ids != w)
        best = np.minimum(prev[:, 1:] + 1, sub)
        for j in range(1, width + 1):  # the insertion term runs along the row
            cur[:, j] = np.minimum(best[:, j - 1], cur[:, j - 1] + 1)
        prev = cur
    return prev[np.arange(n), n_words]


def closest_prompt(prompt: str, grammar: str = "v2") -> str:
    """The canonical prompt (of every prompt the categories of `grammar` enumerate) at the
    smallest word edit distance from `prompt` after normalisation (articles dropped, link
    phrases, size words and digits mapped to the grammar's words, counts above the
    grammar's largest read as the largest); ties go to the simpler prompt."""
    check_grammar(grammar)
    top = NUMBER_WORDS[_MAX_COUNTS[grammar]]
    words = []
    for w in _strip_lead_in(_words(prompt)):
        big = (w in NUMBERS and NUMBERS[w] > _MAX_COUNTS[grammar]) or w in ("seven", "eight", "nine", "ten", "many", "several")
        words.append(top if big or (w.isdigit() and int(w) > _MAX_COUNTS[grammar]) else _SIZE_WORDS.get(w, w))
    norm: list[str] = []
    i = 0
    while i < len(words):
        link = _link_at(words, i)
        if link is not None and link[0] != "and":
            norm.extend((INSIDE if link[0] == _CONTAINS else link[0]).split())
            i += link[1]
            continue
        if words[i] not in _ARTICLES:
            norm.append(words[i])
        i += 1
    prompts, ids, n_words, lengths, vocab = _candidates(grammar)
    query = [vocab.get(w, -2 - k) for k, w in enumerate(norm)]  # an unknown word matches nothing
    dist = _edit_distances(query, ids, n_words)
    return prompts[int(np.argmin(dist * 1000 + lengths))]
