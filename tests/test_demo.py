"""The demo's logic without a browser: request validation against the registries and the
server's limits, widgets built from parameter specs, the streamed run, what the page
shows of a result, concurrent requests, and the `demo` command's checks."""
from __future__ import annotations

import random
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from demo_helpers import PROBE, default_tts, probe_registered
from tts_diffusion.testing.helpers import BrightnessVerifier
from tts_diffusion.core.result import Candidate, SearchResult, TracePoint
from tts_diffusion.core.state import Progress
from tts_diffusion.errors import TTSInputError
from tts_diffusion.params import Param
from tts_diffusion.demo.handlers import DemoHandlers
from tts_diffusion.demo.render import RunFiles, chain_items, example_prompts, gallery_items, to_display, trace_table
from tts_diffusion.demo.request import (AUTO, DemoLimits, RunRequest, is_page_safe, options_from_widgets, page_params,
                                        parse_request, supported_toggles, widget_value)
from tts_diffusion.demo.runner import stream_run
from tts_diffusion.demo.server import exposure_warning, parse_auth
from tts_diffusion.verifiers.base import _REGISTRY as VERIFIERS, register_verifier

PROMPT = "a photo of a red circle"


def _raw(**kw):
    base = dict(prompt=PROMPT, searcher="best_of_n", verifier="oracle", budget=20, seed=0, steps=10)
    base.update(kw)
    return base


def _final(updates):
    updates = list(updates)
    return updates, updates[-1]


# ------------------------------------------------------------------ widgets from specs
def test_widget_value_per_kind():
    with probe_registered():
        spec = {p.name: p for p in page_params("searcher", PROBE)}
    own = "searcher 'demo_probe'"
    assert widget_value(spec["rounds"], None, own) is None            # derived: empty stays None
    assert widget_value(spec["rounds"], 3.0, own) == 3 and isinstance(widget_value(spec["rounds"], 3.0, own), int)
    assert widget_value(spec["rounds"], " 4 ", own) == 4 and widget_value(spec["rounds"], "", own) is None
    assert widget_value(spec["scale"], None, own) == 1.0               # empty -> declared default
    assert widget_value(spec["scale"], 1.5, own) == 1.5
    assert widget_value(spec["flip"], True, own) is True
    assert widget_value(spec["mode"], "b", own) == "b"
    assert widget_value(spec["offsets"], "3, 4", own) == (3, 4)
    assert widget_value(spec["offsets"], "", own) == (1, 2)
    assert widget_value(spec["extra_prompt"], "hello", own) == "hello"
    assert "label" not in spec  # free text that is not a prompt is never on the page
    for name, bad in (("rounds", 0), ("rounds", 2.5), ("rounds", "two"), ("scale", 2.5), ("mode", "z"),
                      ("offsets", "1,x")):
        with pytest.raises(TTSInputError, match=f"{own} option {name} is not valid: expected") as e:
            widget_value(spec[name], bad, own)
        assert str(bad) not in str(e.value).split("expected")[0]  # what was sent is not repeated


def test_options_from_widgets_passes_only_what_changed():
    with probe_registered():
        spec = page_params("searcher", PROBE)
    raw = {"rounds": None, "scale": 1.0, "flip": True, "mode": "a", "offsets": "1,2", "extra_prompt": "",
           "label": "/etc", "keep_images": 16}
    assert options_from_widgets(spec, raw, "s") == {"flip": True}
    changed = {**raw, "rounds": 2, "mode": "c"}
    assert options_from_widgets(spec, changed, "s") == {"flip": True, "rounds": 2, "mode": "c"}


