"""The reflection loop (searchers/reflect.py) and its parts: claim parser, critics, refiners."""
import json
import math

import pytest
import torch

from tts_diffusion.testing.helpers import BrightnessVerifier, SelectRecorder
from tts_diffusion.testing.tiny_pipelines import pipeline_call_kwargs
from tts_diffusion import Budget, MissingWeightsError, TTSInputError
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.reflection import Critique, DecomposedCritic, FeedbackCritic, RuleRefiner, parse_claims
from tts_diffusion.reflection.critique import ClaimResult
from tts_diffusion.searchers import load_searcher, searcher_params
from tts_diffusion.searchers.reflect import plan, sdedit_start
from tts_diffusion.shapes import grammar
from tts_diffusion.shapes.grammar import Obj
from tts_diffusion.shapes.phrasing import parse_prompt
from tts_diffusion.shapes.renderer import render_objects
from tts_diffusion.verifiers.base import Verdict, Verifier
from tts_diffusion.verifiers.oracle import OracleVerifier

PROMPT = "a red circle"


# ------------------------------------------------------------------ claims
def test_plain_english_prompt_splits_into_atomic_claims():
    parsed = parse_claims("A red car to the left of two dogs.")
    assert [(o.noun, o.count, o.colors) for o in parsed.objects] == [("car", 1, ("red",)), ("dog", 2, ())]
    assert parsed.relations == ((0, "left of", 1),)
    got = [(c.kind, c.text, c.nouns) for c in parsed.claims]
    assert got == [("object", "a car", ("car",)), ("color", "the car is red", ("car",)),
                   ("object", "a dog", ("dog",)), ("count", "exactly two dogs", ("dog",)),
                   ("relation", "the car is left of the dog", ("car", "dog"))]
    by = {c.text: c for c in parsed.claims}
    # contrasts: the prompt with exactly that claim made false
    assert "a photo of a red car left of three dogs" in by["exactly two dogs"].contrasts
    assert "a photo of a red car left of two dogs" not in by["exactly two dogs"].contrasts
    assert "a photo of a blue car left of two dogs" in by["the car is red"].contrasts
    assert set(by["the car is left of the dog"].contrasts) == {
        "a photo of two dogs left of a red car", "a photo of a red car right of two dogs",
        "a photo of a red car above two dogs", "a photo of a red car below two dogs"}
    assert by["a car"].contrasts == ("a photo of two dogs",)  # the car left out
    assert parse_claims("a cat").claims[0].contrasts == ("a photo",)
    with pytest.raises(TTSInputError, match="objects"):
        parse_claims("a red car to the left of")


def test_shapes_prompts_give_claims_inside_the_grammar():
    """Every probe and contrast of every eval prompt is again a prompt of the grammar, and no
    contrast means the same as its prompt."""
    from tts_diffusion.paths import assets_dir

    prompts = [p["prompt"] for p in json.loads((assets_dir() / "prompts" / "shapes_eval.json").read_text())["prompts"]]
    kinds = set()
    for p in prompts:
        spec = parse_prompt(p)
        for c in parse_claims(p).claims:
            kinds.add(c.kind)
            assert parse_prompt(c.probe) == spec
            for t in c.contrasts:
                assert parse_prompt(t) != spec
    assert kinds == {"object", "color", "count", "relation"}


