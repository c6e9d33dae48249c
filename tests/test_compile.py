"""`compile=True`: the denoiser and VAE decoder run under torch.compile and the search
returns what the eager pipeline returns (fp32 on the CPU, a tiny SD-1.5 pipeline). With
T-GATE the denoiser compiles one graph per T-GATE phase, without graph breaks, and a second
search compiles nothing (issue 13: per-step state read inside the graph made dynamo
recompile every step until it gave up and ran the model eagerly).

The quick check traces with the "aot_eager" backend (graph capture and the in-place
wiring, seconds); the same check with inductor's generated kernels takes about 4 minutes on
a busy 2-core CPU and runs when TTS_TEST_INDUCTOR=1."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from tts_diffusion import TGate, TTSInputError, TTSPipeline
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.features.tgate import enable_tgate
from tts_diffusion.pipelines.alfie import prepare_rgba
from tts_diffusion.pipelines.compile import compile_pipeline, denoiser_of, is_compiled
from tts_diffusion.testing.helpers import BrightnessVerifier
from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline, pipeline_call_kwargs


def _inductor_ready() -> bool:
    return shutil.which("cc") is not None or shutil.which("gcc") is not None


BACKENDS = [
    "aot_eager",
    pytest.param("inductor", marks=[
        pytest.mark.skipif(os.environ.get("TTS_TEST_INDUCTOR") != "1", reason="slow on a CPU: TTS_TEST_INDUCTOR=1"),
        pytest.mark.skipif(not _inductor_ready(), reason="no C compiler for torch inductor on the CPU")]),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_search_equals_eager(backend):
    kw = dict(searcher="best_of_n", budget=6, num_inference_steps=2, output_type="pt", progress=False,
              **pipeline_call_kwargs("sd15"))
    eager = TTSPipeline(make_tiny_pipeline("sd15"), verifier=BrightnessVerifier())
    fast = TTSPipeline(make_tiny_pipeline("sd15"), verifier=BrightnessVerifier()).compile(True, backend=backend)
    assert is_compiled(denoiser_of(fast.pipe)) and is_compiled(fast.pipe.vae.decoder)
    assert not is_compiled(denoiser_of(eager.pipe))
    try:
        a = eager("a red circle", **kw)
        b = fast("a red circle", **kw)
        c = fast("a red circle", **kw)  # the second call reuses the compiled shapes
    except Exception as e:  # noqa: BLE001  (a broken inductor toolchain, not a wrong result)
        if "CppCompileError" in type(e).__name__ or "InductorError" in type(e).__name__:
            pytest.skip(f"torch inductor cannot compile here: {str(e)[:200]}")
        raise
    assert [x.score for x in b.candidates] == pytest.approx([x.score for x in a.candidates], abs=1e-4)
    assert (b.images - a.images).abs().max() <= 1 / 255 + 1e-6  # 8-bit candidates: at most one level apart
    assert torch.equal(b.images, c.images)


@pytest.mark.parametrize("bad", ["fast", 1.5, "max_autotune"])
def test_bad_compile_mode_is_refused(bad):
    with pytest.raises(TTSInputError, match="compile must be"):
        TTSPipeline(make_tiny_pipeline("sd15"), compile=bad)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_compiled_tgate_search_compiles_once_per_phase_without_graph_breaks(backend_name):
    """A gated best-of-4 in two equal chunks (max_batch 2) under a counting backend (aot_eager;
    inductor's generated kernels with TTS_TEST_INDUCTOR=1):
    the denoiser compiles one graph per T-GATE phase (here 4: before the gate self-attention
    cached / reused, the gate, after the gate; each phase has one batch shape), less the
    phases that run alike (caching self-attention before the gate and caching both at the
    gate: the hooks branch only on what they reuse), so 3, and the VAE decoder one, nothing
    breaks the graphs, a second identical search compiles nothing, and the result is the
    eager gated search's."""
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters

    steps, tg = 5, TGate(gate_step=3, sp_interval=2, fi_interval=1, warm_up=0)
    assert len(tg.phases(steps)) == 4  # the plan exercises self-attention reuse before and cross-attention reuse after
    phases = tg.model_phases(steps)
    assert len(phases) == 3
    kw = dict(searcher="best_of_n", budget=4 * steps, num_inference_steps=steps, max_batch=2, tgate=tg,
              output_type="pt", progress=False, **pipeline_call_kwargs("sd15"))
    eager = TTSPipeline(make_tiny_pipeline("sd15"), verifier=BrightnessVerifier())("a red circle", **kw)

    torch._dynamo.reset()
    counters.clear()
    backend = CompileCounterWithBackend(backend_name)
    fast = TTSPipeline(make_tiny_pipeline("sd15"), verifier=BrightnessVerifier()).compile(True, backend=backend)
    first = fast("a red circle", **kw)
    frames = backend.frame_count
    assert frames == len(phases) + 1, frames  # + 1: the VAE decoder (one decode batch)
    assert not counters["graph_break"], dict(counters["graph_break"])
    second = fast("a red circle", **kw)
    assert backend.frame_count == frames  # no recompiles: the guards hold across steps, chunks and calls
    assert not counters["graph_break"]

    assert [x.score for x in first.candidates] == pytest.approx([x.score for x in eager.candidates], abs=1e-6)
    assert (first.images - eager.images).abs().max() <= 1 / 255 + 1e-6  # 8-bit candidates: at most one level apart
    assert torch.equal(first.images, second.images)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_compiled_mmdit_tgate_search_compiles_once_per_phase_without_graph_breaks(family):
    """The MM-DiT analogue (features/tgate_mmdit.py: the joint blocks' text k / v cached at the
    gate, image stream only after it) on tiny SD3 (CFG, dropped after the gate) and FLUX
    (distilled guidance, one row per particle): a gated best-of-4 in two chunks compiles one
    denoiser graph per phase (three: before the gate, the ungated graph; the gate; after it)
    and the VAE decoder one, nothing breaks the graphs (the hooks once read the step and the
    caches inside the model: 16 graphs, 10 breaks, 10 more graphs on a second search), a
    second search compiles nothing, and the result is the eager gated search's."""
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters

    from tts_diffusion.features.tgate import MMDIT

    steps, tg = 5, TGate(gate_step=3)
    phases = tg.model_phases(steps, MMDIT)
    assert len(phases) == 3
    size = {k: v for k, v in pipeline_call_kwargs(family).items() if k in ("height", "width")}
    kw = dict(searcher="best_of_n", budget=4 * steps, num_inference_steps=steps, max_batch=2, tgate=tg,
              output_type="pt", progress=False, **size)
    eager = TTSPipeline(make_tiny_pipeline(family), verifier=BrightnessVerifier())("a red circle", **kw)

    torch._dynamo.reset()
    counters.clear()
    backend = CompileCounterWithBackend("aot_eager")
    fast = TTSPipeline(make_tiny_pipeline(family), verifier=BrightnessVerifier()).compile(True, backend=backend)
    first = fast("a red circle", **kw)
    frames = backend.frame_count
    assert len(phases) <= frames <= len(phases) + 1, frames  # + 1: the VAE decoder (one decode batch)
    assert not counters["graph_break"], dict(counters["graph_break"])
    second = fast("a red circle", **kw)
    assert backend.frame_count == frames  # no recompiles across steps, chunks and calls
    assert not counters["graph_break"]

    assert [x.score for x in first.candidates] == pytest.approx([x.score for x in eager.candidates], abs=1e-6)
    assert (first.images - eager.images).abs().max() <= 1 / 255 + 1e-6  # 8-bit candidates: at most one level apart
    assert torch.equal(first.images, second.images)


def test_compiled_tgate_process_reproduces_the_reference_package_in_six_graphs():
    """Known answer: the reference package `tgate==1.0.0` (tests/fixtures/tgate, as in
    test_tgate.py; the ungated output is > 100 x the tolerance away from it). The first
    fixture run (gate 6 of 8, sp 3, fi 2, warm-up 1) meets all six T-GATE phases; one
    particle per chunk (max_batch 1), so every phase has one batch shape: five graphs (caching
    self-attention before the gate and caching both at the gate run alike), the most a gated
    run needs per batch shape, and none more for a second run."""
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters

    fx = torch.load(Path(__file__).parent / "fixtures" / "tgate" / "reference.pt")
    run = fx["runs"][0]
    tg = TGate(run["gate_step"], run["sp_interval"], run["fi_interval"], run["warm_up"])
    assert len(tg.phases(run["num_steps"])) == 6 and len(tg.model_phases(run["num_steps"])) == 5
    torch._dynamo.reset()
    counters.clear()
    pipe = make_tiny_pipeline("sd15")
    backend = CompileCounterWithBackend("aot_eager")
    compile_pipeline(pipe, backend=backend)
    base = DenoisingProcess.from_pipeline(pipe, run["num_steps"], fx["guidance_scale"], height=fx["size"],
                                          width=fx["size"], max_batch=1)
    ref = run["latents_out"]
    tol = 1e-5 * ref.abs().max().item() + 1e-5
    for k in range(2):
        proc = base.for_call()
        enable_tgate(proc, tg)
        proc.reset_particles(2)
        out, _ = proc.sample(fx["latents"].clone(), proc.encode(fx["prompt"]))
        assert (out - ref).abs().max().item() <= tol, (out - ref).abs().max()
        assert backend.frame_count == 5, (k, backend.frame_count)  # the decoder is not called here
        assert not counters["graph_break"], dict(counters["graph_break"])


def test_compiled_rgba_search_captures_maps_without_recompiles():
    """Alfie's attention capture (rgba=True) under a counting aot_eager backend, on the tiny
    PixArt-Sigma pipeline of the Alfie tests: a best-of-4 in two chunks (max_batch 2) with the
    model background. The capture processors read only this chunk's frame (capture on or off,
    decided outside the model), so the denoiser compiles one graph with capture on (the
    foreground rows of the window steps) and one with it off (the background rows, the last
    step with t <= 20), whatever the step or chunk, with no graph breaks; a second identical
    search compiles nothing, and the result (scores, images, matte, layer visits) is the
    eager search's."""
    pytest.importorskip("cv2")
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters

    prompt, steps, seq = "a photo of a corgi", 4, 32
    kw = dict(searcher="best_of_n", budget=4 * 2 * steps, num_inference_steps=steps, max_batch=2, height=32,
              width=32, rgba=True, output_type="pt", progress=False)

    def tts():
        return TTSPipeline(make_tiny_pipeline("pixart_sigma", seed=3), verifier=BrightnessVerifier(),
                           defaults={"max_sequence_length": seq})

    slow = tts()
    eager = slow(prompt, **kw)
    torch._dynamo.reset()
    counters.clear()
    backend = CompileCounterWithBackend("aot_eager")
    fast = tts().compile(True, backend=backend)
    first = fast(prompt, **kw)
    frames = backend.frame_count
    assert 2 <= frames <= 3, frames  # capture on / off, + 1: the VAE decoder (one decode batch)
    assert not counters["graph_break"], dict(counters["graph_break"])
    second = fast(prompt, **kw)
    assert backend.frame_count == frames  # no recompiles across steps, chunks, fg / bg rows and calls
    assert not counters["graph_break"]

    assert first.settings["captured_layer_calls"] == eager.settings["captured_layer_calls"]
    assert sum(first.settings["captured_layer_calls"].values()) > 0
    assert [x.score for x in first.candidates] == pytest.approx([x.score for x in eager.candidates], abs=1e-6)
    assert (first.images - eager.images).abs().max() <= 1 / 255 + 1e-6  # 8-bit candidates: at most one level apart
    assert (first.alpha.int() - eager.alpha.int()).abs().max() <= 1, "the matte differs from eager"
    assert torch.equal(first.images, second.images) and torch.equal(first.alpha, second.alpha)

    # the maps themselves: two window steps of the same chunks, compiled against eager
    def maps(pipe):
        proc = DenoisingProcess.from_pipeline(pipe, steps, 4.5, height=32, width=32, max_sequence_length=seq,
                                              max_batch=2).for_call()
        run = prepare_rgba(proc, prompt, BrightnessVerifier())
        proc.reset_particles(4)
        x, cond = proc.noise_from_seeds([1, 2, 3, 4]), proc.encode(prompt)
        for i in sorted(run.capture.steps)[:2]:
            proc.denoise(x, i, cond)
        return run.capture.maps

    want, got = maps(slow.pipe), maps(fast.pipe)
    assert backend.frame_count == frames  # the same shapes: no new graph
    torch.testing.assert_close(got.cross, want.cross, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.self_, want.self_, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_gated_search_after_an_ungated_one_reuses_the_ungated_graph(family):
    """T-GATE's hooks go in when the pipeline is compiled: a gated search after an ungated one
    compiles only the phases after the warm-up (whose graph is the ungated one), not the
    ungated graph a second time, and an ungated search after it compiles nothing."""
    from torch._dynamo.testing import CompileCounterWithBackend

    steps, tg = 6, TGate(gate_step=4, sp_interval=2, fi_interval=1, warm_up=1)
    size = {k: v for k, v in pipeline_call_kwargs(family).items() if k in ("height", "width")}
    kw = dict(searcher="best_of_n", budget=4 * steps, num_inference_steps=steps, max_batch=4,
              output_type="pt", progress=False, **size)
    torch._dynamo.reset()
    backend = CompileCounterWithBackend("aot_eager")
    fast = TTSPipeline(make_tiny_pipeline(family), verifier=BrightnessVerifier()).compile(True, backend=backend)
    fast("a red circle", **kw)
    ungated = backend.frame_count  # the denoiser and the VAE decoder
    fast("a red circle", tgate=tg, **kw)
    kind = "mm-dit" if family == "sd3" else "cross-attention"
    assert backend.frame_count - ungated == len(tg.model_phases(steps, kind)) - 1
    before = backend.frame_count
    fast("a red circle", **kw)
    assert backend.frame_count == before


def test_rgba_search_after_a_plain_one_reuses_the_plain_graph():
    """Alfie's capture processors go in when the pipeline is compiled: an rgba search after a
    plain one compiles only its capture-on graph (its background rows and last steps run the
    plain graph), the plain search's images are what eager gives, and a plain search after
    the rgba one compiles nothing."""
    from torch._dynamo.testing import CompileCounterWithBackend

    steps = 4
    kw = dict(searcher="best_of_n", budget=4 * 2 * steps, num_inference_steps=steps, max_batch=2, height=32,
              width=32, output_type="pt", progress=False)

    def tts():
        return TTSPipeline(make_tiny_pipeline("pixart_sigma", seed=3), verifier=BrightnessVerifier(),
                           defaults={"max_sequence_length": 32})

    eager = tts()("a photo of a corgi", **kw)
    torch._dynamo.reset()
    backend = CompileCounterWithBackend("aot_eager")
    fast = tts().compile(True, backend=backend)
    plain = fast("a photo of a corgi", **kw)
    assert (plain.images - eager.images).abs().max() <= 1 / 255 + 1e-6
    before = backend.frame_count  # the denoiser and the VAE decoder
    fast("a photo of a corgi", rgba=True, **kw)
    assert backend.frame_count - before == 1
    before = backend.frame_count
    fast("a photo of a corgi", **kw)
    assert backend.frame_count == before


def test_regional_compile_of_a_gated_search_shares_each_block_graph():
    """Regional compilation (diffusers' `compile_repeated_blocks`: every BasicTransformerBlock
    compiled on its own, fullgraph, static shapes) under T-GATE: the blocks of one shape share
    one graph per T-GATE phase, so a gated search compiles (distinct block shapes) x (phases)
    graphs however many blocks the UNet has (T-GATE's hooks once looked their module up by
    name in the frame: every block was a graph of its own), nothing breaks, a second search
    compiles nothing, and the result is the eager gated search's (issue 32)."""
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters

    from tts_diffusion.pipelines.compile import _install_inert_hooks

    steps, tg = 5, TGate(gate_step=3, sp_interval=2, fi_interval=1, warm_up=0)
    phases = tg.model_phases(steps)
    kw = dict(searcher="best_of_n", budget=4 * steps, num_inference_steps=steps, max_batch=2, tgate=tg,
              output_type="pt", progress=False, **pipeline_call_kwargs("sd15"))
    eager = TTSPipeline(make_tiny_pipeline("sd15"), verifier=BrightnessVerifier())("a red circle", **kw)

    pipe = make_tiny_pipeline("sd15")
    blocks = [m for m in pipe.unet.modules() if type(m).__name__ in pipe.unet._repeated_blocks]
    shapes = set()
    handles = [b.register_forward_pre_hook(lambda m, a, k: shapes.add((tuple(a[0].shape[1:]) if a else
                                                                      tuple(k["hidden_states"].shape[1:]))),
                                           with_kwargs=True) for b in blocks]
    TTSPipeline(pipe, verifier=BrightnessVerifier())("a red circle", **{**kw, "tgate": None, "budget": steps})
    for h in handles:
        h.remove()
    assert len(blocks) > len(shapes) >= 1  # some blocks repeat a shape: sharing is observable

    torch._dynamo.reset()
    counters.clear()
    backend = CompileCounterWithBackend("aot_eager")
    _install_inert_hooks(pipe.unet)
    pipe.unet.compile_repeated_blocks(fullgraph=True, dynamic=False, backend=backend)
    fast = TTSPipeline(pipe, verifier=BrightnessVerifier())
    first = fast("a red circle", **kw)
    assert backend.frame_count == len(shapes) * len(phases), (backend.frame_count, len(shapes), len(phases))
    assert not counters["graph_break"], dict(counters["graph_break"])
    second = fast("a red circle", **kw)
    assert backend.frame_count == len(shapes) * len(phases)  # no recompiles across steps, chunks and calls

    assert [x.score for x in first.candidates] == pytest.approx([x.score for x in eager.candidates], abs=1e-6)
    assert (first.images - eager.images).abs().max() <= 1 / 255 + 1e-6
    assert torch.equal(first.images, second.images)