def test_param_widgets_match_the_spec():
    gr = pytest.importorskip("gradio")
    from tts_diffusion.demo.app import param_widget

    with probe_registered():
        spec = {p.name: p for p in page_params("searcher", PROBE)}
    with gr.Blocks():
        w = {name: param_widget(gr, p) for name, p in spec.items()}
    # a derived number is a text box (a number box cannot be empty: the page sends 0)
    assert isinstance(w["rounds"], gr.Textbox) and w["rounds"].value == "" and "integer >= 1" in w["rounds"].info
    assert "leave empty to derive" in w["rounds"].info
    assert isinstance(w["keep_images"], gr.Number) and w["keep_images"].minimum == 1 and w["keep_images"].precision == 0
    assert isinstance(w["scale"], gr.Number) and (w["scale"].minimum, w["scale"].maximum) == (0.0, 2.0)
    assert w["scale"].value == 1.0 and w["scale"].precision is None
    assert isinstance(w["flip"], gr.Checkbox) and w["flip"].value is False
    assert isinstance(w["mode"], gr.Dropdown) and w["mode"].value == "a"
    assert [c[1] for c in w["mode"].choices] == ["a", "b", "c"]
    assert isinstance(w["offsets"], gr.Textbox) and w["offsets"].value == "1,2"
    assert all(w[n].label == n for n in spec) and "a flag" in w["flip"].info


def test_nullable_flag_gets_an_auto_choice():
    gr = pytest.importorskip("gradio")
    from tts_diffusion.demo.app import param_widget

    p = Param("fast", bool, None, "derived flag")
    with gr.Blocks():
        w = param_widget(gr, p)
    assert isinstance(w, gr.Dropdown) and w.value == AUTO
    assert widget_value(p, AUTO, "x") is None and widget_value(p, "true", "x") is True


def test_build_demo_has_a_group_per_searcher_and_only_the_selected_is_visible():
    gr = pytest.importorskip("gradio")
    from tts_diffusion.demo import build_demo

    stub = SimpleNamespace(defaults={"num_inference_steps": 10, "guidance_scale": 3.0}, is_default_model=True)
    with probe_registered():
        demo = build_demo(stub, DemoLimits(max_queue=3, concurrency=2))
    blocks = list(demo.blocks.values())
    groups = {b.elem_id: b for b in blocks if isinstance(b, gr.Group)}
    assert groups[f"searcher-options-{PROBE}"].visible is False
    labels = {b.label for b in blocks if isinstance(b, gr.components.Component)}
    assert {"rounds", "scale", "flip", "mode", "offsets", "extra_prompt"} <= labels and "label" not in labels
    assert not any(isinstance(b, gr.Textbox) and "path" in str(b.label).lower() for b in blocks)
    assert demo._queue.max_size == 3 and demo._queue.default_concurrency_limit == 2
    examples = [b for b in blocks if isinstance(b, gr.Dataset)]
    assert examples and len(examples[0].samples) >= 3


def test_steps_and_budget_follow_only_searchers_with_their_own_defaults():
    pytest.importorskip("gradio")
    from tts_diffusion.demo.app import settings_on_switch
    from tts_diffusion.searchers import run_defaults

    tts, limits = SimpleNamespace(defaults={"num_inference_steps": 20}), DemoLimits(max_budget=300)
    rd = run_defaults("rbf")
    assert rd  # the RBF paper's setting
    assert settings_on_switch(tts, "rbf", "best_of_n", limits) == (rd["num_inference_steps"], min(rd["budget"], 300))
    assert settings_on_switch(tts, "best_of_n", "rbf", limits) == (20, 160)  # back to the model's, 8 samples
    assert settings_on_switch(tts, "zero_order", "best_of_n", limits) is None  # what the visitor typed stays


# ------------------------------------------------------------------ the request
def test_parse_request_validates_before_any_model_work():
    tts, limits = SimpleNamespace(is_default_model=True), DemoLimits(max_budget=100, max_steps=30, max_image_size=128)
    req = parse_request(tts, _raw(negative_prompt="  ", guidance=2), limits)
    assert isinstance(req, RunRequest) and req.negative_prompt is None and req.guidance_scale == 2.0
    assert req.call_kwargs()["budget"] == 20 and req.call_kwargs()["num_inference_steps"] == 10
    assert parse_request(tts, _raw(height=0, width=0), limits).height is None  # 0: the model's own size
    cases = [
        (dict(prompt="   "), "prompt is empty"),
        (dict(searcher="nope"), "unknown searcher; choose one of"),
        (dict(verifier="../../etc/passwd"), "unknown verifier"),
        (dict(budget=101), "over this server's limit of 100 NFE"),
        (dict(budget=0), "positive number of NFE"),
        (dict(budget=None), "budget \\(NFE\\) is empty"),
        (dict(steps=31), "steps of 31 is outside \\[1, 30\\]"),
        (dict(height=256), "height of 256 is outside \\[8, 128\\]"),
        (dict(width=4), "width of 4 is outside \\[8, 128\\]"),
        (dict(seed=-1), "seed must be in"),
        (dict(guidance="x"), "guidance scale must be a number"),
    ]
    for kw, msg in cases:
        with pytest.raises(TTSInputError, match=msg):
            parse_request(tts, _raw(**kw), limits)


