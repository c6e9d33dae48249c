"""Shapes world: the exact oracle and its verifier."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tts_diffusion.errors import TTSInputError
from tts_diffusion.shapes import BACKGROUND, CATEGORIES, Obj, Scene, render, sample_scenes
from tts_diffusion.shapes.detect import classify, detect
from tts_diffusion.shapes.mismatch import KINDS, mismatched_prompt
from tts_diffusion.shapes.oracle import check, check_batch
from tts_diffusion.shapes.perturb import perturb


def _scene(*objs: Obj) -> Scene:
    return Scene("", "", tuple(objs))


def _img(*objs: Obj, size: int = 64) -> torch.Tensor:
    return render([_scene(*objs)], size=size)[0]


@pytest.fixture(scope="module")
def perturbed():
    """300 perturbed renders (50 per category) and their scenes."""
    scenes = sample_scenes(300, seed=2024)
    images = perturb(render(scenes), torch.Generator().manual_seed(0))
    return scenes, images


def test_accepts_perturbed_renders(perturbed):
    scenes, images = perturbed
    results = check_batch(images, [s.prompt for s in scenes])
    for c in CATEGORIES:
        rows = [r for s, r in zip(scenes, results) if s.category == c]
        acc = np.mean([r.correct for r in rows])
        assert acc >= 0.99, (c, acc, [r.feedback for r in rows if not r.correct][:3])
    for r in results:
        assert (r.score == 1.0) == r.correct and all(ok for _, ok in r.checks) == r.correct


def test_rejects_mismatched_prompts(perturbed):
    scenes, images = perturbed
    rng = np.random.default_rng(7)
    prompts, kinds = [], []
    for s in scenes:  # every alteration kind of every category, once per image
        kind = KINDS[s.category][len(prompts) % len(KINDS[s.category])]
        p, k = mismatched_prompt(s, rng, kind)
        prompts.append(p)
        kinds.append((s.category, k))
    results = check_batch(images, prompts)
    for key in sorted(set(kinds)):
        rows = [r for kk, r in zip(kinds, results) if kk == key]
        rejected = np.mean([not r.correct for r in rows])
        assert rejected >= 0.99, (key, rejected)
        assert all(r.score < 1.0 for r in rows if not r.correct)


def test_counting_feedback_names_expected_and_found():
    img = _img(Obj("circle", "red", 0.25, 0.3, 0.12, 0.0), Obj("circle", "blue", 0.7, 0.7, 0.12, 0.0))
    res = check(img, "a photo of three circles")
    assert not res.correct and res.score == pytest.approx(0.5)
    assert "expected 3 circles, found 2" in res.feedback
    assert check(img, "a photo of two circles").correct
    res = check(img, "a photo of two red circles")
    assert not res.correct and "expected 2 red circles, found 1" in res.feedback
    empty = check(torch.tensor(BACKGROUND).view(3, 1, 1).expand(3, 64, 64), "a photo of four stars")
    assert empty.score == 0.0 and "found 0" in empty.feedback and "no objects" in empty.feedback


def test_colour_shape_and_relation_feedback():
    img = _img(Obj("square", "blue", 0.75, 0.5, 0.12, 0.3), Obj("star", "yellow", 0.25, 0.5, 0.12, 1.0))
    assert check(img, "a photo of a star left of a square").correct
    assert check(img, "a photo of a yellow star left of a blue square").correct
    res = check(img, "a photo of a star right of a square")
    assert not res.correct and "found it left of it" in res.feedback
    assert res.checks[-1] == ("the star is right of the square", False) and res.score == pytest.approx(2 / 3)
    res = check(img, "a photo of a yellow square and a blue star")  # swapped colours
    assert not res.correct and "expected a yellow square, found a blue square" in res.feedback
    res = check(img, "a photo of a triangle and a square")
    assert not res.correct and "expected a triangle, found none" in res.feedback
    assert not check(img, "a photo of a star above a square").correct  # horizontal offset dominates


def test_garbled_blob_breaks_exact_count_but_not_presence():
    clear = [Obj("circle", "green", 0.2, 0.2, 0.1, 0.0), Obj("circle", "green", 0.8, 0.2, 0.1, 0.0)]
    blob = [Obj("circle", "green", 0.42, 0.7, 0.12, 0.0), Obj("circle", "green", 0.58, 0.7, 0.12, 0.0)]  # merged
    img = _img(*clear, *blob)
    dets = detect(img)
    assert sorted(d.shape for d in dets) == ["circle", "circle", "unknown"]
    res = check(img, "a photo of two circles")
    assert not res.correct and "unclear blob" in res.feedback
    assert check(img, "a photo of a circle").correct
    assert not check(img, "a photo of two green circles").correct


def test_ignores_specks_and_works_at_any_resolution():
    objs = (Obj("triangle", "purple", 0.4, 0.72, 0.13, 0.4), Obj("star", "orange", 0.6, 0.28, 0.12, 2.0))
    for size in (64, 96, 128, 256):
        img = _img(*objs, size=size)
        # a few 1-2 pixel specks of a named colour
        g = torch.Generator().manual_seed(size)
        for _ in range(6):
            y, x = (int(v) for v in torch.randint(0, size - 2, (2,), generator=g))
            img[:, y : y + 2, x : x + 2] = torch.tensor([0.55, 0.12, 0.72]).view(3, 1, 1)
        res = check(img, "a photo of a purple triangle below an orange star")
        assert res.correct, (size, res.feedback)
        assert check(img, "a photo of one triangle").correct
        assert not check(img, "a photo of two triangles").correct


def test_classifier_prototypes_and_unknown():
    assert classify(np.zeros(5))[0] == "circle"
    assert classify(np.array([0, 0, 0.55, 0, 0]))[0] == "triangle"
    assert classify(np.array([0, 0, 0, 0.29, 0]))[0] == "square"
    assert classify(np.array([0, 0, 0, 0, 0.59]))[0] == "star"
    shape, guess, dist = classify(np.array([0.1, 0.3, 0.2, 0.1, 0.1]))  # lopsided, elongated
    assert shape == "unknown" and dist > 0.5 and guess in ("circle", "triangle")


def test_bad_prompt_raises_before_image_work():
    img = torch.zeros(3, 64, 64)
    with pytest.raises(TTSInputError, match="outside the shapes grammar"):
        check(img, "a photo of a cat")
    with pytest.raises(TTSInputError):
        check_batch(torch.zeros(2, 3, 64, 64), ["a photo of a circle"])
    with pytest.raises(TTSInputError):
        check(torch.zeros(64, 64), "a photo of a circle")


def test_registered_verifier_scores_and_verdict():
    import tts_diffusion.verifiers  # noqa: F401  (registers the built-in verifiers)
    from tts_diffusion.verifiers.base import Verdict, available_verifiers, load_verifier
    from tts_diffusion.verifiers.oracle import OracleVerifier

    assert "oracle" in available_verifiers()
    v = load_verifier("oracle")
    assert isinstance(v, OracleVerifier) and v.name == "oracle"
    scenes = sample_scenes(6, seed=11)
    images = render(scenes, size=96)
    prompts = [s.prompt for s in scenes]
    wrong = [mismatched_prompt(s, np.random.default_rng(i))[0] for i, s in enumerate(scenes)]
    scores = v(images, prompts)
    assert scores.shape == (6,) and scores.dtype == torch.float32 and torch.all(scores == 1.0)
    vd = v.verdict(torch.cat([images, images]), prompts + wrong)
    assert isinstance(vd, Verdict) and vd.scores.shape == (12,) and vd.correct.dtype == torch.bool
    assert vd.correct.tolist() == [True] * 6 + [False] * 6
    assert torch.all(vd.scores[6:] < 1.0) and len(vd.feedback) == 12
    assert all(f.startswith("correct") for f in vd.feedback[:6])
    assert v(images[:2], "a photo of a circle").shape == (2,)  # one prompt broadcast
    small = load_verifier("oracle", chunk_size=2)
    assert torch.equal(small(images, prompts), scores)  # chunking does not change scores
    with pytest.raises(TTSInputError):
        v(images, ["a photo of a unicorn"] * 6)
    with pytest.raises(TTSInputError):
        load_verifier("oracle", temperature=2.0)
