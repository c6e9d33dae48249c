"""Template fitting for components the harmonic classifier cannot read alone: shapes cut
by the image border, partly hidden by another object, or split off a blob of touching
shapes.

A template is a shape of the world (the project's proportions: `grammar.EXTENT`,
`SQUARE_HALF_SIDE`, `STAR_INNER`) at centre (cx, cy), radius s and angle a, with
box-filter coverage m = clamp(0.5 - sdf, 0, 1) (sdf in pixels; the renderer's edge model).
The fit maximises the soft IoU with the component's weights w over the pixels that count
("care" pixels: inside the frame and not covered by another object),

    IoU = sum_care min(w, m) / sum_care max(w, m),

by a grid search (7 radii around the radius that the visible area implies, centres within
1.25 visible radii of the centroid, 6 angles over the symmetry period) and two rounds of local
refinement, for each of the four shapes. Pixels outside the frame or under another object
are free, so a cut or occluded shape is judged on what is visible, and the fitted template
tells how much of it that is (`visible`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .renderer import _POLYGONS, folded_polygon_sdf
from .world import EXTENT, SHAPES, UNIT_AREA

_PERIOD = {"circle": 2 * math.pi, "square": math.pi / 2, "triangle": 2 * math.pi / 3, "star": 2 * math.pi / 5}
_RADII = (0.85, 0.95, 1.05, 1.2, 1.35, 1.55, 1.8)
_ANGLES = 6
#: coarse centre grid: offsets up to this many visible radii sqrt(area / pi) from the centroid
CENTRE_RANGE = 1.25


@dataclass(frozen=True)
class Fit:
    """Best template: `shape`, its soft IoU with the component over the care pixels, centre
    (cx, cy) in pixels, radius in pixels, and `visible` = fraction of the template's
    coverage inside the frame; `ious` holds the best IoU of every shape."""

    shape: str
    iou: float
    cx: float
    cy: float
    radius: float
    visible: float
    ious: dict[str, float]


def _coverage(shape: str, px: torch.Tensor, py: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Coverage [N, P] of N templates (params [N]) at pixel centres (px, py) [P]."""
    dx = px.view(1, -1) - cx.view(-1, 1)
    dy = py.view(1, -1) - cy.view(-1, 1)
    cos, sin = a.cos().view(-1, 1), a.sin().view(-1, 1)
    lx, ly = (cos * dx + sin * dy) / s.view(-1, 1), (-sin * dx + cos * dy) / s.view(-1, 1)
    if shape == "circle":
        sdf = torch.hypot(lx, ly) - 1.0
    else:
        n, r_out, r_in, phase = (torch.full((lx.shape[0],), float(v), dtype=lx.dtype) for v in _POLYGONS[shape])
        sdf = folded_polygon_sdf(torch.stack([lx, ly], -1), n, r_out, r_in, phase)
    return (0.5 - sdf * s.view(-1, 1)).clamp(0.0, 1.0)


def _iou(m: torch.Tensor, w: torch.Tensor, care: torch.Tensor) -> torch.Tensor:
    return (torch.minimum(m, w) * care).sum(-1) / (torch.maximum(m, w) * care).sum(-1).clamp_min(1e-9)


def fit_component(weights: np.ndarray, care: np.ndarray, frame: tuple[int, int]) -> Fit:
    """Fit every shape to a component. `weights` [H, W] in [0, 1] (zero off the component),
    `care` [H, W] bool (pixels that count; pixels outside the frame never do); `frame` = (H, W)."""
    h, w = frame
    ys, xs = np.nonzero(weights > 0)
    wt = weights[ys, xs]
    area = float(wt.sum())
    mx, my = float((wt * (xs + 0.5)).sum() / area), float((wt * (ys + 0.5)).sum() / area)
    s_vis = math.sqrt(area / math.pi)
    # centres within CENTRE_RANGE visible radii of the centroid (a shape at least 30% visible
    # has its centre there); the patch: the component plus a margin, clipped to the frame
    ext = CENTRE_RANGE * s_vis
    margin = 1.5 * s_vis + 2
    x0, x1 = max(0, int(xs.min() - margin)), min(w, int(xs.max() + margin) + 1)
    y0, y1 = max(0, int(ys.min() - margin)), min(h, int(ys.max() + margin) + 1)
    gy, gx = torch.meshgrid(torch.arange(y0, y1, dtype=torch.float32) + 0.5, torch.arange(x0, x1, dtype=torch.float32) + 0.5, indexing="ij")
    px, py = gx.reshape(-1), gy.reshape(-1)
    tw = torch.from_numpy(weights[y0:y1, x0:x1].astype(np.float32)).reshape(1, -1)
    tc = torch.from_numpy(care[y0:y1, x0:x1].astype(np.float32)).reshape(1, -1)
    step = max(1.0, s_vis / 2)
    offs = torch.arange(-ext, ext + 1e-6, step)
    best: dict[str, tuple[float, tuple[float, float, float, float]]] = {}
    for shape in SHAPES:
        s0 = math.sqrt(area / UNIT_AREA[shape])
        n_ang = 1 if shape == "circle" else _ANGLES
        radii = torch.tensor([s0 * f for f in _RADII])
        angles = torch.arange(n_ang) * (_PERIOD[shape] / n_ang)
        grid = torch.cartesian_prod(mx + offs, my + offs, radii, angles)  # [N, 4]
        # centres farther from the centroid than the template's extent cannot cover it
        keep = torch.hypot(grid[:, 0] - mx, grid[:, 1] - my) <= grid[:, 2] * EXTENT[shape]
        grid = grid[keep]
        scores = torch.cat([_iou(_coverage(shape, px, py, *g.unbind(-1)), tw, tc) for g in grid.split(2048)])
        i = int(scores.argmax())
        params, score = grid[i], float(scores[i])
        d = torch.tensor([step / 2, step / 2, 0.05 * s0, _PERIOD[shape] / n_ang / 2])
        for _ in range(3):  # local refinement
            local = params + torch.cartesian_prod(*(torch.tensor([-1.0, 0.0, 1.0]) * d[k] for k in range(4)))
            if shape == "circle":
                local = local[local[:, 3] == params[3]]
            sc = _iou(_coverage(shape, px, py, *local.unbind(-1)), tw, tc)
            j = int(sc.argmax())
            if float(sc[j]) > score:
                params, score = local[j], float(sc[j])
            d = d / 2
        best[shape] = (score, tuple(float(v) for v in params))
    shape = max(best, key=lambda k: best[k][0])
    score, (cx, cy, s, a) = best[shape]
    visible = _visible(shape, cx, cy, s, a, frame)
    return Fit(shape, score, cx, cy, s, visible, {k: v[0] for k, v in best.items()})


def _visible(shape: str, cx: float, cy: float, s: float, a: float, frame: tuple[int, int]) -> float:
    """Fraction of the template's coverage inside the frame (template rasterised on a
    canvas padded by its extent)."""
    h, w = frame
    pad = int(math.ceil(EXTENT[shape] * s)) + 2
    gy, gx = torch.meshgrid(torch.arange(-pad, h + pad, dtype=torch.float32) + 0.5,
                            torch.arange(-pad, w + pad, dtype=torch.float32) + 0.5, indexing="ij")
    t = torch.tensor
    m = _coverage(shape, gx.reshape(-1), gy.reshape(-1), t([cx]), t([cy]), t([s]), t([a])).view(h + 2 * pad, w + 2 * pad)
    total = float(m.sum())
    return float(m[pad : pad + h, pad : pad + w].sum()) / max(total, 1e-9)
