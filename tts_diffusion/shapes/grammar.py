"""The prompt grammar of the shapes world: categories, canonical prompts, parsing, sampling.

Grammar v1 follows GenEval's six categories (Ghosh et al., 2023, "GenEval: An Object-Focused
Framework for Evaluating Text-to-Image Alignment"), with coloured shapes as the objects;
grammar v2 is a superset that adds five harder categories:

============== ===== ==================================================================
category       since canonical prompt
============== ===== ==================================================================
single_object  v1    "a photo of a circle"
two_object     v1    "a photo of a square and a triangle"
counting       v1    "a photo of three stars"   (one .. four; "one" takes the singular)
colors         v1    "a photo of a red circle"
position       v1    "a photo of a circle above a triangle"  (left of / right of / above / below)
color_attr     v1    "a photo of a red square and a green triangle"
counting_many  v2    "a photo of six stars"   (five or six)
size_attr      v2    "a photo of a big red circle and a small blue square"
three_object   v2    "a photo of a red circle, a blue square and a green star"
between        v2    "a photo of a red circle between a blue square and a green star",
                     "a photo of a red circle between two blue squares"
inside         v2    "a photo of a yellow star inside a blue circle"
============== ===== ==================================================================

Every v1 prompt is a v2 prompt with the same meaning. A model speaks one grammar
(`model_grammar`: its folder's ``tts_defaults.json`` says ``"grammar"``, v1 when absent);
the oracle checks any v2 prompt. `sample_scenes` draws scenes that satisfy their prompt
exactly (`layout.py`: the margins); `parse_canonical` turns a canonical prompt into the
`Spec` the oracle checks (`phrasing.parse_prompt` accepts natural phrasings too).
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from ..errors import TTSInputError
from . import layout
from .world import (  # noqa: F401  (re-exported: the grammar's public vocabulary)
    BACKGROUND,
    BETWEEN,
    COLORS,
    EXTENT,
    INSCRIBED,
    INSIDE,
    MAX_COUNT,
    MAX_COUNT_MANY,
    NUMBER_WORDS,
    NUMBERS,
    PLURALS,
    RELATIONS,
    SHAPES,
    SIZES,
    SQUARE_HALF_SIDE,
    STAR_INNER,
    UNIT_AREA,
    Obj,
    ObjectSpec,
    Scene,
    Spec,
    article,
    noun_phrase,
)
from .layout import FRAME_MARGIN, GAP, RELATION_MIN_OFFSET, SIZE_RANGE  # noqa: F401  (re-exported)

V1_CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
V2_CATEGORIES: tuple[str, ...] = ("counting_many", "size_attr", "three_object", "between", "inside")
#: every category of the world (grammar v2), v1's first
CATEGORIES: tuple[str, ...] = V1_CATEGORIES + V2_CATEGORIES
#: grammar version -> its categories
GRAMMARS: dict[str, tuple[str, ...]] = {"v1": V1_CATEGORIES, "v2": CATEGORIES}
#: the grammar of a model folder that does not say (every model before grammar v2)
DEFAULT_MODEL_GRAMMAR = "v1"

_FUNCTION_WORDS = {"a", "an", "photo", "of", "and"}
#: grammar version -> every word its prompts can contain (sorted, lower case; the comma of
#: three-object lists is punctuation, not a word: the model's tokenizer drops it)
VOCABULARIES: dict[str, list[str]] = {
    "v1": sorted(_FUNCTION_WORDS | set(" ".join(RELATIONS).split()) | set(COLORS) | set(SHAPES)
                 | set(PLURALS.values()) | {w for w, n in NUMBERS.items() if n <= MAX_COUNT}),
}
VOCABULARIES["v2"] = sorted(set(VOCABULARIES["v1"]) | set(NUMBERS) | set(SIZES) | {BETWEEN, INSIDE})
#: every word any prompt of the grammar (v2) can contain: the model's word-level tokenizer
VOCABULARY: list[str] = VOCABULARIES["v2"]


def check_grammar(grammar: str) -> str:
    """`grammar` if it names a grammar version, else TTSInputError."""
    if grammar not in GRAMMARS:
        raise TTSInputError(f"unknown shapes grammar {grammar!r}; available: {', '.join(GRAMMARS)}")
    return grammar


def model_grammar(model_dir: str | os.PathLike | None = None) -> str:
    """The grammar version a shapes model folder speaks: ``"grammar"`` in its
    ``tts_defaults.json`` (v1 when absent); the shipped default model's when `model_dir` is None."""
    from pathlib import Path

    from ..paths import default_model_path

    path = Path(model_dir if model_dir is not None else default_model_path()) / "tts_defaults.json"
    grammar = json.loads(path.read_text()).get("grammar", DEFAULT_MODEL_GRAMMAR) if path.is_file() else DEFAULT_MODEL_GRAMMAR
    return check_grammar(grammar)


