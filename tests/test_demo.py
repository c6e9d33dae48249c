"""The demo's logic without a browser: request validation against the registries and the
server's limits, widgets built from parameter specs, the streamed run and its heartbeat,
the queue, the images handed to the page, concurrent requests, and the `demo` command's
checks. What the page shows of a result: test_demo_render.py."""
from __future__ import annotations

import random
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from click.testing import CliRunner

from demo_helpers import PROBE, default_tts, probe_registered
from tts_diffusion.testing.helpers import BrightnessVerifier
from tts_diffusion.core.state import Progress
from tts_diffusion.errors import TTSInputError
from tts_diffusion.params import Param
from tts_diffusion.searchers import searcher_params
from tts_diffusion.demo.files import RunFiles
from tts_diffusion.demo.handlers import DemoHandlers
from tts_diffusion.demo.render import gallery_items, to_display
from tts_diffusion.demo.request import (AUTO, DemoLimits, is_page_safe, options_from_widgets, page_params, parse_request,
                                        widget_value)
from tts_diffusion.demo.runner import Quiet, stream_run
from tts_diffusion.demo.waiting import FairQueue
from tts_diffusion.demo.server import exposure_warning, parse_auth
from tts_diffusion.request import SearchRequest
from tts_diffusion.verifiers.registry import _REGISTRY as VERIFIERS, register_verifier

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
    # gradio starts up to concurrency + max_queue requests; the demo's own queue holds searches to 2
    assert demo._queue.max_size == 3 and demo._queue.default_concurrency_limit == 5
    assert demo.tts_handlers.queue.slots == 2 and demo.tts_handlers.queue.max_waiting == 3
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
    assert isinstance(req, SearchRequest) and req.negative_prompt is None and req.guidance_scale == 2.0
    assert req.budget == 20 and req.num_inference_steps == 10
    assert req == req.check(embedded_model=True)  # checked: what every front door runs
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
        defaults = {p.name: p.default for p in searcher_params(PROBE)}
        assert req.searcher_options == {**defaults, "scale": 1.5, "mode": "b"}  # the rest: declared defaults
        assert "label" not in {p.name for p in page_params("searcher", PROBE)}  # a free string: not on the page
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
        assert req.verifier_options == {"temperature": 0.5, "mode": "rank", "prefix": ""}  # no path, no device
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
    assert req.searcher_options["critic_model"] is None  # the declared default, never the page's folder


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
    assert req.searcher_options["critic_model"] is None and req.searcher_options["refiner_model"] is None
    with pytest.raises(TTSInputError, match="option critic_model is not valid: expected one of blip-tiny"):
        parse_request(tts, _raw(searcher="reflect", searcher_options={"reflect": {"critic": "vlm",
                                                                                  "critic_model": str(lm)}}),
                      DemoLimits(), models=models)
    # a folder that is not a model folder stops the server before it starts
    with pytest.raises(TTSInputError, match="--critic-model"):
        ServerModels(critic_model=tmp_path)
    with pytest.raises(TTSInputError, match="--refiner-model"):
        ServerModels(refiner_model=tmp_path / "nope")


def test_reflect_runs_with_the_critic_and_refiner_the_server_was_started_with(tmp_path):
    from tiny_transformers import write_tiny_blip, write_tiny_lm
    from tts_diffusion.demo import ServerModels

    models = ServerModels(critic_model=write_tiny_blip(tmp_path / "blip"), refiner_model=write_tiny_lm(tmp_path / "lm"))
    h = DemoHandlers(default_tts(), DemoLimits(), files=RunFiles(tmp_path / "runs"), models=models)
    page = {"critic": "vlm", "critic_model": "blip", "refiner": "lm", "refiner_model": "lm", "num_rounds": "1"}
    final = list(h.generate(_raw(prompt="a photo of a red circle", searcher="reflect", budget=60,
                                 searcher_options={"reflect": page})))[-1]
    assert final["status"].startswith("Done"), final["status"]
    import json

    settings = json.loads(open(final["files"][-1]).read())["settings"]
    assert settings["critic"] == "vlm" and settings["refiner"] == "lm"
    assert "    - critique: " in final["chains_table"]  # the VLM's critique is on the page


def test_ensemble_members_come_from_the_registry_and_the_server_adds_the_domain_clip():
    from tts_diffusion.paths import domain_clip_path

    tts = SimpleNamespace(is_default_model=True)
    req = parse_request(tts, _raw(verifier="ensemble", members=["clip", "oracle"]), DemoLimits())
    assert req.verifier_options == {"members": "clip,oracle", "mode": "rank", "clip.model": str(domain_clip_path())}
    with pytest.raises(TTSInputError, match="no members"):
        parse_request(tts, _raw(verifier="ensemble", members=[]), DemoLimits())
    with pytest.raises(TTSInputError, match="unknown ensemble member"):
        parse_request(tts, _raw(verifier="ensemble", members=["ensemble"]), DemoLimits())


