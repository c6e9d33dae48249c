"""Every searcher keeps a best so far (issue 27, point 1): interrupted after any denoiser call,
the result is its best finished candidate or, where they score higher, the best of the
Tweedie estimates x0 of its latest finished denoiser call; so an interrupt loses at most the
call in flight. The Python API raises `SearchInterrupted` (a KeyboardInterrupt) carrying that
result with the provenance of the full search; images that are not pictures (NaN pixels)
are never presented as a result."""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from click.testing import CliRunner

from tts_diffusion import Budget, TTSPipeline
from tts_diffusion.cli import main
from tts_diffusion.errors import SearchInterrupted
from tts_diffusion.pipelines.tts_pipeline import best_so_far
from tts_diffusion.records.result import image_problem
from tts_diffusion.searchers import load_searcher, min_budget
from tts_diffusion.testing.analytic import FunctionVerifier
from tts_diffusion.testing.helpers import BrightnessVerifier
from tts_diffusion.verifiers import register_verifier

from test_searcher_contract import ALL, SETTINGS, STEPS, make_proc, reward

register_verifier("brightness", "test-only: mean pixel value")(lambda **kw: BrightnessVerifier())


class Stop(Exception):
    pass


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("finished_calls", [1, STEPS - 1])
def test_every_searcher_keeps_a_best_so_far(name, finished_calls):
    proc = make_proc()
    ver = FunctionVerifier(reward, 2)
    ver.differentiable = load_searcher(name).entry.needs_gradient  # noise_opt: a torch function of x
    opts = SETTINGS[name]
    budget = Budget(min_budget(name, STEPS, **opts) + 3)
    calls = [0]
    if ver.differentiable:  # noise_opt pays each iteration's backward up front: one more charge before a call
        finished_calls += 1

    def on_charge(n):  # the charge opens a denoiser call: stop in the one after `finished_calls`
        calls[0] += 1
        if calls[0] > finished_calls:
            raise KeyboardInterrupt

    budget.on_charge = on_charge
    with pytest.raises(KeyboardInterrupt):
        load_searcher(name)(proc, ver, "a", budget, torch.Generator().manual_seed(0), **opts)
    finished = proc.call.best
    step, x0 = proc.call.latest_x0
    res = best_so_far(proc, ver, "a", budget, 0.0)
    assert res is not None and res.interrupted and res.best.image is not None
    # exactly the better of the finished best and the best Tweedie estimate of the last call
    estimates = reward(x0.reshape(x0.shape[0], -1).to(torch.float64))
    want = max(float(estimates.max()), -math.inf if finished is None else finished.score)
    assert res.best_score == pytest.approx(want, rel=1e-5, abs=1e-6)
    if finished is None or float(estimates.max()) > finished.score:
        assert res.best.info["tweedie_estimate"] == {"step": step, "of_steps": STEPS}
    else:
        assert res.best is finished
    assert res.nfe == budget.nfe <= budget.max_nfe


def test_nothing_before_the_first_denoiser_call_finishes():
    proc = make_proc()
    budget = Budget(100)

    def on_charge(n):
        raise KeyboardInterrupt

    budget.on_charge = on_charge
    with pytest.raises(KeyboardInterrupt):
        load_searcher("smc")(proc, FunctionVerifier(reward, 2), "a", budget, torch.Generator().manual_seed(0),
                             **SETTINGS["smc"])
    assert best_so_far(proc, FunctionVerifier(reward, 2), "a", budget, 0.0) is None


@pytest.fixture(scope="module")
def tiny():
    from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

    return make_tiny_pipeline("sd15")


KW = dict(num_inference_steps=2, height=32, width=32, progress=False)


@pytest.mark.parametrize("searcher,options", [("best_of_n", {}), ("smc", {"num_particles": 4})])
def test_api_interrupt_carries_the_best_so_far_and_the_full_run(tiny, tmp_path, searcher, options):
    tts = TTSPipeline(tiny, verifier=BrightnessVerifier())

    seen = []

    def stop(p):  # in the second denoiser call: the first one has finished
        seen.append(p.nfe)
        if p.nfe >= 2 * seen[0]:
            raise KeyboardInterrupt

    with pytest.raises(SearchInterrupted) as info:
        tts("a red circle", searcher=searcher, budget=400, seed=3, progress_callback=stop, **KW, **options)
    res = info.value.result
    assert isinstance(info.value, KeyboardInterrupt) and res.interrupted and res.nfe < 400
    assert res.provenance["run"]["budget"] == 400 and res.provenance["run"]["seed"] == 3
    image, side = res.save(tmp_path / "cut.png")
    record = json.loads(side.read_text())
    assert record["interrupted"] is True and record["run"]["searcher"] == searcher and "model" in record


def _nan_pipe(tiny):
    from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

    pipe = make_tiny_pipeline("sd15")
    with torch.no_grad():
        for p in pipe.unet.conv_out.parameters():
            p.fill_(float("nan"))
    return pipe


def test_nan_images_are_never_the_result(tiny):
    tts = TTSPipeline(_nan_pipe(tiny), verifier=BrightnessVerifier())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = tts("a red circle", budget=8, **KW)
    assert res.best.score == -math.inf and res.settings["nonfinite_images"] == 4
    assert all(c.info.get("nonfinite_pixels") for c in res.candidates)
    assert "not finite" in image_problem(res)
    assert any("NaN or infinite pixels" in str(w.message) for w in caught)
    assert any("not finite" in str(w.message) for w in caught)


def test_flat_images_are_told():
    from tts_diffusion.records.result import Candidate, SearchResult

    def result(img):
        best = Candidate(score=1.0, nfe=4, image=img)
        return SearchResult("a", best, [best], [], 4, 1, {}, {})

    assert "one flat colour (7, 7, 7)" in image_problem(result(torch.full((3, 4, 4), 7, dtype=torch.uint8)))
    img = torch.full((3, 4, 4), 7, dtype=torch.uint8)
    img[1, 2, 3] = 8
    assert image_problem(result(img)) is None


def test_cli_refuses_to_present_nan_images(tiny, tmp_path):
    model = tmp_path / "nan-model"
    _nan_pipe(tiny).save_pretrained(model)
    out = tmp_path / "out"
    out.mkdir()
    r = CliRunner().invoke(main, ["generate", "a red circle", "--model", str(model), "--verifier", "brightness",
                                  "--budget", "8", "--steps", "2", "--height", "32", "--width", "32", "--device",
                                  "cpu", "--out", str(out / "best.png"), "--quiet"])
    assert r.exit_code == 1, (r.output, r.exception)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: the model's output was not finite") and "nothing written" in lines[-1]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("value", ["101", "1e30"])
def test_guidance_has_an_upper_bound(tmp_path, value):
    r = CliRunner().invoke(main, ["generate", "a red circle", "--guidance", value, "--out", str(tmp_path / "b.png")])
    assert r.exit_code == 2 and "<= 100" in r.stderr
