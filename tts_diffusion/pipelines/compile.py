"""The fast path: the denoiser and the VAE decoder under `torch.compile`.

Both modules are compiled in place (`nn.Module.compile`: the module, its attention
processors and hooks stay as they are, so T-GATE's or Alfie's processors still run inside
the compiled graph), with static shapes: a shape is compiled on first use and reused by
every later call with that particle batch, size and dtype. A UNet and the VAE switch to
channels_last on CUDA (convolutions run faster in that layout on tensor cores); a
transformer denoiser keeps its layout. Compiling costs time once per shape (tens of seconds
for SD-1.5 size on an H100): it pays when the same shapes are searched many times.

With T-GATE the denoiser compiles one graph per phase and batch shape (features/tgate.py: the
hooks read only what the phase reuses; steps, rows and caches are handled outside the graph),
at most five (`TGate.model_phases`): the warm-up (the ungated graph), computing or caching,
self-attention reused before the gate, cross-attention reused after it with self-attention
cached or reused; an MM-DiT (SD3, FLUX;
features/tgate_mmdit.py) has three: before the gate, the gate, after it. The CFG batch halves after the
gate, so a gated search meets two batch shapes (four where the particles do not split into
equal `max_batch` chunks). Dynamo's default of 8 graphs per function would be reached by
that, after which it silently runs the function eagerly, so `compile_pipeline` raises the
limit to `RECOMPILE_LIMIT`. T-GATE's hooks and Alfie's capture processors (inert until a
gated or rgba call) are installed before compiling, so a gated or rgba search after a plain
one reuses the plain graph (the warm-up steps; the background rows).

With Alfie's attention capture (`rgba=True`) the denoiser compiles two graphs per batch
shape: capture on (the foreground rows of the steps with t > 20) and off (the background
rows, the last steps); the step, the rows and the per-particle maps stay outside the graph
(features/attention_capture.py, `CaptureFrame`)."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import TTSInputError

#: torch.compile modes; "reduce-overhead" adds CUDA graphs (one per batch shape)
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

#: graphs dynamo keeps per compiled function: (ungated + T-GATE phases) x batch shapes, with room
RECOMPILE_LIMIT = 64


def check_compile(compile: bool | str) -> str | None:
    """The torch.compile mode `compile` asks for (None: no compiling)."""
    if compile is False or compile is None:
        return None
    if compile is True:
        return "default"
    if isinstance(compile, str) and compile in MODES:
        return compile
    raise TTSInputError(f"compile must be True, False or a torch.compile mode ({', '.join(MODES)}), got {compile!r}")


def denoiser_of(pipe: Any) -> torch.nn.Module:
    return pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.unet


def is_compiled(module: torch.nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def compile_pipeline(pipe: Any, mode: str = "default", channels_last: bool | None = None,
                     backend: str | Callable = "inductor") -> None:
    """Compile `pipe`'s denoiser and VAE decoder in place (a second call does nothing).
    channels_last: None = for a UNet on CUDA. backend: torch.compile's ("inductor" generates
    kernels; "aot_eager" only traces, for quick checks; a callable backend, e.g. torch's
    CompileCounter, for tests)."""
    den = denoiser_of(pipe)
    if is_compiled(den):
        return
    use_channels_last(pipe, channels_last)
    _install_inert_hooks(den)
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    setattr(config, limit, max(getattr(config, limit), RECOMPILE_LIMIT))
    kw = {"dynamic": False, "backend": backend, **({} if mode == "default" else {"mode": mode})}
    den.compile(**kw)
    pipe.vae.decoder.compile(**kw)


def _install_inert_hooks(den: torch.nn.Module) -> None:
    """T-GATE's hooks and Alfie's capture processors, inert until a gated or rgba call, go in
    before compiling: installed later (on the first such search) they change the modules the
    plain graph was traced through, and dynamo compiles that graph a second time (one
    whole-denoiser compile, tens of seconds at SD-1.5 size). A denoiser that T-GATE cannot
    gate or Alfie cannot read is left as it is."""
    from ..features import tgate
    from ..features.attention_capture import install_capture
    from ..errors import TTSInputError

    for install in (tgate.install, install_capture):
        try:
            install(den)
        except TTSInputError:
            pass


def use_channels_last(pipe: Any, on: bool | None = None) -> None:
    """UNet and VAE weights in channels_last (on=None: where the denoiser is a UNet on CUDA;
    also called after `.to(device)`, since the layout only pays on CUDA)."""
    den = denoiser_of(pipe)
    if on is None:
        on = hasattr(den, "conv_in") and den.device.type == "cuda"
    if on:
        den.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
