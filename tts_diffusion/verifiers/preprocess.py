"""Torch image preprocessing shared by the CLIP-based verifiers.

`clip_preprocess` takes float images [B, 3, H, W] in [0, 1] that are already on the
device and returns the normalised model input, without a PIL round trip. It reproduces
open_clip's inference transform (`open_clip.transform.image_transform(..., is_train=False)`)
geometry exactly (same output sizes, rounding and crop offsets) for every `resize_mode`:

- ``"shortest"`` (the CLIP default): resize the shortest side to the target (torchvision
  ``Resize(int)``: the long side is ``int(size * long / short)``), then centre crop.
  For a non-square target open_clip uses ``ResizeKeepRatio`` (sizes rounded), which
  always interpolates bicubic whatever `interpolation` says; we do the same.
- ``"longest"``: resize so the longest side fits (``ResizeKeepRatio(longest=1)``), then
  centre crop or pad with `fill_color`.
- ``"squash"``: resize straight to the target size, ignoring the aspect ratio.

Interpolation is ``F.interpolate(..., antialias=True)``: torch's antialiased bicubic uses
the same kernel and support scaling as PIL's (a = -0.5, support widened by the downscale
factor), applied like PIL in two separable passes (width, then height) with a clamp to
[0, 1] after each (PIL's uint8 intermediate clips bicubic overshoot). What remains
between the two paths is PIL's uint8 quantisation: at 512 -> 224 and 1024 -> 224 on
natural-looking images the mean difference is 0.27 uint8 levels and the max about one
level (tests/test_preprocess_downscale.py). The result is normalised with `mean` / `std`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["clip_preprocess", "resized_size"]

_RESIZE_MODES = ("shortest", "longest", "squash")
_INTERPOLATIONS = ("bicubic", "bilinear", "random")  # "random" means bicubic at inference


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) == 1:
        return size[0], size[0]
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or (height, width), got {size}")
    return size  # type: ignore[return-value]


def resized_size(
    hw: tuple[int, int], image_size: int | Sequence[int], resize_mode: str = "shortest"
) -> tuple[int, int]:
    """(height, width) after open_clip's resize step, before cropping / padding."""
    h, w = hw
    th, tw = _pair(image_size)
    if resize_mode == "squash":
        return th, tw
    if resize_mode == "shortest" and th == tw:
        # torchvision Resize(int): shortest edge -> size, long edge truncated
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = th, int(th * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        return new_h, new_w
    # ResizeKeepRatio (timm): scale by the min (shortest) or max (longest) ratio, rounded
    rh, rw = h / th, w / tw
    ratio = max(rh, rw) if resize_mode == "longest" else min(rh, rw)
    return round(h / ratio), round(w / ratio)


def _center_crop_or_pad(x: torch.Tensor, th: int, tw: int, fill: float) -> torch.Tensor:
    """torchvision CenterCrop / open_clip center_crop_or_pad on a [B, C, H, W] tensor."""
    h, w = x.shape[-2:]
    if th > h or tw > w:
        left = (tw - w) // 2 if tw > w else 0
        top = (th - h) // 2 if th > h else 0
        right = (tw - w + 1) // 2 if tw > w else 0
        bottom = (th - h + 1) // 2 if th > h else 0
        x = F.pad(x, (left, right, top, bottom), value=fill)
        h, w = x.shape[-2:]
        if (h, w) == (th, tw):
            return x
    top = int(round((h - th) / 2.0))
    left = int(round((w - tw) / 2.0))
    return x[..., top : top + th, left : left + tw]


def _pil_resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """PIL's ``Image.resize`` on float images: two separable antialiased passes, width
    first, then height, each clamped to [0, 1] as PIL's uint8 intermediate is (without
    its rounding); a pass whose size does not change is skipped, as PIL does.

    Clamping between the passes matters at sharp edges: bicubic overshoot of the first
    pass is clipped by PIL before the second pass; a single 2-D interpolate keeps it and
    differs from PIL by up to ~8 uint8 levels there (1024 -> 224), against <= 1 level
    (rounding) with the clamp (tests/test_preprocess_downscale.py).
    """
    h, w = x.shape[-2:]
    if size[1] != w:
        x = F.interpolate(x, size=(h, size[1]), mode=mode, align_corners=False, antialias=True).clamp_(0.0, 1.0)
    if size[0] != h:
        x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True).clamp_(0.0, 1.0)
    return x.clamp(0.0, 1.0)


def clip_preprocess(
    images: torch.Tensor,
    image_size: int | Sequence[int],
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
    fill_color: int | float = 0,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Resize, crop, clamp and normalise float images [B, 3, H, W] in [0, 1] for a CLIP
    image tower, in torch on the images' device.

    Args:
        images: float tensor [B, 3, H, W], values in [0, 1] (any float dtype; the work is
            done in float32).
        image_size: target side (int) or (height, width), e.g. ``preprocess_cfg["size"]``.
        mean, std: per-channel normalisation (open_clip ``preprocess_cfg`` values).
        resize_mode: ``"shortest"`` | ``"longest"`` | ``"squash"`` (see module docstring).
        interpolation: ``"bicubic"`` | ``"bilinear"`` (``"random"`` = bicubic, as in open_clip).
        fill_color: padding value in 0..255 (open_clip convention), used by ``"longest"``.
        out_dtype: dtype of the result (default float32), e.g. the model's fp16.

    Returns:
        [B, 3, th, tw] normalised tensor.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"clip_preprocess expects [B, 3, H, W] images, got {tuple(images.shape)}")
    if resize_mode not in _RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got {resize_mode!r}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}")
    th, tw = _pair(image_size)
    mode = "bilinear" if interpolation == "bilinear" else "bicubic"
    if resize_mode == "shortest" and th != tw:
        mode = "bicubic"  # open_clip's ResizeKeepRatio(image_size) ignores `interpolation`

    x = images.float()
    size = resized_size((x.shape[-2], x.shape[-1]), (th, tw), resize_mode)
    x = _pil_resize(x, size, mode)
    if resize_mode != "squash":
        x = _center_crop_or_pad(x, th, tw, float(fill_color) / 255.0)

    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    x = (x - mean_t) / std_t
    return x.to(out_dtype) if out_dtype is not None else x.contiguous()
