"""Search composes with what diffusers users turn on (issue 32): each pipeline's own decode
rule, and diffusers' model features under search (layerwise casting, cache hooks, LoRA,
offloading, regional compilation), on tiny random pipelines on the CPU.

Exact answers: the unwrapped diffusers pipeline with the same feature, the same seeds and
the same latents."""
from __future__ import annotations

import pytest
import torch

from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.testing.helpers import BrightnessVerifier
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


# ------------------------------------------------------------ 2. features under search
STEPS = 3


def _tts_kw(family: str) -> dict:
    call = pipeline_call_kwargs(family)
    out = {"height": call["height"], "width": call["width"]}
    if "max_sequence_length" in call:
        out["process_options"] = {"max_sequence_length": call["max_sequence_length"]}
    return out


class ImageRecorder(BrightnessVerifier):
    """Scores brightness and keeps every image it scored at full precision, in scoring order
    (the candidates' order), so a test compares pixels, not only scores."""

    def __init__(self):
        super().__init__()
        self.images = []

    def score(self, images, prompts):
        self.images.append(images.detach().float().cpu())
        return super().score(images, prompts)


def _search(pipe, family, n=2, steps=STEPS, **kw):
    """A best_of_n search; returns (result, the candidates' images at full precision)."""
    from tts_diffusion import TTSPipeline

    verifier = ImageRecorder()
    result = TTSPipeline(pipe, verifier=verifier)(PROMPT, budget=n * steps, num_inference_steps=steps,
                                                    guidance_scale=5.0, output_type="pt", progress=False,
                                                    **_tts_kw(family), **kw)
    return result, torch.cat(verifier.images)


def _plain_images(pipe, family, seeds, steps=STEPS):
    """The unwrapped pipeline's image for each seed."""
    return torch.cat([_pipe_call(pipe, family, seed=s, steps=steps, output_type="pt").float() for s in seeds])


def _assert_equals_plain(result, images, pipe, family, steps=STEPS, tol=1e-5):
    """Each candidate is the unwrapped pipeline's image for its seed (float32 noise only)."""
    plain = _plain_images(pipe, family, [c.seed for c in result.candidates], steps)
    assert (images - plain).abs().max().item() <= tol
    return plain


def _assert_differs(images, other, by=1e-4):
    """Guard: the feature changes the pixels by more than float noise."""
    assert (images - other).abs().max().item() > by


def _denoiser(pipe):
    return pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.unet


LAYERWISE = [("sd15", torch.bfloat16), ("sdxl", torch.bfloat16), ("pixart_sigma", torch.float8_e4m3fn),
             ("sd3", torch.bfloat16), ("flux", torch.float8_e4m3fn)]


@pytest.mark.parametrize("family,storage", LAYERWISE)
def test_layerwise_casting_search_equals_the_pipeline_with_it(family, storage):
    """`enable_layerwise_casting` (weights stored in fp8 / bf16, computed in float32): each
    candidate is the unwrapped pipeline's image for its seed with the same casting; the
    casting changes the images (guard)."""
    pipe = make_tiny_pipeline(family)
    _denoiser(pipe).enable_layerwise_casting(storage_dtype=storage, compute_dtype=torch.float32)
    result, images = _search(pipe, family)
    _assert_equals_plain(result, images, pipe, family)
    _assert_differs(images, _plain_images(make_tiny_pipeline(family), family, [c.seed for c in result.candidates]))


@pytest.mark.parametrize("family", ["sd15", "flux"])
@pytest.mark.parametrize("offload", ["model", "group"])
def test_offloading_is_exact(family, offload):
    """Model CPU offload and group offload move weights, not numbers: the search's candidates
    equal those without offloading (on the CPU both sides are the CPU: what this checks is the
    plumbing, hooks and execution device; the GPU memory and time are scripts/bench_features.py's)."""
    ref, ref_images = _search(make_tiny_pipeline(family), family)
    pipe = make_tiny_pipeline(family)
    if offload == "model":
        pipe.enable_model_cpu_offload(device="cpu")  # without device: diffusers needs an accelerator
    else:
        _denoiser(pipe).enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                                             offload_type="block_level", num_blocks_per_group=1)
    result, images = _search(pipe, family)
    assert [c.seed for c in result.candidates] == [c.seed for c in ref.candidates]
    assert torch.equal(images, ref_images) and torch.equal(result.images, ref.images)


