"""Counterfactual prompts: for a scene, a prompt of the same category that the scene does
NOT satisfy (wrong count, colour, shape or relation). Used to measure that the oracle
rejects what it should."""
from __future__ import annotations

import numpy as np

from .grammar import COLORS, MAX_COUNT, RELATIONS, SHAPES, ObjectSpec, Scene, format_prompt
from .phrasing import parse_prompt

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
}


def mismatched_prompt(scene: Scene, rng: np.random.Generator, kind: str | None = None) -> tuple[str, str]:
    """(prompt, kind): a prompt of the scene's category that its image does not satisfy.

    Scenes contain only the objects their prompt names, so a shape absent from the scene,
    a colour no object of that shape has, another count, or another relation is false.
    `kind` picks the alteration (see KINDS), else it is drawn at random."""
    spec = parse_prompt(scene.prompt)
    kinds = KINDS[spec.category]
    kind = kind or kinds[int(rng.integers(len(kinds)))]
    objs = list(spec.objects)
    present = {o.shape for o in scene.objects}
    absent = [s for s in SHAPES if s not in present]
    i = int(rng.integers(len(objs)))
    relation = spec.relation
    if kind == "wrong shape":
        objs[i] = ObjectSpec(absent[int(rng.integers(len(absent)))], objs[i].color, objs[i].count)
    elif kind == "wrong count":
        counts = [c for c in range(1, MAX_COUNT + 1) if c != objs[0].count]
        objs[0] = ObjectSpec(objs[0].shape, objs[0].color, counts[int(rng.integers(len(counts)))])
    elif kind == "wrong colour":
        shape = objs[i].shape
        have = {o.color for o in scene.objects if o.shape == shape}
        colours = [c for c in COLORS if c not in have]
        objs[i] = ObjectSpec(shape, colours[int(rng.integers(len(colours)))], objs[i].count)
    elif kind == "swapped colours":
        objs = [ObjectSpec(objs[0].shape, objs[1].color), ObjectSpec(objs[1].shape, objs[0].color)]
    elif kind == "flipped relation":
        relation = OPPOSITE[relation]
    elif kind == "swapped objects":
        objs = objs[::-1]
    elif kind == "perpendicular relation":
        relation = PERPENDICULAR[relation][int(rng.integers(2))]
    else:
        raise ValueError(f"unknown alteration {kind!r} for {spec.category}")
    assert relation is None or relation in RELATIONS
    return format_prompt(objs, relation, counting=spec.category == "counting"), kind
