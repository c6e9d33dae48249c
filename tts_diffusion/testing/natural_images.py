"""Natural-looking test images made in code (no downloads): a smooth sky/ground colour
field, soft lighting, filled shapes with sharp (anti-aliased) edges, fine stripes and
a grain texture. Used to compare preprocessing paths at real downscales (512 or 1024 px
-> 224), where noise would exaggerate and flat colour would hide resampling differences.

`natural_images(n, size, seed)` -> uint8 array [n, H, W, 3]; the same seed gives the
same scene at every size (shapes are placed in relative coordinates), so a 512 and a
1024 image show the same content.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["natural_images", "to_float"]


def _scene(h: int, w: int, rng: np.random.Generator) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    horizon = float(rng.uniform(0.35, 0.65))
    sky_top, sky_low = torch.tensor(rng.uniform(0.3, 1.0, 3)), torch.tensor(rng.uniform(0.5, 1.0, 3))
    ground_a, ground_b = torch.tensor(rng.uniform(0.05, 0.6, 3)), torch.tensor(rng.uniform(0.1, 0.7, 3))
    t = (yy / horizon).clamp(0, 1)[None]
    img = sky_top[:, None, None] * (1 - t) + sky_low[:, None, None] * t
    g = ((yy - horizon) / (1 - horizon)).clamp(0, 1)[None]
    ground = ground_a[:, None, None] * (1 - g) + ground_b[:, None, None] * g
    img = torch.where((yy > horizon)[None], ground, img)
    # low-frequency colour variation (clouds, terrain), bicubic-upsampled from a coarse grid
    low = torch.from_numpy(rng.normal(0, 0.08, (1, 3, 6, 6)).astype(np.float32))
    img = img + F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)[0]
    # shapes: ellipses and rectangles with 1-px soft edges, some with stripes
    for _ in range(int(rng.integers(4, 8))):
        cy, cx = rng.uniform(0.15, 0.9), rng.uniform(0.1, 0.9)
        ry, rx = rng.uniform(0.04, 0.2), rng.uniform(0.04, 0.2)
        color = torch.tensor(rng.uniform(0, 1, 3), dtype=torch.float32)[:, None, None]
        if rng.random() < 0.5:
            d = torch.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) - 1
            edge = d * min(ry * h, rx * w)
        else:
            edge = torch.maximum((yy - cy).abs() * h - ry * h, (xx - cx).abs() * w - rx * w)
        alpha = (0.5 - edge).clamp(0, 1)[None]
        if rng.random() < 0.4:  # a striped object (period 3-12 px at 512, scales with size)
            period = float(rng.uniform(3, 12)) * w / 512
            stripes = 0.5 + 0.5 * torch.sin(2 * torch.pi * (xx * w + yy * h * rng.uniform(-1, 1)) / period)
            color = color * (0.6 + 0.4 * stripes[None])
        img = img * (1 - alpha) + color * alpha
    # lighting and grain
    lx, ly = rng.uniform(0, 1), rng.uniform(0, 0.5)
    img = img * (0.75 + 0.35 * torch.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / 0.3))[None]
    # saturated highlights and shadows (a sun disk, a dark pole): bicubic overshoots at their edges
    sy, sx, sr = rng.uniform(0.08, 0.3), rng.uniform(0.1, 0.9), rng.uniform(0.03, 0.08)
    alpha = (0.5 - (torch.sqrt((yy - sy) ** 2 + (xx - sx) ** 2) - sr) * w).clamp(0, 1)[None]
    img = img * (1 - alpha) + 1.1 * alpha
    px, pw = rng.uniform(0.05, 0.95), rng.uniform(0.005, 0.02)
    alpha = (0.5 - ((xx - px).abs() - pw) * w).clamp(0, 1)[None] * (yy > horizon - 0.2)[None]
    img = img * (1 - alpha) - 0.1 * alpha
    grain = torch.from_numpy(rng.normal(0, 0.025, (3, h, w)).astype(np.float32))
    return (img + grain).clamp(0, 1)


def natural_images(n: int, size: int | tuple[int, int] = 512, seed: int = 0) -> np.ndarray:
    """`n` natural-looking RGB images [n, H, W, 3] uint8 (square `size` or (H, W))."""
    h, w = (size, size) if isinstance(size, int) else size
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        img = _scene(h, w, rng)
        out[i] = (img.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return out


def to_float(arr: np.ndarray) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> float [n, 3, H, W] in [0, 1] (exactly the uint8 values / 255)."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255