def test_shapes_v2_prompts_give_claims_inside_the_grammar():
    """Prompts of the categories grammar v2 adds: every probe and contrast is a prompt of the
    grammar, no contrast means what the prompt means, and each new relation (size, between,
    inside) is a claim of its own."""
    from tts_diffusion.paths import assets_dir
    from tts_diffusion.reflection.refiners import _meaning

    items = json.loads((assets_dir() / "prompts" / "shapes_hard.json").read_text())["prompts"][::3]
    relations = set()
    for item in items:
        p = item["prompt"]
        spec = parse_prompt(p)
        claims = parse_claims(p).claims
        assert {c.kind for c in claims} >= {"object"}
        for c in claims:
            assert parse_prompt(c.probe) == spec and c.contrasts
            assert all(_meaning(parse_prompt(t)) != _meaning(spec) for t in c.contrasts)
            if c.kind == "relation":
                relations.add(spec.category)
    assert relations == {"size_attr", "between", "inside"}
    [size] = [c for c in parse_claims("a big red circle and a small blue square").claims if c.kind == "relation"]
    assert size.text == "the red circle is bigger than the blue square"
    assert size.contrasts == ("a photo of a small red circle and a big blue square",)
    [count] = [c for c in parse_claims("six stars").claims if c.kind == "count"]
    assert "a photo of five stars" in count.contrasts and "a photo of six stars" not in count.contrasts


def test_feedback_critic_reads_v2_oracle_checks_as_claims():
    from tts_diffusion.shapes.grammar import Scene
    from tts_diffusion.shapes.renderer import render

    crit = FeedbackCritic(OracleVerifier())
    inner, outer = Obj("star", "yellow", 0.5, 0.5, 0.08, 0.3), Obj("circle", "blue", 0.5, 0.5, 0.28)
    apart = (Obj("star", "yellow", 0.2, 0.2, 0.08, 0.3), Obj("circle", "blue", 0.6, 0.6, 0.28))
    img = render([Scene("", "", (outer, inner)), Scene("", "", apart)], size=128)
    good, bad = crit(img, "a photo of a yellow star inside a blue circle")
    assert not good.failed and good.text.startswith("correct")
    assert [(c.kind, c.text) for c in bad.failed] == [("relation", "the yellow star is inside the blue circle")]
    assert "expected the yellow star inside the blue circle, found it outside it" in bad.text


# ------------------------------------------------------------------ critics
class CaptionTable(Verifier):
    """A caption scorer with known answers: score(image, text) = table[text] (default 0)."""

    name = "table"

    def __init__(self, table):
        super().__init__()
        self.table = table

    def score(self, images, prompts):
        return torch.tensor([self.table.get(p, 0.0) for p in prompts])


def test_decomposed_critic_fails_exactly_the_claims_a_contrast_beats():
    p = "a photo of a red square and a green triangle"
    table = {p: 0.5, "a photo of a blue square and a green triangle": 0.7,  # colour of the square beaten
             "a photo of a red square and a green star": 0.5}  # tie: the triangle claim still holds
    budget = Budget(0)
    critic = DecomposedCritic(CaptionTable(table), budget=budget)
    (crit,) = critic(torch.zeros(1, 3, 8, 8), p)
    assert [c.text for c in crit.failed] == ["the square is red"]
    res = {r.claim.text: r for r in crit.claims}
    assert res["the square is red"].score == pytest.approx(-0.2)
    assert res["a triangle"].passed and res["a triangle"].score == pytest.approx(0.0)
    assert "blue square" in crit.text
    texts = {t for c in parse_claims(p).claims for t in (c.probe, *c.contrasts)}
    assert budget.verifier_calls == len(texts)  # one scored caption per image and distinct text
    # a margin threshold asks for a clear win: the tie fails now, margins of 0.5 still pass
    (strict,) = DecomposedCritic(CaptionTable(table), threshold=0.1)(torch.zeros(1, 3, 8, 8), p)
    assert [c.text for c in strict.failed] == ["the square is red", "a triangle"]


@pytest.fixture(scope="module")
def domain_clip():
    from tts_diffusion.paths import domain_clip_path
    from tts_diffusion.verifiers import load_verifier

    return load_verifier("clip", model=str(domain_clip_path()))