def test_randomize_seed_draws_a_seed_and_reports_it():
    tts = SimpleNamespace(is_default_model=True)
    a = parse_request(tts, _raw(randomize_seed=True, seed=5), DemoLimits(), rng=random.Random(1))
    b = parse_request(tts, _raw(randomize_seed=True, seed=5), DemoLimits(), rng=random.Random(1))
    c = parse_request(tts, _raw(randomize_seed=True, seed=5), DemoLimits(), rng=random.Random(2))
    assert a.seed == b.seed != c.seed and a.seed != 5


def test_searcher_options_are_validated_against_the_spec():
    tts = SimpleNamespace(is_default_model=True)
    with probe_registered():
        req = parse_request(tts, _raw(searcher=PROBE, searcher_options={PROBE: {"scale": 1.5, "mode": "b"}}),
                            DemoLimits())
        assert req.searcher_options == {"scale": 1.5, "mode": "b"}
        with pytest.raises(TTSInputError, match="option scale is not valid: expected a number in \\[0, 2\\]"):
            parse_request(tts, _raw(searcher=PROBE, searcher_options={PROBE: {"scale": 3.0}}), DemoLimits())


def test_verifier_options_from_the_page_never_name_files_or_devices():
    params = [Param("temperature", float, 1.0, "t", low=0.0), Param("mode", str, "rank", "m", choices=("rank", "z")),
              Param("model", str, None, "weights folder"), Param("checkpoint", str, None, "a .pt file"),
              Param("device", str, None, "device"), Param("prefix", str, "", "free text")]
    register_verifier("demo_opts", "test-only", params=params)(lambda **kw: BrightnessVerifier())
    try:
        assert [p.name for p in page_params("verifier", "demo_opts")] == ["temperature", "mode"]
        assert not is_page_safe(params[2]) and not is_page_safe(params[5])
        req = parse_request(SimpleNamespace(is_default_model=True), _raw(
            verifier="demo_opts", verifier_options={"demo_opts": {"temperature": 0.5, "model": "/etc/passwd",
                                                                  "checkpoint": "/tmp/evil.pt"}}), DemoLimits())
        assert req.verifier_options == {"temperature": 0.5}
    finally:
        VERIFIERS.pop("demo_opts", None)


def _model_dir(d):
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"0")
    return d


def test_searcher_strings_on_the_page_are_prompts_or_fixed_choices():
    from tts_diffusion.searchers import available_searchers, searcher_params

    for name in available_searchers():
        shown = {p.name: p for p in page_params("searcher", name)}
        for p in searcher_params(name):
            if p.type is str and p.choices is None:
                assert (p.name in shown) == ("prompt" in p.name), (name, p.name)  # prompt_2 yes, critic_model no
    reflect = {p.name: p for p in page_params("searcher", "reflect")}
    assert "vlm" not in reflect["critic"].choices and "lm" not in reflect["refiner"].choices  # no model: no choice
    assert "--critic-model" in reflect["critic"].help
    # a request cannot pick them, nor name a folder
    tts = SimpleNamespace(is_default_model=True)
    for opts in ({"critic": "vlm"}, {"refiner": "lm"}):
        with pytest.raises(TTSInputError, match="option (critic|refiner) is not valid"):
            parse_request(tts, _raw(searcher="reflect", searcher_options={"reflect": opts}), DemoLimits())
    req = parse_request(tts, _raw(searcher="reflect", searcher_options={"reflect": {"critic_model": "/etc"}}),
                        DemoLimits())
    assert "critic_model" not in req.searcher_options


