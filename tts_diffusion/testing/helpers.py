"""Small test-only helpers: verifiers whose score is a known function of the image, a
per-particle state that records its selections, a metered run of denoising steps."""

from tts_diffusion.verifiers.base import Verifier


class BrightnessVerifier(Verifier):
    """Mean pixel value: a verifier whose answer is known exactly."""

    name = "brightness"

    def __init__(self, chunk_size: int = 64):
        super().__init__()
        self.chunk_size = chunk_size
        self.calls = 0

    def score(self, images, prompts):
        self.calls += images.shape[0]
        return images.float().mean(dim=(1, 2, 3))


class SelectRecorder:
    """A per-particle state entry (core/state.py) that records every selection it follows."""

    def __init__(self):
        self.selected: list[list[int]] = []
        self.resets: list[int] = []

    def select(self, idx):
        self.selected.append(idx.tolist())

    def reset(self, num_particles):
        self.resets.append(int(num_particles))


def metered_steps(proc, prompt: str, steps: int, seeds=(1, 2)):
    """Denoise particles from `seeds` for `steps` steps under a metered budget: (the budget,
    per step whether the prediction came without CFG halves, `cond_out is None`)."""
    from tts_diffusion.core.budget import Budget

    cond, x, budget, no_cfg = proc.encode(prompt), proc.noise_from_seeds(list(seeds)), Budget(100), []
    with proc.metered(budget):
        for i in range(steps):
            pred = proc.denoise(x, i, cond)
            no_cfg.append(pred.cond_out is None)
            x = proc.step(x, i, pred)
    return budget, no_cfg


def saved_tensor_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while `fn()` runs (its graph's memory,
    counted by `torch.autograd.graph.saved_tensors_hooks`)."""
    import torch

    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def pump_stderr(proc, pattern):
    """Read a subprocess's stderr in a thread: (an Event set once `pattern(text so far)` holds or
    the stream ends, the list of chunks read). For driving a running CLI, e.g. interrupting it
    once its progress bar shows some work done."""
    import os
    import threading

    buf: list[str] = []
    hit = threading.Event()

    def go():
        while True:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            buf.append(chunk.decode(errors="replace"))
            if pattern("".join(buf)):
                hit.set()
        hit.set()

    threading.Thread(target=go, daemon=True).start()
    return hit, buf
