"""An independent renderer of shapes-world scenes, for testing the oracle on images the
project's renderer (`tts_diffusion.shapes.renderer`) did not produce.

Different on purpose: PIL ImageDraw polygons on an 8x supersampled canvas, box-filtered
down (not analytic SDF coverage); slightly different proportions (square half side 0.86,
triangle circumradius 1.30, star inner/outer radius 0.50 instead of 0.44); colours and
background shifted by a few percent; objects may touch, overlap or leave the frame.

`scene_kinds` builds the stress scenes of issue 16 part 3, each with its prompt and the
verdict a person gives it:

* in_distribution: grammar scenes (`sample_scenes`) redrawn here; correct.
* touching: a counting prompt whose objects include two of the same colour and shape that
  touch (gap -0.6 .. 0.3 px between outlines); correct.
* border_cut: a counting prompt whose objects include one cut by the frame with 60-85% of
  its area visible; correct (a cut shape counts, see `tts_diffusion.shapes.oracle`).
* extra_half_visible: N whole objects and one more of the same colour and shape, 40-60%
  visible at the frame, prompt says N; wrong (the extra one counts).
* overlap: two different shapes, the second overlapping the first by 25-45% of its radius,
  two_object / color_attr / position prompts; correct.

`scene_kinds_v2` does the same for grammar v2 (drawn at 128 px):

* in_distribution_v2: grammar v2 scenes (`sample_scenes` over the five new categories)
  redrawn here; correct.
* inside_crossing: an "A inside B" scene whose inner object sits on the outer one's
  outline, partly over the background; wrong.
* between_off_line: an "A between B and C" scene whose middle object is moved off the line
  (the angle at it 60-100 degrees); wrong.
* sizes_alike: "a big A and a small B" with areas within 15% of each other; wrong.
* touching_many: five or six objects of one shape, two of the same colour touching; correct.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from tts_diffusion.shapes import COLORS, GRAMMARS, SHAPES, sample_scenes
from tts_diffusion.shapes.grammar import NUMBER_WORDS, PLURALS, UNIT_AREA, V2_CATEGORIES, Obj, noun_phrase

SUPERSAMPLE = 8
BACKGROUND = (0.95, 0.95, 0.92)
#: outer radius per unit size (the project's: circle 1, square 0.9 sqrt 2, triangle / star 1.35)
OUTER = {"circle": 1.0, "square": 0.86 * math.sqrt(2.0), "triangle": 1.30, "star": 1.30}
STAR_INNER_RATIO = 0.50
#: fraction of the area of each shape at unit size (for visibility bookkeeping)
SIZE_RANGE = (0.10, 0.15)


#: one object: the grammar's own type (centre (cx, cy) and radius `size` as fractions of the
#: image, `angle` in radians); only the drawing here is independent
Shape = Obj


def outline(s: Shape, px: float) -> list[tuple[float, float]] | None:
    """Polygon vertices in pixels of a canvas `px` wide (None for a circle)."""
    r = OUTER[s.shape] * s.size * px
    cx, cy = s.cx * px, s.cy * px
    if s.shape == "circle":
        return None
    if s.shape == "star":
        pts = []
        for k in range(10):
            a = s.angle - math.pi / 2 + math.pi * k / 5
            rr = r if k % 2 == 0 else r * STAR_INNER_RATIO
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    n = 3 if s.shape == "triangle" else 4
    phase = -math.pi / 2 if n == 3 else -math.pi / 4
    return [(cx + r * math.cos(s.angle + phase + 2 * math.pi * k / n), cy + r * math.sin(s.angle + phase + 2 * math.pi * k / n)) for k in range(n)]


def _draw(draw: ImageDraw.ImageDraw, s: Shape, px: float, offset: float, fill) -> None:
    pts = outline(s, px)
    if pts is None:
        r = s.size * px
        draw.ellipse([s.cx * px - r + offset, s.cy * px - r + offset, s.cx * px + r + offset, s.cy * px + r + offset], fill=fill)
    else:
        draw.polygon([(x + offset, y + offset) for x, y in pts], fill=fill)


def draw(objects: list[Shape], size: int = 64, seed: int = 0) -> torch.Tensor:
    """Image [3, size, size] in [0, 1]: objects painted in order over the background, colours
    shifted by up to +-0.04 per channel (seeded), supersampled and box-filtered."""
    rng = np.random.default_rng(seed)
    big = size * SUPERSAMPLE
    bg = tuple(int(round(255 * c)) for c in BACKGROUND)
    img = Image.new("RGB", (big, big), bg)
    d = ImageDraw.Draw(img)
    for s in objects:
        col = np.clip(np.array(COLORS[s.color]) + rng.uniform(-0.04, 0.04, 3), 0, 1)
        _draw(d, s, big, 0.0, tuple(int(round(255 * c)) for c in col))
    img = img.resize((size, size), Image.BOX)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def visible_fraction(s: Shape, res: int = 256) -> float:
    """Fraction of the shape's area inside the frame (rasterised on a 3x canvas)."""
    img = Image.new("L", (3 * res, 3 * res), 0)
    _draw(ImageDraw.Draw(img), s, res, float(res), 255)
    a = np.asarray(img) > 127
    return float(a[res : 2 * res, res : 2 * res].sum() / max(a.sum(), 1))