def test_server_models_are_fixed_at_start_and_offered_by_name(tmp_path):
    from tts_diffusion.demo import ServerModels

    critic, lm = _model_dir(tmp_path / "blip-tiny"), _model_dir(tmp_path / "gpt-small")
    models = ServerModels(critic_model=str(critic), refiner_model=lm)
    reflect = {p.name: p for p in page_params("searcher", "reflect", models)}
    assert reflect["critic_model"].choices == ("blip-tiny",) and reflect["refiner_model"].choices == ("gpt-small",)
    assert "vlm" in reflect["critic"].choices and "lm" in reflect["refiner"].choices
    tts = SimpleNamespace(is_default_model=True)
    page = {"critic": "vlm", "critic_model": "blip-tiny", "refiner": "lm", "refiner_model": "gpt-small"}
    req = parse_request(tts, _raw(searcher="reflect", searcher_options={"reflect": page}), DemoLimits(),
                        models=models)
    assert req.searcher_options["critic_model"] == str(critic) and req.searcher_options["refiner_model"] == str(lm)
    # the folder goes with its choice only
    req = parse_request(tts, _raw(searcher="reflect", searcher_options={"reflect": {"critic": "feedback"}}),
                        DemoLimits(), models=models)
    assert "critic_model" not in req.searcher_options and "refiner_model" not in req.searcher_options
    with pytest.raises(TTSInputError, match="option critic_model is not valid: expected one of blip-tiny"):
        parse_request(tts, _raw(searcher="reflect", searcher_options={"reflect": {"critic": "vlm",
                                                                                  "critic_model": str(lm)}}),
                      DemoLimits(), models=models)
    # a folder that is not a model folder stops the server before it starts
    with pytest.raises(TTSInputError, match="--critic-model"):
        ServerModels(critic_model=tmp_path)
    with pytest.raises(TTSInputError, match="--refiner-model"):
        ServerModels(refiner_model=tmp_path / "nope")


def test_ensemble_members_come_from_the_registry_and_the_server_adds_the_domain_clip():
    from tts_diffusion.paths import domain_clip_path

    tts = SimpleNamespace(is_default_model=True)
    req = parse_request(tts, _raw(verifier="ensemble", members=["clip", "oracle"]), DemoLimits())
    assert req.verifier_options == {"members": "clip,oracle", "clip.model": str(domain_clip_path())}
    with pytest.raises(TTSInputError, match="no members"):
        parse_request(tts, _raw(verifier="ensemble", members=[]), DemoLimits())
    with pytest.raises(TTSInputError, match="unknown ensemble member"):
        parse_request(tts, _raw(verifier="ensemble", members=["ensemble"]), DemoLimits())


def test_toggles_follow_the_pipeline_signature():
    class Old:
        def __call__(self, prompt, *, searcher="best_of_n", **kw): ...

    class New:
        def __call__(self, prompt, *, tgate=None, rgba=False, **kw): ...

    assert supported_toggles(Old()) == {}
    assert set(supported_toggles(New())) == {"tgate", "rgba"}
    req = parse_request(New(), _raw(tgate=True, rgba=False), DemoLimits())
    assert req.call_options == {"tgate": True}
    assert parse_request(Old(), _raw(tgate=True), DemoLimits()).call_options == {}


def test_limits_reject_nonsense():
    with pytest.raises(TTSInputError, match="max_queue \\(--max-queue\\) must be a positive integer"):
        DemoLimits(max_queue=0)
    assert "400 NFE" in DemoLimits(max_budget=400).describe()