def test_decomposed_critic_with_the_domain_clip_on_rendered_scenes(domain_clip):
    """True scenes pass every claim; a wrong count / colour / relation fails that claim. (The
    relation is turned by 90 degrees: the domain CLIP tells flipped relations apart only at
    chance, 0.51 in assets/shapes-clip/clip_report.json, perpendicular ones at 0.95.)"""
    cases = [
        ("a photo of two circles", [Obj("circle", "blue", .3, .5, .12), Obj("circle", "red", .7, .5, .12)], None),
        ("a photo of two circles", [Obj("circle", "blue", .2, .5, .1), Obj("circle", "red", .5, .5, .1),
                                    Obj("circle", "green", .8, .5, .1)], "exactly two circles"),
        ("a photo of a red square", [Obj("square", "red", .5, .5, .14)], None),
        ("a photo of a red square", [Obj("square", "blue", .5, .5, .14)], "the square is red"),
        ("a photo of a circle left of a star", [Obj("circle", "red", .25, .5, .13), Obj("star", "green", .75, .5, .13)], None),
        ("a photo of a circle left of a star", [Obj("circle", "red", .5, .2, .13), Obj("star", "green", .5, .75, .13)],
         "the circle is left of the star"),
    ]
    images = render_objects([objs for _, objs, _ in cases])
    critic = DecomposedCritic(domain_clip)
    for (prompt, _, wrong), image in zip(cases, images):
        (crit,) = critic(image[None], prompt)
        assert [c.text for c in crit.failed] == ([wrong] if wrong else []), (prompt, crit.text)


def test_feedback_critic_gives_the_oracle_checks():
    images = render_objects([[Obj("circle", "red", .3, .5, .12), Obj("circle", "red", .7, .5, .12)],
                             [Obj("circle", "red", .2, .5, .1), Obj("circle", "red", .5, .5, .1), Obj("circle", "red", .8, .5, .1)]])
    crits = FeedbackCritic(OracleVerifier())(images, "a photo of three red circles")
    assert crits[0].text.startswith("expected 3 red circles, found 2")
    assert [(r.claim.kind, r.passed) for r in crits[0].claims] == [("object", True), ("count", False)]
    assert crits[0].claims[1].claim.nouns == ("circle",)
    assert crits[1].failed == [] and crits[1].text.startswith("correct")


def test_critics_refuse_what_they_cannot_judge():
    with pytest.raises(TTSInputError, match="gives none"):
        FeedbackCritic(BrightnessVerifier()).check_prompt("a photo of a circle")
    with pytest.raises(TTSInputError, match="outside the shapes grammar"):
        FeedbackCritic(OracleVerifier()).check_prompt("a red car to the left of two dogs")
    with pytest.raises(TTSInputError, match="no claim"):  # no caption of a plain-English prompt is in the grammar
        DecomposedCritic(OracleVerifier()).check_prompt("a red car to the left of two dogs")


# ------------------------------------------------------------------ refiners
def _failed(prompt, kind, noun=None):
    claims = [c for c in parse_claims(prompt).claims if c.kind == kind and (noun is None or noun in c.nouns)]
    return Critique("x", [ClaimResult(claims[0], False, -1.0)])


def test_rule_refiner_stays_in_the_shapes_grammar_with_the_same_meaning():
    ref = RuleRefiner()
    p = "a photo of a square and a red triangle"
    assert ref(p, _failed(p, "color", "triangle")) == "a photo of a red triangle and a square"
    assert ref(p, _failed(p, "object", "square")) == p  # already first
    q = "a photo of a circle above a triangle"
    assert ref(q, _failed(q, "relation")) == "a photo of a triangle below a circle"
    assert ref(q, _failed(q, "object", "triangle")) == "a photo of a triangle below a circle"
    c = "a photo of three stars"
    assert ref(c, _failed(c, "count")) == c
    t = "a photo of a red circle, a blue square and a green star"
    assert ref(t, _failed(t, "color", "star")) == "a photo of a green star, a red circle and a blue square"
    b = "a photo of a red circle between a blue square and a green star"
    assert ref(b, _failed(b, "object", "star")) == "a photo of a red circle between a green star and a blue square"
    i = "a photo of a yellow star inside a blue circle"
    assert ref(i, _failed(i, "relation")) == i
    assert ref(p, Critique("fine", [])) == p
    from tts_diffusion.paths import assets_dir

    for name in ("shapes_eval.json", "shapes_hard.json"):
        for item in json.loads((assets_dir() / "prompts" / name).read_text())["prompts"][::7]:
            pr = item["prompt"]
            for claim in parse_claims(pr).claims:
                new = ref(pr, Critique("x", [ClaimResult(claim, False, 0.0)]))
                a, b = parse_prompt(pr), parse_prompt(new)
                assert set(a.objects) == set(b.objects) and a.category == b.category


