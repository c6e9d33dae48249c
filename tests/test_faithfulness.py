"""With eta = 0 and no search, the process reproduces each wrapped pipeline's own output.

Tolerance: max |process - pipeline| <= 1e-5 * max |pipeline| + 1e-5 on the final latents
(float32 on CPU; the two differ only by the order of float operations) and 1e-5 on the
decoded images in [0, 1]."""
import pytest
import torch

from tiny_pipelines import FAMILIES, pipeline_call_kwargs
from tts_diffusion.core.process import DenoisingProcess

PROMPT = "a red circle"
STEPS = 4


def _close(a, b, rel=1e-5):
    return (a - b).abs().max().item() <= rel * b.abs().max().item() + 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_process_reproduces_pipeline(tiny_pipe, family):
    pipe = tiny_pipe(family)
    kw = pipeline_call_kwargs(family)
    proc = DenoisingProcess.from_pipeline(pipe, STEPS, 5.0, height=kw["height"], width=kw["width"],
                                          max_sequence_length=kw.get("max_sequence_length"))
    seed = 1234
    call = dict(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=5.0, **kw)
    ref = pipe(generator=torch.Generator().manual_seed(seed), output_type="latent", **call).images
    ref_img = pipe(generator=torch.Generator().manual_seed(seed), output_type="pt", **call).images

    cond = proc.encode(PROMPT)
    x, pred = proc.sample(proc.noise_from_seeds([seed]), cond)
    assert x.shape == ref.shape
    assert _close(x, ref), (x - ref).abs().max()
    img = proc.decode(x)
    assert img.shape == ref_img.shape and img.min() >= 0 and img.max() <= 1
    assert (img - ref_img).abs().max() <= 1e-5
    # CFG halves are returned and combine to the guided output
    if proc.do_cfg:
        guided = pred.uncond_out + proc.cfg_scale * (pred.cond_out - pred.uncond_out)
        assert torch.allclose(guided, pred.out, atol=1e-6)


@pytest.mark.parametrize("family", ["sd15", "flux"])
def test_chunking_does_not_change_results(tiny_pipe, family):
    pipe = tiny_pipe(family)
    kw = pipeline_call_kwargs(family)
    outs = []
    for max_batch in (1, 2, 5):
        proc = DenoisingProcess.from_pipeline(pipe, 3, 4.0, height=kw["height"], width=kw["width"],
                                              max_sequence_length=kw.get("max_sequence_length"), max_batch=max_batch)
        x, _ = proc.sample(proc.noise_from_seeds([1, 2, 3, 4, 5]), proc.encode(PROMPT))
        outs.append(x)
    for o in outs[1:]:  # batched matmuls may round differently: float32 noise only
        assert _close(o, outs[0]), (o - outs[0]).abs().max()


def test_guidance_off_skips_uncond(tiny_pipe):
    pipe = tiny_pipe("sd15")
    proc = DenoisingProcess.from_pipeline(pipe, 2, 1.0, height=32, width=32)
    assert not proc.do_cfg
    pred = proc.denoise(proc.sample_noise(2, torch.Generator().manual_seed(0)), 0, proc.encode(PROMPT))
    assert pred.cond_out is None and pred.uncond_out is None


def test_flow_dpm_solver_first_order_matches(tiny_pipe):
    """A DDPM-family solver configured for flow models (DPM-Solver++ with flow sigmas, as
    the embedded shapes model and Sana use) is wrapped as a flow process; at first order it
    is Euler, so the process matches the pipeline."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline

    base = tiny_pipe("pixart_sigma")
    sched = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.5,
                                        solver_order=1, final_sigmas_type="zero")
    pipe = PixArtSigmaPipeline(**{**base.components, "scheduler": sched})
    pipe.set_progress_bar_config(disable=True)
    kw = pipeline_call_kwargs("pixart_sigma")
    proc = DenoisingProcess.from_pipeline(pipe, STEPS, 3.0, height=kw["height"], width=kw["width"],
                                          max_sequence_length=kw["max_sequence_length"])
    assert proc.family.kind == "flow"
    ref = pipe(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=3.0, output_type="latent",
               generator=torch.Generator().manual_seed(3), **kw).images
    x, _ = proc.sample(proc.noise_from_seeds([3]), proc.encode(PROMPT))
    assert _close(x, ref, rel=1e-4), (x - ref).abs().max()
