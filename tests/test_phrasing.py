"""Natural phrasings of shapes prompts map to the canonical prompt the model was trained on
(tts_diffusion.shapes.phrasing); prompts outside the world are refused with the closest one."""
from __future__ import annotations

import pytest

from tts_diffusion.errors import TTSInputError
from tts_diffusion.shapes.grammar import CATEGORIES, enumerate_prompts, parse_canonical, parse_prompt
from tts_diffusion.shapes.phrasing import canonical_prompt, closest_prompt


@pytest.mark.parametrize(
    "given, canonical",
    [
        ("two red circles", "a photo of two red circles"),
        ("2 red circles", "a photo of two red circles"),
        ("Two Red Circles!", "a photo of two red circles"),
        ("  two   red circles .  ", "a photo of two red circles"),
        ("\uff54\uff57\uff4f red\u00a0circles", "a photo of two red circles"),  # full-width letters, NBSP
        ("a photo of two red circles", "a photo of two red circles"),
        ("An image of two red circles.", "a photo of two red circles"),
        ("a picture of 2 red circles", "a photo of two red circles"),
        ("picture of two red circles", "a photo of two red circles"),
        ("three circle", "a photo of three circles"),  # plural agreement
        ("one circles", "a photo of one circle"),
        ("1 star", "a photo of one star"),
        ("4 stars", "a photo of four stars"),
        ("circle", "a photo of a circle"),
        ("the circle", "a photo of a circle"),
        ("orange star", "a photo of an orange star"),
        ("a orange star", "a photo of an orange star"),
        ("an circle", "a photo of a circle"),
        ("a circle and a square", "a photo of a circle and a square"),
        ("Red square and green triangle", "a photo of a red square and a green triangle"),
        ("a circle, and a square", "a photo of a circle and a square"),
        ("a circle left of a square", "a photo of a circle left of a square"),
        ("a circle to the left of a square", "a photo of a circle left of a square"),
        ("a circle on the left of the square", "a photo of a circle left of a square"),
        ("a star to the right of a triangle", "a photo of a star right of a triangle"),
        ("a star over a triangle", "a photo of a star above a triangle"),
        ("a star on top of a triangle", "a photo of a star above a triangle"),
        ("a star under a triangle", "a photo of a star below a triangle"),
        ("a star beneath a triangle", "a photo of a star below a triangle"),
        ("a star underneath a triangle", "a photo of a star below a triangle"),
        ("A PHOTO OF A CIRCLE ABOVE A TRIANGLE", "a photo of a circle above a triangle"),
    ],
)
def test_natural_phrasings_map_to_the_canonical_prompt(given, canonical):
    assert canonical_prompt(given) == canonical
    spec = parse_prompt(given)
    assert spec.prompt == canonical and spec == parse_canonical(canonical)


def test_every_canonical_prompt_is_a_fixed_point():
    for category in CATEGORIES:
        for p in enumerate_prompts(category):
            assert canonical_prompt(p) == p
            assert parse_prompt(p).category == category


@pytest.mark.parametrize(
    "bad, closest",
    [
        ("a dog", None),
        ("five stars", "a photo of four stars"),
        ("7 circles", "a photo of four circles"),
        ("red circles", None),  # a plural needs a count
        ("two circles and a square", None),
        ("a circle near a square", "a photo of a circle and a square"),
        ("a big red circle", "a photo of a red circle"),
        ("a circle and a circle", None),
        ("a circle left of a circle", None),
        ("a photo of a circle circle", "a photo of a circle"),
        ("", None),
        ("!!!", None),
        ("a photo of", None),
    ],
)
def test_prompts_outside_the_world_are_refused_with_the_closest_working_prompt(bad, closest):
    with pytest.raises(TTSInputError) as err:
        canonical_prompt(bad)
    msg = str(err.value)
    assert "\n" not in msg and "outside the shapes grammar" in msg
    suggestion = closest_prompt(bad)
    assert f"the closest prompt that works is {suggestion!r}" in msg
    assert canonical_prompt(suggestion) == suggestion  # the suggestion itself works
    if closest is not None:
        assert suggestion == closest


def test_closest_prompt_is_the_nearest_by_word_edits():
    # one word off a canonical prompt: that prompt is the closest
    assert closest_prompt("a photo of a red cirle") == "a photo of a red circle"
    assert closest_prompt("a square beside a star") in ("a photo of a square and a star",)
    assert closest_prompt("a circle left of a big square") == "a photo of a circle left of a square"


def test_non_string_prompt_is_refused():
    with pytest.raises(TTSInputError, match="must be a string"):
        canonical_prompt(3)  # type: ignore[arg-type]