def _tiny_lora(family, folder, alpha=16.0):
    """A random rank-4 LoRA on the denoiser's attention projections, saved as diffusers saves one."""
    peft = pytest.importorskip("peft")
    from peft.utils import get_peft_model_state_dict

    src = make_tiny_pipeline(family)
    den = _denoiser(src)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        den.add_adapter(peft.LoraConfig(r=4, lora_alpha=alpha, init_lora_weights=False,
                                        target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    key = "transformer_lora_layers" if getattr(src, "transformer", None) is not None else "unet_lora_layers"
    type(src).save_lora_weights(str(folder), **{key: get_peft_model_state_dict(den)})
    return str(folder)


@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd3", "flux"])
def test_lora_search_equals_the_pipeline_with_the_lora(family, tmp_path):
    """`load_lora_weights` (a tiny LoRA saved in the test) and then `fuse_lora`: the search's
    candidates are the unwrapped pipeline's with the same LoRA, fused or not, and differ from
    the pipeline without it (guard). PixArt pipelines have no LoRA loader in diffusers."""
    import diffusers

    folder = _tiny_lora(family, tmp_path)
    pipe = make_tiny_pipeline(family)
    level = diffusers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()  # "No LoRA keys associated to CLIPTextModel"
    try:
        pipe.load_lora_weights(folder)
    finally:
        diffusers.logging.set_verbosity(level)
    result, images = _search(pipe, family)
    _assert_equals_plain(result, images, pipe, family)
    _assert_differs(images, _plain_images(make_tiny_pipeline(family), family, [c.seed for c in result.candidates]))
    pipe.fuse_lora()
    fused, fused_images = _search(pipe, family)
    _assert_equals_plain(fused, fused_images, pipe, family)
    assert (fused_images - images).abs().max().item() <= 1e-5  # fusing is exact up to float rounding


# ---------------------------------------------------------- diffusers' cache hooks
def _cache_config(kind, pipe, steps=STEPS):
    from diffusers.hooks import (FasterCacheConfig, FirstBlockCacheConfig, MagCacheConfig,
                                 PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig)

    # settings that skip a lot at 3 steps, so a cache state leaking between candidates shows
    return {
        "first_block": lambda: FirstBlockCacheConfig(threshold=10.0),
        "taylorseer": lambda: TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1),
        "mag": lambda: MagCacheConfig(num_inference_steps=steps, mag_ratios=[1.0] * steps, threshold=10.0,
                                      max_skip_steps=steps, retention_ratio=0.0),
        "pab": lambda: PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 1001),
            current_timestep_callback=lambda: pipe.current_timestep),
        "faster": lambda: FasterCacheConfig(
            spatial_attention_block_skip_range=2, current_timestep_callback=lambda: pipe.current_timestep,
            is_guidance_distilled=True, tensor_format="BCHW"),
    }[kind]()


def _cached_flux(kind, steps=STEPS):
    pipe = make_tiny_pipeline("flux")  # the one family here whose denoiser has enable_cache
    pipe.transformer.enable_cache(_cache_config(kind, pipe, steps))
    return pipe


def _noise(pipe, family, seeds):
    return _proc(pipe, family, steps=STEPS).noise_from_seeds(seeds)


