"""Natural phrasings of shapes prompts map to the canonical prompt the model was trained on
(tts_diffusion.shapes.phrasing); prompts outside the world are refused with the closest one."""
from __future__ import annotations

import pytest

from tts_diffusion.errors import TTSInputError
from tts_diffusion.shapes.grammar import CATEGORIES, GRAMMARS, V2_CATEGORIES, enumerate_prompts, parse_canonical
from tts_diffusion.shapes.phrasing import canonical_prompt, closest_prompt, parse_prompt


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
    for category in GRAMMARS["v1"]:
        for p in enumerate_prompts(category):
            assert canonical_prompt(p, "v1") == p


def test_v1_refuses_every_v2_category_in_one_line():
    for category in V2_CATEGORIES:
        for p in enumerate_prompts(category)[::97]:
            with pytest.raises(TTSInputError, match=f"{category} prompts need grammar v2, and this model speaks v1"):
                canonical_prompt(p, "v1")
    with pytest.raises(TTSInputError, match="unknown shapes grammar 'v3'"):
        canonical_prompt("a circle", "v3")


@pytest.mark.parametrize(
    "given, canonical",
    [
        ("five stars", "a photo of five stars"),
        ("6 Red Squares.", "a photo of six red squares"),
        ("a big red circle and a small blue square", "a photo of a big red circle and a small blue square"),
        ("a large red circle and a tiny blue square", "a photo of a big red circle and a small blue square"),
        ("a red big circle and a blue little square", "a photo of a big red circle and a small blue square"),
        ("a big red circle and a blue square", "a photo of a big red circle and a small blue square"),
        ("a red circle and a small blue square", "a photo of a big red circle and a small blue square"),
        ("a small circle and a big circle", "a photo of a small circle and a big circle"),
        ("a red circle, a blue square and a green star", "a photo of a red circle, a blue square and a green star"),
        ("red circle, blue square, and green star", "a photo of a red circle, a blue square and a green star"),
        ("a red circle and a blue square and a green star", "a photo of a red circle, a blue square and a green star"),
        ("a red circle between two blue squares", "a photo of a red circle between two blue squares"),
        ("a red circle in between 2 blue square", "a photo of a red circle between two blue squares"),
        ("a red circle between a blue square and a blue square", "a photo of a red circle between two blue squares"),
        ("the star between the circle and the square", "a photo of a star between a circle and a square"),
        ("a small yellow star inside a big blue circle", "a photo of a yellow star inside a blue circle"),
        ("a yellow star in a blue circle", "a photo of a yellow star inside a blue circle"),
        ("a yellow star within a blue circle", "a photo of a yellow star inside a blue circle"),
        ("a yellow star inside of a big blue circle", "a photo of a yellow star inside a blue circle"),
        ("a blue circle containing a small yellow star", "a photo of a yellow star inside a blue circle"),
        ("a big blue circle that contains a yellow star", "a photo of a yellow star inside a blue circle"),
        ("an orange star inside an orange square", None),  # same colour: invisible
    ],
)
def test_v2_phrasings_map_to_the_canonical_prompt(given, canonical):
    if canonical is None:
        with pytest.raises(TTSInputError, match="different colours"):
            canonical_prompt(given)
        return
    assert canonical_prompt(given) == canonical
    assert parse_prompt(given) == parse_canonical(canonical)


V1_REFUSED = [
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
    # grammar v2 prompts are outside v1
    ("a big red circle and a small blue square", "a photo of a red circle and a blue square"),
    ("a red circle, a blue square and a green star", None),
    ("a yellow star inside a blue circle", None),
    ("a red circle between two blue squares", None),
]
V2_REFUSED = [
    ("a dog", None),
    ("7 circles", "a photo of six circles"),
    ("ten stars", "a photo of six stars"),
    ("red circles", None),
    ("two circles and a square", None),
    ("a big red circle", "a photo of a red circle"),
    ("a big circle and a big square", None),
    ("a big circle above a small square", None),
    ("a big star inside a small circle", "a photo of a big star and a small circle"),
    ("a red star inside a red circle", None),
    ("a circle between a circle and a square", None),
    ("a circle, a circle and a square", None),
    ("a red circle, a blue square and a green star please", "a photo of a red circle, a blue square and a green star"),
    ("a red circle between a blue square", None),
    ("a circle near a square", "a photo of a circle and a square"),
    ("", None),
]


@pytest.mark.parametrize("grammar, bad, closest", [("v1", *c) for c in V1_REFUSED] + [("v2", *c) for c in V2_REFUSED])
def test_prompts_outside_the_world_are_refused_with_the_closest_working_prompt(grammar, bad, closest):
    with pytest.raises(TTSInputError) as err:
        canonical_prompt(bad, grammar)
    msg = str(err.value)
    assert "\n" not in msg and "outside the shapes grammar" in msg
    suggestion = closest_prompt(bad, grammar)
    assert f"the closest prompt that works is {suggestion!r}" in msg
    assert canonical_prompt(suggestion, grammar) == suggestion  # the suggestion itself works
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
