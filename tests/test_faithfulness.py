"""With eta = 0 and no search, the process reproduces each wrapped pipeline's own output,
with the scheduler the pipeline carries (core/schedulers.py).

Tolerance: max |process - pipeline| <= 1e-5 * max |pipeline| + 1e-5 on the final latents
(float32 on CPU; the two differ only by the order of float operations) and 1e-5 on the
decoded images in [0, 1]."""
import warnings

import diffusers
import pytest
import torch

from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.testing.tiny_pipelines import FAMILIES, pipeline_call_kwargs

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


# --------------------------------------------- the pipeline's own scheduler (issue 16)
#: scheduler name -> (diffusers class, config overrides); built from the tiny pipeline's
#: noise schedule (SD 1.5's scaled-linear betas, "leading" spacing, steps_offset 1)
VP_SCHEDULERS = {
    "pndm": ("PNDMScheduler", dict(skip_prk_steps=True)),  # SD 1.5's shipped scheduler
    "euler": ("EulerDiscreteScheduler", {}),  # SDXL's
    "euler_trailing": ("EulerDiscreteScheduler", dict(timestep_spacing="trailing")),
    "euler_karras": ("EulerDiscreteScheduler", dict(use_karras_sigmas=True)),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_1": ("DPMSolverMultistepScheduler", dict(solver_order=1)),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", dict(solver_order=2)),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", dict(solver_order=3)),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", dict(solver_order=2, use_karras_sigmas=True)),
    "dpm_2m": ("DPMSolverMultistepScheduler", dict(solver_order=2, algorithm_type="dpmsolver", final_sigmas_type="sigma_min")),
    "dpmpp_1s": ("DPMSolverSinglestepScheduler", dict(solver_order=1)),
    "dpmpp_2s": ("DPMSolverSinglestepScheduler", dict(solver_order=2)),
    "dpmpp_2s_karras": ("DPMSolverSinglestepScheduler", dict(solver_order=2, use_karras_sigmas=True)),
    "unipc": ("UniPCMultistepScheduler", {}),
    "unipc_karras": ("UniPCMultistepScheduler", dict(use_karras_sigmas=True)),
}
FLOW_SCHEDULERS = {
    "flow_dpmpp_2m": ("DPMSolverMultistepScheduler", dict(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                           flow_shift=1.5, solver_order=2, final_sigmas_type="zero")),
    "flow_dpmpp_2s": ("DPMSolverSinglestepScheduler", dict(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                            flow_shift=1.5, solver_order=2, final_sigmas_type="zero")),
    "flow_unipc": ("UniPCMultistepScheduler", dict(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                   flow_shift=1.5, final_sigmas_type="zero")),
}


def with_scheduler(base, cls_name, overrides):
    sched = getattr(diffusers, cls_name).from_config({**base.scheduler.config, **overrides})
    pipe = type(base)(**{**base.components, "scheduler": sched})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_both(pipe, family, seed, steps=STEPS, guidance=5.0, **proc_kw):
    kw = pipeline_call_kwargs(family)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a supported scheduler is reproduced without a warning
        proc = DenoisingProcess.from_pipeline(pipe, steps, guidance, height=kw["height"], width=kw["width"],
                                              max_sequence_length=kw.get("max_sequence_length"), **proc_kw)
    ref = pipe(prompt=PROMPT, num_inference_steps=steps, guidance_scale=guidance, output_type="latent",
               generator=torch.Generator().manual_seed(seed), **kw).images
    x, _ = proc.sample(proc.noise_from_seeds([seed]), proc.encode(PROMPT))
    return proc, x, ref


@pytest.mark.parametrize("name", list(VP_SCHEDULERS))
def test_pipeline_scheduler_is_reproduced(tiny_pipe, name):
    """For each scheduler, the process's eta = 0 path is `pipe(...)` for the same seed
    (Euler ancestral included: its step noise continues the seed's generator)."""
    cls_name, over = VP_SCHEDULERS[name]
    pipe = with_scheduler(tiny_pipe("sd15"), cls_name, over)
    proc, x, ref = run_both(pipe, "sd15", seed=11)
    assert proc.stepping is not None and proc.num_steps == len(pipe.scheduler.timesteps)
    assert _close(x, ref), (name, (x - ref).abs().max().item())


@pytest.mark.parametrize("name", list(FLOW_SCHEDULERS))
def test_flow_pipeline_scheduler_is_reproduced(tiny_pipe, name):
    cls_name, over = FLOW_SCHEDULERS[name]
    base = tiny_pipe("pixart_sigma")
    sched = getattr(diffusers, cls_name)(**over)
    pipe = type(base)(**{**base.components, "scheduler": sched})
    pipe.set_progress_bar_config(disable=True)
    proc, x, ref = run_both(pipe, "pixart_sigma", seed=5, guidance=3.0)
    assert proc.family.kind == "flow"
    assert _close(x, ref, rel=1e-4), (name, (x - ref).abs().max().item())