# ----------------------------------------------------------------- scene kinds
@dataclass(frozen=True)
class TestScene:
    kind: str
    prompt: str
    expected: bool
    objects: tuple[Shape, ...]


def _free_spot(rng, placed: list[Shape], size: float, tries: int = 2000) -> tuple[float, float]:
    """A centre for a new object of radius `size` (any shape) inside the frame, clear of `placed`."""
    ext = 1.3 * size
    for _ in range(tries):
        cx, cy = rng.uniform(ext + 0.02, 1 - ext - 0.02, 2)
        if all(math.hypot(cx - p.cx, cy - p.cy) > OUTER[p.shape] * p.size + ext + 0.05 for p in placed):
            return float(cx), float(cy)
    raise RuntimeError("no free spot")


def _rand_angle(rng) -> float:
    return float(rng.uniform(0, 2 * math.pi))


def _counting_prompt(n: int, shape: str, color: str | None) -> str:
    adj = f"{color} " if color else ""
    return f"a photo of {NUMBER_WORDS[n]} {adj}{shape if n == 1 else PLURALS[shape]}"


def touching(rng) -> TestScene:
    shape, color = str(rng.choice(SHAPES)), str(rng.choice(list(COLORS)))
    n = int(rng.integers(2, 5))
    size = float(rng.uniform(*SIZE_RANGE))
    a = Shape(shape, color, 0.0, 0.0, size, _rand_angle(rng))
    # the pair: second shape placed along a random direction, moved until the outlines touch
    for _ in range(100):
        cx, cy = rng.uniform(0.25, 0.75, 2)
        th = rng.uniform(0, 2 * math.pi)
        a = Shape(shape, color, float(cx), float(cy), size, _rand_angle(rng))
        b_angle = _rand_angle(rng)
        gap_px = rng.uniform(-0.6, 0.3)
        lo, hi = 0.0, 3.0 * OUTER[shape] * size
        for _ in range(16):  # bisection on the centre distance for the wanted gap
            mid = (lo + hi) / 2
            b = Shape(shape, color, float(cx + mid * math.cos(th)), float(cy + mid * math.sin(th)), size, b_angle)
            if _gap_px(a, b) < gap_px:
                lo = mid
            else:
                hi = mid
        if visible_fraction(b) > 0.999:
            break
    placed = [a, b]
    for _ in range(n - 2):
        s = float(rng.uniform(*SIZE_RANGE))
        cx, cy = _free_spot(rng, placed, s)
        placed.append(Shape(shape, color, cx, cy, s, _rand_angle(rng)))
    col = color if rng.random() < 0.5 else None
    return TestScene("touching", _counting_prompt(n, shape, col), True, tuple(placed))