@pytest.mark.parametrize("kind", ["first_block", "taylorseer", "mag"])
def test_cache_search_equals_the_pipeline_per_candidate(kind):
    """max_batch=1, two rounds of two (each round a fresh population): every candidate is the
    unwrapped FluxPipeline's image for its seed with the same cache (each candidate its own
    cache context, the state dropped with every population); the cache changes the images
    (guard); a second search on the same model gives the same candidates (nothing left from
    the first call)."""
    pipe = _cached_flux(kind)
    result, images = _search(pipe, "flux", n=4, max_batch=1, round_size=2)
    assert result.settings["diffusers_cache"] == type(pipe.transformer._cache_config).__name__
    _assert_equals_plain(result, images, pipe, "flux")
    _assert_differs(images, _plain_images(make_tiny_pipeline("flux"), "flux", [c.seed for c in result.candidates]))
    again, again_images = _search(pipe, "flux", n=4, max_batch=1, round_size=2)
    assert torch.equal(again_images, images)


@pytest.mark.parametrize("kind", ["first_block", "taylorseer", "mag", "pab"])
def test_cache_chunk_equals_the_pipelines_batch(kind):
    """A cache decides for the whole batch it sees: a chunk of candidates (max_batch=3) is the
    unwrapped pipeline called on the same noise with num_images_per_prompt=3."""
    pipe = _cached_flux(kind)
    result, images = _search(pipe, "flux", n=3, max_batch=3)
    seeds = [c.seed for c in result.candidates]
    batch = _pipe_call(pipe, "flux", steps=STEPS, output_type="pt", latents=_noise(pipe, "flux", seeds),
                       num_images_per_prompt=3).float()
    assert (images - batch).abs().max().item() <= 1e-5


def test_cache_with_zero_order():
    """zero_order keeps trajectories whole (a pivot, then rounds of fresh neighbours): it runs
    with a cache, and its pivot is the cached pipeline's image for the pivot's seed."""
    pipe = _cached_flux("taylorseer")
    result, images = _search(pipe, "flux", n=3, searcher="zero_order", num_children=2, num_rounds=1, max_batch=1)
    assert len(result.candidates) == 3 and result.candidates[0].seed is not None
    plain = _plain_images(pipe, "flux", [result.candidates[0].seed])
    assert (images[:1] - plain).abs().max().item() <= 1e-5


def test_cache_state_is_dropped_with_every_population(monkeypatch):
    """Guard for the reset: with the drop disabled, the second round's candidates start from
    the first round's cache state and no longer equal the pipeline's."""
    from tts_diffusion.features import diffusers_cache

    pipe = _cached_flux("first_block")
    monkeypatch.setattr(diffusers_cache, "_drop_states", lambda model, prefix: None)
    result, images = _search(pipe, "flux", n=2, max_batch=1, round_size=1)
    plain = _plain_images(pipe, "flux", [c.seed for c in result.candidates])
    assert (images[:1] - plain[:1]).abs().max().item() <= 1e-5  # the first population starts clean
    _assert_differs(images[1:], plain[1:])


def _count_forwards(module):
    calls = []
    module.register_forward_pre_hook(lambda m, args: calls.append(1))
    return calls


@pytest.mark.parametrize("searcher,match", [("smc", "resamples or revisits"), ("paths", "resamples or revisits"),
                                            ("rbf", "resamples or revisits"), ("fkc", "resamples or revisits")])
def test_cache_with_a_resampling_searcher_is_refused_before_model_work(searcher, match):
    from tts_diffusion import TTSInputError

    pipe = _cached_flux("first_block")
    calls = _count_forwards(pipe.transformer)
    with pytest.raises(TTSInputError, match=match) as err:
        _search(pipe, "flux", n=8, searcher=searcher)
    assert "\n" not in str(err.value) and not calls


def test_cache_refusals_name_the_fix():
    from tts_diffusion import TTSInputError

    pipe = _cached_flux("first_block")
    calls = _count_forwards(pipe.transformer)
    with pytest.raises(TTSInputError, match="T-GATE and diffusers' cache"):
        _search(pipe, "flux", tgate=1)
    with pytest.raises(TTSInputError, match="rgba .* and diffusers' cache"):
        _search(pipe, "flux", rgba=True)
    with pytest.raises(TTSInputError, match="reward guidance runs the model more than once per step"):
        _search(pipe, "flux", reward_guidance={"preset": "dps"})
    assert not calls
    with pytest.raises(TTSInputError, match="one batch: raise max_batch to 4"):
        _search(_cached_flux("pab"), "flux", n=4, max_batch=2, round_size=4)  # a round over two batches
    with pytest.raises(TTSInputError, match="FasterCache is not supported"):
        _search(_cached_flux("faster"), "flux")
    with pytest.raises(TTSInputError, match="num_inference_steps=3"):
        _search(_cached_flux("mag", steps=5), "flux")
    assert not calls


