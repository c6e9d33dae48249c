"""Checks for the tiny offline pipelines in ``tts_diffusion/testing/tiny_pipelines.py`` (whole file: a few seconds)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from tts_diffusion.testing.tiny_pipelines import (  # noqa: E402
    DEFAULT_SIZE,
    FAMILIES,
    SIZE_MULTIPLE,
    clip_tokenizer,
    make_tiny_pipeline,
    pipeline_call_kwargs,
    t5_tokenizer,
)

PROMPT = "a red circle"


@pytest.fixture(autouse=True, scope="module")
def _single_intra_op_thread():
    """One intra-op thread: on a shared 2-core box, 2 OpenMP threads are 10-40x slower here
    (spin-wait contention), and the thread count also changes float reduction order."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _run(pipe, family, seed=0, steps=2, output_type="pt", **overrides):
    # guidance_scale > 1: CFG on (FLUX: the embedded guidance value; true CFG needs true_cfg_scale).
    kwargs = {"guidance_scale": 5.0, **pipeline_call_kwargs(family), **overrides}
    return pipe(
        prompt=PROMPT,
        num_inference_steps=steps,
        output_type=output_type,
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    ).images


def test_clip_tokenizer_offline(tmp_path):
    tok = clip_tokenizer(tmp_path)
    assert (tmp_path / "clip_bpe_1000" / "vocab.json").exists()
    assert tok.model_max_length == 77
    ids = tok(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids[0]
    assert ids.shape == (77,)
    assert ids[0] == tok.bos_token_id
    body = ids[1 : list(ids).index(tok.eos_token_id)].tolist()
    assert len(body) >= 3 and len(set(body)) >= 3, body
    assert tok.unk_token_id not in body
    assert tok.batch_decode(ids[None], skip_special_tokens=True)[0].strip() == PROMPT
    # Same ids from the default (per-process) cache; OpenCLIP-style "!" padding variant.
    assert tok(PROMPT).input_ids == clip_tokenizer()(PROMPT).input_ids
    tok_bang = clip_tokenizer(pad_token="!")
    padded = tok_bang(PROMPT, padding="max_length", max_length=12).input_ids
    assert padded[-1] == tok_bang.convert_tokens_to_ids("!") != tok_bang.eos_token_id


def test_t5_tokenizer_offline():
    tok = t5_tokenizer()
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    enc = tok(PROMPT, padding="max_length", max_length=8, truncation=True, add_special_tokens=True, return_tensors="pt")
    ids = enc.input_ids[0].tolist()
    assert ids[:4] == ids[:3] + [1] and ids[4:] == [0] * 4, ids
    assert len(set(ids[:3])) == 3 and min(ids[:3]) > 2, ids
    assert enc.attention_mask[0].tolist() == [1] * 4 + [0] * 4
    assert tok.batch_decode(enc.input_ids, skip_special_tokens=True) == [PROMPT]
    # Unknown words fall back to characters instead of <unk>.
    assert 2 not in tok("Zyxwv QUUX").input_ids


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_pipeline_runs_and_is_deterministic(family):
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    pipe = make_tiny_pipeline(family, seed=0)
    assert torch.equal(torch.rand(3), expected_next), "building must not disturb the global RNG"
    assert pipe.device.type == "cpu"

    out = _run(pipe, family)
    assert out.shape == (1, 3, DEFAULT_SIZE, DEFAULT_SIZE)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert float(out.std()) > 1e-3

    # Same seed -> bit-identical pipeline and output; repeated call on the same pipe too.
    assert torch.equal(_run(make_tiny_pipeline(family, seed=0), family), out)
    assert torch.equal(_run(pipe, family), out)
    # The output really depends on the prompt and on the build seed.
    other_prompt = pipe(
        prompt="a blue square", num_inference_steps=2, guidance_scale=5.0, output_type="pt",
        generator=torch.Generator().manual_seed(0), **pipeline_call_kwargs(family),
    ).images
    assert not torch.allclose(other_prompt, out)
    assert not torch.allclose(_run(make_tiny_pipeline(family, seed=1), family), out)


@pytest.mark.parametrize("family", FAMILIES)
def test_non_square_legal_size(family):
    m = SIZE_MULTIPLE[family]
    height, width = 3 * m, 5 * m if m == 8 else 9 * m  # 24x40 (multiple of 8) / 12x36 (multiple of 4)
    pipe = make_tiny_pipeline(family)
    out = _run(pipe, family, steps=1, height=height, width=width)
    assert out.shape == (1, 3, height, width)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError):
        pipeline_call_kwargs(family, height=height + m // 2, width=width)


def test_flux_true_cfg_changes_output():
    pipe = make_tiny_pipeline("flux")
    plain = _run(pipe, "flux")
    true_cfg = _run(pipe, "flux", true_cfg_scale=2.0, negative_prompt="blurry")
    assert not torch.allclose(plain, true_cfg)
    # The embedded guidance value is a real input of the FLUX-dev-like transformer.
    assert not torch.allclose(plain, _run(pipe, "flux", guidance_scale=1.0))


def test_pipeline_call_kwargs():
    assert pipeline_call_kwargs("sd15") == {"height": DEFAULT_SIZE, "width": DEFAULT_SIZE}
    px = pipeline_call_kwargs("pixart_sigma")
    assert px["use_resolution_binning"] is False and px["clean_caption"] is False
    assert "max_sequence_length" in pipeline_call_kwargs("sd3")
    assert "max_sequence_length" in pipeline_call_kwargs("flux")
    with pytest.raises(ValueError):
        pipeline_call_kwargs("nope")
    with pytest.raises(ValueError):
        make_tiny_pipeline("nope")
