"""Colour unmixing: which palette colour (if any) covers each pixel, and how much.

An anti-aliased or blurred pixel of colour c over background b is p = b + alpha (c - b).
For each palette colour c_k, projecting p - b on d_k = c_k - BACKGROUND gives alpha_k in
[0, 1] and the residual |p - b - alpha_k d_k|; a pixel belongs to the colour with the
smallest residual if that colour's alpha >= 0.5 (the shape's edge); pixels far from every
colour line are "off-palette" foreground. This is robust to blur (edges stay on the line),
noise (a small gaussian pre-smoothing) and global colour shifts (d_k are offsets and the
background, the per-channel median, is measured).

An object drawn over another (grammar v2's "inside") has edges that mix two palette
colours, p = c_j + t (c_k - c_j), off every colour line: red over yellow is orange. Such a
pixel lies between confident pixels ("cores": alpha >= CORE_ALPHA) of two colours j and k;
where both are within about MIX_REACH pixels (at 64 px) and the segment c_j - c_k explains the
pixel better than any colour line, it takes the colour it holds more of (cores are
CORE_DEPTH deep, so the thin band of a third colour that such a mix makes is no core). A pixel with one
core colour around (every pixel of the v1 world) is labelled as above.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .perturb import gaussian_blur
from .world import BACKGROUND, COLORS

#: a pixel is foreground of colour k when alpha_k >= this
ALPHA_THRESHOLD = 0.5
#: pixels whose distance to every colour line exceeds this are off-palette
OFF_PALETTE_RESIDUAL = 0.35
#: pre-smoothing std in pixels at 64 px (scaled with the resolution), for the colour labels
SMOOTH_SIGMA = 0.6
#: slope of the soft weights used for shape moments: w = clamp(SHARPEN (alpha - 0.5) + 0.5)
SHARPEN = 3.0
#: a pixel is a confident "core" pixel of its colour when alpha >= this
CORE_ALPHA = 0.85
#: a core pixel has only its colour's cores within this many pixels (at 64 px)
CORE_DEPTH = 1.0
#: two-colour mixes are looked for within this many pixels (at 64 px) of cores of both colours
MIX_REACH = 4.0

PALETTE: tuple[str, ...] = tuple(COLORS)


@dataclass
class Unmixed:
    """Per-pixel colour labels of a batch [B, H, W]: `label` = palette index, len(PALETTE)
    for off-palette foreground, -1 for background; `weight` = the pixel's soft coverage by
    its colour (sharpened, for shape moments); `offset` [B, 3, H, W] = the unsmoothed image
    less the background (`coverage` reads any colour's weight from it: a component's rim);
    `strength` [B, H, W] = the off-palette weight; `palette_ok` [B, H, W] = the pixel is near
    some colour line (background pixels are)."""

    label: torch.Tensor
    weight: torch.Tensor
    offset: torch.Tensor
    strength: torch.Tensor
    palette_ok: torch.Tensor


def _sharpen(a: torch.Tensor) -> torch.Tensor:
    return ((a - 0.5) * SHARPEN + 0.5).clamp(0.0, 1.0)


def unmix(images: torch.Tensor) -> Unmixed:
    """Colour labels and weights of images [B, 3, H, W] in [0, 1] (float32 on their device)."""
    b, _, h, w = images.shape
    dev = images.device
    x = images.detach().to(torch.float32).clamp(0.0, 1.0)
    scale = min(h, w) / 64.0
    smooth = gaussian_blur(x, torch.full((b,), SMOOTH_SIGMA * scale, device=dev))

    bg = smooth.flatten(2).median(dim=2).values  # [B, 3]
    d = torch.tensor([COLORS[c] for c in PALETTE], device=dev) - torch.tensor(BACKGROUND, device=dev)  # [K, 3]
    dd = d.square().sum(1).view(1, -1, 1, 1)
    v = smooth - bg.view(b, 3, 1, 1)
    proj = torch.einsum("kc,bchw->bkhw", d, v)  # <v, d_k>
    alpha = (proj / dd).clamp(0.0, 1.0)
    vv = v.square().sum(1, keepdim=True)
    resid2 = (vv - 2.0 * alpha * proj + alpha.square() * dd).clamp_min(0.0)  # |v - alpha d|^2
    best_resid2, best = resid2.min(dim=1, keepdim=True)
    best_alpha = alpha.gather(1, best)
    fg = best_alpha >= ALPHA_THRESHOLD
    on_palette = best_resid2 <= OFF_PALETTE_RESIDUAL**2
    k = len(PALETTE)
    label = torch.where(fg & on_palette, best, torch.where(fg, k, -1)).squeeze(1)
    offset = x - bg.view(b, 3, 1, 1)  # unsmoothed: the weights see the edges as drawn
    weight = coverage(offset, best.squeeze(1).clamp(max=k - 1))
    strength = (vv.sqrt() / d.norm(dim=1).median()).clamp(0.0, 1.0).squeeze(1)
    weight = torch.where(label == k, strength, weight)

    # two-colour mixes next to cores of two colours (lowest and highest core index around);
    # a core is CORE_DEPTH pixels deep in its colour (a thin band of a third colour, the mix
    # of two others, is no core)
    core = torch.where(fg & on_palette & (best_alpha >= CORE_ALPHA), best, -1).squeeze(1).float()
    depth = max(1, int(round(CORE_DEPTH * scale)))
    core = torch.where(_max_filter(core, depth) == -_max_filter(-core, depth), core, -1.0)
    reach = int(round(MIX_REACH * scale))
    hi = _block_max_filter(core, reach)
    lo = -_block_max_filter(torch.where(core >= 0, -core, -float(k + 1)), reach)
    cand = (hi >= 0) & (lo <= k - 1) & (lo != hi)
    if bool(cand.any()):
        idx = cand.nonzero(as_tuple=True)
        j, kk = lo[idx].long(), hi[idx].long()
        vs = v.permute(0, 2, 3, 1)[idx]  # [P, 3]
        seg = d[kk] - d[j]
        t = ((vs - d[j]) * seg).sum(1) / seg.square().sum(1)
        t = t.clamp(0.0, 1.0)
        r_pair = (vs - d[j] - t.unsqueeze(1) * seg).square().sum(1)
        mixed = r_pair < best_resid2.squeeze(1)[idx]
        pick = torch.where(t >= 0.5, kk, j)
        xs = offset.permute(0, 2, 3, 1)[idx]
        tx = (((xs - d[j]) * seg).sum(1) / seg.square().sum(1)).clamp(0.0, 1.0)
        share = _sharpen(torch.where(t >= 0.5, tx, 1.0 - tx))
        label[idx] = torch.where(mixed, pick, label[idx])
        weight[idx] = torch.where(mixed, share, weight[idx])
    return Unmixed(label=label, weight=weight, offset=offset, strength=strength, palette_ok=on_palette.squeeze(1))


def coverage(offset: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Sharpened coverage by palette colour `colour` (indices, the shape of `offset` without
    its channel dimension) of pixels whose offsets from the background are `offset`
    [..., 3, ...]: [B, 3, H, W] with colour [B, H, W], or [P, 3] with colour [P]."""
    d = torch.tensor([COLORS[c] for c in PALETTE], device=offset.device) - torch.tensor(BACKGROUND, device=offset.device)
    dk = d[colour]  # [..., 3] at the end
    if offset.ndim == 4:
        dk = dk.permute(0, 3, 1, 2)
        return _sharpen((offset * dk).sum(1) / dk.square().sum(1))
    return _sharpen((offset * dk).sum(-1) / dk.square().sum(-1))


def _block_max_filter(x: torch.Tensor, r: int, block: int = 4) -> torch.Tensor:
    """At least the max over a (2r+1) x (2r+1) window of x [B, H, W] (at most r + 2 block
    pixels more): the max over blocks of block x block pixels, spread over the blocks
    within reach, cheap for a wide window."""
    h, w = x.shape[-2:]
    pool = torch.nn.functional.max_pool2d
    coarse = pool(x.unsqueeze(1), block, stride=block, ceil_mode=True)
    reach = -(-r // block)
    coarse = pool(coarse, 2 * reach + 1, stride=1, padding=reach)
    return coarse.repeat_interleave(block, -2).repeat_interleave(block, -1)[:, 0, :h, :w]


def _max_filter(x: torch.Tensor, r: int) -> torch.Tensor:
    """Max over a (2r+1) x (2r+1) window of x [B, H, W] (separable, border-replicating)."""
    pool = torch.nn.functional.max_pool2d
    y = pool(x.unsqueeze(1), (1, 2 * r + 1), stride=1, padding=(0, r))
    return pool(y, (2 * r + 1, 1), stride=1, padding=(r, 0)).squeeze(1)