def format_prompt(spec_objects: Sequence[ObjectSpec], relation: str | None = None, counting: bool = False) -> str:
    """The canonical prompt text for required objects (inverse of `parse_canonical`):
    a count, one object, "A and B", "A, B and C", "A <relation> B", "A between B and C"
    ("between two Bs" when B and C are the same), or "A inside B"."""
    if counting:
        (o,) = spec_objects
        noun = o.shape if o.count == 1 else PLURALS[o.shape]
        adj = f"{o.color} " if o.color else ""
        return f"a photo of {NUMBER_WORDS[o.count]} {adj}{noun}"
    parts = [noun_phrase(o.shape, o.color, o.size) for o in spec_objects]
    if relation == BETWEEN:
        a, b, c = spec_objects
        if b == c:
            adj = f"{b.color} " if b.color else ""
            return f"a photo of {parts[0]} between two {adj}{PLURALS[b.shape]}"
        return f"a photo of {parts[0]} between {parts[1]} and {parts[2]}"
    if relation is not None:
        return f"a photo of {parts[0]} {relation} {parts[1]}"
    if len(parts) == 3:
        return f"a photo of {parts[0]}, {parts[1]} and {parts[2]}"
    return "a photo of " + " and ".join(parts)


def format_spec(spec: Spec) -> str:
    """The canonical prompt of a parsed `spec`."""
    return format_prompt(spec.objects, spec.relation, counting=spec.category in ("counting", "counting_many"))


# ----------------------------------------------------------------- parsing
_EXAMPLES = (
    "'a photo of a circle', 'a photo of a square and a triangle', 'a photo of three stars', "
    "'a photo of a red circle', 'a photo of a circle above a triangle', "
    "'a photo of a red square and a green triangle'"
)
_EXAMPLES_V2 = (
    "'a photo of six stars', 'a photo of a big red circle and a small blue square', "
    "'a photo of a red circle, a blue square and a green star', 'a photo of a red circle between two blue squares', "
    "'a photo of a yellow star inside a blue circle'"
)
_SINGULAR = {s: s for s in SHAPES}
_PLURAL_TO_SHAPE = {p: s for s, p in PLURALS.items()}


def short(text: str, limit: int = 80) -> str:
    """`repr` of a user's text, cut to `limit` characters, for one-line error messages."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


class OutsideGrammar(TTSInputError):
    """A prompt outside the shapes grammar; `reason` says why in a few words (phrasing.py
    adds the closest prompt that works)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _outside(prompt: str, why: str) -> OutsideGrammar:
    return OutsideGrammar(f"prompt {short(prompt)} is outside the shapes grammar: {short(why, 160)[1:-1]};"
                          f" examples: {_EXAMPLES}, {_EXAMPLES_V2}", why)


def normalize_prompt(prompt: str) -> str:
    """Lower case, single spaces, no trailing full stop."""
    return " ".join(prompt.lower().strip().rstrip(".").split())