@pytest.mark.parametrize("family,cls_name,over", [
    ("sdxl", "EulerDiscreteScheduler", {}),  # SDXL's shipped scheduler
    ("pixart_sigma", "DPMSolverMultistepScheduler", dict(solver_order=2)),  # PixArt-Sigma's
    ("sd21v", "DPMSolverMultistepScheduler", dict(solver_order=2)),  # v-prediction through DPM-Solver++
    ("sd21v", "EulerDiscreteScheduler", {}),
])
def test_shipped_schedulers_of_other_families(tiny_pipe, family, cls_name, over):
    pipe = with_scheduler(tiny_pipe(family), cls_name, over)
    _, x, ref = run_both(pipe, family, seed=2, guidance=4.0)
    assert _close(x, ref, rel=1e-4), (x - ref).abs().max()


# ------------------------------------------------------ history as per-particle state
HISTORY_SCHEDULERS = ["dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "unipc", "pndm", "heun", "euler_ancestral"]


def sd15_proc(tiny_pipe, name, steps=5, **kw):
    cls_name, over = VP_SCHEDULERS[name]
    pipe = with_scheduler(tiny_pipe("sd15"), cls_name, over)
    return DenoisingProcess.from_pipeline(pipe, steps, 4.0, height=32, width=32, **kw)


@pytest.mark.parametrize("name", HISTORY_SCHEDULERS)
def test_history_follows_selection(tiny_pipe, name):
    """Three particles through a multistep solver with a selection in the middle (one
    dropped, one duplicated): each surviving particle equals the same particle run alone."""
    proc = sd15_proc(tiny_pipe, name)
    cond = proc.encode(PROMPT)
    seeds = [7, 8, 9]
    x = proc.noise_from_seeds(seeds)
    cut = 3 if name in ("pndm", "heun") else 2  # after the corrector points
    x, _ = proc.sample(x, cond, end=cut)
    idx = torch.tensor([2, 0, 0])
    x = proc.select(idx, x)
    x, _ = proc.sample(x, cond, start=cut)
    for row, parent in enumerate(idx.tolist()):
        alone, _ = proc.sample(proc.noise_from_seeds([seeds[parent]]), cond)
        if name == "euler_ancestral" and row == 2:
            # a duplicate draws its own noise stream from the selection on: it must differ
            assert not _close(x[row:row + 1], alone)
            continue
        assert _close(x[row:row + 1], alone), (name, row, (x[row] - alone[0]).abs().max())


@pytest.mark.parametrize("name", ["dpmpp_3m", "unipc", "pndm"])
def test_history_is_invariant_to_max_batch(tiny_pipe, name):
    outs = []
    for max_batch in (1, 2, 5):
        proc = sd15_proc(tiny_pipe, name, steps=4, max_batch=max_batch)
        x, _ = proc.sample(proc.noise_from_seeds([1, 2, 3]), proc.encode(PROMPT))
        outs.append(x)
    for o in outs[1:]:
        assert _close(o, outs[0]), (o - outs[0]).abs().max()


@pytest.mark.parametrize("name", ["dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "unipc", "pndm", "heun", "euler"])
def test_jump_restarts_with_a_first_order_step(tiny_pipe, name):
    """After `renoise` the history no longer describes x: the next ODE step is the
    scheduler's first-order step, which for all of these is DDIM on the same grid (the
    family's own ODE step); without the jump it is the higher-order step, which differs.
    Heun's history lives on its corrector points (odd): there a restart keeps x."""
    proc = sd15_proc(tiny_pipe, name)
    cond = proc.encode(PROMPT)
    i = 3  # Heun: a corrector point; PNDM: a PLMS point after the warm-up
    x, _ = proc.sample(proc.noise_from_seeds([4, 5]), cond, end=i)
    pred = proc.denoise(x, i, cond)
    ddim = proc.family.ode_step(x, i, pred.out, pred.x0, pred.eps)
    entry_sch = proc.call.get("scheduler")
    assert entry_sch.at == i
    higher = proc.step(x, i, pred)
    if name != "euler":  # Euler has no history: its step is DDIM anyway
        assert not _close(higher, ddim, rel=1e-4)
    y = proc.renoise(x, i, i, noise=torch.zeros_like(x))  # a jump of length zero
    assert torch.equal(y, x)
    first = proc.step(y, i, pred)
    if name == "heun":
        assert proc.stepping.corrector[i] and torch.equal(first, y)
        assert proc.call.get("scheduler").at is None  # and the next point restarts too
        return
    assert _close(first, ddim), (first - ddim).abs().max()


def test_stochastic_steps_use_the_family_sde(tiny_pipe):
    proc = sd15_proc(tiny_pipe, "dpmpp_2m")
    cond = proc.encode(PROMPT)
    x, _ = proc.sample(proc.noise_from_seeds([1, 2]), cond, end=2)
    pred = proc.denoise(x, 2, cond)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    mean, std = proc.family.transition(x, 2, pred.out, pred.x0, pred.eps, 0.6)
    assert std > 0 and torch.allclose(proc.step(x, 2, pred, eta=0.6, noise=z), mean + std * z)
    assert proc.call.get("scheduler").at is None  # the next ODE step restarts its history


class CustomScheduler(diffusers.DDIMScheduler):
    """A user's scheduler class the process does not know."""


@pytest.mark.parametrize("cls_name", ["LCMScheduler", "DDPMScheduler", "custom"])
def test_unreproducible_scheduler_warns_once_and_uses_ddim(tiny_pipe, cls_name):
    base = tiny_pipe("sd15")
    cls = CustomScheduler if cls_name == "custom" else getattr(diffusers, cls_name)
    pipe = type(base)(**{**base.components, "scheduler": cls.from_config(base.scheduler.config)})
    with pytest.warns(UserWarning) as record:
        proc = DenoisingProcess.from_pipeline(pipe, 3, 4.0, height=32, width=32)
    ours = [w for w in record if "cannot be reproduced" in str(w.message)]
    assert len(ours) == 1 and type(pipe.scheduler).__name__ in str(ours[0].message)
    assert "DDIM" in str(ours[0].message)
    assert proc.stepping is None
    ddim = DenoisingProcess.from_pipeline(base, 3, 4.0, height=32, width=32)
    cond = proc.encode(PROMPT)
    x, _ = proc.sample(proc.noise_from_seeds([3]), cond)
    y, _ = ddim.sample(ddim.noise_from_seeds([3]), ddim.encode(PROMPT))
    assert torch.equal(x, y)


def test_call_views_keep_their_own_history(tiny_pipe):
    """`for_call` views (one per TTSPipeline call) do not share scheduler history."""
    proc = sd15_proc(tiny_pipe, "dpmpp_2m", steps=4)
    cond = proc.encode(PROMPT)
    a, b = proc.for_call(), proc.for_call()
    xa = a.noise_from_seeds([1])
    xb = b.noise_from_seeds([2, 3])
    for i in range(4):  # interleaved
        xa = a.step(xa, i, a.denoise(xa, i, cond))
        xb = b.step(xb, i, b.denoise(xb, i, cond))
    ref_a, _ = proc.sample(proc.noise_from_seeds([1]), cond)
    ref_b, _ = proc.sample(proc.noise_from_seeds([2, 3]), cond)
    assert _close(xa, ref_a) and _close(xb, ref_b)


def test_unreproducible_flow_scheduler_warns_and_uses_euler(tiny_pipe):
    """A flow scheduler the process cannot step like (FlowMatch Heun) gets the warning and
    Euler on its sigmas."""
    base = tiny_pipe("sd3")
    kw = pipeline_call_kwargs("sd3")
    pipe = type(base)(**{**base.components,
                         "scheduler": diffusers.FlowMatchHeunDiscreteScheduler.from_config(base.scheduler.config)})
    with pytest.warns(UserWarning, match="FlowMatchHeunDiscreteScheduler.*Euler"):
        proc = DenoisingProcess.from_pipeline(pipe, 3, 4.0, height=kw["height"], width=kw["width"],
                                              max_sequence_length=kw["max_sequence_length"])
    assert proc.stepping is None and proc.family.kind == "flow"


@pytest.mark.parametrize("name", ["euler", "euler_karras", "heun", "dpmpp_2m_karras", "dpmpp_2s", "unipc", "pndm"])
def test_family_grid_is_the_schedulers(tiny_pipe, name):
    """`proc.family` describes the time points the scheduler visits (what searchers use for
    x0, renoise and SDE steps): sigma = s / a at every grid point, and the Tweedie x0 of a
    prediction equals the scheduler's own x0 estimate."""
    proc = sd15_proc(tiny_pipe, name, steps=4)
    sch = proc.stepping.template
    fam = proc.family
    ratio = torch.tensor([fam.s(i) / fam.a(i) for i in range(fam.num_steps + 1)], dtype=torch.float64)
    if name == "pndm":
        ab = sch.alphas_cumprod.double()[[int(t) for t in sch.timesteps]]
        assert torch.allclose(ratio[:-1], ((1 - ab) / ab).sqrt(), rtol=1e-6)
    else:
        assert torch.allclose(ratio, sch.sigmas.double(), rtol=1e-5, atol=1e-6)
    cond = proc.encode(PROMPT)
    x = proc.noise_from_seeds([6, 7])
    pred = proc.denoise(x, 0, cond)
    if name == "pndm":  # PNDM never forms x0; its grid is checked above
        return
    work = proc.stepping.fresh(0)
    if hasattr(sch, "convert_model_output"):  # DPM-Solver / UniPC's data prediction
        x0 = work.convert_model_output(pred.out, sample=x)
    else:  # Euler, Heun: the step's pred_original_sample on x_ve = x / a
        x0 = work.step(pred.out, sch.timesteps[0], x / fam.a(0)).pred_original_sample
    assert _close(pred.x0, x0, rel=1e-5), (pred.x0 - x0).abs().max()