def _gap_px(a: Shape, b: Shape, px: int = 64, ss: int = 4) -> float:
    """Signed gap in output pixels between the outlines of a and b (negative: overlap depth),
    from supersampled masks: distance from b's mask to a's mask, or minus the overlap depth."""
    from scipy import ndimage

    big = px * ss
    ma, mb = Image.new("L", (big, big), 0), Image.new("L", (big, big), 0)
    _draw(ImageDraw.Draw(ma), a, big, 0.0, 255)
    _draw(ImageDraw.Draw(mb), b, big, 0.0, 255)
    A, B = np.asarray(ma) > 127, np.asarray(mb) > 127
    inter = A & B
    if inter.any():
        return -float(ndimage.distance_transform_edt(inter).max()) * 2 / ss
    return float(ndimage.distance_transform_edt(~A)[B].min()) / ss


def _cut_shape(rng, shape: str, color: str, size: float, lo: float, hi: float) -> Shape:
    """A shape centred near a random edge, with visible_fraction in [lo, hi]."""
    for _ in range(200):
        edge = int(rng.integers(4))
        t = float(rng.uniform(0.25, 0.75))
        ext = OUTER[shape] * size
        off = float(rng.uniform(-ext, ext))  # centre offset from the edge, inside positive
        cx, cy = [(off, t), (1 - off, t), (t, off), (t, 1 - off)][edge]
        s = Shape(shape, color, cx, cy, size, _rand_angle(rng))
        if lo <= visible_fraction(s) <= hi:
            return s
    raise RuntimeError("no cut placement")


def _with_cut(rng, kind: str, lo: float, hi: float, extra: bool) -> TestScene:
    shape, color = str(rng.choice(SHAPES)), str(rng.choice(list(COLORS)))
    n = int(rng.integers(1, 4)) if extra else int(rng.integers(1, 5))
    size = float(rng.uniform(*SIZE_RANGE))
    cut = _cut_shape(rng, shape, color, size, lo, hi)
    placed = [cut]
    whole = n if extra else n - 1
    for _ in range(whole):
        s = float(rng.uniform(*SIZE_RANGE))
        cx, cy = _free_spot(rng, placed, s)
        placed.append(Shape(shape, color, cx, cy, s, _rand_angle(rng)))
    col = color if rng.random() < 0.5 else None
    return TestScene(kind, _counting_prompt(n, shape, col), not extra, tuple(placed))


def border_cut(rng) -> TestScene:
    return _with_cut(rng, "border_cut", 0.6, 0.85, extra=False)


def extra_half_visible(rng) -> TestScene:
    return _with_cut(rng, "extra_half_visible", 0.4, 0.6, extra=True)


def overlap(rng) -> TestScene:
    """Two different shapes (different colours), the second partly over the first."""
    s1, s2 = (str(x) for x in rng.choice(SHAPES, 2, replace=False))
    c1, c2 = (str(x) for x in rng.choice(list(COLORS), 2, replace=False))
    size1, size2 = (float(x) for x in rng.uniform(*SIZE_RANGE, 2))
    cx, cy = rng.uniform(0.35, 0.65, 2)
    th = float(rng.choice([0.0, math.pi / 2, math.pi, 3 * math.pi / 2]) + rng.uniform(-0.35, 0.35))
    depth = float(rng.uniform(0.25, 0.45))
    dist = OUTER[s1] * size1 + OUTER[s2] * size2 * (1 - 2 * depth)  # covers up to ~depth of the first's radius
    dist = max(dist, 0.75 * (OUTER[s1] * size1 + OUTER[s2] * size2) * 0.8)
    a = Shape(s1, c1, float(cx - dist / 2 * math.cos(th)), float(cy - dist / 2 * math.sin(th)), size1, _rand_angle(rng))
    b = Shape(s2, c2, float(cx + dist / 2 * math.cos(th)), float(cy + dist / 2 * math.sin(th)), size2, _rand_angle(rng))
    r = rng.random()
    if r < 1 / 3:
        prompt = f"a photo of {_np(s1)} and {_np(s2)}"
    elif r < 2 / 3:
        prompt = f"a photo of {_np(s1, c1)} and {_np(s2, c2)}"
    else:
        dx, dy = b.cx - a.cx, b.cy - a.cy
        rel = ("left of" if dx > 0 else "right of") if abs(dx) >= abs(dy) else ("above" if dy > 0 else "below")
        prompt = f"a photo of {_np(s1)} {rel} {_np(s2)}"
    return TestScene("overlap", prompt, True, (a, b))


