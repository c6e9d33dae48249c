"""The prompt grammar of the shapes world: palette, shapes, scenes, sampling and parsing.

Prompts follow GenEval's six categories (Ghosh et al., 2023, "GenEval: An Object-Focused
Framework for Evaluating Text-to-Image Alignment"), with coloured shapes as the objects:

============== ==========================================================
single_object  "a photo of a circle"
two_object     "a photo of a square and a triangle"
counting       "a photo of three stars"   (one .. four; "one" takes the singular)
colors         "a photo of a red circle"
position       "a photo of a circle above a triangle"  (left of / right of / above / below)
color_attr     "a photo of a red square and a green triangle"
============== ==========================================================

`sample_scenes` draws scenes that satisfy their prompt exactly (only the named objects,
non-overlapping, inside the frame, position relations unambiguous with a margin);
`parse_prompt` turns any prompt of the grammar into a `Spec` that the oracle checks.
Coordinates are fractions of the image, x to the right and y down.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import TTSInputError

# ----------------------------------------------------------------- the world's vocabulary
#: Named colours, RGB in [0, 1]. Pairwise RGB distance >= 0.38 and >= 0.8 from BACKGROUND,
#: so the nearest-colour segmentation of the oracle survives noise and colour jitter.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.08, 0.08),
    "green": (0.10, 0.70, 0.18),
    "blue": (0.10, 0.25, 0.92),
    "yellow": (0.96, 0.86, 0.06),
    "purple": (0.55, 0.12, 0.72),
    "orange": (0.98, 0.48, 0.02),
}
#: Shape names. Each has a distinct rotational symmetry (circle: all, triangle: 3-fold,
#: square: 4-fold, star: 5-fold), which is what the oracle's classifier keys on.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
#: Plain, light background.
BACKGROUND: tuple[float, float, float] = (0.96, 0.96, 0.94)
CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")

PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}
NUMBERS: dict[str, int] = {"one": 1, "two": 2, "three": 3, "four": 4}
NUMBER_WORDS: dict[int, str] = {v: k for k, v in NUMBERS.items()}
#: relation phrase -> (axis, sign): A rel B holds when sign * (B - A)[axis] > 0, axis 0 = x, 1 = y (down)
RELATIONS: dict[str, tuple[int, int]] = {
    "left of": (0, 1),
    "right of": (0, -1),
    "above": (1, 1),
    "below": (1, -1),
}
MAX_COUNT = 4

#: Every word any prompt of the grammar can contain (sorted, lower case).
VOCABULARY: list[str] = sorted(
    {"a", "an", "photo", "of", "and", "left", "right", "above", "below"}
    | set(COLORS)
    | set(SHAPES)
    | set(PLURALS.values())
    | set(NUMBERS)
)

# Geometry of each shape in units of `Obj.size` (the renderer and the sampler share it).
#: radius of the circle that encloses the shape, per unit size
EXTENT: dict[str, float] = {"circle": 1.0, "square": 0.9 * math.sqrt(2.0), "triangle": 1.35, "star": 1.35}
SQUARE_HALF_SIDE = 0.9
STAR_INNER = 0.6
#: sampled `Obj.size` range (fraction of the image); areas of the four shapes are similar
SIZE_RANGE: tuple[float, float] = (0.10, 0.16)
#: free space kept between objects and to the frame (fraction of the image)
GAP = 0.05
FRAME_MARGIN = 0.02
#: sampled position relations: offset along the named axis >= this and >= 2x the other offset
RELATION_MIN_OFFSET = 0.2


# ----------------------------------------------------------------- data types
@dataclass(frozen=True)
class Obj:
    """One shape: centre (cx, cy) in [0, 1] image coordinates (y down), `size` the radius
    (fraction of the image width) and `angle` the rotation in radians."""

    shape: str
    color: str
    cx: float
    cy: float
    size: float
    angle: float = 0.0


@dataclass(frozen=True)
class Scene:
    """A prompt, its GenEval category, and objects that satisfy it exactly."""

    prompt: str
    category: str
    objects: tuple[Obj, ...]


@dataclass(frozen=True)
class ObjectSpec:
    """A required object: a shape, an optional colour, and how many (exact for counting)."""

    shape: str
    color: str | None = None
    count: int = 1


@dataclass(frozen=True)
class Spec:
    """The parsed meaning of a prompt.

    `objects` lists the required objects; for `counting` it holds one entry whose `count` is
    exact; otherwise each entry needs at least one matching object. `relation` (one of
    RELATIONS) relates objects[0] to objects[1] in `position` prompts, else None.
    """

    prompt: str
    category: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None


def article(phrase: str) -> str:
    """'an' before a vowel sound, else 'a'."""
    return "an" if phrase[:1] in "aeiou" else "a"


def noun_phrase(shape: str, color: str | None = None) -> str:
    """'a circle', 'an orange star' ..."""
    words = f"{color} {shape}" if color else shape
    return f"{article(words)} {words}"


def format_prompt(spec_objects: Sequence[ObjectSpec], relation: str | None = None, counting: bool = False) -> str:
    """The canonical prompt text for required objects (inverse of `parse_prompt`)."""
    if counting:
        (o,) = spec_objects
        noun = o.shape if o.count == 1 else PLURALS[o.shape]
        adj = f"{o.color} " if o.color else ""
        return f"a photo of {NUMBER_WORDS[o.count]} {adj}{noun}"
    parts = [noun_phrase(o.shape, o.color) for o in spec_objects]
    if relation is not None:
        return f"a photo of {parts[0]} {relation} {parts[1]}"
    return "a photo of " + " and ".join(parts)


# ----------------------------------------------------------------- parsing
_EXAMPLES = (
    "'a photo of a circle', 'a photo of a square and a triangle', 'a photo of three stars', "
    "'a photo of a red circle', 'a photo of a circle above a triangle', "
    "'a photo of a red square and a green triangle'"
)
_SINGULAR = {s: s for s in SHAPES}
_PLURAL_TO_SHAPE = {p: s for s, p in PLURALS.items()}


def short(text: str, limit: int = 80) -> str:
    """`repr` of a user's text, cut to `limit` characters, for one-line error messages."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _outside(prompt: str, why: str) -> TTSInputError:
    return TTSInputError(f"prompt {short(prompt)} is outside the shapes grammar: {short(why, 160)[1:-1]};"
                         f" examples: {_EXAMPLES}")


