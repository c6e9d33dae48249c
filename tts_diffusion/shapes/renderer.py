"""Batched, anti-aliased renderer for the shapes world.

Every object is drawn from its signed distance function (negative inside): pixel coverage
is `clamp(0.5 - sdf_px, 0, 1)`, the analytic coverage of a straight edge crossing a
one-pixel box filter, so edges are anti-aliased without supersampling. Objects are
composited over the background with the "over" operator, one object slot at a time,
vectorised over the batch. Everything is torch: the same code runs on CPU and GPU.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .grammar import BACKGROUND, COLORS, EXTENT, SQUARE_HALF_SIDE, STAR_INNER, Obj, Scene

#: folded-symmetry description of each polygon at unit size:
#: (number of points n, outer radius, inner radius at angle pi/n, angle of the first point)
#: For a regular n-gon the inner radius is the apothem R cos(pi/n); for the star it is the
#: inner vertex radius. Angles are in the unrotated shape's frame (y down, -pi/2 = up).
_POLYGONS: dict[str, tuple[int, float, float, float]] = {
    "square": (4, SQUARE_HALF_SIDE * math.sqrt(2.0), SQUARE_HALF_SIDE, -math.pi / 4),
    "triangle": (3, 1.35, 1.35 * math.cos(math.pi / 3), -math.pi / 2),
    "star": (5, 1.35, STAR_INNER, -math.pi / 2),
}


def shape_vertices(shape: str) -> torch.Tensor:
    """Polygon vertices [V, 2] of `shape` at unit size, in (x, y-down) coordinates of the
    unrotated shape (triangle and star point up). Used for diagnostics and tests."""
    n, r_out, r_in, phase = _POLYGONS[shape]
    pts = []
    for k in range(n):
        a = phase + 2 * math.pi * k / n
        pts.append([r_out * math.cos(a), r_out * math.sin(a)])
        if shape == "star":
            b = a + math.pi / n
            pts.append([r_in * math.cos(b), r_in * math.sin(b)])
    return torch.tensor(pts, dtype=torch.float64)


def folded_polygon_sdf(p: torch.Tensor, n: torch.Tensor, r_out: torch.Tensor, r_in: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Exact signed distance (negative inside) from local points p [N, P, 2] to n-fold
    symmetric polygons (regular polygons and stars), one per row.

    By symmetry (Inigo Quilez, "2D distance functions", sdStar/sdPolygon by domain folding),
    fold every point into the half-sector [0, pi/n] around the nearest point, where the
    boundary is the single segment from the tip T = (r_out, 0) to the inner point
    I = r_in (cos pi/n, sin pi/n); the distance to the shape is the distance to that
    segment, signed by the side of the line TI. Parameters are [N] tensors."""
    n = n.view(-1, 1).to(p.dtype)
    half = math.pi / n
    r = p.norm(dim=-1)
    theta = torch.atan2(p[..., 1], p[..., 0]) - phase.view(-1, 1)
    theta = torch.remainder(theta, 2.0 * half)
    theta = torch.minimum(theta, 2.0 * half - theta)  # mirror into [0, pi/n]
    qx, qy = r * theta.cos(), r * theta.sin()
    tx = r_out.view(-1, 1)
    ix, iy = r_in.view(-1, 1) * half.cos(), r_in.view(-1, 1) * half.sin()
    ex, ey = ix - tx, iy  # edge T -> I
    wx, wy = qx - tx, qy
    t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0)
    dist = torch.hypot(wx - t * ex, wy - t * ey)
    # outside iff q lies to the right of T -> I (away from the origin)
    outside = (ex * wy - ey * wx) < 0
    return torch.where(outside, dist, -dist)


