"""Grammar v2 of the shapes world: the new categories' scenes keep their margins, the renderer
draws them exactly at 128 px, and a model folder says which grammar it speaks."""
from __future__ import annotations

import json
import math

import pytest
import torch

from tts_diffusion.errors import TTSInputError
from tts_diffusion.shapes import layout
from tts_diffusion.shapes.grammar import (
    BACKGROUND,
    COLORS,
    EXTENT,
    GRAMMARS,
    INSCRIBED,
    SHAPES,
    UNIT_AREA,
    V2_CATEGORIES,
    model_grammar,
    sample_scenes,
)
from tts_diffusion.shapes.phrasing import parse_prompt
from tts_diffusion.shapes.renderer import render, render_objects
from tts_diffusion.shapes.world import Obj


def _scenes(category: str, n: int = 150):
    return sample_scenes(n, seed=17, categories=[category])


def _kind(o) -> tuple[str, str]:
    return o.shape, o.color


def test_counting_many_scenes_have_five_or_six_small_objects():
    seen = set()
    for s in _scenes("counting_many"):
        (req,) = parse_prompt(s.prompt).objects
        assert req.count in (5, 6) and len(s.objects) == req.count
        assert all(o.shape == req.shape for o in s.objects)
        seen.add(req.count)
        for i, a in enumerate(s.objects):
            assert a.area >= 0.01  # well above the oracle's speck size (0.007)
            for b in s.objects[i + 1:]:
                assert math.hypot(a.cx - b.cx, a.cy - b.cy) >= a.size * EXTENT[a.shape] + b.size * EXTENT[b.shape] + layout.MANY_GAP - 1e-12
    assert seen == {5, 6}


def test_size_attr_scenes_bind_sizes_with_a_threefold_area_margin():
    orders = set()
    for s in _scenes("size_attr"):
        spec = parse_prompt(s.prompt)
        assert [(o.shape, o.color) for o in spec.objects] == [_kind(o) for o in s.objects]
        big, small = (s.objects if spec.objects[0].size == "big" else s.objects[::-1])
        assert big.area >= 3.0 * small.area
        assert small.area >= layout.SMALL_AREA[0] * 0.97**9
        orders.add(spec.objects[0].size)
    assert orders == {"big", "small"}


def test_three_object_scenes_show_the_three_named_objects():
    for s in _scenes("three_object"):
        spec = parse_prompt(s.prompt)
        assert [(o.shape, o.color) for o in spec.objects] == [_kind(o) for o in s.objects]
        assert len({o.shape for o in s.objects}) == 3 and len({o.color for o in s.objects}) == 3


def test_between_scenes_put_the_middle_object_on_the_line():
    forms = set()
    for s in _scenes("between"):
        spec = parse_prompt(s.prompt)
        assert [(o.shape, o.color) for o in spec.objects] == [_kind(o) for o in s.objects]
        m, b, c = s.objects
        u = (b.cx - m.cx, b.cy - m.cy)
        v = (c.cx - m.cx, c.cy - m.cy)
        cos = (u[0] * v[0] + u[1] * v[1]) / (math.hypot(*u) * math.hypot(*v))
        assert math.degrees(math.acos(cos)) >= 180 - 2 * 8 - 1e-9
        forms.add("two" if spec.objects[1] == spec.objects[2] else "three")
    assert forms == {"two", "three"}


def test_inside_scenes_keep_the_inner_object_inside_the_outer_with_a_margin():
    pairs = set()
    for s in _scenes("inside"):
        spec = parse_prompt(s.prompt)
        outer, inner = s.objects  # drawing order: the container first
        assert [(o.shape, o.color) for o in spec.objects] == [_kind(inner), _kind(outer)]
        assert inner.color != outer.color
        reach = math.hypot(inner.cx - outer.cx, inner.cy - outer.cy) + inner.size * EXTENT[inner.shape]
        assert reach <= INSCRIBED[outer.shape] * outer.size - layout.CONTAIN_MARGIN + 1e-12
        assert inner.area <= 0.25 * outer.area + 1e-12 and inner.area >= layout.INNER_MIN_AREA - 1e-12
        pairs.add((inner.shape, outer.shape))
    assert len(pairs) >= 12  # every shape pair happens (16 in all)


def test_inscribed_radii_are_the_shapes_own():
    """INSCRIBED (what `inside` layouts rely on) is the distance from the centre to the
    outline: every point of the outline is at least that far, and some point that close."""
    from tts_diffusion.shapes.renderer import shape_vertices

    for shape in ("square", "triangle", "star"):
        v = shape_vertices(shape)
        e = torch.roll(v, -1, 0) - v
        t = (-(v * e).sum(-1) / (e * e).sum(-1)).clamp(0, 1)
        d = (v + t[:, None] * e).norm(dim=-1).min().item()
        assert d == pytest.approx(INSCRIBED[shape], abs=1e-9), shape


@pytest.mark.parametrize("shape", SHAPES)
def test_render_128_covers_each_shape_by_its_exact_area(shape):
    """Box-filter coverage at 128 px sums to the analytic area (UNIT_AREA) within 0.5%."""
    objs = [[Obj(shape, "blue", 0.5, 0.5, s, a)] for s in (0.07, 0.15, 0.3) for a in (0.0, 0.7)]
    img = render_objects(objs, size=128)
    bg, blue = torch.tensor(BACKGROUND).view(3, 1, 1), torch.tensor(COLORS["blue"]).view(3, 1, 1)
    for (o,), im in zip(objs, img):
        alpha = ((im - bg) * (blue - bg)).sum(0) / (blue - bg).square().sum()
        assert alpha.sum().item() == pytest.approx(UNIT_AREA[shape] * (o.size * 128) ** 2, rel=5e-3)


def test_render_128_draws_the_inner_object_over_the_outer():
    """In every inside scene the inner object's pixels are surrounded by the outer colour:
    no pixel of the inner colour touches the background."""
    scenes = _scenes("inside", 40)
    img = render(scenes, size=128)
    for s, im in zip(scenes, img):
        outer, inner = s.objects
        col = torch.tensor(COLORS[inner.color]).view(3, 1, 1)
        core = (im - col).norm(dim=0) < 0.05
        bg = (im - torch.tensor(BACKGROUND).view(3, 1, 1)).norm(dim=0) < 0.05
        near_core = torch.nn.functional.max_pool2d(core[None, None].float(), 5, 1, 2)[0, 0] > 0
        assert core.sum() > 50 and not (near_core & bg).any(), s.prompt


def test_render_is_the_same_on_any_batching():
    scenes = sample_scenes(22, seed=5, categories=V2_CATEGORIES)
    whole = render(scenes, size=128)
    assert torch.equal(torch.cat([render(scenes[i:i + 5], size=128) for i in range(0, 22, 5)]), whole)


def test_model_grammar_reads_the_model_folder(tmp_path):
    assert model_grammar(tmp_path) == "v1"  # no tts_defaults.json: a model from before v2
    (tmp_path / "tts_defaults.json").write_text(json.dumps({"height": 128}))
    assert model_grammar(tmp_path) == "v1"
    (tmp_path / "tts_defaults.json").write_text(json.dumps({"grammar": "v2"}))
    assert model_grammar(tmp_path) == "v2"
    (tmp_path / "tts_defaults.json").write_text(json.dumps({"grammar": "v9"}))
    with pytest.raises(TTSInputError, match="unknown shapes grammar 'v9'"):
        model_grammar(tmp_path)
    assert model_grammar() in GRAMMARS  # the shipped model's