def parse_canonical(prompt: str) -> Spec:
    """Parse a canonical prompt of the shapes grammar (v2) into a `Spec` whose `prompt` is
    the canonical text.

    Grammar (words separated by spaces, case-insensitive, optional trailing '.'):
        prompt   := "a photo of" body
        body     := number [colour] noun              counting (one .. four: plural noun unless "one")
                                                      or counting_many (five, six)
                  | np                                single_object, or colors if coloured
                  | np "and" np                       two_object, or color_attr if coloured
                  | snp "and" snp                     size_attr (one "big", one "small")
                  | np relation np                    position
                  | np "," np "and" np                three_object
                  | np "between" np "and" np          between
                  | np "between two" [colour] noun    between (plural noun)
                  | np "inside" np                    inside
        np       := ("a" | "an") [colour] shape
        snp      := ("a" | "an") ("big" | "small") [colour] shape
        relation := "left of" | "right of" | "above" | "below"

    Objects must be told apart: two objects of "and" or a relation differ in shape or
    colour, the three of a list or of "between" pairwise, and an object inside another
    cannot have the same colour. Raises TTSInputError (one line, with examples) otherwise.
    """
    if not isinstance(prompt, str):
        raise TTSInputError(f"prompt must be a string, got {type(prompt).__name__}")
    words = normalize_prompt(prompt).replace(",", " , ").split()
    unknown = [w for w in words if w not in VOCABULARY and w != ","]
    if unknown:
        raise _outside(prompt, f"unknown word {unknown[0]!r}")
    if words[:3] != ["a", "photo", "of"]:
        raise _outside(prompt, "it must start with 'a photo of'")
    rest = words[3:]
    if not rest:
        raise _outside(prompt, "no object named")
    spec = _parse_body(prompt, rest)
    return Spec(format_spec(spec), spec.category, spec.objects, spec.relation)


def _parse_body(prompt: str, rest: list[str]) -> Spec:
    """The `Spec` of the words after "a photo of" (its `prompt` is filled in by the caller)."""
    if rest[0] in NUMBERS:  # counting: number [colour] noun
        n = NUMBERS[rest[0]]
        tail = rest[1:]
        color = None
        if tail and tail[0] in COLORS:
            color, tail = tail[0], tail[1:]
        if len(tail) != 1:
            raise _outside(prompt, "a count must be followed by one (optionally coloured) shape noun")
        noun = tail[0]
        shape = _PLURAL_TO_SHAPE.get(noun) if n > 1 else _SINGULAR.get(noun)
        if shape is None:
            form = "plural" if n > 1 else "singular"
            raise _outside(prompt, f"expected a {form} shape noun after {rest[0]!r}, got {noun!r}")
        return Spec("", "counting" if n <= MAX_COUNT else "counting_many", (ObjectSpec(shape, color, n),))

    first, pos = _noun_phrase(prompt, rest, 0)
    link = rest[pos] if pos < len(rest) else None
    if link is None:
        _no_sizes(prompt, [first])
        return Spec("", "colors" if first.color else "single_object", (first,))
    if link == "and":
        second = _last_noun_phrase(prompt, rest, pos + 1)
        if first.size or second.size:
            if {first.size, second.size} != set(SIZES):
                raise _outside(prompt, "size words compare the two objects: one 'big' and one 'small',"
                                       " e.g. 'a photo of a big red circle and a small blue square'")
            return Spec("", "size_attr", (first, second))
        if first == second:
            raise _outside(prompt, f"the two objects are the same; use a count, e.g. 'a photo of two {PLURALS[first.shape]}'")
        return Spec("", "color_attr" if (first.color or second.color) else "two_object", (first, second))
    if link == ",":
        second, third = _two_joined(prompt, rest, pos + 1, "a list of three objects reads 'A, B and C'")
        objs = (first, second, third)
        _no_sizes(prompt, objs)
        _distinct(prompt, objs)
        return Spec("", "three_object", objs, None)
    if link == BETWEEN:
        if rest[pos + 1 : pos + 2] == ["two"]:
            tail = rest[pos + 2 :]
            color = tail[0] if tail and tail[0] in COLORS else None
            noun = tail[1:] if color else tail
            if len(noun) != 1 or noun[0] not in _PLURAL_TO_SHAPE:
                raise _outside(prompt, "'between two' takes an (optionally coloured) plural shape noun, e.g. 'between two blue squares'")
            second = third = ObjectSpec(_PLURAL_TO_SHAPE[noun[0]], color)
        else:
            second, third = _two_joined(prompt, rest, pos + 1,
                                        "'between' takes two objects: 'A between B and C' or 'A between two Bs'")
        objs = (first, second, third)
        _no_sizes(prompt, objs)
        if first in (second, third):
            raise _outside(prompt, "the object in the middle must differ from the two around it (in shape or colour)")
        return Spec("", "between", objs, BETWEEN)
    if link == INSIDE:
        second = _last_noun_phrase(prompt, rest, pos + 1)
        _no_sizes(prompt, (first, second))
        if first.color is not None and first.color == second.color:
            raise _outside(prompt, "an object inside another of the same colour cannot be seen; give them different colours")
        return Spec("", "inside", (first, second), INSIDE)
    relation = None
    for rel in RELATIONS:
        rel_words = rel.split()
        if rest[pos : pos + len(rel_words)] == rel_words:
            relation, pos = rel, pos + len(rel_words)
            break
    if relation is None:
        raise _outside(prompt, f"expected 'and', ',', 'between', 'inside' or a relation (left of, right of, above,"
                               f" below) after {' '.join(rest[:pos])!r}")
    second = _last_noun_phrase(prompt, rest, pos)
    _no_sizes(prompt, (first, second))
    if first == second:
        raise _outside(prompt, "a relation between two identical objects is ambiguous; give them different shapes or colours")
    return Spec("", "position", (first, second), relation)


