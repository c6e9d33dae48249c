"""Scene layout: where the sampler puts the objects of a prompt, with clear margins.

Every layout keeps objects inside the frame (`FRAME_MARGIN`) and, except an object inside
another, `GAP` apart (between their enclosing circles). The margins are what make a
sampled scene satisfy its prompt beyond doubt, well inside the oracle's thresholds:

=============  ======================================================  =====================
category       sampled                                                 oracle (oracle.py)
=============  ======================================================  =====================
position       offset along the axis >= 0.2 and >= 2x the other one    > 0.03 and dominant
size_attr      area of the big object >= 3x the small one's            >= SIZE_RATIO (1.5x)
between        angle at the middle object >= 164 degrees               >= BETWEEN_ANGLE (135)
inside         inner shape >= 0.03 inside the outer's inscribed circle  inside its outline
=============  ======================================================  =====================

Coordinates and sizes are fractions of the image (`world.Obj`); the renderer draws the
objects in order, so an inner object comes after the one that contains it.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .world import EXTENT, INSCRIBED, RELATIONS, UNIT_AREA, Obj

#: sampled `Obj.size` range (fraction of the image) of the v1 categories; areas of the four
#: shapes are similar
SIZE_RANGE: tuple[float, float] = (0.10, 0.16)
#: free space kept between objects and to the frame (fraction of the image)
GAP = 0.05
FRAME_MARGIN = 0.02
#: sampled position relations: offset along the named axis >= this and >= 2x the other offset
RELATION_MIN_OFFSET = 0.2
#: counting_many (five or six objects): smaller shapes, a smaller gap
MANY_SIZE_RANGE: tuple[float, float] = (0.065, 0.09)
MANY_GAP = 0.04
#: three_object
THREE_SIZE_RANGE: tuple[float, float] = (0.09, 0.13)
#: size_attr: areas (fraction of the image) of the big and the small object; ratio >= 3.05
BIG_AREA: tuple[float, float] = (0.055, 0.085)
SMALL_AREA: tuple[float, float] = (0.012, 0.018)
#: between: object sizes, the largest turn of each outer object off the line through the
#: middle one (so the angle at the middle object is >= 180 - 2 * 8 = 164 degrees), and the
#: largest extra distance beyond GAP between the middle object and an outer one
BETWEEN_SIZE_RANGE: tuple[float, float] = (0.08, 0.12)
BETWEEN_MAX_TURN = math.radians(8.0)
BETWEEN_EXTRA = 0.08
#: inside: size of the outer object, smallest area of the inner one, the inner one's area at
#: most this fraction of the outer one's, and the margin between the inner object's
#: enclosing circle and the outer object's inscribed circle
OUTER_SIZE_RANGE: tuple[float, float] = (0.24, 0.32)
INNER_MIN_AREA = 0.012
INNER_MAX_AREA_FRACTION = 0.25
CONTAIN_MARGIN = 0.03

Kind = tuple[str, str]  # (shape, colour)


def place(
    kinds: Sequence[Kind],
    rng: np.random.Generator,
    relation: str | None = None,
    size_range: tuple[float, float] = SIZE_RANGE,
    ranges: Sequence[tuple[float, float]] | None = None,
    gap: float = GAP,
) -> tuple[Obj, ...]:
    """Rejection-sample sizes, angles and centres: inside the frame, `gap` apart, and for a
    relation, kinds[0] `relation` kinds[1] with offset >= RELATION_MIN_OFFSET and >= 2x the
    perpendicular offset. Sizes are uniform in `size_range` (or per object in `ranges`).
    Shrinks the sizes if a layout keeps failing. (The draws of a v1 scene are those of the
    sampler before grammar v2.)"""
    ranges = list(ranges) if ranges is not None else [size_range] * len(kinds)
    for attempt in range(200):
        scale = 0.97 ** (attempt // 20)
        objs: list[Obj] = []
        for (shape, color), (lo, hi) in zip(kinds, ranges):
            size = float(rng.uniform(lo, hi)) * scale
            ext = size * EXTENT[shape]
            ok = False
            for _ in range(50):
                cx, cy = (float(v) for v in rng.uniform(ext + FRAME_MARGIN, 1.0 - ext - FRAME_MARGIN, size=2))
                if all(math.hypot(cx - o.cx, cy - o.cy) >= ext + o.size * EXTENT[o.shape] + gap for o in objs):
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


def _size_range(shape: str, area: tuple[float, float]) -> tuple[float, float]:
    """`Obj.size` range of `shape` for an area range (fractions of the image)."""
    return math.sqrt(area[0] / UNIT_AREA[shape]), math.sqrt(area[1] / UNIT_AREA[shape])


def place_sized(kinds: Sequence[Kind], sizes: Sequence[str | None], rng: np.random.Generator) -> tuple[Obj, ...]:
    """size_attr: the "big" object's area in BIG_AREA, the "small" one's in SMALL_AREA."""
    ranges = [_size_range(shape, BIG_AREA if z == "big" else SMALL_AREA) for (shape, _), z in zip(kinds, sizes)]
    return place(kinds, rng, ranges=ranges)


def _inside_frame(o: Obj) -> bool:
    ext = o.size * EXTENT[o.shape] + FRAME_MARGIN
    return ext <= o.cx <= 1.0 - ext and ext <= o.cy <= 1.0 - ext


def place_between(kinds: Sequence[Kind], rng: np.random.Generator) -> tuple[Obj, ...]:
    """between: kinds[0] in the middle, kinds[1] and kinds[2] on either side of it, each
    turned at most BETWEEN_MAX_TURN off a common line through the middle object."""
    for _ in range(1000):
        sizes = rng.uniform(*BETWEEN_SIZE_RANGE, size=3)
        ext = [float(s) * EXTENT[k[0]] for s, k in zip(sizes, kinds)]
        theta = float(rng.uniform(0.0, 2.0 * math.pi))
        turns = rng.uniform(-BETWEEN_MAX_TURN, BETWEEN_MAX_TURN, size=2)
        dist = [ext[0] + ext[i] + GAP + float(rng.uniform(0.0, BETWEEN_EXTRA)) for i in (1, 2)]
        mx, my = (float(v) for v in rng.uniform(ext[0] + FRAME_MARGIN, 1.0 - ext[0] - FRAME_MARGIN, size=2))
        angles = rng.uniform(0.0, 2.0 * math.pi, size=3)
        objs = [Obj(kinds[0][0], kinds[0][1], mx, my, float(sizes[0]), float(angles[0]))]
        for i, (d, turn, side) in enumerate(zip(dist, turns, (0.0, math.pi)), start=1):
            a = theta + side + float(turn)
            objs.append(Obj(kinds[i][0], kinds[i][1], mx + d * math.cos(a), my + d * math.sin(a), float(sizes[i]),
                            float(angles[i])))
        b, c = objs[1], objs[2]
        if all(_inside_frame(o) for o in objs) and math.hypot(b.cx - c.cx, b.cy - c.cy) >= ext[1] + ext[2] + GAP:
            return tuple(objs)
    raise RuntimeError(f"could not place {kinds} in a row")  # pragma: no cover


def place_inside(kinds: Sequence[Kind], rng: np.random.Generator) -> tuple[Obj, ...]:
    """inside: kinds[0] (inner) inside kinds[1] (outer). Returns (outer, inner), the drawing
    order: the inner object's enclosing circle lies CONTAIN_MARGIN inside the outer one's
    inscribed circle, and its area is at most INNER_MAX_AREA_FRACTION of the outer's."""
    (inner, ci), (outer, co) = kinds
    for _ in range(1000):
        so = float(rng.uniform(*OUTER_SIZE_RANGE))
        room = INSCRIBED[outer] * so - CONTAIN_MARGIN  # radius the inner object's extent must fit in
        s_hi = min(room / EXTENT[inner], math.sqrt(INNER_MAX_AREA_FRACTION * UNIT_AREA[outer] / UNIT_AREA[inner]) * so)
        s_lo = math.sqrt(INNER_MIN_AREA / UNIT_AREA[inner])
        if s_hi <= s_lo:
            continue
        si = float(rng.uniform(s_lo, s_hi))
        ext_o = so * EXTENT[outer]
        ox, oy = (float(v) for v in rng.uniform(ext_o + FRAME_MARGIN, 1.0 - ext_o - FRAME_MARGIN, size=2))
        slack = room - si * EXTENT[inner]
        r, phi = slack * math.sqrt(float(rng.uniform())), float(rng.uniform(0.0, 2.0 * math.pi))
        angles = rng.uniform(0.0, 2.0 * math.pi, size=2)
        return (Obj(outer, co, ox, oy, so, float(angles[0])),
                Obj(inner, ci, ox + r * math.cos(phi), oy + r * math.sin(phi), si, float(angles[1])))
    raise RuntimeError(f"could not place {kinds[0]} inside {kinds[1]}")  # pragma: no cover