def render(
    scenes: Sequence[Scene],
    size: int = 64,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Render scenes to images [B, 3, size, size] in [0, 1] (anti-aliased, deterministic).

    Each object is rasterised on a square patch of pixels around its centre (large enough
    for its enclosing circle), all objects of the batch at once; patches are then composited
    into the images slot by slot (object k of every scene together)."""
    b = len(scenes)
    device = torch.device(device)
    hw = size * size
    bg = torch.tensor(BACKGROUND, device=device, dtype=dtype)
    # one extra dummy pixel per image absorbs writes from patch pixels outside the frame
    images = bg.view(1, 3, 1).expand(b, 3, hw + 1).clone()
    objs = [(i, k, o) for i, sc in enumerate(scenes) for k, o in enumerate(sc.objects)]
    if objs:
        _draw(images, objs, size, device, dtype)
    return images[..., :hw].reshape(b, 3, size, size).clamp_(0.0, 1.0)


#: objects are rasterised in groups of similar patch size: a patch side is rounded up to a
#: multiple of this many pixels (a few groups a batch, little wasted area)
PATCH_STEP = 16


def _draw(images: torch.Tensor, objs: list[tuple[int, int, Obj]], size: int, device: torch.device, dtype: torch.dtype) -> None:
    """Rasterise and composite `objs` (image index, slot, object) into flat `images` in place:
    each object on its own square patch (grouped by patch size), then slot by slot, so a
    later object of a scene covers an earlier one."""
    sides = [int(math.ceil(2.0 * o.size * EXTENT[o.shape] * size)) + 3 for _, _, o in objs]
    groups: dict[int, list[int]] = {}
    for i, side in enumerate(sides):
        groups.setdefault(-(-side // PATCH_STEP) * PATCH_STEP, []).append(i)
    patches = [_rasterise([objs[i] for i in members], pp, size, device, dtype) for pp, members in sorted(groups.items())]
    for k in range(max(slot for _, slot, _ in objs) + 1):
        for img_idx, slot, flat, alpha, colors in patches:
            sel = (slot == k).nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            r = img_idx[sel].view(-1, 1)
            f = flat[sel]
            a = alpha[sel].unsqueeze(-1)  # [n, pp*pp, 1]
            under = images[r, :, f]  # [n, pp*pp, 3]
            images[r, :, f] = under * (1.0 - a) + colors[sel].unsqueeze(1) * a


def _rasterise(objs: list[tuple[int, int, Obj]], pp: int, size: int, device: torch.device, dtype: torch.dtype):
    """Coverage of `objs` on pp x pp pixel patches around their centres:
    (image index [N], slot [N], flat pixel index [N, pp*pp] (hw = outside), alpha [N, pp*pp], colours [N, 3])."""
    hw = size * size
    img_idx = torch.tensor([i for i, _, _ in objs], device=device)
    slot = torch.tensor([k for _, k, _ in objs], device=device)
    params = torch.tensor([[o.cx, o.cy, o.size, o.angle] for _, _, o in objs], device=device, dtype=torch.float64)
    colors = torch.tensor([COLORS[o.color] for _, _, o in objs], device=device, dtype=dtype)
    poly = torch.tensor(
        [_POLYGONS.get(o.shape, (1, 1.0, 1.0, 0.0)) for _, _, o in objs], device=device, dtype=torch.float64
    )
    is_circle = torch.tensor([o.shape == "circle" for _, _, o in objs], device=device)

    cx, cy, s, ang = params.unbind(-1)
    # patch of pp x pp pixels whose top-left pixel is (x0, y0)
    x0 = torch.floor(cx * size - pp / 2.0).long()
    y0 = torch.floor(cy * size - pp / 2.0).long()
    ar = torch.arange(pp, device=device)
    cols = (x0.view(-1, 1, 1) + ar.view(1, 1, -1)).expand(-1, pp, pp)  # [N, pp, pp]
    rows = (y0.view(-1, 1, 1) + ar.view(1, -1, 1)).expand(-1, pp, pp)
    valid = (cols >= 0) & (cols < size) & (rows >= 0) & (rows < size)
    flat = torch.where(valid, rows * size + cols, torch.full_like(cols, hw)).view(len(objs), -1)

    # pixel centres relative to the object centre, rotated by -angle, in units of its size
    dx = ((cols + 0.5) / size - cx.view(-1, 1, 1)).view(len(objs), -1)
    dy = ((rows + 0.5) / size - cy.view(-1, 1, 1)).view(len(objs), -1)
    cos, sin = ang.cos().view(-1, 1), ang.sin().view(-1, 1)
    local = torch.stack([cos * dx + sin * dy, -sin * dx + cos * dy], -1) / s.view(-1, 1, 1)
    sdf = torch.where(
        is_circle.view(-1, 1),
        local.norm(dim=-1) - 1.0,
        folded_polygon_sdf(local, *poly.unbind(-1)),
    )
    # analytic box-filter coverage of an edge at signed distance sdf (in pixels)
    alpha = (0.5 - sdf * (s * size).view(-1, 1)).clamp(0.0, 1.0).to(dtype)
    alpha = alpha * valid.view(len(objs), -1)
    return img_idx, slot, flat, alpha, colors


def render_objects(objects: Sequence[Sequence[Obj]], size: int = 64, device: torch.device | str = "cpu") -> torch.Tensor:
    """Render bare object lists (no prompt needed), e.g. for tests and diagnostics."""
    return render([Scene("", "", tuple(objs)) for objs in objects], size=size, device=device)