def test_toggles_switch_the_request_s_features():
    from tts_diffusion import TGate

    tts = SimpleNamespace(is_default_model=True)
    req = parse_request(tts, _raw(tgate=True, rgba=False), DemoLimits())
    assert req.tgate == TGate() and req.rgba is False  # T-GATE with its defaults
    assert parse_request(tts, _raw(), DemoLimits()).tgate is None
    with pytest.raises(TTSInputError, match="cannot be combined"):
        parse_request(tts, _raw(tgate=True, rgba=True), DemoLimits())
    req = parse_request(tts, _raw(verifier="clip", reward_guidance=True), DemoLimits())
    assert req.reward_guidance.preset == "tfg" and req.reward_guidance.verifier is None  # the search's verifier
    assert parse_request(tts, _raw(verifier="clip"), DemoLimits()).reward_guidance is None
    with pytest.raises(TTSInputError, match="'oracle' is not differentiable"):
        parse_request(tts, _raw(verifier="oracle", reward_guidance=True), DemoLimits())


def test_limits_reject_nonsense():
    with pytest.raises(TTSInputError, match="max_queue \\(--max-queue\\) must be a positive integer"):
        DemoLimits(max_queue=0)
    assert "400 NFE" in DemoLimits(max_budget=400).describe()


# ------------------------------------------------------------------ streaming
class _FakeTTS:
    """Reports progress every few ms until told to stop (or `n` reports), like a search."""

    def __init__(self, n=10_000):
        self.n, self.reports, self.stopped = n, 0, threading.Event()

    def run(self, request, *, progress_callback, **kw):
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
    events = list(stream_run(tts, SearchRequest(PROMPT, verifier="oracle", budget=60), min_interval=10.0))
    assert events[-1] == "done"
    progress = events[:-1]
    # with a long interval, only changes of the best score get through (12 distinct scores)
    assert 1 <= len(progress) <= 13 and [p.nfe for p in progress] == sorted(p.nfe for p in progress)


def test_abandoned_stream_stops_the_search():
    tts = _FakeTTS()
    gen = stream_run(tts, SearchRequest(PROMPT, verifier="oracle", budget=10), min_interval=0.0)
    next(gen)
    gen.close()  # the visitor went away
    assert tts.stopped.wait(5.0) and tts.reports < tts.n


def test_stream_run_reraises_input_errors():
    class Bad:
        def run(self, *a, **kw):
            raise TTSInputError("budget of 1 NFE is below one full sample")

    with pytest.raises(TTSInputError, match="below one full sample"):
        list(stream_run(Bad(), SearchRequest(PROMPT, verifier="oracle", budget=1)))


def test_stream_run_explains_a_silence():
    class Stalls:
        def run(self, request, *, progress_callback, **kw):
            progress_callback(Progress(10, 40, None, None))
            time.sleep(0.75)  # scoring, say: no report
            progress_callback(Progress(20, 40, None, None))
            return "done"

    events = list(stream_run(Stalls(), SearchRequest(PROMPT, verifier="oracle", budget=40), min_interval=0.0,
                             heartbeat=0.2))
    quiet = [e.seconds for e in events if isinstance(e, Quiet)]
    assert events[-1] == "done" and [e.nfe for e in events if isinstance(e, Progress)] == [10, 20]
    assert 2 <= len(quiet) <= 4 and quiet == sorted(quiet) and quiet[-1] < 0.8  # seconds since the last report


# ------------------------------------------------------------------ the queue
def test_fair_queue_runs_in_arrival_order_and_knows_each_place():
    q = FairQueue(slots=1, max_waiting=2)
    a, b, c = q.enter(), q.enter(), q.enter()
    assert a.running and not b.running and q.place(b) == (0, 1) and q.place(c) == (1, 1)
    with pytest.raises(TTSInputError, match="the server is busy: 2 requests are already waiting"):
        q.enter()
    assert not q.wait(c, 0.01)
    q.leave(b)  # b's visitor went away: c moves up
    assert q.place(c) == (0, 1)
    q.leave(a)
    assert q.wait(c, 0.01) and q.place(c) == (0, 1)
    q.leave(c)
    assert q.enter().running


# ------------------------------------------------------------------ handlers on the real model
@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    return DemoHandlers(default_tts(), DemoLimits(max_budget=200), files=RunFiles(tmp_path_factory.mktemp("runs")),
                        min_interval=0.0)


