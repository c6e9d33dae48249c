"""`compile=True`: the denoiser and VAE decoder run under torch.compile and the search
returns what the eager pipeline returns (fp32 on the CPU, a tiny SD-1.5 pipeline).

The quick check traces with the "aot_eager" backend (graph capture and the in-place
wiring, seconds); the same check with inductor's generated kernels takes about 4 minutes on
a busy 2-core CPU and runs when TTS_TEST_INDUCTOR=1."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from tts_diffusion import TTSInputError, TTSPipeline
from tts_diffusion.pipelines.compile import denoiser_of, is_compiled
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