def _np(shape: str, color: str | None = None) -> str:
    words = f"{color} {shape}" if color else shape
    return ("an " if words[0] in "aeiou" else "a ") + words


def in_distribution(n: int, seed: int) -> list[TestScene]:
    """Grammar scenes (their prompts and layouts) redrawn by this renderer, with a new
    rotation for every object (proportions and anti-aliasing differ from the project's)."""
    rng = np.random.default_rng(seed)
    out = []
    for sc in sample_scenes(n, seed=seed, categories=GRAMMARS["v1"]):
        objs = tuple(Shape(o.shape, o.color, o.cx, o.cy, o.size, _rand_angle(rng)) for o in sc.objects)
        out.append(TestScene("in_distribution", sc.prompt, True, objs))
    return out


KINDS = {"touching": touching, "border_cut": border_cut, "extra_half_visible": extra_half_visible, "overlap": overlap}


def scene_kinds(n_per_kind: int, seed: int = 0) -> list[TestScene]:
    """n_per_kind scenes of each stress kind plus n_per_kind in-distribution scenes."""
    return in_distribution(n_per_kind, seed) + _stress(KINDS, n_per_kind, np.random.default_rng(seed))


def _stress(kinds: dict, n_per_kind: int, rng) -> list[TestScene]:
    """n_per_kind scenes of each kind (a layout that does not fit is redrawn)."""
    out = []
    for make in kinds.values():
        for _ in range(n_per_kind):
            for _ in range(50):
                try:
                    out.append(make(rng))
                    break
                except RuntimeError:
                    continue
    return out


