"""Image perturbations for robustness checks of the oracle: gaussian blur, colour jitter
and gaussian noise, seeded and batched (torch)."""
from __future__ import annotations

import torch


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image [B, 3, H, W] with its own gaussian std `sigma` [B] (pixels, separable)."""
    b = images.shape[0]
    radius = max(1, int(torch.ceil(3.0 * sigma.max()).item())) if b else 1
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    s = sigma.to(images).clamp_min(1e-3).view(b, 1)
    k = torch.exp(-0.5 * (x.view(1, -1) / s) ** 2)
    k = k / k.sum(-1, keepdim=True)  # [B, K]
    out = images
    pad = torch.nn.functional.pad
    # grouped convolution: one kernel per image, shared by its 3 channels
    for dim in (3, 2):
        kk = k.repeat_interleave(3, 0)
        kk = kk.view(3 * b, 1, 1, -1) if dim == 3 else kk.view(3 * b, 1, -1, 1)
        padding = (radius, radius, 0, 0) if dim == 3 else (0, 0, radius, radius)
        flat = pad(out.reshape(1, 3 * b, *out.shape[2:]), padding, mode="replicate")
        out = torch.nn.functional.conv2d(flat, kk, groups=3 * b).view_as(images)
    return out


def perturb(
    images: torch.Tensor,
    generator: torch.Generator,
    noise: float = 0.05,
    blur: float = 1.0,
    jitter: float = 0.06,
) -> torch.Tensor:
    """Random perturbation of each image, strengths drawn uniformly up to the maxima:
    blur std in [0, blur] pixels (at 64 px; scaled with the resolution), per-channel gain
    1 +- jitter and offset +- jitter, then gaussian noise std in [0, noise]; clamped to [0, 1]."""
    b, _, h, _ = images.shape
    dev, dt = images.device, images.dtype

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=dev, dtype=dt)

    out = gaussian_blur(images, u(b) * blur * h / 64.0) if blur > 0 else images
    gain = 1.0 + jitter * (2.0 * u(b, 3, 1, 1) - 1.0)
    offset = jitter * (2.0 * u(b, 3, 1, 1) - 1.0)
    out = out * gain + offset
    sigma = noise * u(b, 1, 1, 1)
    out = out + sigma * torch.randn(out.shape, generator=generator, device=dev, dtype=dt)
    return out.clamp(0.0, 1.0)
