"""Template fitting for components the harmonic classifier cannot read alone: shapes cut
by the image border, partly hidden by another object, or split off a blob of touching
shapes. Batched: every fit of a batch of images at once (torch, CPU or CUDA).

A template is a shape of the world (the project's proportions: `world.EXTENT`,
`renderer._POLYGONS`) at centre (cx, cy), radius s and angle a, with box-filter coverage
m = clamp(0.5 - sdf, 0, 1) (sdf in pixels; the renderer's edge model). The fit maximises
the soft IoU with the component's weights w over the points that count ("care": inside
the frame and not covered by another object),

    IoU = sum_care min(w, m) / sum_care max(w, m),

by a grid search (7 radii around the radius that the visible area implies, 7 x 7 centres
within 1.25 visible radii of the centroid, 6 angles over the symmetry period; coverage from
precomputed unit-size distance rasters, one channel per angle) and three rounds of local
refinement, for each of the four shapes; the four refined templates are then compared on
every pixel around the component with exact coverage. The sums run over a square canvas
of pixel centres around the component (its box plus 1.5 visible radii), every pixel or
every k-th so that COARSE x COARSE points span it for the grid search and FINE x FINE for
the refinement: every fit of a batch has the same size, and w and care are the pixels' own. Points outside the frame or
under another object are free, so a cut or occluded shape is judged on what is visible,
and the fitted template tells how much of it that is (`visible`).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch

from .renderer import _POLYGONS, folded_polygon_sdf
from .world import EXTENT, SHAPES, UNIT_AREA

_PERIOD = {"circle": 2 * math.pi, "square": math.pi / 2, "triangle": 2 * math.pi / 3, "star": 2 * math.pi / 5}
_RADII = (0.85, 0.95, 1.05, 1.2, 1.35, 1.55, 1.8)
_ANGLES = 6
#: coarse centre grid: offsets up to this many visible radii sqrt(area / pi) from the centroid
CENTRE_RANGE = 1.25
_OFFSETS = torch.linspace(-CENTRE_RANGE, CENTRE_RANGE, 7)
#: canvas sample points per side for the grid search and for the refinement
COARSE, FINE = 40, 40
#: template-point pairs scored at once (bounds the working set): small on the CPU (cache),
#: large on a GPU (few kernel launches: all fits of a batch in one go)
CHUNK = {"cpu": 1 << 21, "cuda": 1 << 26}


def _chunk(device: torch.device) -> int:
    return CHUNK.get(device.type, CHUNK["cpu"])

#: (sample points x, y [J, P] in pixels) -> (weights w, care) [J, P] of every fit
Sampler = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Fits:
    """Best template of each fit [J]: shape index into SHAPES, soft IoU, centre (cx, cy) and
    radius in pixels, and `visible` = the fraction of its coverage inside the frame."""

    shape: torch.Tensor
    iou: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    radius: torch.Tensor
    visible: torch.Tensor


def coverage(shape: str, px: torch.Tensor, py: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Coverage [J, T, P] of templates `params` [J, T, 4] (cx, cy, s, a) at points (px, py) [J, P]."""
    dx = px.unsqueeze(1) - params[..., 0:1]
    dy = py.unsqueeze(1) - params[..., 1:2]
    a, s = params[..., 3:4], params[..., 2:3]
    cos, sin = a.cos(), a.sin()
    lx, ly = (cos * dx + sin * dy) / s, (-sin * dx + cos * dy) / s
    if shape == "circle":
        sdf = torch.hypot(lx, ly) - 1.0
    else:
        j, t, p = lx.shape
        rows = j * t
        n, r_out, r_in, phase = (torch.full((rows,), float(v), dtype=lx.dtype, device=lx.device) for v in _POLYGONS[shape])
        sdf = folded_polygon_sdf(torch.stack([lx, ly], -1).view(rows, p, 2), n, r_out, r_in, phase).view(j, t, p)
    return (0.5 - sdf * s).clamp(0.0, 1.0)