def _noun_phrase(prompt: str, words: list[str], pos: int) -> tuple[ObjectSpec, int]:
    """Parse ("a"|"an") [size] [colour] shape at `pos`; return the object and the next position."""
    if pos >= len(words) or words[pos] not in ("a", "an"):
        got = words[pos] if pos < len(words) else "the end of the prompt"
        raise _outside(prompt, f"expected 'a' or 'an' before an object, got {got!r}")
    pos += 1
    size = color = None
    if pos < len(words) and words[pos] in SIZES:
        size, pos = words[pos], pos + 1
    if pos < len(words) and words[pos] in COLORS:
        color, pos = words[pos], pos + 1
    if pos >= len(words) or words[pos] not in _SINGULAR:
        got = words[pos] if pos < len(words) else "the end of the prompt"
        raise _outside(prompt, f"expected a singular shape noun ({', '.join(SHAPES)}), got {got!r}")
    return ObjectSpec(words[pos], color, 1, size), pos + 1


def _last_noun_phrase(prompt: str, words: list[str], pos: int) -> ObjectSpec:
    """A noun phrase that must end the prompt."""
    obj, end = _noun_phrase(prompt, words, pos)
    if end != len(words):
        raise _outside(prompt, f"unexpected words after the last object: {' '.join(words[end:])!r}")
    return obj


def _two_joined(prompt: str, words: list[str], pos: int, why: str) -> tuple[ObjectSpec, ObjectSpec]:
    """np "and" np ending the prompt, from `pos`; `why` explains a missing "and"."""
    first, pos = _noun_phrase(prompt, words, pos)
    if pos >= len(words) or words[pos] != "and":
        raise _outside(prompt, why)
    return first, _last_noun_phrase(prompt, words, pos + 1)


def _no_sizes(prompt: str, objs: Sequence[ObjectSpec]) -> None:
    if any(o.size for o in objs):
        raise _outside(prompt, "size words (big, small) compare two objects joined by 'and',"
                               " e.g. 'a photo of a big red circle and a small blue square'")


def _distinct(prompt: str, objs: Sequence[ObjectSpec]) -> None:
    for i, a in enumerate(objs):
        if a in objs[i + 1 :]:
            raise _outside(prompt, f"two of the objects are the same ({noun_phrase(a.shape, a.color)}); give them"
                                   f" different shapes or colours, or use a count")