# ------------------------------------------------------------------ streaming
class _FakeTTS:
    """Reports progress every few ms until told to stop (or `n` reports), like a search."""

    def __init__(self, n=10_000):
        self.n, self.reports, self.stopped = n, 0, threading.Event()

    def __call__(self, prompt, *, progress_callback, budget, **kw):
        try:
            for k in range(self.n):
                time.sleep(0.002)
                best = SimpleNamespace(score=float(k // 5), image=None)
                progress_callback(Progress(k + 1, self.n, best.score, best))
                self.reports += 1
            return "done"
        finally:
            self.stopped.set()


def test_stream_run_coalesces_progress_and_ends_with_the_result():
    tts = _FakeTTS(n=60)
    events = list(stream_run(tts, RunRequest(PROMPT, "best_of_n", "oracle", 60, 0), min_interval=10.0))
    assert events[-1] == "done"
    progress = events[:-1]
    # with a long interval, only changes of the best score get through (12 distinct scores)
    assert 1 <= len(progress) <= 13 and [p.nfe for p in progress] == sorted(p.nfe for p in progress)


def test_abandoned_stream_stops_the_search():
    tts = _FakeTTS()
    gen = stream_run(tts, RunRequest(PROMPT, "best_of_n", "oracle", 10, 0), min_interval=0.0)
    next(gen)
    gen.close()  # the visitor went away
    assert tts.stopped.wait(5.0) and tts.reports < tts.n


def test_stream_run_reraises_input_errors():
    class Bad:
        def __call__(self, *a, **kw):
            raise TTSInputError("budget of 1 NFE is below one full sample")

    with pytest.raises(TTSInputError, match="below one full sample"):
        list(stream_run(Bad(), RunRequest(PROMPT, "best_of_n", "oracle", 1, 0)))


# ------------------------------------------------------------------ rendering
def test_to_display_scales_up_by_whole_factors_without_blur():
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    big = np.asarray(to_display(img))
    assert big.shape == (512, 512, 3)
    ref = img.permute(1, 2, 0).numpy()
    assert np.array_equal(big[::8, ::8], ref) and np.array_equal(big[7::8, 7::8], ref)  # every pixel an 8x8 block
    assert to_display(np.zeros((600, 300, 3), np.uint8)).size == (300, 600)  # large images stay as they are


def _result(scores, chains=None):
    cands = [Candidate(score=s, nfe=10 * (k + 1), seed=k, image=torch.full((3, 4, 4), 10 * k, dtype=torch.uint8))
             for k, s in enumerate(scores)]
    best = max(cands, key=lambda c: c.score)
    trace, run = [], -1.0
    for c in cands:
        run = max(run, c.score)
        trace.append(TracePoint(c.nfe, 1, run))
    r = SearchResult(PROMPT, best, cands, trace, 10 * len(scores), len(scores), {"total": 0.5}, {"seed": 7})
    if chains is not None:
        r.chains = chains
    return r


def test_gallery_is_best_first_with_score_captions_and_plot_is_the_trace():
    r = _result([0.2, 0.9, 0.5])
    items = gallery_items(r)
    assert [c.split(" · ")[0] for _, c in items] == ["score 0.900", "score 0.500", "score 0.200"]
    assert items[0][1] == "score 0.900 · best · 20 NFE · seed 1" and "best" not in items[1][1]
    df = trace_table(r)  # a staircase: the best so far holds until it improves
    assert list(df["NFE"]) == [10, 20, 20, 30] and list(df["best score"]) == [0.2, 0.2, 0.9, 0.9]


def test_reflection_chains_are_shown_when_present():
    assert chain_items(_result([0.1])) == ([], "")
    steps = [{"round": 0, "image": torch.zeros(3, 4, 4, dtype=torch.uint8), "score": 0.25,
              "critique": "the circle is green | not red", "refined_prompt": "a photo of a red circle, red"},
             SimpleNamespace(round=1, image=None, score=1.0, feedback="correct", prompt="a photo of a red circle")]
    items, table = chain_items(_result([0.1], chains=[steps]))
    assert len(items) == 1 and items[0][1] == "chain 0 · round 0 · score 0.250"
    assert "the circle is green \\| not red" in table and "| 0 | 1 | 1.000 | correct |" in table


def test_example_prompts_come_from_the_eval_split():
    ex = example_prompts()
    assert 3 <= len(ex) <= 8 and all(p.startswith("a photo of") for p in ex)


# ------------------------------------------------------------------ handlers on the real model
@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    return DemoHandlers(default_tts(), DemoLimits(max_budget=200), files=RunFiles(tmp_path_factory.mktemp("runs")),
                        min_interval=0.0)


def test_generate_streams_progress_then_shows_the_same_result_as_the_api(handlers):
    import json

    updates, final = _final(handlers.generate(_raw(prompt="a photo of a red circle left of a blue square",
                                                    budget=30, seed=3)))
    progress = [u["status"] for u in updates[1:-1]]
    assert progress and all("/ 30 NFE" in s for s in progress)
    ref = default_tts()("a photo of a red circle left of a blue square", searcher="best_of_n", verifier="oracle",
                        budget=30, seed=3, num_inference_steps=10, progress=False)
    assert final["status"].startswith("Done: best score") and final["seed"] == 3
    assert [c for _, c in final["gallery"]] == [c for _, c in gallery_items(ref)]
    assert np.array_equal(np.asarray(final["best"]), np.asarray(to_display(ref.best.image)))
    assert final["best"].size == (512, 512)
    assert final["plot"].drop_duplicates("NFE", keep="last")["best score"].tolist() == [p.best_score for p in ref.trace]
    png, sidecar = final["files"]
    data = json.loads(open(sidecar).read())
    assert png.endswith(".png") and data["prompt"] == ref.prompt and data["nfe"] == 30
    assert [c["score"] for c in data["candidates"]] == ref.scores and data["best"]["seed"] == ref.best.seed


@pytest.mark.parametrize("raw, message", [
    (dict(prompt=""), "the prompt is empty"),
    (dict(budget=5), "below one full sample"),
    (dict(prompt="a photo of a cat"), "outside the shapes grammar"),
    (dict(verifier="image_reward"), "needs files that are not on disk"),
    (dict(budget=500), "over this server's limit of 200 NFE"),
])
def test_bad_input_is_one_message_and_the_server_keeps_serving(handlers, raw, message):
    updates = list(handlers.generate(_raw(**raw)))
    errors = [u["status"] for u in updates if "Error" in u["status"]]
    assert len(errors) == 1 and message in errors[0] and updates[-1]["status"] == errors[0]
    assert "Traceback" not in errors[0] and "\n" not in errors[0]


def test_concurrent_requests_each_get_their_own_result(handlers):
    jobs = {"a photo of a red circle": 1, "a photo of two blue squares": 2}
    finals = {}

    def run(prompt, seed):
        finals[prompt] = list(handlers.generate(_raw(prompt=prompt, seed=seed, budget=20)))[-1]

    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    import json

    for prompt, seed in jobs.items():
        data = json.loads(open(finals[prompt]["files"][1]).read())
        ref = default_tts()(prompt, verifier="oracle", budget=20, seed=seed, num_inference_steps=10, progress=False)
        assert data["prompt"] == prompt and data["nfe"] == 20
        assert [c["score"] for c in data["candidates"]] == ref.scores
        assert [c["seed"] for c in data["candidates"]] == [c.seed for c in ref.candidates]


# ------------------------------------------------------------------ serving and the command
def test_auth_and_exposure_warning():
    assert parse_auth("ann:secret") == ("ann", "secret") and parse_auth(None) is None
    for bad in ("ann", ":x", "ann:"):
        with pytest.raises(TTSInputError, match="USER:PASS"):
            parse_auth(bad)
    assert exposure_warning("127.0.0.1", False, None) is None and exposure_warning("localhost", False, None) is None
    assert "reachable from other machines" in exposure_warning("0.0.0.0", False, None)
    assert "--auth" in exposure_warning("0.0.0.0", False, None)
    assert "--auth" not in exposure_warning("0.0.0.0", False, ("a", "b"))
    assert "public" in exposure_warning("127.0.0.1", True, None)


def test_demo_command_help_and_bad_flags():
    from tts_diffusion.cli import main

    r = CliRunner().invoke(main, ["demo", "--help"])
    for flag in ("--model", "--host", "--port", "--share", "--auth", "--max-budget", "--max-image-size",
                 "--max-queue", "--max-steps", "--concurrency"):
        assert flag in r.output
    assert "127.0.0.1" in r.output
    assert "--critic-model" in r.output and "--refiner-model" in r.output
    for args, msg in ((["--max-queue", "0"], "--max-queue"), (["--auth", "nopass"], "USER:PASS"),
                      (["--port", "0"], "--port"), (["--max-budget", "-5"], "--max-budget"),
                      (["--critic-model", "/nonexistent/blip"], "--critic-model"),
                      (["--refiner-model", "/"], "--refiner-model")):
        r = CliRunner().invoke(main, ["demo", *args])
        assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
