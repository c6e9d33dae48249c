"""SearchRequest: every front door builds one and checks it once. A checked request holds
every default (the declared options, the default verifier); a sidecar's `run` rebuilds the
identical request, which replays the same search; `bench` refuses what `generate` refuses."""
from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner

from tts_diffusion.cli import main
from tts_diffusion.errors import TTSInputError
from tts_diffusion.paths import default_model_path
from tts_diffusion.request import SearchRequest
from tts_diffusion.searchers import searcher_params
from tts_diffusion.verifiers import verifier_params

needs_model = pytest.mark.skipif(not (default_model_path() / "model_index.json").exists(),
                                 reason="embedded shapes model missing")


def test_check_fills_every_default_and_is_idempotent():
    req = SearchRequest("2 red circles", searcher="smc", searcher_options={"window": [1, 3], "eta": 0.5},
                        verifier_options={"chunk_size": 4}, tgate=3)
    checked = req.check(embedded_model=True)
    assert checked.searcher_options == {**searcher_params("smc").defaults(), "window": (1, 3), "eta": 0.5}
    assert checked.verifier == "oracle"  # the default rule for the embedded model
    assert checked.verifier_options == {**{p.name: p.default for p in verifier_params("oracle") if p.default is not None},
                                        "chunk_size": 4}
    assert checked.tgate.gate_step == 3 and checked.prompt == "2 red circles"  # the prompt as given
    assert checked.model_prompts(True) == ["a photo of two red circles"]
    assert checked.check(embedded_model=True) == checked
    assert req.check(embedded_model=False).verifier == "clip"
    assert req.check(default_verifier="oracle").verifier == "oracle"  # a pipeline's own default


def test_serialised_request_rebuilds_the_same_request():
    checked = SearchRequest(["a red circle", "a blue star"], searcher="paths", searcher_options={"start": 2},
                            budget=99, seed=7, negative_prompt="", tgate={"gate_step": 4, "sp_interval": 2}
                            ).check(embedded_model=True)
    text = json.dumps(checked.to_dict())  # JSON as the sidecar holds it (tuples become lists)
    assert SearchRequest.from_dict(json.loads(text)).check(embedded_model=True) == checked
    with pytest.raises(TTSInputError, match="fields \\['device'\\]"):
        SearchRequest.from_dict({**checked.to_dict(), "device": "cpu"})


@pytest.mark.parametrize("kw, message", [
    (dict(searcher="nope"), "unknown searcher 'nope'"),
    (dict(searcher_options={"nope": 1}), "searcher 'best_of_n' has no option 'nope'"),
    (dict(verifier="nope"), "unknown verifier 'nope'"),
    (dict(verifier_options={"chunk_size": 0}), "verifier 'oracle' option chunk_size=0 is not valid"),
    (dict(prompt="a photo of a purple dragon"), "closest prompt that works"),
    (dict(num_inference_steps=1001), "num_inference_steps=1001 is too large"),
    (dict(rgba=True, tgate=2), "rgba=True cannot be combined with tgate"),
    (dict(subject="circle"), "subject go with rgba=True"),
    (dict(searcher="reflect", rgba=True), "does not work with the reflect searcher"),
    (dict(verifier=lambda images, prompts: images.mean((1, 2, 3)), verifier_options={"a": 1}),
     "apply to a registered verifier name only"),
])
def test_check_refuses_bad_requests_before_any_model_work(kw, message):
    with pytest.raises(TTSInputError, match=message):
        SearchRequest(**{"prompt": "a red circle", **kw}).check(embedded_model=True)


# ------------------------------------------------------------------ sidecar and replay
@needs_model
def test_a_sidecar_replays_to_the_identical_request():
    """The run a result records is the request as it ran (the model's steps, guidance and
    size and the budget filled in); rebuilt from the sidecar's JSON it is that same request,
    and running it gives the same search."""
    from tts_diffusion import TTSPipeline
    from tts_diffusion.records.provenance import dumps_strict

    tts = TTSPipeline.from_pretrained()
    req = SearchRequest("2 red circles", searcher="smc", searcher_options={"num_particles": 2, "window": (1, 3)},
                        num_inference_steps=4, budget=8, seed=3, tgate=2)
    first = tts.run(req, progress=False)
    recorded = json.loads(dumps_strict(first.provenance["run"]))
    again = SearchRequest.from_dict(recorded).check(embedded_model=True)
    expected = dataclasses.replace(req.check(embedded_model=True), guidance_scale=tts.defaults["guidance_scale"],
                                   height=first.settings["height"], width=first.settings["width"])
    assert again == expected
    second = tts.run(again, progress=False)
    assert second.provenance["run"] == first.provenance["run"]
    assert [c.score for c in second.candidates] == [c.score for c in first.candidates]


# ------------------------------------------------------------------ bench refuses what generate refuses
#: (generate's arguments, bench's for the same mistake, the message both print)
SAME_MISTAKE = [
    (["--searcher", "nope"], ["--methods", "nope"], "unknown searcher 'nope'"),
    (["--searcher", "smc", "-o", "potential=maximum"], ["--methods", "smc", "-o", "smc.potential=maximum"],
     "searcher 'smc' option potential='maximum' is not valid"),
    (["-o", "nope=1"], ["-o", "best_of_n.nope=1"], "searcher 'best_of_n' has no option 'nope'"),
    (["--verifier", "nope"], ["--verifier", "nope"], "unknown verifier 'nope'"),
    (["--verifier-option", "chunk_size=0"], ["--verifier-option", "chunk_size=0"],
     "verifier 'oracle' option chunk_size=0 is not valid"),
    (["--steps", "0"], ["--steps", "0"], "--steps must be at least 1"),
    (["--steps", "5000"], ["--steps", "5000"], "--steps=5000 is too large"),
    (["--guidance", "-1"], ["--guidance", "-1"], "guidance scale must be a finite number >= 0"),
    (["--max-batch", "0"], ["--max-batch", "0"], "--max-batch must be at least 1"),
    ("a photo of a purple dragon", "a photo of a purple dragon", "closest prompt that works"),
]


@pytest.mark.parametrize("gen_args, bench_args, message", SAME_MISTAKE, ids=[m for *_, m in SAME_MISTAKE])
def test_bench_refuses_what_generate_refuses(gen_args, bench_args, message, tmp_path, monkeypatch):
    from tts_diffusion.pipelines.tts_pipeline import TTSPipeline

    def no_model(*a, **k):
        raise AssertionError("a model was loaded for a refused request")

    monkeypatch.setattr(TTSPipeline, "from_pretrained", no_model)
    if isinstance(gen_args, str):  # the prompt itself: generate's argument, bench's prompt set
        (tmp_path / "prompts.txt").write_text(f"a photo of a red circle\n{gen_args}\n")
        gen_args, bench_args, prompt = [], ["--prompts", str(tmp_path / "prompts.txt")], gen_args
    else:
        prompt = "a red circle"
    outputs = []
    for args in (["generate", prompt, *gen_args, "--out", str(tmp_path / "x.png"), "--device", "cpu"],
                 ["bench", *bench_args, "--out", str(tmp_path / "b.jsonl"), "--device", "cpu"]):
        r = CliRunner().invoke(main, args)
        outputs.append(r.stderr)
        assert r.exit_code == 2, (args, r.output, r.exception)
        assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, (args, r.stderr)
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob("b.*"))