# ----------------------------------------------------------------- the sampler's prompts
def enumerate_prompts(category: str) -> list[str]:
    """Every distinct prompt the sampler can produce for `category`, in a fixed order
    (v1: 4 single_object, 12 two_object, 16 counting, 24 colors, 48 position, 360 color_attr;
    v2: 8 counting_many, 1152 size_attr, 2880 three_object, 3240 between, 480 inside)."""
    pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b]
    triples = [(a, b, c) for a, b in pairs for c in SHAPES if c not in (a, b)]
    colour_pairs = [(a, b) for a in COLORS for b in COLORS if a != b]
    colour_triples = [(a, b, c) for a, b in colour_pairs for c in COLORS if c not in (a, b)]
    O = ObjectSpec
    if category == "single_object":
        return [format_prompt([O(s)]) for s in SHAPES]
    if category == "two_object":
        return [format_prompt([O(a), O(b)]) for a, b in pairs]
    if category in ("counting", "counting_many"):
        counts = range(1, MAX_COUNT + 1) if category == "counting" else range(MAX_COUNT + 1, MAX_COUNT_MANY + 1)
        return [format_prompt([O(s, None, n)], counting=True) for n in counts for s in SHAPES]
    if category == "colors":
        return [format_prompt([O(s, c)]) for s in SHAPES for c in COLORS]
    if category == "position":
        return [format_prompt([O(a), O(b)], r) for a, b in pairs for r in RELATIONS]
    if category == "color_attr":
        return [format_prompt([O(a, ca), O(b, cb)]) for a, b in pairs for ca, cb in colour_pairs]
    if category == "size_attr":
        return [format_prompt([O(a, ca, 1, za), O(b, cb, 1, zb)])
                for za, zb in (SIZES, SIZES[::-1]) for a in SHAPES for ca in COLORS for b in SHAPES for cb in COLORS]
    if category == "three_object":
        return [format_prompt([O(a, ca), O(b, cb), O(c, cc)]) for a, b, c in triples for ca, cb, cc in colour_triples]
    if category == "between":
        three = [format_prompt([O(a, ca), O(b, cb), O(c, cc)], BETWEEN) for a, b, c in triples for ca, cb, cc in colour_triples]
        two = [format_prompt([O(a, ca), O(b, cb), O(b, cb)], BETWEEN) for a, b in pairs for ca, cb in colour_pairs]
        return three + two
    if category == "inside":
        return [format_prompt([O(a, ca), O(b, cb)], INSIDE) for a in SHAPES for b in SHAPES for ca, cb in colour_pairs]
    raise TTSInputError(f"unknown category {category!r}; available: {', '.join(CATEGORIES)}")


# ----------------------------------------------------------------- sampling
def sample_scenes(
    n: int,
    seed: int | None = None,
    generator: np.random.Generator | None = None,
    categories: Sequence[str] | str | None = None,
) -> list[Scene]:
    """`n` random scenes, each satisfying its prompt exactly (`layout.py`: the margins).

    Categories cycle in order (balanced: scene i has category categories[i % len]); the
    default is every category of the world (grammar v2; `GRAMMARS["v1"]` for v1's six).
    Randomness comes from `generator` if given, else from `numpy.random.default_rng(seed)`;
    the same seed gives the same scenes, and a v1 category draws the same scenes as before v2.
    """
    if n < 0:
        raise TTSInputError(f"n must be >= 0, got {n}")
    cats = tuple(CATEGORIES if categories is None else ([categories] if isinstance(categories, str) else categories))
    bad = [c for c in cats if c not in CATEGORIES]
    if bad or not cats:
        raise TTSInputError(f"unknown category {bad[0] if bad else None!r}; available: {', '.join(CATEGORIES)}")
    rng = generator if generator is not None else np.random.default_rng(seed)
    return [sample_scene(cats[i % len(cats)], rng) for i in range(n)]


