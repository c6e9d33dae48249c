"""Input checks shared by `TTSPipeline.__call__` and the CLI: every argument is validated
before any model work, with `is None` (never falsiness: `steps=0` is an error, not "the
default"), and a bad one raises `TTSInputError` with one line saying what is wrong and what
to do. The CLI prints that line as `error: ...` and exits with code 2.

Memory checks are estimates with a wide margin: they refuse requests that cannot possibly
fit (a 100000x100000 image, a budget of 10**12 NFE whose candidate bookkeeping alone needs
terabytes), never ones that might.
"""
from __future__ import annotations

import math
import numbers
import os
import unicodedata
from typing import Any

from ..errors import TTSInputError

#: longest prompt accepted (characters); text encoders read 77 (CLIP) to 512 (T5) tokens
MAX_PROMPT_CHARS = 2000
#: torch generators take seeds in [0, 2**63)
MAX_SEED = 2**63 - 1
OUTPUT_TYPES = ("pil", "pt", "np")
#: host memory one scored candidate's bookkeeping takes (seed, score, record), generously
CANDIDATE_BYTES = 1024


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_text(text: Any, what: str = "prompt", *, allow_empty: bool = False) -> str:
    """A prompt: a non-empty string without control characters, at most MAX_PROMPT_CHARS long."""
    if not isinstance(text, str):
        raise TTSInputError(f"the {what} must be a string, got {type(text).__name__}")
    if not allow_empty and not text.strip():
        raise TTSInputError(f"the {what} is empty: pass a non-empty text prompt")
    if len(text) > MAX_PROMPT_CHARS:
        raise TTSInputError(f"the {what} is {len(text)} characters long; the limit is {MAX_PROMPT_CHARS}"
                            " (text encoders read only the first few hundred tokens): shorten it")
    for ch in text:
        cat = unicodedata.category(ch)
        if (cat == "Cc" and ch not in "\t\n") or cat == "Cs":
            raise TTSInputError(f"the {what} contains the control character {ch!r}; remove it")
    return text


def check_prompts(prompt: Any) -> list[str]:
    """One prompt or a non-empty list of prompts -> list of checked prompts."""
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            raise TTSInputError("the prompt list is empty: pass a prompt or a non-empty list of prompts")
        return [check_text(p) for p in prompt]
    return [check_text(prompt)]


def check_positive_int(value: Any, name: str, *, optional: bool = True, high: int | None = None,
                       why_high: str = "") -> int | None:
    """An integer >= 1 (None allowed when optional), at most `high`."""
    if value is None:
        if optional:
            return None
        raise TTSInputError(f"{name} is required: pass a positive integer")
    if not _is_int(value):
        raise TTSInputError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise TTSInputError(f"{name} must be at least 1, got {value}")
    if high is not None and value > high:
        raise TTSInputError(f"{name}={value} is too large: at most {high}{why_high}")
    return int(value)


#: the largest guidance scale accepted (published settings stay below 30; far larger ones
#: overflow to NaN images)
MAX_GUIDANCE = 100.0


