"""The exact oracle of the shapes world: does an image show what its prompt says?

`detect.py` finds the objects (colour, shape, centroid, area, what encloses what); this
module turns the parsed prompt (`phrasing.parse_prompt`, grammar v2) into checks, GenEval
style (Ghosh et al., 2023):

============== ================================================================
single_object  a <shape> is present
two_object     a <shape1> is present; a <shape2> is present
counting       a <shape> is present; exactly N <shapes> (colour too, if named)
colors         a <shape> is present; the <shape> is <colour>
position       both shapes present; the <A> is <relation> the <B>
color_attr     both shapes present; the <shape1> is <colour1>; the <shape2> is <colour2>
counting_many  as counting (five or six)
size_attr      both shapes present; their colours; the <big> is bigger than the <small>
three_object   the three shapes present; their colours
between        the shapes present; their colours; the <A> is between the <B> and the <C>
inside         both shapes present; their colours; the <A> is inside the <B>
============== ================================================================

`score` is the fraction of checks passed (1.0 iff `correct`), which gives search methods a
graded signal. Semantics:

* Outside counting, objects need to be present (at least one each), as in GenEval; other
  objects in the image are not penalised. Required objects of the same shape need as many
  distinct detections; "the <shape> is <colour>" holds when some detection of that shape
  has that colour.
* Counting is exact: "three stars" fails with 2 or 4 stars. A blob that matches no shape
  well (an "unclear" detection) but whose nearest shape, and colour if named, is the
  counted one also makes the exact count fail: a garbled extra star is still an extra
  object, and the oracle cannot certify the count. Unclear blobs never satisfy a
  presence check (lenient to garbage, strict on facts).
* A relation "A rel B" holds for a pair of detections (A-match, B-match) when the
  centroid offset along the named axis exceeds `RELATION_MARGIN` (fraction of the image)
  and dominates the offset along the other axis; it passes if any pair holds.
* Sizes compare the two objects: "a big A and a small B" holds when some A-match has at
  least `SIZE_RATIO` times the area of a distinct B-match (the sampler keeps 3x).
* "A between B and C" holds when, for some distinct A-, B- and C-matches, the angle at A
  between the directions to B and to C is at least `BETWEEN_ANGLE` degrees (A lies near
  the segment from B to C; the sampler keeps >= 164).
* "A inside B" holds when an A-match lies in the outline of a distinct B-match: at least
  90% of its mass in the pixels that B encloses (`detect.INSIDE_FRACTION`); an object
  touching or crossing B's edge is not inside it. An object's area includes what it encloses.
* Speck-sized components (noise) are ignored; off-palette blobs count as shapes without a
  colour (they satisfy "a circle" but never "a red circle").
* A shape cut by the image border counts (for presence, counts, colours and relations)
  when at least 30% of it is visible (`detect.CUT_MIN_VISIBLE`, judged from the fitted
  template); a smaller sliver is not an object. Its position is the centroid of the
  visible part.
* Touching shapes of the same colour are separate objects (split at the neck of the
  blob's distance transform, `split.py`); two shapes overlapping by more than a neck (the
  inscribed radii along the line between their centres stay above 70% of the smaller)
  stay one blob, which is unclear unless a single template fits it.
* A concave compact shape (four-, five- or six-point star) is a star, never a circle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import TTSInputError
from .detect import Detection, detect_batch
from .grammar import BETWEEN, INSIDE, NUMBER_WORDS, PLURALS, RELATIONS, ObjectSpec, Spec, article, noun_phrase
from .phrasing import parse_prompt

#: minimum centroid offset (fraction of the image) along the named axis for a relation
RELATION_MARGIN = 0.03
#: "a big A and a small B": the area of A is at least this many times B's
SIZE_RATIO = 1.5
#: "A between B and C": the angle at A between the directions to B and C, in degrees
BETWEEN_ANGLE = 135.0


@dataclass
class OracleResult:
    """Verdict on one image: `score` = fraction of `checks` passed, `correct` iff all pass,
    `checks` = (description, passed) pairs, `feedback` = one line of text for reflection
    loops (what was expected, what was found), `detections` = the objects found."""

    score: float
    correct: bool
    checks: list[tuple[str, bool]]
    feedback: str
    detections: list[Detection] = field(default_factory=list)


def check(image: torch.Tensor, prompt: str) -> OracleResult:
    """Check one image [3, H, W] in [0, 1] against `prompt` (any resolution).
    Raises TTSInputError if the prompt is outside the shapes grammar."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise TTSInputError(f"oracle expects an image tensor [3, H, W] in [0, 1], got {shape}")
    return check_batch(image.unsqueeze(0), [prompt])[0]


