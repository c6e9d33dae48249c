"""Differentiable rewards through the x0 estimate: r(decode(x0)) and its gradient w.r.t. the latent.

One helper shared by everything that steers with a reward's gradient (TFG guidance in
`features/guidance.py`, the `driftlite` searcher, gradient noise optimisation):

    rg = reward_and_grad(proc, verifier, x0, prompts)     # rg.reward [B], rg.grad like x0

The chain is latent -> the pipeline's VAE decoder (or the process's preview decoder) ->
float images in [0, 1] -> the verifier's torch preprocessing and model -> score, all with
autograd (no PIL round trip, no uint8): `Verifier.score_with_grad`. Only verifiers declared
differentiable qualify (clip, the domain CLIP, image_reward, aesthetic, zscore ensembles of
them, `FunctionVerifier(..., differentiable=True)`); any other raises one TTSInputError naming
those. Weights stay frozen: gradients are taken w.r.t. the latent only (`autograd.grad`, so no
parameter `.grad` is touched).

Cost (core/budget.py): each row is one reward-gradient row, charged as one verifier call and
counted in `Budget.reward_grads`; it passes no denoiser, so no NFE. When the latent's graph
comes from the denoiser (TFG's variance guidance), the caller charges the denoiser backward
(`Budget.charge_denoiser_backward`, 2 NFE a row).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import TTSInputError

__all__ = ["RewardGrad", "differentiable_reward", "reward_and_grad", "check_differentiable_verifier"]


@dataclass
class RewardGrad:
    """Rewards [B] and their gradient w.r.t. the latent (same shape and dtype as the latent)."""

    reward: torch.Tensor
    grad: torch.Tensor


def check_differentiable_verifier(verifier) -> None:
    """One TTSInputError when `verifier` has no gradient (before any model work)."""
    problem = verifier.gradient_problem() if hasattr(verifier, "gradient_problem") else None
    if problem is None and not getattr(verifier, "differentiable", False):
        from ..verifiers.registry import not_differentiable_message

        problem = not_differentiable_message(getattr(verifier, "name", type(verifier).__name__))
    if problem is not None:
        raise TTSInputError(problem)


def _prompts(prompts: Sequence[str] | str, n: int) -> list[str]:
    return [prompts] * n if isinstance(prompts, str) else list(prompts)


def differentiable_reward(proc, verifier, latents: torch.Tensor, prompts: Sequence[str] | str, *,
                          preview: bool = False) -> torch.Tensor:
    """r(decode(latents)) [B] with the autograd graph back to `latents` (which may carry a graph
    from the denoiser). Decoded in chunks of the process's `decode_batch`; not charged (the
    caller charges: `reward_and_grad` does)."""
    check_differentiable_verifier(verifier)
    vae = proc.preview_decoder if preview else None
    decode = proc.adapter.decode if vae is None else functools.partial(proc.adapter.decode, vae=vae)
    with torch.enable_grad(), proc.timings.phase("reward_grad"):
        images = torch.cat([decode(latents[s : s + proc.decode_batch])
                            for s in range(0, latents.shape[0], proc.decode_batch)])
        return verifier.score_with_grad(images.to(verifier.device), _prompts(prompts, latents.shape[0]))


def reward_and_grad(proc, verifier, latents: torch.Tensor, prompts: Sequence[str] | str, *,
                    preview: bool = False, scale: float | torch.Tensor = 1.0) -> RewardGrad:
    """Rewards of `latents` (e.g. Tweedie estimates x0) and grad_latent of sum(scale * r), the
    latent detached first (a predictor-only gradient: TFG's mean guidance, DriftLite's grad r).
    Charges `latents.shape[0]` reward-gradient rows to the process's budget when metered."""
    n = latents.shape[0]
    if proc.budget is not None:
        proc.budget.charge_reward_grad(n)
    x = latents.detach().requires_grad_(True)
    r = differentiable_reward(proc, verifier, x, prompts, preview=preview)
    weight = torch.as_tensor(scale, dtype=r.dtype, device=r.device)
    with proc.timings.phase("reward_grad"):
        (g,) = torch.autograd.grad((weight * r).sum(), x)
    return RewardGrad(r.detach(), g.detach())