def check_guidance(value: Any) -> float | None:
    """Guidance scale: None (the model's default) or a finite number in [0, MAX_GUIDANCE]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TTSInputError(f"guidance scale must be a number, got {value!r}")
    if not math.isfinite(float(value)) or value < 0 or value > MAX_GUIDANCE:
        raise TTSInputError(f"guidance scale must be a finite number >= 0 and <= {MAX_GUIDANCE:g}, got {value}")
    return float(value)


def check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise TTSInputError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}")
    return int(seed)


def check_generators(generator: Any, num_prompts: int) -> list[Any]:
    """None, one torch.Generator (shared by the prompts' searches in turn), or a list of one
    generator per prompt. Returns one entry per prompt."""
    import torch

    if isinstance(generator, (list, tuple)):
        if len(generator) != num_prompts:
            raise TTSInputError(
                f"generator is a list of {len(generator)} but there are {num_prompts} prompt(s): a search uses one"
                " generator, so pass one generator, a seed, or exactly one generator per prompt")
        gens = list(generator)
    else:
        gens = [generator] * num_prompts
    for g in gens:
        if g is not None and not isinstance(g, torch.Generator):
            raise TTSInputError(f"generator must be a torch.Generator, got {type(g).__name__}")
    return gens


def check_output_type(output_type: Any) -> str:
    if output_type not in OUTPUT_TYPES:
        raise TTSInputError(f"output_type {output_type!r} is not supported: use one of {', '.join(OUTPUT_TYPES)}")
    return output_type


def check_device(device: Any) -> "Any":
    """A device string / torch.device that exists on this machine -> torch.device."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise TTSInputError(f"device {device!r} is not a device name: use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TTSInputError(f"device {device!r} was requested but this machine has no usable CUDA GPU;"
                                " use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TTSInputError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()}"
                                f" CUDA device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
        return dev
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise TTSInputError(f"device {device!r} is not available on this machine; use --device cpu")
        return dev
    raise TTSInputError(f"device {device!r} is not supported: use cpu, cuda, cuda:N or mps")


def check_dtype_on_device(dtype: Any, device: Any) -> None:
    """float16 on the CPU is refused: many CPU kernels lack half precision or run it far slower
    than float32 (use bfloat16 or float32 there)."""
    import torch

    if dtype == torch.float16 and torch.device(device).type == "cpu":
        raise TTSInputError("float16 is not supported on the cpu (half-precision kernels are missing or slow there);"
                            " use --dtype float32 or bfloat16")


def available_memory(device: Any) -> int | None:
    """Bytes free for new tensors on `device` (None when unknown)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(dev)[0])
        except (RuntimeError, AssertionError):
            return None
    return host_memory()


def host_memory() -> int | None:
    """Available host RAM in bytes (MemAvailable on Linux; None when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n < 2**40 * 10 else f"{n / 2**40:.0f} TB"


def decode_bytes(pipe: Any, height: int, width: int) -> int:
    """A lower bound on the memory decoding one image takes: the VAE decoder's widest
    full-resolution feature map (input and output of one convolution)."""
    vae = getattr(pipe, "vae", None)
    channels = 128
    itemsize = 4
    if vae is not None:
        channels = int(min(getattr(vae.config, "block_out_channels", [channels])))
        try:
            itemsize = next(vae.parameters()).element_size()
        except StopIteration:
            pass
    return 2 * channels * int(height) * int(width) * itemsize


def check_size_fits(pipe: Any, height: int, width: int, device: Any) -> None:
    """Refuse an image size whose single-image decode cannot fit the device's free memory."""
    need = decode_bytes(pipe, height, width)
    free = available_memory(device)
    if free is not None and need > free:
        raise TTSInputError(f"height x width {height}x{width} needs at least {_gb(need)} to decode one image but"
                            f" {device} has {_gb(free)} free: use a smaller size")


def check_budget_fits(budget: int, num_steps: int) -> None:
    """Refuse a budget whose candidate bookkeeping alone (up to budget // num_steps scored
    samples, CANDIDATE_BYTES each) cannot fit in host memory."""
    candidates = budget // max(1, num_steps)
    need = candidates * CANDIDATE_BYTES
    free = host_memory()
    if free is not None and need > free:
        raise TTSInputError(f"a budget of {budget} NFE pays for up to {candidates} samples at {num_steps} steps,"
                            f" whose records alone need about {_gb(need)} but {_gb(free)} of memory is free:"
                            " lower the budget")


def check_num_images(k: Any, budget: int, num_steps: int) -> int | None:
    """num_images_per_prompt: k >= 1 whose k full samples the budget pays for."""
    k = check_positive_int(k, "num_images_per_prompt")
    if k is not None and k * num_steps > budget:
        raise TTSInputError(f"num_images_per_prompt={k} needs at least {k} full samples ({k * num_steps} NFE at"
                            f" {num_steps} steps) but the budget is {budget} NFE: raise the budget or lower k")
    return k


def offloading(pipe: Any) -> str | None:
    """The offloading a diffusers pipeline runs with (its own hooks move the models to the
    execution device while they run), or None."""
    import torch

    for component in getattr(pipe, "components", {}).values():
        if not isinstance(component, torch.nn.Module):
            continue
        hook = getattr(component, "_hf_hook", None)
        if hook is not None:
            return "model CPU offloading" if type(hook).__name__ == "CpuOffload" else "sequential CPU offloading"
        try:
            from diffusers.hooks.group_offloading import _is_group_offload_enabled
        except ImportError:  # older diffusers
            continue
        if _is_group_offload_enabled(component):
            return "group offloading"
    return None
