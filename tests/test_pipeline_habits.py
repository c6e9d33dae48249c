"""diffusers habits in TTSPipeline.__call__: prompt lists, num_images_per_prompt,
output_type, return_dict, callback_on_step_end, generator lists, set_progress_bar_config,
and one default verifier for Python and the CLI."""
import numpy as np
import pytest
import torch

from tts_diffusion import TTSPipeline
from tts_diffusion.records.result import SearchResult, SearchResults
from tts_diffusion.testing.helpers import BrightnessVerifier

KW = dict(num_inference_steps=2, guidance_scale=3.0, height=32, width=32, progress=False)


@pytest.fixture(scope="module")
def tts():
    from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

    return TTSPipeline(make_tiny_pipeline("sd15"), verifier=BrightnessVerifier())


def _same(a: SearchResult, b: SearchResult) -> bool:
    return a.scores == b.scores and a.best.seed == b.best.seed and torch.equal(a.best.image, b.best.image)


def test_a_list_of_prompts_runs_one_search_each(tts):
    prompts = ["a red circle", "two blue squares", "a cat"]
    many = tts(prompts, budget=8, seed=3, **KW)
    assert isinstance(many, SearchResults) and [r.prompt for r in many] == prompts
    for p, r in zip(prompts, many):
        assert r.nfe == 8 and _same(r, tts(p, budget=8, seed=3, **KW))  # same as alone, seed for seed
    assert len(many.images) == sum(len(r.images) for r in many)


def test_generator_list_one_per_prompt(tts):
    prompts = ["a red circle", "a cat"]
    gens = [torch.Generator().manual_seed(s) for s in (5, 9)]
    many = tts(prompts, budget=8, generator=gens, **KW)
    for p, s, r in zip(prompts, (5, 9), many):
        assert _same(r, tts(p, budget=8, seed=s, **KW))
    assert many[0].settings["seed"] is None  # a generator was given: no seed claimed


def test_num_images_per_prompt_returns_the_k_best(tts):
    res = tts("a red circle", budget=12, seed=1, num_images_per_prompt=4, keep_images=1, **KW)
    images = res.images
    assert len(images) == 4  # keep_images raised to k
    by_score = sorted(res.candidates, key=lambda c: -c.score)
    for img, cand in zip(images, by_score[:4]):
        assert np.array_equal(np.asarray(img), cand.image.permute(1, 2, 0).numpy())
    assert len(tts("a red circle", budget=12, seed=1, **KW).images) == 6  # default: every kept candidate


@pytest.mark.parametrize("output_type", ["pil", "pt", "np"])
def test_output_types(tts, output_type):
    res = tts("a red circle", budget=8, seed=2, num_images_per_prompt=3, output_type=output_type, **KW)
    pil = [np.asarray(im, dtype=np.float32) / 255 for im in
           tts("a red circle", budget=8, seed=2, num_images_per_prompt=3, **KW).images]
    images = res.images
    if output_type == "pt":
        assert isinstance(images, torch.Tensor) and images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
        got = [im.permute(1, 2, 0).numpy() for im in images]
    elif output_type == "np":
        assert isinstance(images, np.ndarray) and images.shape == (3, 32, 32, 3)
        got = list(images)
    else:
        assert len(images) == 3 and images[0].size == (32, 32)
        got = [np.asarray(im, dtype=np.float32) / 255 for im in images]
    for a, b in zip(got, pil):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_return_dict_false_returns_a_tuple(tts):
    (images,) = tts(["a red circle", "a cat"], budget=8, seed=0, num_images_per_prompt=2, output_type="pt",
                    return_dict=False, **KW)
    assert images.shape == (4, 3, 32, 32)  # prompt-major, as diffusers orders a batch
    full = tts(["a red circle", "a cat"], budget=8, seed=0, num_images_per_prompt=2, output_type="pt", **KW)
    assert torch.equal(images, torch.cat([r.images for r in full]))


@pytest.mark.parametrize("round_size", [None, 1])
def test_callback_on_step_end_once_per_denoiser_call(tts, round_size):
    calls = []

    def cb(pipe, step, timestep, kwargs):
        calls.append((pipe, step, timestep, dict(kwargs)))
        return {}

    extra = {} if round_size is None else {"round_size": round_size}
    res = tts("a red circle", budget=8, seed=0, callback_on_step_end=cb, **extra, **KW)
    proc = tts.process(2, 3.0, height=32, width=32)
    rows = 4 if round_size is None else 1  # rows per denoiser call
    assert [c[1] for c in calls] == [0, 1] * (8 // (2 * rows))
    assert all(c[0] is tts for c in calls)
    assert all(torch.equal(torch.as_tensor(c[2]), proc.model_timesteps[c[1]]) for c in calls)
    assert [c[3]["nfe"] for c in calls] == list(range(rows, 9, rows)) and calls[-1][3]["nfe"] == res.nfe
    assert calls[-1][3]["max_nfe"] == 8


def test_progress_bar_config_silences_the_search_bar(tts, capsys):
    tts("a red circle", budget=4, seed=0, **{**KW, "progress": True})
    assert "NFE" in capsys.readouterr().err
    tts.set_progress_bar_config(disable=True)
    try:
        tts("a red circle", budget=4, seed=0, **{**KW, "progress": True})
        assert capsys.readouterr().err == ""
    finally:
        tts.set_progress_bar_config(disable=False)


def test_default_verifier_is_the_same_in_python_and_the_cli(tiny_pipe):
    """Oracle for the embedded shapes model (the CLI test checks its sidecar says so), CLIP
    for any other model; an explicit verifier wins."""
    assert TTSPipeline.from_pretrained().default_verifier == "oracle"
    assert TTSPipeline(tiny_pipe("sd15")).default_verifier == "clip"
    assert TTSPipeline(tiny_pipe("sd15"), verifier="brightness").default_verifier == "brightness"
