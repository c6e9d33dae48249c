"""Preview decoding of intermediate rewards (core/preview.py): a search's intermediate
latents go through the preview decoder, its final candidates through the full VAE; with the
model's own VAE as the "preview", the search is exactly the plain one."""
from __future__ import annotations

import pytest
import torch

from tts_diffusion import Budget, TTSInputError
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.searchers import load_searcher
from tts_diffusion.testing.helpers import BrightnessVerifier

STEPS = 3


def _smc(proc):
    return load_searcher("smc")(proc, BrightnessVerifier(), "a red circle", Budget(2 * STEPS),
                                torch.Generator().manual_seed(0), num_particles=2)


def _proc(pipe, preview=None):
    return DenoisingProcess.from_pipeline(pipe, STEPS, 4.0, height=32, width=32, max_batch=4, preview_decoder=preview)


def _counting(module):
    calls = []
    decode = module.decode

    def counted(z, *a, **k):
        calls.append(z.shape[0])
        return decode(z, *a, **k)

    module.decode = counted
    return calls


def test_own_vae_as_preview_gives_the_plain_search(tiny_pipe):
    pipe = tiny_pipe("sd15")
    plain, same = _smc(_proc(pipe)), _smc(_proc(pipe, preview=pipe.vae))
    assert [c.score for c in same.candidates] == [c.score for c in plain.candidates]
    assert torch.equal(same.best.image, plain.best.image)


def test_tiny_decoder_scores_intermediates_full_vae_decodes_finals(tiny_pipe, tmp_path):
    from diffusers import AutoencoderTiny

    pipe = tiny_pipe("sd15")
    torch.manual_seed(0)
    tiny = AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                           num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1),
                           latent_channels=pipe.vae.config.latent_channels)
    tiny.save_pretrained(tmp_path)
    proc = _proc(pipe, preview=str(tmp_path))
    assert isinstance(proc.preview_decoder, AutoencoderTiny)
    tiny_calls = _counting(proc.preview_decoder)
    full_calls = _counting(pipe.vae)
    try:
        res = _smc(proc)
        in_preview_run = list(full_calls)
        plain = _smc(_proc(pipe))
    finally:
        del pipe.vae.decode  # the cached pipeline's own method again
    assert sum(tiny_calls) > 0  # potentials on Tweedie estimates: previews
    assert in_preview_run == [2]  # only the 2 final particles: one full decode
    assert sum(full_calls) > 2  # without a preview decoder the potentials are full decodes too
    assert res.best.image.shape == plain.best.image.shape


def test_bad_preview_decoder_is_refused(tiny_pipe, tmp_path):
    with pytest.raises(TTSInputError, match="config.json"):
        _proc(tiny_pipe("sd15"), preview=str(tmp_path / "missing"))
    with pytest.raises(TTSInputError, match="folder path or a VAE-like module"):
        _proc(tiny_pipe("sd15"), preview=3)
