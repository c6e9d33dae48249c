"""The shapes world's vocabulary, geometry and data types (plain data, numpy-free).

Everything the grammar, the scene layout, the renderer and the oracle share: the palette,
the shapes and their proportions, the number, size and relation words, and the dataclasses
of a scene (`Obj`, `Scene`) and of a parsed prompt (`ObjectSpec`, `Spec`). Coordinates are
fractions of the image, x to the right and y down; `Obj.size` is a shape's radius unit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# ----------------------------------------------------------------- vocabulary
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
PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}
NUMBERS: dict[str, int] = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
NUMBER_WORDS: dict[int, str] = {v: k for k, v in NUMBERS.items()}
#: relation phrase -> (axis, sign): A rel B holds when sign * (B - A)[axis] > 0, axis 0 = x, 1 = y (down)
RELATIONS: dict[str, tuple[int, int]] = {
    "left of": (0, 1),
    "right of": (0, -1),
    "above": (1, 1),
    "below": (1, -1),
}
#: relations among objects that are not directions (grammar v2): "A between B and C", "A inside B"
BETWEEN, INSIDE = "between", "inside"
#: size words (grammar v2): bound to an object, relative to the other object of the prompt
SIZES: tuple[str, ...] = ("big", "small")
#: counts of the `counting` category (grammar v1) and of `counting_many` (grammar v2)
MAX_COUNT = 4
MAX_COUNT_MANY = 6

# ----------------------------------------------------------------- geometry (units of Obj.size)
#: radius of the circle that encloses the shape, per unit size
EXTENT: dict[str, float] = {"circle": 1.0, "square": 0.9 * math.sqrt(2.0), "triangle": 1.35, "star": 1.35}
SQUARE_HALF_SIDE = 0.9
STAR_INNER = 0.6
#: radius of the largest circle inside the shape, per unit size (centred; the star's is the
#: distance to its inner vertices)
INSCRIBED: dict[str, float] = {"circle": 1.0, "square": SQUARE_HALF_SIDE, "triangle": 1.35 * 0.5, "star": STAR_INNER}
#: area of each shape at unit size
UNIT_AREA: dict[str, float] = {
    "circle": math.pi,
    "square": (2 * SQUARE_HALF_SIDE) ** 2,
    "triangle": 3 * math.sqrt(3) / 4 * 1.35**2,
    "star": 5 * 1.35 * STAR_INNER * math.sin(math.pi / 5),
}


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

    @property
    def area(self) -> float:
        """Area as a fraction of the image."""
        return UNIT_AREA[self.shape] * self.size**2


@dataclass(frozen=True)
class Scene:
    """A prompt, its category, and objects that satisfy it exactly (drawn in order: a later
    object covers an earlier one)."""

    prompt: str
    category: str
    objects: tuple[Obj, ...]


@dataclass(frozen=True)
class ObjectSpec:
    """A required object: a shape, an optional colour, how many (exact for counting) and an
    optional size word ("big" / "small", relative to the prompt's other object)."""

    shape: str
    color: str | None = None
    count: int = 1
    size: str | None = None


@dataclass(frozen=True)
class Spec:
    """The parsed meaning of a prompt.

    `objects` lists the required objects; for `counting` and `counting_many` it holds one
    entry whose `count` is exact; otherwise each entry is one object. `relation` is one of
    RELATIONS for `position` (objects[0] relation objects[1]), BETWEEN for `between`
    (objects[0] between objects[1] and objects[2]), INSIDE for `inside` (objects[0] inside
    objects[1]), else None.
    """

    prompt: str
    category: str
    objects: tuple[ObjectSpec, ...]
    relation: str | None = None


def article(phrase: str) -> str:
    """'an' before a vowel sound, else 'a'."""
    return "an" if phrase[:1] in "aeiou" else "a"


def noun_phrase(shape: str, color: str | None = None, size: str | None = None) -> str:
    """'a circle', 'an orange star', 'a big red circle' ..."""
    words = " ".join(w for w in (size, color, shape) if w)
    return f"{article(words)} {words}"
