"""Shapes world: prompt grammar, scene sampling and the renderer."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tts_diffusion.errors import TTSInputError
from tts_diffusion.paths import eval_prompts_path
from tts_diffusion.shapes import BACKGROUND, CATEGORIES, COLORS, SHAPES, VOCABULARY, Obj, ObjectSpec, Scene, parse_prompt, render, sample_scenes
from tts_diffusion.shapes.grammar import EXTENT, GRAMMARS, RELATIONS, VOCABULARIES, enumerate_prompts
from tts_diffusion.shapes.renderer import _POLYGONS, folded_polygon_sdf, shape_vertices

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------- grammar
def test_palette_and_shapes_are_well_separated():
    assert len(COLORS) >= 6 and len(SHAPES) >= 4
    assert {"circle", "square", "triangle"} <= set(SHAPES)
    cols = np.array(list(COLORS.values()))
    assert cols.min() >= 0 and cols.max() <= 1
    dist = np.linalg.norm(cols[:, None] - cols[None], axis=-1) + np.eye(len(cols)) * 9
    assert dist.min() >= 0.35
    assert np.linalg.norm(cols - np.array(BACKGROUND), axis=-1).min() >= 0.8


def test_every_category_sampled_balanced_and_valid():
    scenes = sample_scenes(40 * len(CATEGORIES), seed=3)
    counts = {c: sum(s.category == c for s in scenes) for c in CATEGORIES}
    assert counts == {c: 40 for c in CATEGORIES}
    for s in scenes:
        spec = parse_prompt(s.prompt)
        assert spec.category == s.category and spec.prompt == s.prompt
        assert s.prompt in set(enumerate_prompts(s.category))
        # only the named objects, inside the frame, non-overlapping (but for an object
        # inside another); the checks of each v2 category are in test_shapes_grammar_v2.py
        assert len(s.objects) == sum(o.count for o in spec.objects)
        for o in s.objects:
            ext = o.size * EXTENT[o.shape]
            assert ext <= o.cx <= 1 - ext and ext <= o.cy <= 1 - ext
            assert 0.06 <= o.size <= 0.32
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1 :]:
                if s.category != "inside":
                    assert math.hypot(a.cx - b.cx, a.cy - b.cy) > a.size * EXTENT[a.shape] + b.size * EXTENT[b.shape]
        if spec.relation in RELATIONS:
            axis, sign = RELATIONS[spec.relation]
            a, b = s.objects
            d = ((b.cx - a.cx), (b.cy - a.cy))
            assert sign * d[axis] >= 0.2 and sign * d[axis] >= 2 * abs(d[1 - axis])
        for req in spec.objects:
            if req.color:
                assert any(o.shape == req.shape and o.color == req.color for o in s.objects)
        if s.category in GRAMMARS["v1"]:  # v1 scenes keep v1's sizes
            assert all(0.08 <= o.size <= 0.16 for o in s.objects)


def test_v1_categories_draw_the_scenes_they_drew_before_v2():
    """The v1 sampler's draws are unchanged: pinned objects of the first scenes of a seed
    (values from the sampler before grammar v2)."""
    s = sample_scenes(6, seed=0, categories=GRAMMARS["v1"])
    assert [x.prompt for x in s] == [
        "a photo of a star", "a photo of a square and a star", "a photo of three circles", "a photo of a red star",
        "a photo of a star right of a triangle", "a photo of a blue star and an orange circle"]
    o = s[0].objects[0]
    assert (o.shape, o.color) == ("star", "yellow")
    assert (round(o.cx, 6), round(o.cy, 6), round(o.size, 6), round(o.angle, 6)) == (0.203334, 0.187534, 0.116187, 5.109928)


def test_sampling_is_seeded():
    assert sample_scenes(30, seed=1) == sample_scenes(30, seed=1)
    assert sample_scenes(30, seed=1) != sample_scenes(30, seed=2)
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    assert sample_scenes(12, generator=g1) == sample_scenes(12, generator=g2)
    only = sample_scenes(10, seed=0, categories=["counting"])
    assert all(s.category == "counting" for s in only)
    with pytest.raises(TTSInputError):
        sample_scenes(3, seed=0, categories=["nope"])


def test_vocabulary_covers_every_prompt():
    """VOCABULARY (the model's word-level tokenizer) holds every word of every prompt, and
    each grammar version's vocabulary exactly the words of its prompts."""
    import re

    vocab = set(VOCABULARY)
    assert all(w == w.lower() for w in vocab)
    assert {"a", "an", "photo", "of", "and", "one", "four", "left", "right", "above", "below", "circles"} <= vocab
    assert vocab == set(VOCABULARIES["v2"]) > set(VOCABULARIES["v1"])
    for grammar, cats in GRAMMARS.items():
        used = set()
        for c in cats:
            for p in enumerate_prompts(c):
                words = set(re.sub(r"[^\w\s]", " ", p).split())  # the tokenizer drops punctuation
                assert words <= set(VOCABULARIES[grammar]), p
                used |= words
        assert used == set(VOCABULARIES[grammar]), grammar


def test_parse_prompt_round_trips_and_meaning():
    for c in CATEGORIES:
        for p in enumerate_prompts(c):
            assert parse_prompt(p).category == c
    spec = parse_prompt("A photo of three stars.")
    assert spec.category == "counting" and spec.objects[0].shape == "star" and spec.objects[0].count == 3
    spec = parse_prompt("a photo of a blue square left of a yellow circle")
    assert spec.category == "position" and spec.relation == "left of"
    assert [(o.shape, o.color) for o in spec.objects] == [("square", "blue"), ("circle", "yellow")]
    spec = parse_prompt("a photo of an orange star and a red circle")
    assert spec.category == "color_attr" and spec.objects[0].color == "orange"
    assert parse_prompt("a photo of one circle").objects[0].count == 1
    # grammar v2
    spec = parse_prompt("a photo of six red stars")
    assert spec.category == "counting_many" and spec.objects == (ObjectSpec("star", "red", 6),)
    spec = parse_prompt("a photo of a small blue square and a big red circle")
    assert spec.category == "size_attr" and spec.objects == (ObjectSpec("square", "blue", 1, "small"), ObjectSpec("circle", "red", 1, "big"))
    spec = parse_prompt("a photo of a red circle, a blue square and a green star")
    assert spec.category == "three_object" and [o.color for o in spec.objects] == ["red", "blue", "green"]
    spec = parse_prompt("a photo of a red circle between two blue squares")
    assert spec.category == "between" and spec.relation == "between"
    assert spec.objects == (ObjectSpec("circle", "red"), ObjectSpec("square", "blue"), ObjectSpec("square", "blue"))
    spec = parse_prompt("a photo of a yellow star inside a blue circle")
    assert spec.category == "inside" and spec.objects == (ObjectSpec("star", "yellow"), ObjectSpec("circle", "blue"))


@pytest.mark.parametrize(
    "bad",
    [
        "a photo of a dog",
        "a photo of a circle circle",
        "a photo of",
        "a photo of a circle near a square",
        "a photo of a circle and a circle",
        "a photo of a circle left of a circle",
        "a photo of seven stars",
        "a photo of a big circle",
        "a photo of a big circle and a big square",
        "a photo of a big circle left of a small square",
        "a photo of a red circle inside a red square",
        "a photo of a circle between a circle and a square",
        "a photo of a circle, a circle and a square",
        "a photo of a circle, a square",
        "a photo of a circle between two squares and a star",
        "",
    ],
)
def test_bad_prompts_raise_one_clear_line(bad):
    with pytest.raises(TTSInputError) as err:
        parse_prompt(bad)
    msg = str(err.value)
    assert "outside the shapes grammar" in msg and "\n" not in msg and "closest prompt that works is 'a photo of" in msg


def _make_eval_split():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_eval_split", REPO / "scripts" / "make_eval_split.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check_balanced(items: list[dict], categories, per_category: int) -> None:
    assert sorted({p["category"] for p in items}) == sorted(categories)
    for c in categories:
        rows = [p for p in items if p["category"] == c]
        assert len(rows) == per_category
        assert all(parse_prompt(p["prompt"]).category == c for p in rows)
        # small categories cover every prompt evenly
        counts = {}
        for p in rows:
            counts[p["prompt"]] = counts.get(p["prompt"], 0) + 1
        assert len(counts) == min(per_category, len(enumerate_prompts(c))) and max(counts.values()) - min(counts.values()) <= 1


def test_eval_split_is_balanced_and_reproducible():
    mod = _make_eval_split()
    on_disk = json.loads(eval_prompts_path().read_text())
    assert json.loads(mod.to_json(mod.make_split(seed=0))) == on_disk  # regenerates exactly
    assert on_disk["version"] == 1 and len(on_disk["prompts"]) >= 600
    _check_balanced(on_disk["prompts"], GRAMMARS["v1"], 100)


def test_v2_eval_and_hard_splits_are_balanced_reproducible_and_load_by_name():
    from tts_diffusion.bench.prompts import load_prompt_set
    from tts_diffusion.shapes.grammar import V2_CATEGORIES

    mod = _make_eval_split()
    folder = eval_prompts_path().parent
    v2 = json.loads((folder / "shapes_eval_v2.json").read_text())
    hard = json.loads((folder / "shapes_hard.json").read_text())
    assert json.loads(mod.to_json(mod.make_split_v2(seed=0))) == v2
    assert json.loads(mod.to_json(mod.make_hard_split(seed=1, eval_seed=0))) == hard
    assert len(v2["prompts"]) >= 600 and len(hard["prompts"]) >= 216
    _check_balanced(v2["prompts"], CATEGORIES, 60)
    _check_balanced(hard["prompts"], V2_CATEGORIES, 48)
    # the hard split measures other prompts than the eval split wherever the category has enough
    shared = {p["prompt"] for p in v2["prompts"]} & {p["prompt"] for p in hard["prompts"]}
    assert {parse_prompt(p).category for p in shared} <= {"counting_many"}
    for name, data in (("shapes_eval_v2", v2), ("shapes_hard", hard)):
        assert load_prompt_set(name) == [{"prompt": p["prompt"], "category": p["category"]} for p in data["prompts"]]


# ----------------------------------------------------------------- renderer
def test_render_shape_range_and_determinism():
    scenes = sample_scenes(24, seed=0)
    a = render(scenes)
    assert a.shape == (24, 3, 64, 64) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, render(scenes))
    b = render(sample_scenes(24, seed=1))
    assert not torch.equal(a, b)
    big = render(scenes[:2], size=128, dtype=torch.float64)
    assert big.shape == (2, 3, 128, 128) and big.dtype == torch.float64
    assert render([]).shape == (0, 3, 64, 64)