def test_rule_refiner_restates_failed_claims_of_plain_prompts_once():
    ref = RuleRefiner()
    p = "a red car to the left of two dogs"
    crit = Critique("x", [ClaimResult(c, c.kind in ("count", "color"), 0.0) for c in parse_claims(p).claims])
    once = ref(p, crit)
    assert once == p + "; make sure: there is a car; there is a dog; the car is left of the dog"
    assert ref(once, crit) == once  # a second round replaces the restatement


# ------------------------------------------------------------------ the searcher
class FeedbackBrightness(BrightnessVerifier):
    name = "feedback-brightness"

    def verdict(self, images, prompts):
        s = self(images, prompts)
        return Verdict(scores=s, feedback=[f"brightness {float(v):.3f}, wanted brighter" for v in s])


def _proc(pipe, steps=4):
    kw = pipeline_call_kwargs("flux")
    return DenoisingProcess.from_pipeline(pipe, steps, 4.0, height=kw["height"], width=kw["width"],
                                          max_sequence_length=kw.get("max_sequence_length"))


def test_plan_and_sdedit_cost():
    assert sdedit_start(20, 0.6) == 8 and sdedit_start(10, 0.25) == 7 and sdedit_start(10, 1.0) == 0
    assert sdedit_start(10, 0.01) == 9
    assert plan(Budget(4 * 20), 20, 20, None, None, None) == (2, 2, 1)
    assert plan(Budget(16 * 20), 20, 12, None, None, None) == (8, 2, 6)  # 160 + 6 * 24 = 304 <= 320
    assert plan(Budget(35), 20, 12, None, None, None) == (1, 1, 1)
    with pytest.raises(TTSInputError, match="at least 32"):
        plan(Budget(31), 20, 12, None, None, None)
    with pytest.raises(TTSInputError, match="at least 96"):
        plan(Budget(80), 20, 12, None, 3, None)
    with pytest.raises(TTSInputError, match="at least 112"):
        plan(Budget(100), 20, 12, 2, 2, 3)
    with pytest.raises(TTSInputError, match="num_particles=3"):
        plan(Budget(1000), 20, 12, 2, 3, None)


@pytest.mark.parametrize("refine", ["prompt", "image", "both"])
def test_reflect_spends_its_plan_keeps_chains_and_is_deterministic(tiny_pipe, refine):
    proc = _proc(tiny_pipe("flux"))
    rec = SelectRecorder()
    proc.call.register("rec", rec)
    search = load_searcher("reflect")
    kw = dict(refine=refine, strength=0.5, num_samples=3, num_particles=2, critic="feedback")
    res = search(proc, FeedbackBrightness(), PROMPT, Budget(100), torch.Generator().manual_seed(5), **kw)
    cost = 4 if refine == "prompt" else 2
    rounds = (100 - 12) // (2 * cost)
    assert res.settings["num_rounds"] == rounds and res.nfe == 12 + rounds * 2 * cost
    assert len(res.candidates) == 3 + 2 * rounds and res.verifier_calls == len(res.candidates) + 2 * rounds
    # the top two initial samples became the chains, through proc.select
    top = sorted(range(3), key=lambda j: -res.candidates[j].score)[:2]
    assert rec.selected[0] == top
    assert [ch[0].candidate for ch in res.chains] == top
    for chain in res.chains:
        assert [s.round for s in chain] == list(range(rounds + 1))
        head = chain[0].score
        for s in chain[1:]:
            assert s.score == res.candidates[s.candidate].score and s.image is not None
            assert s.accepted == (s.score >= head) and s.critique.startswith("brightness")
            head = max(head, s.score) if s.accepted else head
    assert res.best_score == max(res.scores)
    again = search(proc, FeedbackBrightness(), PROMPT, Budget(100), torch.Generator().manual_seed(5), **kw)
    assert again.scores == res.scores
    other = search(proc, FeedbackBrightness(), PROMPT, Budget(100), torch.Generator().manual_seed(6), **kw)
    assert other.scores != res.scores