def test_cache_refuses_moves_it_cannot_follow():
    """Through the process (a custom searcher): a selection that reorders rows, and a step
    that is not the next one of its rows, each raise one line; the identity selection passes."""
    from tts_diffusion import TTSInputError
    from tts_diffusion.features.diffusers_cache import enable_diffusers_cache

    pipe = _cached_flux("first_block")
    proc = _proc(pipe, "flux", steps=STEPS, max_batch=2).for_call()
    assert enable_diffusers_cache(proc) is not None
    cond = proc.encode(PROMPT)
    x = proc.noise_from_seeds([1, 2])
    pred = proc.denoise(x, 0, cond)
    x = proc.step(x, 0, pred)
    x = proc.select(torch.arange(2), x)  # nothing moves
    with pytest.raises(TTSInputError, match="cannot follow resampled particles"):
        proc.select(torch.tensor([1, 1]), x)
    with pytest.raises(TTSInputError, match="runs step 0 on rows 0-1 after step 0"):
        proc.denoise(proc.renoise(x, 1, 0), 0, cond)


def test_no_cache_no_feature():
    """Layerwise casting and group offloading install diffusers hooks too, but keep no state
    between calls: no cache feature, and the resampling searchers run."""
    from tts_diffusion.features.diffusers_cache import cache_name

    pipe = make_tiny_pipeline("flux")
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.bfloat16, compute_dtype=torch.float32)
    assert cache_name(pipe.transformer) is None
    result, _ = _search(pipe, "flux", n=4, searcher="smc")
    assert "diffusers_cache" not in result.settings


@pytest.mark.skipif(__import__("os").environ.get("TTS_TEST_COMPILE") != "1",
                    reason="about 20 s (FLUX) to 35 s (SD-1.5) of tracing on a busy 2-core CPU: TTS_TEST_COMPILE=1")
@pytest.mark.parametrize("family", ["sd15", "flux"])
def test_compile_repeated_blocks_search_equals_the_pipeline(family):
    """diffusers' regional compilation (`compile_repeated_blocks`, traced with aot_eager here;
    PixArt and SD3 have no `_repeated_blocks` in diffusers 0.42 and diffusers refuses them):
    the search's candidates are the compiled pipeline's own."""
    pipe = make_tiny_pipeline(family)
    _denoiser(pipe).compile_repeated_blocks(backend="aot_eager", dynamic=False)
    result, images = _search(pipe, family, n=2, steps=2)
    _assert_equals_plain(result, images, pipe, family, steps=2)


def test_offloaded_pipeline_is_not_moved():
    """An offloading pipeline moves its models itself: `TTSPipeline.to("cuda")` is refused with
    one line that says so (before any device check), `.to("cpu")` and plain pipelines are not."""
    from tts_diffusion import TTSInputError, TTSPipeline
    from tts_diffusion.pipelines.checks import offloading

    plain = make_tiny_pipeline("sd15")
    assert offloading(plain) is None
    TTSPipeline(plain).to("cpu")
    model = make_tiny_pipeline("sd15")
    model.enable_model_cpu_offload(device="cpu")
    group = make_tiny_pipeline("sd15")
    group.unet.enable_group_offload(onload_device=torch.device("cpu"), offload_type="leaf_level")
    for pipe, name in ((model, "model CPU offloading"), (group, "group offloading")):
        assert offloading(pipe) == name
        with pytest.raises(TTSInputError, match=f"the pipeline has {name} on: it moves each model to cuda itself"):
            TTSPipeline(pipe).to("cuda")
        TTSPipeline(pipe).to("cpu")