@pytest.mark.parametrize("grammar, size", [("v1", 64), ("v2", 128)])
def test_render_colours_where_objects_are(grammar, size):
    scenes = sample_scenes(66, seed=4, categories=GRAMMARS[grammar])
    img = render(scenes, size=size)
    bg = torch.tensor(BACKGROUND)
    for s, im in zip(scenes, img):
        # the corner pixel is background unless an object's enclosing circle reaches it
        if all(math.hypot(o.cx, o.cy) > o.size * EXTENT[o.shape] + 0.03 for o in s.objects):
            assert torch.allclose(im[:, 0, 0], bg, atol=1e-6)
        for k, o in enumerate(s.objects):
            if any(math.hypot(o.cx - p.cx, o.cy - p.cy) < p.size * EXTENT[p.shape] + 0.02 for p in s.objects[k + 1:]):
                continue  # a later object (drawn over it) may cover its centre
            px = im[:, int(o.cy * size), int(o.cx * size)]  # the centre pixel is fully inside
            assert torch.allclose(px, torch.tensor(COLORS[o.color]), atol=1e-5), (s.prompt, o)
        # every colour in the image is background, a named object colour, or a blend of one
        named = {o.color for o in s.objects}
        for c in set(COLORS) - named:
            close = (im - torch.tensor(COLORS[c]).view(3, 1, 1)).norm(dim=0) < 0.05
            assert not close.any()