def test_sdedit_child_is_reproduced_from_its_seed_and_the_head(tiny_pipe):
    proc = _proc(tiny_pipe("flux"), steps=5)
    ver = FeedbackBrightness()
    res = load_searcher("reflect")(proc, ver, PROMPT, Budget(10 + 3), torch.Generator().manual_seed(1),
                                   refine="image", strength=0.5, num_samples=1, num_particles=1, num_rounds=1,
                                   critic="feedback")
    assert res.nfe == 5 + math.ceil(0.5 * 5)
    head, child = res.candidates
    cond = proc.encode(PROMPT)
    x0, _ = proc.sample(proc.noise_from_seeds([head.seed]), cond)
    start = sdedit_start(5, 0.5)
    x = proc.renoise(x0, 5, start, noise=proc.noise_from_seeds([child.seed]))
    x, _ = proc.sample(x, cond, start=start)
    assert ver(proc.decode(x), PROMPT).item() == pytest.approx(child.score, abs=1e-5)


def test_reflect_refuses_bad_input_before_sampling(tiny_pipe, tmp_path):
    proc = _proc(tiny_pipe("flux"))
    search = load_searcher("reflect")
    cases = [
        (dict(critic="feedback"), BrightnessVerifier(), TTSInputError, "gives none"),
        (dict(critic="vlm", critic_model=str(tmp_path / "nope")), BrightnessVerifier(), MissingWeightsError, "critic_model"),
        (dict(critic="vlm"), BrightnessVerifier(), MissingWeightsError, "critic_model="),
        (dict(refiner="lm", refiner_model=str(tmp_path)), FeedbackBrightness(), MissingWeightsError,
         "config.json.*refiner_model"),
        (dict(refine="sideways"), BrightnessVerifier(), TTSInputError, "refine"),
        (dict(strength=0.0), BrightnessVerifier(), TTSInputError, "strength"),
    ]
    for kw, ver, err, msg in cases:
        budget = Budget(100)
        with pytest.raises(err, match=msg):
            search(proc, ver, PROMPT, budget, torch.Generator(), **kw)
        assert budget.nfe == 0, kw
    budget = Budget(6)
    with pytest.raises(TTSInputError, match="minimum"):
        search(proc, FeedbackBrightness(), PROMPT, budget, torch.Generator(), critic="feedback")
    oracle_budget = Budget(100)
    with pytest.raises(TTSInputError, match="outside the shapes grammar"):
        search(proc, OracleVerifier(), "a red car to the left of two dogs", oracle_budget, torch.Generator())
    assert oracle_budget.nfe == 0
    spec = searcher_params("reflect")
    assert {"num_samples", "num_particles", "num_rounds", "refine", "strength", "critic", "refiner"} <= set(spec.names())