def draw_all(scenes: list[TestScene], size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.stack([draw(list(s.objects), size, seed + i) for i, s in enumerate(scenes)])


# ----------------------------------------------------------------- grammar v2 scene kinds
def in_distribution_v2(n: int, seed: int) -> list[TestScene]:
    """Grammar v2 scenes of the new categories redrawn here (new rotations)."""
    rng = np.random.default_rng(seed)
    out = []
    for sc in sample_scenes(n, seed=seed, categories=V2_CATEGORIES):
        objs = tuple(Shape(o.shape, o.color, o.cx, o.cy, o.size, _rand_angle(rng)) for o in sc.objects)
        out.append(TestScene("in_distribution_v2", sc.prompt, True, objs))
    return out


def _two_colours(rng) -> tuple[str, str]:
    a, b = rng.choice(list(COLORS), 2, replace=False)
    return str(a), str(b)


def inside_crossing(rng) -> TestScene:
    """The inner object centred on the outer one's outline (its inscribed circle plus a
    little): partly over the outer shape, partly over the background."""
    inner, outer = str(rng.choice(SHAPES)), str(rng.choice(SHAPES))
    ci, co = _two_colours(rng)
    so, si = float(rng.uniform(0.22, 0.28)), float(rng.uniform(0.07, 0.09))
    th = _rand_angle(rng)
    r = OUTER[outer] * so * float(rng.uniform(0.9, 1.05))
    a = Shape(outer, co, 0.5, 0.5, so, _rand_angle(rng))
    b = Shape(inner, ci, 0.5 + r * math.cos(th), 0.5 + r * math.sin(th), si, _rand_angle(rng))
    return TestScene("inside_crossing", f"a photo of {noun_phrase(inner, ci)} inside {noun_phrase(outer, co)}", False, (a, b))


def between_off_line(rng) -> TestScene:
    """Three objects; the middle one of the prompt is off the line between the others."""
    s = [str(x) for x in rng.choice(SHAPES, 3, replace=False)]
    c = [str(x) for x in rng.choice(list(COLORS), 3, replace=False)]
    size = float(rng.uniform(0.08, 0.1))
    angle = math.radians(float(rng.uniform(60.0, 100.0)))  # at the middle object
    d = float(rng.uniform(0.25, 0.3))
    th = _rand_angle(rng)
    m = (0.5 - 0.1 * math.cos(th + angle / 2), 0.5 - 0.1 * math.sin(th + angle / 2))
    ends = [(m[0] + d * math.cos(th + k * angle), m[1] + d * math.sin(th + k * angle)) for k in (0, 1)]
    objs = (Shape(s[0], c[0], *m, size, _rand_angle(rng)),
            *(Shape(s[k + 1], c[k + 1], *ends[k], size, _rand_angle(rng)) for k in (0, 1)))
    if not all(0.15 < v < 0.85 for o in objs for v in (o.cx, o.cy)):
        raise RuntimeError("off the frame")
    prompt = f"a photo of {noun_phrase(s[0], c[0])} between {noun_phrase(s[1], c[1])} and {noun_phrase(s[2], c[2])}"
    return TestScene("between_off_line", prompt, False, objs)


def sizes_alike(rng) -> TestScene:
    """Two objects of about the same area, prompted as a big one and a small one."""
    s1, s2 = (str(x) for x in rng.choice(SHAPES, 2))
    c1, c2 = _two_colours(rng)
    area = float(rng.uniform(0.03, 0.05))
    ratio = float(rng.uniform(0.87, 1.15))
    a = Shape(s1, c1, 0.0, 0.0, math.sqrt(area * ratio / UNIT_AREA[s1]), _rand_angle(rng))
    a = Shape(s1, c1, *_free_spot(rng, [], a.size), a.size, a.angle)
    size2 = math.sqrt(area / UNIT_AREA[s2])
    b = Shape(s2, c2, *_free_spot(rng, [a], size2), size2, _rand_angle(rng))
    prompt = f"a photo of {noun_phrase(s1, c1, 'big')} and {noun_phrase(s2, c2, 'small')}"
    return TestScene("sizes_alike", prompt, False, (a, b))


def touching_many(rng) -> TestScene:
    """Five or six objects of one shape, two of one colour touching (gap -0.5 .. 0.5 px at 128 px)."""
    shape, color = str(rng.choice(SHAPES)), str(rng.choice(list(COLORS)))
    n = int(rng.integers(5, 7))
    size = float(rng.uniform(0.07, 0.085))
    first = Shape(shape, color, *_free_spot(rng, [], size * 2.2), size, _rand_angle(rng))
    second = None
    for _ in range(200):  # the second at the distance where the outlines meet
        th = _rand_angle(rng)
        second = Shape(shape, color, 0.0, 0.0, size, _rand_angle(rng))
        lo, hi = 0.0, 3.0 * OUTER[shape] * size
        for _ in range(16):
            mid = (lo + hi) / 2
            cand = Shape(shape, color, first.cx + mid * math.cos(th), first.cy + mid * math.sin(th), size, second.angle)
            lo, hi = (mid, hi) if _gap_px(first, cand, 128) < 0 else (lo, mid)
        gap = float(rng.uniform(-0.5, 0.5)) / 128
        second = Shape(shape, color, first.cx + (hi + gap) * math.cos(th), first.cy + (hi + gap) * math.sin(th), size,
                       second.angle)
        if 0.1 < second.cx < 0.9 and 0.1 < second.cy < 0.9:
            break
    placed = [first, second]
    for _ in range(n - 2):
        placed.append(Shape(shape, str(rng.choice(list(COLORS))), *_free_spot(rng, placed, size), size, _rand_angle(rng)))
    return TestScene("touching_many", _counting_prompt(n, shape, None), True, tuple(placed))


KINDS_V2 = {"inside_crossing": inside_crossing, "between_off_line": between_off_line, "sizes_alike": sizes_alike,
            "touching_many": touching_many}


def scene_kinds_v2(n_per_kind: int, seed: int = 0) -> list[TestScene]:
    """n_per_kind scenes of each grammar-v2 stress kind plus n_per_kind in-distribution ones."""
    return in_distribution_v2(n_per_kind, seed) + _stress(KINDS_V2, n_per_kind, np.random.default_rng([seed, 2]))