def test_generate_streams_progress_then_shows_the_same_result_as_the_api(handlers):
    import json

    updates, final = _final(handlers.generate(_raw(prompt="a photo of a red circle left of a blue square",
                                                    budget=30, seed=3)))
    assert updates[0]["status"].startswith("**Starting** best_of_n") and updates[0]["best"] is None  # cleared
    progress = [u["status"] for u in updates[1:-1]]
    assert progress and all(s.startswith("**Running** best_of_n") and "/ 30 NFE" in s for s in progress)
    ref = default_tts()("a photo of a red circle left of a blue square", searcher="best_of_n", verifier="oracle",
                        budget=30, seed=3, num_inference_steps=10, progress=False)
    assert final["status"].startswith("Done: best score") and final["seed"] == 3
    assert [c for _, c in final["gallery"]] == [c for _, c in gallery_items(ref)]
    shown = Image.open(final["best"])
    assert shown.size == (512, 512) and np.array_equal(np.asarray(shown), np.asarray(to_display(ref.best.image)))
    assert final["matte"] is None and final["matte_visible"] is False and final["best_label"] == "Best image"
    points = final["plot"].axes[0].collections[0].get_offsets()
    assert sorted(map(tuple, points.tolist())) == sorted((c.nfe, c.score) for c in ref.candidates)
    png, sidecar = final["files"]
    data = json.loads(open(sidecar).read())
    assert png.endswith(".png") and data["prompt"] == ref.prompt and data["nfe"] == 30
    assert [c["score"] for c in data["candidates"]] == ref.scores and data["best"]["seed"] == ref.best.seed


def test_every_image_goes_to_the_page_as_a_file_written_once(handlers):
    """gradio rewrites a cached PIL image in place each time it is sent again, so a browser
    fetching it gets a truncated file (the 'Content-Length' errors): the demo sends files,
    each written once under its own name, and a progress report whose best image has not
    changed sends no image."""
    written = {}
    updates = list(handlers.generate(_raw(prompt="a photo of two blue squares", budget=40, seed=5, steps=10,
                                          searcher_options={"best_of_n": {"round_size": 1}})))
    for u in updates:
        paths = [u.get("best"), u.get("matte")] + [p for p, _ in u.get("gallery") or []]
        for path in filter(None, paths):
            assert isinstance(path, str)
            data = open(path, "rb").read()
            assert written.setdefault(path, data) == data  # the same name never holds other bytes
            Image.open(path).load()  # a whole PNG
    shown = [u["best"] for u in updates[1:-1] if u.get("best")]
    distinct = {open(p, "rb").read() for p in shown}
    assert len(shown) == len(distinct) >= 1  # an unchanged best is not sent again
    scores = [u["status"].split("best so far **")[1][:5] for u in updates[1:-1] if "best so far" in u["status"]]
    assert len(shown) == len(dict.fromkeys(scores))  # one image per improvement


def test_progress_shows_a_preview_until_a_candidate_is_scored(tmp_path):
    preview = torch.zeros(3, 8, 8, dtype=torch.uint8)
    preview[0] = 255  # a red estimate

    class Previews:
        is_default_model = True
        defaults = {}

        def run(self, request, *, progress_callback, **kw):
            progress_callback(Progress(10, 20, None, None, preview))
            best = SimpleNamespace(score=0.5, image=torch.zeros(3, 8, 8, dtype=torch.uint8))
            progress_callback(Progress(20, 20, 0.5, best, preview))
            raise TTSInputError("stop here")

    h = DemoHandlers(Previews(), DemoLimits(), files=RunFiles(tmp_path), min_interval=0.0)
    updates = list(h.generate(_raw(budget=20)))
    first, second = [u for u in updates if u.get("best")]
    assert "preview" in first["best_label"] and np.asarray(Image.open(first["best"]))[0, 0].tolist() == [255, 0, 0]
    assert second["best_label"] == "Best so far" and np.asarray(Image.open(second["best"]))[0, 0].tolist() == [0, 0, 0]
    assert "no candidate scored yet" in updates[1]["status"] and "best so far **0.500**" in updates[2]["status"]


def test_a_waiting_request_says_so_with_its_place(tmp_path):
    gate, entered = threading.Event(), threading.Event()

    class Slow:
        is_default_model = True
        defaults = {}

        def run(self, request, *, progress_callback, **kw):
            entered.set()
            gate.wait(10)
            raise TTSInputError(f"done with {request.prompt}")

    h = DemoHandlers(Slow(), DemoLimits(concurrency=1, max_queue=1), files=RunFiles(tmp_path), min_interval=0.0)
    first = h.generate(_raw(prompt="a photo of a red circle"))
    next(first)  # starting
    runner = threading.Thread(target=lambda: list(first))
    runner.start()
    assert entered.wait(10)
    second = h.generate(_raw(prompt="a photo of a blue square"))
    waiting = next(second)["status"]
    assert "Waiting in the queue" in waiting and "place 1" in waiting and "1 running" in waiting
    third = list(h.generate(_raw(prompt="a photo of a green star")))  # the line is full: refused at once, in one line
    assert len(third) == 1 and "the server is busy" in third[0]["status"]
    gate.set()
    rest = [u["status"] for u in second]
    runner.join(10)
    assert any(s.startswith("**Starting**") for s in rest) and "done with a photo of a blue square" in rest[-1]


def test_errors_use_the_pages_words(handlers):
    updates = list(handlers.generate(_raw(tgate=True, rgba=True)))
    assert 'the "RGBA" toggle cannot be combined with the "T-GATE" toggle' in updates[-1]["status"]
    assert "rgba=True" not in updates[-1]["status"]


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