def normalize_prompt(prompt: str) -> str:
    """Lower case, single spaces, no trailing full stop."""
    return " ".join(prompt.lower().strip().rstrip(".").split())


def parse_prompt(prompt: str) -> Spec:
    """Parse a prompt of the shapes world into a `Spec` whose `prompt` is the canonical text.

    Natural phrasings ("2 red circles", "a circle to the left of a square") are first mapped
    to the canonical prompt by `phrasing.canonical_prompt`, which raises TTSInputError naming
    the closest working prompt for text outside the world; the canonical text is then
    parsed strictly by `parse_canonical`.
    """
    if not isinstance(prompt, str):
        raise TTSInputError(f"prompt must be a string, got {type(prompt).__name__}")
    from .phrasing import canonical_prompt  # phrasing builds on this module

    return parse_canonical(canonical_prompt(prompt))


def parse_canonical(prompt: str) -> Spec:
    """Parse a canonical prompt of the shapes grammar into a `Spec`.

    Grammar (words separated by spaces, case-insensitive, optional trailing '.'):
        prompt   := "a photo of" body
        body     := number [colour] noun           (counting; plural noun unless "one")
                  | np                             (single_object, or colors if coloured)
                  | np "and" np                    (two_object, or color_attr if coloured)
                  | np relation np                 (position)
        np       := ("a" | "an") [colour] shape
        relation := "left of" | "right of" | "above" | "below"

    Raises TTSInputError (one line, with examples) for anything else.
    """
    if not isinstance(prompt, str):
        raise TTSInputError(f"prompt must be a string, got {type(prompt).__name__}")
    text = normalize_prompt(prompt)
    words = text.split()
    unknown = [w for w in words if w not in VOCABULARY]
    if unknown:
        raise _outside(prompt, f"unknown word {unknown[0]!r}")
    if words[:3] != ["a", "photo", "of"]:
        raise _outside(prompt, "it must start with 'a photo of'")
    rest = words[3:]
    if not rest:
        raise _outside(prompt, "no object named")

    # counting: number [colour] noun
    if rest[0] in NUMBERS:
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
        return Spec(text, "counting", (ObjectSpec(shape, color, n),))

    first, pos = _noun_phrase(prompt, rest, 0)
    if pos == len(rest):
        return Spec(text, "colors" if first.color else "single_object", (first,))
    if rest[pos] == "and":
        second, end = _noun_phrase(prompt, rest, pos + 1)
        if end != len(rest):
            raise _outside(prompt, f"unexpected words after the second object: {' '.join(rest[end:])!r}")
        if first == second:
            raise _outside(prompt, f"the two objects are the same; use a count, e.g. 'a photo of two {PLURALS[first.shape]}'")
        category = "color_attr" if (first.color or second.color) else "two_object"
        return Spec(text, category, (first, second))
    relation = None
    for rel in RELATIONS:
        rel_words = rel.split()
        if rest[pos : pos + len(rel_words)] == rel_words:
            relation, pos = rel, pos + len(rel_words)
            break
    if relation is None:
        raise _outside(prompt, f"expected 'and' or a relation (left of, right of, above, below) after {' '.join(rest[:pos])!r}")
    second, end = _noun_phrase(prompt, rest, pos)
    if end != len(rest):
        raise _outside(prompt, f"unexpected words after the second object: {' '.join(rest[end:])!r}")
    if first == second:
        raise _outside(prompt, "a relation between two identical objects is ambiguous; give them different shapes or colours")
    return Spec(text, "position", (first, second), relation)