def sample_scene(category: str, rng: np.random.Generator) -> Scene:
    """One random scene of `category` whose objects satisfy its prompt (the prompt is drawn
    uniformly from `enumerate_prompts(category)` within each form)."""
    spec_objs, relation = _sample_spec(category, rng)
    counting = category in ("counting", "counting_many")
    prompt = format_prompt(spec_objs, relation, counting=counting)
    if category in V1_CATEGORIES:
        # concrete objects: shape, colour (random where the prompt leaves it open)
        kinds = [(o.shape, o.color or _choice(rng, list(COLORS))) for o in spec_objs for _ in range(o.count)]
        return Scene(prompt, category, layout.place(kinds, rng, relation))
    if category == "counting_many":
        kinds = [(o.shape, o.color or _choice(rng, list(COLORS))) for o in spec_objs for _ in range(o.count)]
        return Scene(prompt, category, layout.place(kinds, rng, None, size_range=layout.MANY_SIZE_RANGE, gap=layout.MANY_GAP))
    kinds = [(o.shape, o.color) for o in spec_objs]
    if category == "size_attr":
        objects = layout.place_sized(kinds, [o.size for o in spec_objs], rng)
    elif category == "three_object":
        objects = layout.place(kinds, rng, None, size_range=layout.THREE_SIZE_RANGE)
    elif category == "between":
        objects = layout.place_between(kinds, rng)
    else:  # inside
        objects = layout.place_inside(kinds, rng)
    return Scene(prompt, category, objects)


def _sample_spec(category: str, rng: np.random.Generator) -> tuple[list[ObjectSpec], str | None]:
    """The required objects and relation of a random prompt of `category`. The v1 branches
    draw from `rng` exactly as before grammar v2 (same seeds, same scenes)."""
    colors = list(COLORS)
    relation = None
    if category in ("single_object", "colors"):
        shape = _choice(rng, SHAPES)
        return [ObjectSpec(shape, _choice(rng, colors) if category == "colors" else None)], None
    if category in ("two_object", "position", "color_attr"):
        s1, s2 = (SHAPES[i] for i in rng.choice(len(SHAPES), size=2, replace=False))
        if category == "color_attr":
            c1, c2 = (colors[i] for i in rng.choice(len(colors), size=2, replace=False))
            spec_objs = [ObjectSpec(s1, c1), ObjectSpec(s2, c2)]
        else:
            spec_objs = [ObjectSpec(s1), ObjectSpec(s2)]
        if category == "position":
            relation = _choice(rng, tuple(RELATIONS))
        return spec_objs, relation
    if category == "counting":
        k = int(rng.integers(1, MAX_COUNT + 1))
        return [ObjectSpec(_choice(rng, SHAPES), None, k)], None
    if category == "counting_many":
        k = int(rng.integers(MAX_COUNT + 1, MAX_COUNT_MANY + 1))
        return [ObjectSpec(_choice(rng, SHAPES), None, k)], None
    if category == "size_attr":
        sizes = SIZES if rng.integers(2) == 0 else SIZES[::-1]
        return [ObjectSpec(_choice(rng, SHAPES), _choice(rng, colors), 1, z) for z in sizes], None
    if category in ("three_object", "between", "inside"):
        two_ends = category == "between" and rng.integers(2) == 1
        k = 2 if category == "inside" or two_ends else 3
        if category == "inside":
            shapes = [_choice(rng, SHAPES), _choice(rng, SHAPES)]
        else:
            shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), size=k, replace=False)]
        cols = [colors[i] for i in rng.choice(len(colors), size=k, replace=False)]
        objs = [ObjectSpec(s, c) for s, c in zip(shapes, cols)]
        if two_ends:
            objs.append(objs[1])
        return objs, {"three_object": None, "between": BETWEEN, "inside": INSIDE}[category]
    raise TTSInputError(f"unknown category {category!r}; available: {', '.join(CATEGORIES)}")


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]
