"""Counterfactual prompts: for a scene, a prompt of the same category that the scene does
NOT satisfy (wrong count, colour, shape, relation, size, middle object or container). Used
to measure that the oracle rejects what it should."""
from __future__ import annotations

import numpy as np

from .grammar import BETWEEN, COLORS, INSIDE, MAX_COUNT, MAX_COUNT_MANY, RELATIONS, SHAPES, ObjectSpec, OutsideGrammar, Scene, format_spec, parse_canonical
from .world import Spec

#: the opposite of each relation, and the two perpendicular ones
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
PERPENDICULAR = {
    "left of": ("above", "below"),
    "right of": ("above", "below"),
    "above": ("left of", "right of"),
    "below": ("left of", "right of"),
}
#: the kinds of alteration available per category
KINDS: dict[str, tuple[str, ...]] = {
    "single_object": ("wrong shape",),
    "two_object": ("wrong shape",),
    "counting": ("wrong count", "wrong shape"),
    "colors": ("wrong colour", "wrong shape"),
    "position": ("flipped relation", "swapped objects", "perpendicular relation", "wrong shape"),
    "color_attr": ("swapped colours", "wrong colour", "wrong shape"),
    "counting_many": ("wrong count", "wrong shape"),
    "size_attr": ("swapped sizes", "wrong colour", "wrong shape"),
    "three_object": ("swapped colours", "wrong colour", "wrong shape"),
    "between": ("swapped middle", "wrong colour", "wrong shape"),
    "inside": ("swapped containment", "wrong colour", "wrong shape"),
}


def mismatched_prompt(scene: Scene, rng: np.random.Generator, kind: str | None = None) -> tuple[str, str]:
    """(prompt, kind): a prompt of the scene's category that its image does not satisfy.

    Scenes contain only the objects their prompt names, so a shape absent from the scene,
    a colour no object of that shape has, another count, another relation, swapped sizes,
    another middle object or the container put inside what it contains is false. `kind`
    picks the alteration (see KINDS), else it is drawn at random; an alteration that would
    keep the meaning (swapping the sizes of two like objects) falls back to a wrong colour."""
    spec = parse_canonical(scene.prompt)
    kinds = KINDS[spec.category]
    kind = kind or kinds[int(rng.integers(len(kinds)))]
    if kind not in kinds:
        raise ValueError(f"unknown alteration {kind!r} for {spec.category}")
    for _ in range(20):  # a draw can make an object that the grammar refuses: draw again
        altered = _alter(spec, scene, rng, kind)
        if altered is None:
            kind = "wrong colour"
            continue
        try:
            text = format_spec(altered)
            parse_canonical(text)
        except OutsideGrammar:
            continue
        return text, kind
    raise RuntimeError(f"no {kind!r} alteration of {scene.prompt!r}")  # pragma: no cover


def _pick(rng: np.random.Generator, options: list):
    return options[int(rng.integers(len(options)))]


def _alter(spec: Spec, scene: Scene, rng: np.random.Generator, kind: str) -> Spec | None:
    """`spec` with one alteration of `kind`, or None when that alteration keeps the meaning."""
    objs = list(spec.objects)
    present = {o.shape for o in scene.objects}
    relation = spec.relation
    i = int(rng.integers(len(objs)))
    if kind == "wrong shape":
        objs[i] = ObjectSpec(_pick(rng, [s for s in SHAPES if s not in present]), objs[i].color, objs[i].count, objs[i].size)
        if relation == BETWEEN and i > 0 and spec.objects[1] == spec.objects[2]:
            objs[3 - i] = spec.objects[3 - i]  # "between two Bs" becomes "between a B and an X"
    elif kind == "wrong count":
        k = objs[0].count
        lo, hi = (1, MAX_COUNT) if k <= MAX_COUNT else (MAX_COUNT, MAX_COUNT_MANY)  # counting_many: four to six
        objs[0] = ObjectSpec(objs[0].shape, objs[0].color, _pick(rng, [c for c in range(lo, hi + 1) if c != k]))
    elif kind == "wrong colour":
        shape = objs[i].shape
        have = {o.color for o in scene.objects if o.shape == shape}
        objs[i] = ObjectSpec(shape, _pick(rng, [c for c in COLORS if c not in have]), objs[i].count, objs[i].size)
        if relation == BETWEEN and i > 0 and spec.objects[1] == spec.objects[2]:
            objs[3 - i] = objs[i]  # both of "two Bs"
    elif kind == "swapped colours":
        a, b = (0, 1) if len(objs) == 2 else sorted(int(v) for v in rng.choice(len(objs), size=2, replace=False))
        objs[a], objs[b] = ObjectSpec(objs[a].shape, objs[b].color), ObjectSpec(objs[b].shape, objs[a].color)
    elif kind == "swapped sizes":
        if ObjectSpec(objs[0].shape, objs[0].color) == ObjectSpec(objs[1].shape, objs[1].color):
            return None  # "a big red circle and a small red circle" reads the same swapped
        objs = [ObjectSpec(o.shape, o.color, 1, "small" if o.size == "big" else "big") for o in objs]
    elif kind == "swapped middle":
        mid, b, c = objs
        objs = [b, mid, mid] if b == c else [b, mid, c]
    elif kind == "swapped containment":
        objs = objs[::-1]
    elif kind == "flipped relation":
        relation = OPPOSITE[relation]
    elif kind == "swapped objects":
        objs = objs[::-1]
    elif kind == "perpendicular relation":
        relation = PERPENDICULAR[relation][int(rng.integers(2))]
    assert relation is None or relation in RELATIONS or relation in (BETWEEN, INSIDE)
    return Spec("", spec.category, tuple(objs), relation)