def test_chains_go_to_the_sidecar(tiny_pipe, tmp_path):
    proc = _proc(tiny_pipe("flux"))
    res = load_searcher("reflect")(proc, FeedbackBrightness(), PROMPT, Budget(32), torch.Generator().manual_seed(0),
                                   refine="both", strength=0.5, critic="feedback")
    img, sidecar = res.save(tmp_path / "out.png")
    d = json.loads(sidecar.read_text())
    assert len(d["chains"]) == len(res.chains) and d["settings"]["searcher"] == "reflect"
    for k, chain in enumerate(d["chains"]):
        for r, step in enumerate(chain):
            assert step["candidate"] == res.chains[k][r].candidate and step["round"] == r
            assert (tmp_path / step["image"]).is_file()
    assert d["chains"][0][1]["critique"].startswith("brightness") and "prompt" in d["chains"][0][1]
    assert sidecar.stat().st_size < 20000


def test_reflect_on_the_embedded_model_with_oracle_feedback():
    from tts_diffusion import TTSPipeline

    pipe = TTSPipeline.from_pretrained()
    pipe.set_progress_bar_config(disable=True)
    p = "a photo of a square and a red triangle"
    res = pipe(p, searcher="reflect", verifier="oracle", budget=4 * 20, seed=3, progress=False, refine="both")
    assert res.settings["critic"] == "feedback" and res.nfe <= 80
    steps = [s for ch in res.chains for s in ch[1:]]
    assert steps and all(s.critique.startswith(("expected", "correct", "cannot")) for s in steps)
    for s in steps:  # refined prompts stay in the grammar and mean the same
        assert set(parse_prompt(s.prompt).objects) == set(parse_prompt(p).objects)


# ------------------------------------------------------------------ local transformers models
def test_lm_refiner_and_vlm_critic_from_tiny_local_models(tmp_path):
    from tiny_transformers import write_tiny_blip, write_tiny_lm
    from tts_diffusion.reflection import make_critic, make_refiner

    lm = make_refiner("lm", model=str(write_tiny_lm(tmp_path / "lm")), max_new_tokens=6)
    p = "a photo of three stars"
    out = lm(p, Critique("exactly three stars fails", [ClaimResult(parse_claims(p).claims[1], False, -1.0)]))
    assert isinstance(out, str) and out and "\n" not in out
    assert lm(p, Critique("ok", [ClaimResult(parse_claims(p).claims[0], True, 1.0)])) == p  # nothing failed
    vlm = make_critic("vlm", BrightnessVerifier(), model=str(write_tiny_blip(tmp_path / "blip")))
    q = "a photo of a red circle left of a square"
    crits = vlm(torch.rand(2, 3, 32, 32), q)
    assert len(crits) == 2
    assert [r.claim.text for r in crits[0].claims] == [c.text for c in parse_claims(q).claims]
    assert all(r.score in (0.0, 1.0) and r.passed == (r.score == 1.0) for r in crits[0].claims)
    (folder := tmp_path / "empty").mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="no weights.*critic_model"):
        make_critic("vlm", BrightnessVerifier(), model=str(folder))


def test_cli_runs_reflect_and_rejects_bad_options(tmp_path):
    from click.testing import CliRunner

    from tts_diffusion.cli import main

    out = tmp_path / "r.png"
    ok = CliRunner().invoke(main, ["generate", "a photo of a red circle", "--searcher", "reflect", "--budget", "64",
                                   "--quiet", "--out", str(out), "-o", "refine=image", "-o", "strength=0.5"])
    assert ok.exit_code == 0, ok.output
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["settings"]["refine"] == "image" and sidecar["chains"]
    bad = CliRunner().invoke(main, ["generate", "a photo of a red circle", "--searcher", "reflect", "--budget", "64",
                                    "--quiet", "--out", str(out), "-o", "refine=sideways"])
    assert bad.exit_code == 2 and "refine='sideways'" in bad.output and "prompt, image, both" in bad.output
    low = CliRunner().invoke(main, ["generate", "a photo of a red circle", "--searcher", "reflect", "--budget", "30",
                                    "--quiet", "--out", str(out)])
    assert low.exit_code == 2 and "at least" in low.output
