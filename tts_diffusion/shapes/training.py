"""Helpers the shapes-world training scripts share (scripts/train_shapes_model.py,
scripts/train_shapes_clip.py): seeded scene pools, rendering them to uint8 tensors, the
learning-rate schedule, autocast, the eval prompts and seeded generation with the model."""
from __future__ import annotations

import math
import multiprocessing as mp
import platform
from pathlib import Path

import numpy as np
import torch

from ..bench.prompts import load_prompt_set
from . import model as M
from .grammar import CATEGORIES, sample_scenes
from .renderer import render


def _sample_chunk(args):
    n, seed_seq, categories = args
    return sample_scenes(n, generator=np.random.default_rng(seed_seq), categories=categories)


def scene_pool(n: int, seed: int, workers: int, chunk: int = 2000, stream: int = 0, categories=None) -> list:
    """`n` scenes from independent, seeded chunks (same result for any number of workers);
    `categories` cycles as in `sample_scenes` (repeat a category to weight it).
    Call before CUDA is initialised (worker processes are forked)."""
    sizes = [min(chunk, n - i) for i in range(0, n, chunk)]
    seqs = np.random.SeedSequence([seed, stream]).spawn(len(sizes))
    jobs = [(k, q, categories) for k, q in zip(sizes, seqs)]
    if workers <= 1 or len(jobs) == 1:
        parts = [_sample_chunk(j) for j in jobs]
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_sample_chunk, jobs, chunksize=1)
    return [s for p in parts for s in p]


@torch.no_grad()
def render_pool(scenes: list, size: int, device: torch.device, chunk: int = 8192) -> torch.Tensor:
    """uint8 images [N, 3, size, size] on `device`."""
    out = torch.empty(len(scenes), 3, size, size, dtype=torch.uint8, device=device)
    for i in range(0, len(scenes), chunk):
        img = render(scenes[i : i + chunk], size=size, device=device)
        out[i : i + chunk] = (img * 255.0).round_().to(torch.uint8)
    return out


def lr_at(base: float, step: int, warmup: int, frac: float, floor: float = 0.1) -> float:
    """Linear warmup, then cosine decay to floor * base over the (wall-clock) fraction `frac`."""
    w = min(1.0, (step + 1) / max(1, warmup))
    return base * w * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac))))


def autocast(device: torch.device):
    """bf16 autocast on CUDA; off on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def load_eval_prompts(path: Path, smoke: bool, seed: int) -> tuple[list[str], list[str], str]:
    """(prompts, categories, source) of the eval split at `path` (smoke: two a category;
    sampled scenes when the file is missing)."""
    if path.is_file():
        items = load_prompt_set(str(path))
        if smoke:  # two prompts per category
            items = [it for c in CATEGORIES for it in [x for x in items if x["category"] == c][:2]]
        return [it["prompt"] for it in items], [it["category"] for it in items], str(path)
    if not smoke:
        raise FileNotFoundError(f"eval split {path} not found (pass --eval-prompts)")
    sc = sample_scenes(len(CATEGORIES) * 4, seed=seed + 777)
    return [s.prompt for s in sc], [s.category for s in sc], "sampled (smoke)"


@torch.no_grad()
def generate(pipe, prompts: list[str], seed: int, batch: int = 512, **overrides) -> torch.Tensor:
    """One image per prompt in [0, 1], float [N, 3, H, W] on the pipeline's device. Prompt i
    gets the noise of a CPU generator seeded `seed + i`, so results do not depend on the
    batching or the device."""
    kw = M.pipe_call_kwargs(pipe, **overrides)
    out = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        gens = [torch.Generator().manual_seed(seed + i + j) for j in range(len(chunk))]
        out.append(pipe(chunk, generator=gens, output_type="pt", **kw).images)
    return torch.cat(out)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


# ----------------------------------------------------------------------------- weights and checkpoints
class EMA:
    """Exponential moving average of parameters (decay warmed up as (1 + n) / (10 + n))."""

    def __init__(self, params, decay: float):
        self.params = [p for p in params]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.decay, self.n = decay, 0

    @torch.no_grad()
    def update(self) -> None:
        self.n += 1
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - d)

    @torch.no_grad()
    def copy_to(self) -> None:
        for p, s in zip(self.params, self.shadow):
            p.copy_(s.to(p.dtype))


def save_sharded(tensors: dict[str, torch.Tensor], folder: Path, prefix: str, dtype: torch.dtype | None = None,
                 max_bytes: int = 15 * 2**20) -> list[str]:
    """Write `tensors` (cast to `dtype` if given) as ``<prefix>-NN.safetensors`` files of at most
    `max_bytes` each (a tensor larger than that gets a file of its own); removes older shards of
    `prefix`. Returns the file names."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{prefix}-*.safetensors"):
        old.unlink()
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(tensors):
        t = tensors[k].detach()
        t = (t.to(dtype) if dtype is not None and t.is_floating_point() else t).contiguous().cpu()
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += n
    names = []
    for i, sd in enumerate(shards):
        name = f"{prefix}-{i:02d}.safetensors"
        save_file(sd, str(folder / name), metadata={"format": "pt"})
        names.append(name)
    return names


def load_sharded(folder: Path, prefix: str, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The tensors of every ``<prefix>-NN.safetensors`` in `folder` (floats cast to `dtype`)."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob(f"{prefix}-*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no {prefix}-NN.safetensors in {folder}")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update({k: (v.to(dtype) if v.is_floating_point() else v) for k, v in load_file(str(f)).items()})
    return out