def _raster_coverage(shape: str, px: torch.Tensor, py: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """`coverage` [J, T, P] read from the unit raster of angle 0 (bilinear) at the points
    turned into each template's frame."""
    dx = px.unsqueeze(1) - params[..., 0:1]
    dy = py.unsqueeze(1) - params[..., 1:2]
    a, s = params[..., 3:4], params[..., 2:3]
    cos, sin = a.cos(), a.sin()
    grid = torch.stack([(cos * dx + sin * dy) / s, (-sin * dx + cos * dy) / s], -1) / RASTER_HALF
    sdf = torch.nn.functional.grid_sample(_unit_sdf(shape, 1, str(px.device)), grid.view(1, -1, 1, 2), mode="bilinear",
                                          padding_mode="border", align_corners=True).view(dx.shape)
    return (0.5 - sdf * s).clamp(0.0, 1.0)


def _iou(shape: str, params: torch.Tensor, px: torch.Tensor, py: torch.Tensor, w: torch.Tensor,
         care: torch.Tensor) -> torch.Tensor:
    """Soft IoU [J, T] of templates `params` [J, T, 4] with weights w over care points [J, P]."""
    j, t, _ = params.shape
    step = max(1, _chunk(px.device) // max(1, j * px.shape[1]))
    out = []
    for k in range(0, t, step):
        m = _raster_coverage(shape, px, py, params[:, k : k + step])
        ww, cc = w.unsqueeze(1), care.unsqueeze(1)
        out.append((torch.minimum(m, ww) * cc).sum(-1) / (torch.maximum(m, ww) * cc).sum(-1).clamp_min(1e-9))
    return torch.cat(out, 1)


def _exact_iou(shape: str, params: torch.Tensor, px: torch.Tensor, py: torch.Tensor, w: torch.Tensor,
               care: torch.Tensor) -> torch.Tensor:
    """Soft IoU [J] of one template per fit `params` [J, 4] with exact coverage (`coverage`)."""
    m = coverage(shape, px, py, params.unsqueeze(1))[:, 0]
    return (torch.minimum(m, w) * care).sum(-1) / (torch.maximum(m, w) * care).sum(-1).clamp_min(1e-9)


def _canvas(cx: torch.Tensor, cy: torch.Tensor, half: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n x n sample points [J, n*n] at pixel centres, every `stride`-th pixel (the smallest
    stride that spans the square centred at (cx, cy) with half-side `half`): the weights
    there are the pixels' own, not interpolations."""
    stride = torch.ceil(2.0 * half / n).clamp_min(1.0)
    x0 = torch.floor(cx - stride * n / 2.0)
    y0 = torch.floor(cy - stride * n / 2.0)
    k = torch.arange(n, device=cx.device, dtype=cx.dtype)
    gy, gx = torch.meshgrid(k, k, indexing="ij")
    return (x0.view(-1, 1) + 0.5 + stride.view(-1, 1) * gx.reshape(1, -1),
            y0.view(-1, 1) + 0.5 + stride.view(-1, 1) * gy.reshape(1, -1))


#: unit-size signed distance rasters for the grid search: RASTER x RASTER points over
#: [-RASTER_HALF, RASTER_HALF]^2 (beyond, the border value: at least 0.25 units outside)
RASTER, RASTER_HALF = 257, 1.6


@functools.lru_cache(maxsize=16)
def _unit_sdf(shape: str, n_ang: int, device: str) -> torch.Tensor:
    """Signed distance rasters [1, n_ang, RASTER, RASTER] of `shape` at unit size, one
    channel per grid angle (angle k * period / n_ang), in float64 then float32."""
    u = torch.linspace(-RASTER_HALF, RASTER_HALF, RASTER, dtype=torch.float64)
    gy, gx = torch.meshgrid(u, u, indexing="ij")
    chans = []
    for k in range(n_ang):
        a = k * _PERIOD[shape] / n_ang
        c, s = math.cos(a), math.sin(a)
        lx, ly = c * gx + s * gy, -s * gx + c * gy  # the offset turned by -a, as in `coverage`
        if shape == "circle":
            sdf = torch.hypot(lx, ly) - 1.0
        else:
            params = (torch.tensor([float(v)], dtype=torch.float64) for v in _POLYGONS[shape])
            sdf = folded_polygon_sdf(torch.stack([lx, ly], -1).view(1, -1, 2), *params).view(RASTER, RASTER)
        chans.append(sdf)
    return torch.stack(chans).unsqueeze(0).to(device=device, dtype=torch.float32)


def _grid_iou(shape: str, n_ang: int, centres: torch.Tensor, radii: torch.Tensor, px: torch.Tensor, py: torch.Tensor,
              w: torch.Tensor, care: torch.Tensor) -> torch.Tensor:
    """Soft IoU [J, C, R, A] of the grid templates (centres [J, C, 2] x radii [J, R] x the
    n_ang grid angles) with weights w over care points [J, P]: the coverage comes from the
    unit rasters (bilinear), all angles of a point in one lookup."""
    sdf_maps = _unit_sdf(shape, n_ang, str(px.device))
    j, c, _ = centres.shape
    r = radii.shape[1]
    out = []
    step = max(1, _chunk(px.device) // max(1, c * r * px.shape[1] * n_ang))
    for k in range(0, j, step):
        sl = slice(k, k + step)
        dx = px[sl].view(-1, 1, 1, px.shape[1]) - centres[sl, :, 0].view(-1, c, 1, 1)
        dy = py[sl].view(-1, 1, 1, py.shape[1]) - centres[sl, :, 1].view(-1, c, 1, 1)
        s = radii[sl].view(-1, 1, r, 1)
        grid = torch.stack([dx / s, dy / s], -1) / RASTER_HALF  # [j, C, R, P, 2]
        sdf = torch.nn.functional.grid_sample(sdf_maps, grid.view(1, -1, 1, 2), mode="bilinear",
                                              padding_mode="border", align_corners=True)  # [1, A, N, 1]
        sdf = sdf.view(n_ang, *grid.shape[:4]).permute(1, 2, 3, 0, 4)  # [j, C, R, A, P]
        m = (0.5 - sdf * s.unsqueeze(-1)).clamp(0.0, 1.0)
        ww, cc = w[sl].view(-1, 1, 1, 1, w.shape[1]), care[sl].view(-1, 1, 1, 1, care.shape[1])
        out.append((torch.minimum(m, ww) * cc).sum(-1) / (torch.maximum(m, ww) * cc).sum(-1).clamp_min(1e-9))
    return torch.cat(out)


def fit_templates(sample: Sampler, mass: torch.Tensor, mx: torch.Tensor, my: torch.Tensor, box: torch.Tensor,
                  frame: tuple[int, int]) -> Fits:
    """Fit every shape to J components at once and keep the best. `sample` gives the
    components' weights and care at any points; `mass`, (mx, my) and `box` [J, 4] (x0, y0,
    x1, y1, inclusive pixel indices) are their soft area, centroid and bounding box in pixels."""
    mass, mx, my, box = mass.float(), mx.float(), my.float(), box.float()
    dev = mass.device
    n = mass.numel()
    rows = torch.arange(n, device=dev)
    s_vis = (mass / math.pi).sqrt().clamp_min(0.5)
    bcx, bcy = (box[:, 0] + box[:, 2] + 1) / 2, (box[:, 1] + box[:, 3] + 1) / 2
    half = torch.maximum(box[:, 2] - box[:, 0] + 1, box[:, 3] - box[:, 1] + 1) / 2 + 1.5 * s_vis + 2
    coarse = _canvas(bcx, bcy, half, COARSE)
    fine = _canvas(bcx, bcy, half, FINE)
    wc, cc = sample(*coarse)
    wf, cf = sample(*fine)
    exact = _canvas(bcx, bcy, half, int(torch.ceil(2.0 * half.max()).item()) if n else 1)  # every pixel
    we, ce = sample(*exact)
    step = (s_vis / 2).clamp_min(1.0)
    offs = _OFFSETS.to(dev)
    oy, ox = torch.meshgrid(offs, offs, indexing="ij")
    centres = torch.stack([mx.view(-1, 1) + ox.reshape(1, -1) * s_vis.view(-1, 1),
                           my.view(-1, 1) + oy.reshape(1, -1) * s_vis.view(-1, 1)], -1)  # [J, C, 2]
    dist_c = torch.hypot(centres[..., 0] - mx.view(-1, 1), centres[..., 1] - my.view(-1, 1))  # [J, C]
    best_iou = torch.full((len(SHAPES), n), -1.0, device=dev)
    best_par = torch.zeros(len(SHAPES), n, 4, device=dev)
    for si, shape in enumerate(SHAPES):
        s0 = (mass / UNIT_AREA[shape]).sqrt()
        n_ang = 1 if shape == "circle" else _ANGLES
        radii = torch.tensor(_RADII, device=dev).view(1, -1) * s0.view(-1, 1)  # [J, R]
        scores = _grid_iou(shape, n_ang, centres, radii, *coarse, wc, cc)  # [J, C, R, A]
        # centres farther from the centroid than the template's extent cannot cover it
        reach = dist_c.unsqueeze(2) <= radii.unsqueeze(1) * EXTENT[shape]
        scores = torch.where(reach.unsqueeze(3), scores, -1.0).view(n, -1)
        i = scores.argmax(1)
        ci, ri, ai = i // (len(_RADII) * n_ang), (i // n_ang) % len(_RADII), i % n_ang
        params = torch.stack([centres[rows, ci, 0], centres[rows, ci, 1], radii[rows, ri],
                              ai.float() * (_PERIOD[shape] / n_ang)], 1)
        score = _iou(shape, params.unsqueeze(1), *fine, wf, cf)[:, 0]
        d = torch.stack([step / 2, step / 2, 0.05 * s0, torch.full_like(s0, _PERIOD[shape] / n_ang / 2)], 1)
        moves = torch.cartesian_prod(*(torch.tensor([-1.0, 0.0, 1.0], device=dev),) * 4)
        if shape == "circle":
            moves = moves[moves[:, 3] == 0]
        for _ in range(3):  # local refinement
            local = params.unsqueeze(1) + moves.unsqueeze(0) * d.unsqueeze(1)
            sc = _iou(shape, local, *fine, wf, cf)
            v, j = sc.max(1)
            better = v > score
            params = torch.where(better.unsqueeze(1), local[rows, j], params)
            score = torch.where(better, v, score)
            d = d / 2
        best_par[si] = params
        # the shapes are compared on every pixel of the window, with exact coverage
        best_iou[si] = _exact_iou(shape, params, *exact, we, ce)
    iou, shape_idx = best_iou.max(0)  # ties go to the earlier shape
    par = best_par[shape_idx, rows]
    visible = _visible(shape_idx, par, frame)
    return Fits(shape_idx, iou, par[:, 0], par[:, 1], par[:, 2], visible)


def _visible(shape_idx: torch.Tensor, par: torch.Tensor, frame: tuple[int, int], n: int = 48) -> torch.Tensor:
    """Fraction of each template's coverage inside the frame (sampled on n x n points over
    its enclosing square)."""
    h, w = frame
    ext = par[:, 2] * torch.tensor([EXTENT[s] for s in SHAPES], device=par.device, dtype=par.dtype)[shape_idx] + 1.0
    u = (torch.arange(n, device=par.device, dtype=par.dtype) + 0.5) / n * 2.0 - 1.0
    gy, gx = torch.meshgrid(u, u, indexing="ij")
    px = par[:, 0:1] + ext.view(-1, 1) * gx.reshape(1, -1)
    py = par[:, 1:2] + ext.view(-1, 1) * gy.reshape(1, -1)
    cov = torch.zeros_like(px)
    for si, shape in enumerate(SHAPES):
        rows = shape_idx == si
        if bool(rows.any()):
            cov[rows] = coverage(shape, px[rows], py[rows], par[rows].unsqueeze(1))[:, 0]
    inside = (px >= 0) & (px <= w) & (py >= 0) & (py <= h)
    return (cov * inside).sum(1) / cov.sum(1).clamp_min(1e-9)