def test_render_is_antialiased():
    img = render([Scene("", "", (Obj("circle", "blue", 0.5, 0.5, 0.2, 0.0),))])[0]
    bg, blue = torch.tensor(BACKGROUND).view(3, 1, 1), torch.tensor(COLORS["blue"]).view(3, 1, 1)
    # alpha of each pixel along the blue-over-background line
    alpha = ((img - bg) * (blue - bg)).sum(0) / (blue - bg).square().sum()
    edge = (alpha > 0.05) & (alpha < 0.95)
    assert edge.sum() >= 20  # a ring of partially covered pixels
    # area from coverage matches pi r^2 closely (box-filter coverage is unbiased)
    assert abs(alpha.sum().item() - math.pi * (0.2 * 64) ** 2) < 3.0


def test_polygon_sdf_matches_vertices():
    """The folded-symmetry SDF agrees with a point-in-polygon test on the vertex list."""
    from matplotlib.path import Path as MplPath

    pts = torch.rand(2000, 2, dtype=torch.float64) * 4 - 2
    for shape in ("square", "triangle", "star"):
        verts = shape_vertices(shape).numpy()
        inside = torch.from_numpy(MplPath(verts).contains_points(pts.numpy()))
        n, r_out, r_in, phase = (torch.tensor([v], dtype=torch.float64) for v in _POLYGONS[shape])
        sdf = folded_polygon_sdf(pts.unsqueeze(0), n, r_out, r_in, phase)[0]
        assert torch.equal(sdf < 0, inside), shape
        # distance is exact: |sdf| equals the distance to the nearest edge segment
        v = torch.from_numpy(verts)
        e = torch.roll(v, -1, 0) - v
        w = pts[:, None] - v[None]
        t = ((w * e).sum(-1) / (e * e).sum(-1)).clamp(0, 1)
        d = (w - t[..., None] * e).norm(dim=-1).amin(-1)
        assert torch.allclose(sdf.abs(), d, atol=1e-9), shape


def test_render_is_fast_enough():
    import time

    scenes = sample_scenes(256, seed=0)
    render(scenes[:8])
    t = time.perf_counter()
    render(scenes)
    # ~0.07 s on 2 idle CPU cores; the bound only catches per-pixel Python loops
    assert time.perf_counter() - t < 10.0
