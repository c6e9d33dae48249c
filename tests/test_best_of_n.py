"""Best-of-N against a verifier whose score is a known function of the image."""
import pytest
import torch

from tts_diffusion import Budget, BudgetExceeded, TTSInputError, TTSPipeline
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.searchers import available_searchers, load_searcher
from tts_diffusion.testing.helpers import BrightnessVerifier
from tts_diffusion.testing.tiny_pipelines import pipeline_call_kwargs

PROMPT = "a red circle"


def _proc(pipe, family="flux", steps=3, max_batch=16):
    kw = pipeline_call_kwargs(family)
    return DenoisingProcess.from_pipeline(pipe, steps, 4.0, height=kw["height"], width=kw["width"],
                                          max_sequence_length=kw.get("max_sequence_length"), max_batch=max_batch)


def test_best_is_the_argmax_of_independently_sampled_candidates(tiny_pipe):
    pipe = tiny_pipe("flux")
    proc = _proc(pipe)
    search = load_searcher("best_of_n")
    ver = BrightnessVerifier()
    res = search(proc, ver, PROMPT, Budget(5 * 3), torch.Generator().manual_seed(7))
    assert len(res.candidates) == 5 and res.nfe == 15 and res.verifier_calls == 5
    # recompute every candidate alone from its seed
    cond = proc.encode(PROMPT)
    scores = []
    for c in res.candidates:
        x, _ = proc.sample(proc.noise_from_seeds([c.seed]), cond)
        scores.append(ver(proc.decode(x), PROMPT).item())
    assert scores == pytest.approx(res.scores, abs=1e-5)
    assert res.best_score == pytest.approx(max(scores), abs=1e-6)
    assert res.best.seed == res.candidates[max(range(5), key=lambda k: scores[k])].seed


def test_best_seed_reproduces_with_the_plain_pipeline(tiny_pipe):
    pipe = tiny_pipe("sd15")
    proc = _proc(pipe, "sd15")
    res = load_searcher("best_of_n")(proc, BrightnessVerifier(), PROMPT, Budget(9), torch.Generator().manual_seed(0))
    kw = pipeline_call_kwargs("sd15")
    img = pipe(prompt=PROMPT, num_inference_steps=3, guidance_scale=4.0, output_type="pt",
               generator=torch.Generator().manual_seed(res.best.seed), **kw).images[0]
    ours = res.best.image.float() / 255
    assert (img - ours).abs().max() <= 1 / 255 + 1e-6


def test_result_independent_of_chunk_and_round_size(tiny_pipe):
    pipe = tiny_pipe("flux")
    runs = []
    for max_batch, round_size in [(16, None), (1, 2), (3, 5), (2, 1)]:
        proc = _proc(pipe, max_batch=max_batch)
        res = load_searcher("best_of_n")(proc, BrightnessVerifier(), PROMPT, Budget(6 * 3),
                                         torch.Generator().manual_seed(3), round_size=round_size)
        runs.append(res)
    for r in runs[1:]:
        assert [c.seed for c in r.candidates] == [c.seed for c in runs[0].candidates]
        assert r.scores == pytest.approx(runs[0].scores, abs=1e-5)
        assert r.best.seed == runs[0].best.seed


def test_trace_monotone_rounds_and_determinism(tiny_pipe):
    pipe = tiny_pipe("flux")
    proc = _proc(pipe)
    a = load_searcher("best_of_n")(proc, BrightnessVerifier(), PROMPT, Budget(8 * 3), torch.Generator().manual_seed(1), round_size=2)
    b = load_searcher("best_of_n")(proc, BrightnessVerifier(), PROMPT, Budget(8 * 3), torch.Generator().manual_seed(1), round_size=2)
    c = load_searcher("best_of_n")(proc, BrightnessVerifier(), PROMPT, Budget(8 * 3), torch.Generator().manual_seed(2), round_size=2)
    assert [p.nfe for p in a.trace] == [6, 12, 18, 24]
    best = [p.best_score for p in a.trace]
    assert best == sorted(best)
    assert best[-1] == pytest.approx(max(a.scores[: 8]))
    assert a.scores == b.scores and a.best.seed == b.best.seed
    assert [x.seed for x in a.candidates] != [x.seed for x in c.candidates]


def test_budget_is_enforced(tiny_pipe):
    pipe = tiny_pipe("flux")
    proc = _proc(pipe)
    budget = Budget(10)  # pays for 3 samples of 3 steps, not 4
    res = load_searcher("best_of_n")(proc, BrightnessVerifier(), PROMPT, budget, torch.Generator().manual_seed(0))
    assert res.nfe == 9 <= budget.max_nfe and len(res.candidates) == 3
    with pytest.raises(TTSInputError, match="below one full sample"):
        load_searcher("best_of_n")(proc, BrightnessVerifier(), PROMPT, Budget(2), torch.Generator())
    with pytest.raises(TTSInputError, match="need"):
        load_searcher("best_of_n")(proc, BrightnessVerifier(), PROMPT, Budget(9), torch.Generator(), num_samples=4)
    # the process itself refuses to overspend, whatever the caller does
    cond = proc.encode(PROMPT)
    b = Budget(3)
    with proc.metered(b):
        proc.denoise(proc.sample_noise(3, torch.Generator()), 0, cond)
        with pytest.raises(BudgetExceeded):
            proc.denoise(proc.sample_noise(1, torch.Generator()), 1, cond)
    assert b.nfe == 3


def test_tts_pipeline_end_to_end(tiny_pipe, tmp_path):
    pipe = tiny_pipe("sd15")
    tts = TTSPipeline(pipe)
    ver = BrightnessVerifier()
    res = tts(PROMPT, verifier=ver, budget=12, seed=5, num_inference_steps=3, guidance_scale=4.0, height=32, width=32,
              progress=False)
    assert res.image.size == (32, 32) and len(res.images) == 4
    assert res.settings["searcher"] == "best_of_n" and res.settings["seed"] == 5 and res.settings["num_steps"] == 3
    assert {"denoise", "decode", "verify", "total"} <= set(res.timings)
    img, sidecar = res.save(tmp_path / "best.png")
    import json

    data = json.loads(sidecar.read_text())
    assert data["best"]["score"] == pytest.approx(res.best_score)
    assert len(data["trace"]) >= 1 and data["nfe"] == 12
    with pytest.raises(TTSInputError, match="empty"):
        tts("  ", verifier=ver, budget=12, num_inference_steps=3, height=32, width=32, progress=False)
    with pytest.raises(TTSInputError, match="unknown searcher"):
        tts(PROMPT, searcher="nope", verifier=ver, budget=12, num_inference_steps=3, height=32, width=32)
    with pytest.raises(TTSInputError, match="multiples of"):
        tts(PROMPT, verifier=ver, budget=12, num_inference_steps=3, height=30, width=32)
    assert "best_of_n" in available_searchers()
