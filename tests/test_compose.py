"""Search composes with what diffusers users turn on (issue 32): each pipeline's own decode
rule, and diffusers' model features under search (layerwise casting, cache hooks, LoRA,
offloading, regional compilation), on tiny random pipelines on the CPU.

Exact answers: the unwrapped diffusers pipeline with the same feature, the same seeds and
the same latents."""
from __future__ import annotations

import pytest
import torch

from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline, pipeline_call_kwargs

PROMPT = "a red circle"
DECODE_FAMILIES = ("sd15", "sdxl", "pixart_sigma", "sd3", "flux")


def _quiet_fp16(pipe):
    import diffusers

    level = diffusers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()  # "modules that should be kept in float32: []"
    try:
        return pipe.to(dtype=torch.float16)
    finally:
        diffusers.logging.set_verbosity(level)


def _proc(pipe, family, steps=2, guidance=5.0, **kw):
    call = pipeline_call_kwargs(family)
    return DenoisingProcess.from_pipeline(pipe, steps, guidance, height=call["height"], width=call["width"],
                                          max_sequence_length=call.get("max_sequence_length"), **kw)


def _pipe_call(pipe, family, seed=0, steps=2, guidance=5.0, **over):
    return pipe(prompt=PROMPT, num_inference_steps=steps, guidance_scale=guidance,
                generator=torch.Generator().manual_seed(seed), **{**pipeline_call_kwargs(family), **over}).images


# ------------------------------------------------------------------ 1. decode rule
@pytest.mark.parametrize("family", DECODE_FAMILIES)
def test_decode_follows_the_pipelines_own_rule_in_fp16(family):
    """An fp16 pipeline: the toolkit's decode of the pipeline's own final latents is the
    pipeline's own output_type="pt" image, bit for bit. SDXL upcasts its VAE to float32
    (`force_upcast`); SD 1.5, PixArt, SD3 and FLUX decode in fp16 (issue 32: the process
    upcast them all, 0.95 s of 8 images at 1024 px on an H100)."""
    pipe = _quiet_fp16(make_tiny_pipeline(family))
    assert pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast
    latents = _pipe_call(pipe, family, output_type="latent")
    ref = _pipe_call(pipe, family, output_type="pt")
    proc = _proc(pipe, family)
    mine = proc.decode(latents)
    assert mine.dtype == torch.float32 and mine.shape == ref.shape
    assert torch.equal(mine, ref.float())
    assert pipe.vae.dtype == torch.float16  # an upcast VAE goes back to fp16
    # guard: the other rule gives other pixels (the check can fail)
    proc.adapter.upcasts_vae = not proc.adapter.upcasts_vae
    assert not torch.equal(proc.decode(latents), ref.float())


def test_sdxl_without_force_upcast_decodes_in_fp16():
    pipe = _quiet_fp16(make_tiny_pipeline("sdxl"))
    pipe.vae.register_to_config(force_upcast=False)  # e.g. the fp16-fix VAE
    latents = _pipe_call(pipe, "sdxl", output_type="latent")
    ref = _pipe_call(pipe, "sdxl", output_type="pt")
    assert ref.dtype == torch.float16
    assert torch.equal(_proc(pipe, "sdxl").decode(latents), ref.float())
