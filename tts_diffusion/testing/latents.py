"""Intermediate latents of a model's own sampling: the Tweedie estimates x0 a search scores
along stochastic trajectories (what preview decoders are trained and judged on)."""
from __future__ import annotations

import torch


@torch.no_grad()
def tweedie_estimates(proc, prompts: list[str], particles: int, steps: list[int] | None, seed: int = 0,
                      eta: float = 1.0) -> tuple[torch.Tensor, list[int], list[int]]:
    """x0 estimates at grid points `steps` (None: all) of `particles` stochastic trajectories
    per prompt. Returns (latents [M, C, h, w], prompt index per row, step per row)."""
    lat, who, when = [], [], []
    gen = torch.Generator().manual_seed(seed)
    for k, p in enumerate(prompts):
        cond = proc.encode(p)
        x = proc.sample_noise(particles, gen)
        for i in range(proc.num_steps):
            pred = proc.denoise(x, i, cond)
            if steps is None or i in steps:
                lat.append(pred.x0.detach())
                who += [k] * particles
                when += [i] * particles
            x = proc.step(x, i, pred, eta=eta, generator=gen)
    return torch.cat(lat), who, when