def _noun_phrase(prompt: str, words: list[str], pos: int) -> tuple[ObjectSpec, int]:
    """Parse ("a"|"an") [colour] shape at `pos`; return the object and the next position."""
    if pos >= len(words) or words[pos] not in ("a", "an"):
        got = words[pos] if pos < len(words) else "the end of the prompt"
        raise _outside(prompt, f"expected 'a' or 'an' before an object, got {got!r}")
    pos += 1
    color = None
    if pos < len(words) and words[pos] in COLORS:
        color, pos = words[pos], pos + 1
    if pos >= len(words) or words[pos] not in _SINGULAR:
        got = words[pos] if pos < len(words) else "the end of the prompt"
        raise _outside(prompt, f"expected a singular shape noun ({', '.join(SHAPES)}), got {got!r}")
    return ObjectSpec(words[pos], color, 1), pos + 1


def enumerate_prompts(category: str) -> list[str]:
    """Every distinct prompt the sampler can produce for `category`, in a fixed order
    (4 single_object, 12 two_object, 16 counting, 24 colors, 48 position, 360 color_attr)."""
    pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b]
    if category == "single_object":
        return [format_prompt([ObjectSpec(s)]) for s in SHAPES]
    if category == "two_object":
        return [format_prompt([ObjectSpec(a), ObjectSpec(b)]) for a, b in pairs]
    if category == "counting":
        return [format_prompt([ObjectSpec(s, None, n)], counting=True) for n in range(1, MAX_COUNT + 1) for s in SHAPES]
    if category == "colors":
        return [format_prompt([ObjectSpec(s, c)]) for s in SHAPES for c in COLORS]
    if category == "position":
        return [format_prompt([ObjectSpec(a), ObjectSpec(b)], r) for a, b in pairs for r in RELATIONS]
    if category == "color_attr":
        return [
            format_prompt([ObjectSpec(a, ca), ObjectSpec(b, cb)])
            for a, b in pairs
            for ca in COLORS
            for cb in COLORS
            if ca != cb
        ]
    raise TTSInputError(f"unknown category {category!r}; available: {', '.join(CATEGORIES)}")