def check_batch(images: torch.Tensor, prompts: Sequence[str] | str) -> list[OracleResult]:
    """Check images [B, 3, H, W] in [0, 1] against one prompt each (a single string is
    broadcast). Prompts are parsed first, so a bad prompt fails before any image work.
    Detection runs batched on the images' device."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise TTSInputError(f"oracle expects images [B, 3, H, W] in [0, 1], got {shape}")
    if isinstance(prompts, str):
        prompts = [prompts] * images.shape[0]
    if len(prompts) != images.shape[0]:
        raise TTSInputError(f"oracle got {images.shape[0]} images but {len(prompts)} prompts")
    specs = [parse_prompt(p) for p in prompts]
    return [evaluate(spec, dets) for spec, dets in zip(specs, detect_batch(images))]


# ----------------------------------------------------------------- checks
def _matches(det: Detection, req: ObjectSpec) -> bool:
    return det.shape == req.shape and (req.color is None or det.color == req.color)


def _count_phrase(n: int, req: ObjectSpec) -> str:
    """'3 red circles', '1 star', 'no circle' (digits: easy to read in feedback)."""
    adj = f"{req.color} " if req.color else ""
    if n == 0:
        return f"no {adj}{req.shape}"
    return f"{n} {adj}{req.shape if n == 1 else PLURALS[req.shape]}"


def _relation_of(a: Detection, b: Detection) -> str:
    """Where `a` is relative to `b`, in words (dominant axis)."""
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if max(abs(dx), abs(dy)) <= RELATION_MARGIN:
        return "on top of"
    if abs(dx) >= abs(dy):
        return "left of" if dx > 0 else "right of"
    return "above" if dy > 0 else "below"


def relation_holds(a: Detection, b: Detection, relation: str) -> bool:
    """`a` is `relation` `b`: offset along the axis > RELATION_MARGIN and dominant."""
    axis, sign = RELATIONS[relation]
    d = (b.cx - a.cx, b.cy - a.cy)
    along, across = sign * d[axis], abs(d[1 - axis])
    return along > RELATION_MARGIN and along > across


def between_angle(a: Detection, b: Detection, c: Detection) -> float:
    """The angle at `a` between the directions to `b` and to `c`, in degrees (180: on the line between them)."""
    u, v = (b.cx - a.cx, b.cy - a.cy), (c.cx - a.cx, c.cy - a.cy)
    nu, nv = math.hypot(*u), math.hypot(*v)
    if nu == 0 or nv == 0:
        return 0.0
    return math.degrees(math.acos(max(-1.0, min(1.0, (u[0] * v[0] + u[1] * v[1]) / (nu * nv)))))


def _assignments(dets: Sequence[Detection], reqs: Sequence[ObjectSpec]) -> list[tuple[int, ...]]:
    """Every injective choice of detections (indices) matching the required objects in order."""
    cands = [[i for i, d in enumerate(dets) if _matches(d, r)] for r in reqs]
    out: list[tuple[int, ...]] = [()]
    for c in cands:
        out = [t + (i,) for t in out for i in c if i not in t]
    return out


def evaluate(spec: Spec, detections: Sequence[Detection]) -> OracleResult:
    """Check parsed prompt `spec` against `detections` (see the module doc for semantics)."""
    dets = list(detections)
    checks: list[tuple[str, bool]] = []
    problems: list[str] = []

    def add(description: str, passed: bool, problem: str) -> None:
        checks.append((description, passed))
        if not passed:
            problems.append(problem)

    if spec.category in ("counting", "counting_many"):
        (req,) = spec.objects
        found = [d for d in dets if _matches(d, req)]
        unclear = [
            d for d in dets if d.shape == "unknown" and d.guess == req.shape and (req.color is None or d.color == req.color)
        ]
        n = len(found)
        exact = n == req.count and not unclear
        problem = f"expected {_count_phrase(req.count, req)}, found {n}"
        if unclear:
            problem += f" and {len(unclear)} unclear blob{'s' if len(unclear) > 1 else ''} that may be {PLURALS[req.shape]}"
        checks.append((f"a {_name(req)} is present", n >= 1))  # its failure is reported below
        add(f"exactly {_count_phrase(req.count, req)}", exact, problem)
    else:
        needed: dict[str, int] = {}  # shape -> how many distinct objects of it (in prompt order)
        for req in spec.objects:
            needed[req.shape] = needed.get(req.shape, 0) + 1
        for shape, need in needed.items():
            have = sum(1 for d in dets if d.shape == shape)
            if need == 1:
                add(f"a {shape} is present", have >= 1, f"expected a {shape}, found none")
            else:
                add(f"{need} {PLURALS[shape]} are present", have >= need, f"expected {need} {PLURALS[shape]}, found {have}")
        for req in dict.fromkeys(ObjectSpec(r.shape, r.color) for r in spec.objects):
            if req.color is None:
                continue
            same_shape = [d for d in dets if d.shape == req.shape]
            ok = any(d.color == req.color for d in same_shape)
            if same_shape:
                seen = " and ".join(noun_phrase(req.shape, c) for c in sorted({d.color or "off-palette" for d in same_shape}))
                problem = f"expected {noun_phrase(req.shape, req.color)}, found {seen}"
            else:
                problem = f"expected {noun_phrase(req.shape, req.color)}, found no {req.shape}"
            add(f"the {req.shape} is {req.color}", ok, problem)
        if spec.relation in RELATIONS:
            _check_position(spec, dets, add)
        elif spec.category == "size_attr":
            _check_sizes(spec, dets, add)
        elif spec.relation == BETWEEN:
            _check_between(spec, dets, add)
        elif spec.relation == INSIDE:
            _check_inside(spec, dets, add)

    passed = sum(ok for _, ok in checks)
    score = passed / len(checks) if checks else 0.0
    correct = bool(checks) and passed == len(checks)
    seen = _summary(dets)
    feedback = f"correct; found {seen}" if correct else "; ".join(problems) + f" (image shows {seen})"
    return OracleResult(score=score, correct=correct, checks=checks, feedback=feedback, detections=dets)


def _check_position(spec: Spec, dets: list[Detection], add) -> None:
    a_req, b_req = spec.objects
    name_a, name_b = _name(a_req), _name(b_req)
    desc = f"the {name_a} is {spec.relation} the {name_b}"
    pairs = [(dets[i], dets[j]) for i, j in _assignments(dets, spec.objects)]
    if not pairs:
        missing = name_a if not any(_matches(d, a_req) for d in dets) else name_b
        add(desc, False, f"cannot check '{desc}': no {missing} found")
        return
    ok = any(relation_holds(a, b, spec.relation) for a, b in pairs)
    a, b = max(pairs, key=lambda p: p[0].area + p[1].area)
    add(desc, ok, f"expected the {name_a} {spec.relation} the {name_b}, found it {_relation_of(a, b)} it")


def _missing(spec: Spec, dets: list[Detection]) -> str:
    """The first required object with no match, as a name."""
    return next((_name(r) for r in spec.objects if not any(_matches(d, r) for d in dets)), _name(spec.objects[-1]))


def _check_sizes(spec: Spec, dets: list[Detection], add) -> None:
    big_i = 0 if spec.objects[0].size == "big" else 1
    big, small = spec.objects[big_i], spec.objects[1 - big_i]
    desc = f"the {_name(big)} is bigger than the {_name(small)}"
    pairs = [(dets[i], dets[j]) for i, j in _assignments(dets, (big, small))]
    if not pairs:
        add(desc, False, f"cannot check '{desc}': no {_missing(spec, dets)} found")
        return
    ratio = max(a.area / max(b.area, 1e-9) for a, b in pairs)
    add(desc, ratio >= SIZE_RATIO, f"expected the {_name(big)} clearly bigger than the {_name(small)}"
                                   f" ({SIZE_RATIO:g}x its area or more), found {ratio:.1f}x")


def _check_between(spec: Spec, dets: list[Detection], add) -> None:
    mid, end_b, end_c = spec.objects
    ends = f"the two {PLURALS[end_b.shape]}" if end_b == end_c else f"the {_name(end_b)} and the {_name(end_c)}"
    if end_b == end_c and end_b.color:
        ends = f"the two {end_b.color} {PLURALS[end_b.shape]}"
    desc = f"the {_name(mid)} is between {ends}"
    triples = _assignments(dets, spec.objects)
    if not triples:
        add(desc, False, f"cannot check '{desc}': no {_missing(spec, dets)} found" if end_b != end_c or
            sum(_matches(d, end_b) for d in dets) >= 2 or not any(_matches(d, end_b) for d in dets)
            else f"cannot check '{desc}': found only one {_name(end_b)}")
        return
    angle = max(between_angle(*(dets[i] for i in t)) for t in triples)
    add(desc, angle >= BETWEEN_ANGLE, f"expected the {_name(mid)} between {ends}, found it off the line"
                                      f" between them (angle {angle:.0f} degrees, {BETWEEN_ANGLE:.0f} needed)")


def _check_inside(spec: Spec, dets: list[Detection], add) -> None:
    inner, outer = spec.objects
    desc = f"the {_name(inner)} is inside the {_name(outer)}"
    pairs = _assignments(dets, spec.objects)
    if not pairs:
        add(desc, False, f"cannot check '{desc}': no {_missing(spec, dets)} found")
        return
    ok = any(dets[i].inside == j for i, j in pairs)
    add(desc, ok, f"expected the {_name(inner)} inside the {_name(outer)}, found it outside it")


def _name(req: ObjectSpec) -> str:
    return f"{req.color} {req.shape}" if req.color else req.shape


def _summary(dets: Sequence[Detection]) -> str:
    """'2 red circles, a blue square' -- what the image shows (and what lies inside what)."""
    if not dets:
        return "no objects"
    groups: dict[tuple[str, str | None], int] = {}
    for d in dets:
        key = (d.shape if d.shape != "unknown" else f"unclear blob (maybe {d.guess})", d.color)
        groups[key] = groups.get(key, 0) + 1
    parts = []
    for (shape, color), n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1] or "")):
        adj = f"{color or 'off-palette'} "
        if n == 1:
            parts.append(f"{article(adj)} {adj}{shape}")
        else:
            noun = PLURALS.get(shape, shape.replace("blob", "blobs", 1))
            parts.append(f"{NUMBER_WORDS.get(n, str(n))} {adj}{noun}")
    for d in dets:
        if d.inside is not None:
            o = dets[d.inside]
            parts.append(f"{noun_phrase(d.shape, d.color or 'off-palette')} inside {noun_phrase(o.shape, o.color or 'off-palette')}")
    return ", ".join(parts)