# ----------------------------------------------------------------- sampling
def sample_scenes(
    n: int,
    seed: int | None = None,
    generator: np.random.Generator | None = None,
    categories: Sequence[str] | None = None,
) -> list[Scene]:
    """`n` random scenes, each satisfying its prompt exactly.

    Categories cycle in order (balanced: scene i has category categories[i % len]).
    Randomness comes from `generator` if given, else from `numpy.random.default_rng(seed)`;
    the same seed gives the same scenes.
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
    """One random scene of `category` whose objects satisfy its prompt."""
    colors = list(COLORS)
    relation = None
    if category in ("single_object", "colors"):
        shape = _choice(rng, SHAPES)
        req = [ObjectSpec(shape, _choice(rng, colors) if category == "colors" else None)]
        spec_objs = req
    elif category in ("two_object", "position", "color_attr"):
        s1, s2 = (SHAPES[i] for i in rng.choice(len(SHAPES), size=2, replace=False))
        if category == "color_attr":
            c1, c2 = (colors[i] for i in rng.choice(len(colors), size=2, replace=False))
            spec_objs = [ObjectSpec(s1, c1), ObjectSpec(s2, c2)]
        else:
            spec_objs = [ObjectSpec(s1), ObjectSpec(s2)]
        if category == "position":
            relation = _choice(rng, tuple(RELATIONS))
    elif category == "counting":
        k = int(rng.integers(1, MAX_COUNT + 1))
        spec_objs = [ObjectSpec(_choice(rng, SHAPES), None, k)]
    else:
        raise TTSInputError(f"unknown category {category!r}; available: {', '.join(CATEGORIES)}")

    prompt = format_prompt(spec_objs, relation, counting=category == "counting")
    # concrete objects: shape, colour (random where the prompt leaves it open)
    kinds = [(o.shape, o.color or _choice(rng, colors)) for o in spec_objs for _ in range(o.count)]
    objects = _place(kinds, rng, relation)
    return Scene(prompt, category, objects)


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _place(kinds: list[tuple[str, str]], rng: np.random.Generator, relation: str | None) -> tuple[Obj, ...]:
    """Rejection-sample sizes, angles and centres: inside the frame, `GAP` apart, and for a
    relation, kinds[0] `relation` kinds[1] with offset >= RELATION_MIN_OFFSET and >= 2x the
    perpendicular offset. Shrinks the size range if a layout keeps failing."""
    lo, hi = SIZE_RANGE
    for attempt in range(200):
        scale = 0.97 ** (attempt // 20)
        objs: list[Obj] = []
        for shape, color in kinds:
            size = float(rng.uniform(lo, hi)) * scale
            ext = size * EXTENT[shape]
            ok = False
            for _ in range(50):
                cx, cy = (float(v) for v in rng.uniform(ext + FRAME_MARGIN, 1.0 - ext - FRAME_MARGIN, size=2))
                if all(math.hypot(cx - o.cx, cy - o.cy) >= ext + o.size * EXTENT[o.shape] + GAP for o in objs):
                    if relation is not None and objs and not _relation_ok(objs[0], cx, cy, relation):
                        continue
                    ok = True
                    break
            if not ok:
                break
            objs.append(Obj(shape, color, cx, cy, size, float(rng.uniform(0.0, 2.0 * math.pi))))
        if len(objs) == len(kinds):
            return tuple(objs)
    raise RuntimeError(f"could not place {kinds} (relation {relation!r})")  # pragma: no cover


def _relation_ok(a: Obj, bx: float, by: float, relation: str) -> bool:
    axis, sign = RELATIONS[relation]
    d = (bx - a.cx, by - a.cy)
    along, across = sign * d[axis], abs(d[1 - axis])
    return along >= RELATION_MIN_OFFSET and along >= 2.0 * across
