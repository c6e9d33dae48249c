"""Object detection for the shapes world: colour segmentation, connected components and a
rotation-invariant shape classifier. The oracle (`oracle.py`) checks prompts against what
this finds.

Method, per image (everything except connected-component labelling is batched):

1. Denoise with a small gaussian (0.6 px at 64 px) and estimate the background as the
   per-channel median (objects cover well under half the image).
2. Colour unmixing: an anti-aliased or blurred pixel of colour c over background b is
   p = b + alpha (c - b). For each palette colour c_k, project p - b on d_k = c_k - BACKGROUND
   to get alpha_k in [0, 1] and the residual |p - b - alpha_k d_k|. A pixel belongs to the
   colour with the smallest residual if that colour's alpha >= 0.5 (the shape's edge);
   pixels far from every colour line are "off-palette" foreground. This is robust to
   blur (edges stay on the line), noise (the smoothing) and global colour shifts (d_k are
   offsets, the background is measured).
3. Connected components per colour (8-connected, scipy.ndimage.label, all images and
   colours in one call); components smaller than `MIN_AREA` of the image are dropped as
   specks.
4. Shape features from soft moments: with weights w over the component and its one-pixel
   rim (alpha of the unsmoothed image, sharpened: w = clamp(3 (alpha - 0.5) + 0.5, 0, 1),
   which undoes part of any blur), centroid mu and polar coordinates (r, theta) around it,
       h_m = |sum w r^2 exp(i m theta)| / sum w r^2      (m = 1 .. 5)
   are rotation invariant, and a shape with n-fold symmetry has h_m = 0 unless n divides m.
   So a circle has all h_m ~ 0, a triangle a large h_3, a square h_4, a five-point star
   h_5; h_1 (lopsided) and h_2 (elongated, e.g. two merged objects) are ~ 0 for all four.
   Over 2,700 objects of 1,536 perturbed renders (blur <= 1 px, noise <= 0.05, jitter
   <= 0.06) the on-symmetry harmonic is >= 0.48 (triangle), >= 0.24 (square), >= 0.45
   (star) and every other harmonic <= 0.08.
5. Classification: the feature vector (h1/A, h2/A, h3/P3, h4/P4, h5/P5) puts the
   circle at the origin and the polygons on unit axes (see `classify`); the nearest
   prototype wins, and a component farther than `UNKNOWN_DISTANCE` from every prototype
   is "unknown" (a blob that matches no shape well), keeping its nearest guess.
6. Components that step 5 does not settle go to `_resolve`: those cut by the image border,
   "unknown" ones, and concave compact ones that are not read as stars (solidity =
   pixels / pixel centres in the convex hull < `STAR_SOLIDITY`, h1 and h2 small: a
   concave star-like shape is never a circle, square or triangle, which are convex).
   Each is fitted with shape templates (`fit.py`: soft IoU over the pixels inside the frame
   and not covered by another object); a fit with IoU >= `FIT_IOU` names it. Otherwise
   the blob is split at the necks of its distance transform (touching shapes of one
   colour) and every part fitted; if all parts fit, each is an object. What still fits
   nothing stays "unknown". A shape cut by the border counts when at least
   `CUT_MIN_VISIBLE` (30%) of its fitted template lies inside the frame; less is a sliver
   and ignored. Shapes the renderer draws (never cut, touching or concave unless stars)
   never reach this step, so the oracle's verdicts on them are unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .grammar import BACKGROUND, COLORS
from .perturb import gaussian_blur

#: on-symmetry harmonic (m, P_m) of each polygon: P_m / 2 is where a component is as near
#: the circle as the polygon. Chosen between the largest off-symmetry harmonic of any
#: render (~0.06, ~0.11 under heavy blur and noise) and the smallest on-symmetry one
#: (0.48 / 0.24 / 0.45; 0.41 / 0.18 / 0.27 under heavy blur and noise); clean renders
#: reach 0.55 / 0.29 / 0.59.
PROTOTYPE_HARMONIC: dict[str, tuple[int, float]] = {"triangle": (3, 0.36), "square": (4, 0.26), "star": (5, 0.34)}
#: scale of h1 and h2 (asymmetry, elongation) in the feature space: 0.15 is half-way to "unknown"
ASYMMETRY_SCALE = 0.3
#: a component farther than this from every prototype (in the normalised space) is "unknown"
UNKNOWN_DISTANCE = 0.5
#: components smaller than this fraction of the image are specks and ignored (the smallest
#: object of the world covers ~2% of the image)
MIN_AREA = 0.007
#: a component whose pixels fill less than this of their convex hull, and that is not
#: lopsided or elongated, is a star-like concave shape, never a circle, square or triangle
#: (generated five-point stars: 0.70-0.88, small blurred ones highest; a four-point star of
#: 73 px 0.91; digitised discs, squares and triangles >= 0.98)
STAR_SOLIDITY = 0.93
#: template fitting (fit.py) is tried only on components up to this share of the frame
#: (the largest object covers ~0.08; two touching ones ~0.16) and on at most MAX_FITS
#: components per image: a blurry intermediate image (a Tweedie estimate early in sampling)
#: is many large blobs, where fitting costs seconds and cannot name anything anyway
MAX_FIT_AREA = 0.2
MAX_FITS = 3
#: a template fit (fit.py) with soft IoU >= this names the component's shape
FIT_IOU = 0.8
#: a shape cut by the image border counts as an object when at least this fraction of the
#: fitted template is inside the frame (a sliver at the border is ignored)
CUT_MIN_VISIBLE = 0.3
#: blob splitting: the distance transform between two centres must dip below this fraction
#: of the smaller inscribed radius (touching shapes have a neck; one shape does not)
SPLIT_NECK = 0.7
#: a pixel is foreground of colour k when alpha_k >= this
ALPHA_THRESHOLD = 0.5
#: pixels whose distance to every colour line exceeds this are off-palette
OFF_PALETTE_RESIDUAL = 0.35
#: pre-smoothing std in pixels at 64 px (scaled with the resolution), for the colour labels
SMOOTH_SIGMA = 0.6
#: slope of the soft weights used for shape moments: w = clamp(SHARPEN (alpha - 0.5) + 0.5)
SHARPEN = 3.0

_PALETTE_NAMES: tuple[str, ...] = tuple(COLORS)


@dataclass(frozen=True)
class Detection:
    """One object found in an image.

    `shape` is one of SHAPES or "unknown" (then `guess` is the nearest shape), `color` a
    palette name or None (off-palette), (cx, cy) the centroid and `area` the soft area, as
    fractions of the image; `distance` is the distance to the nearest shape prototype
    (0 = perfect, > UNKNOWN_DISTANCE = unknown)."""

    shape: str
    color: str | None
    cx: float
    cy: float
    area: float
    guess: str
    distance: float


def detect_batch(images: torch.Tensor) -> list[list[Detection]]:
    """Detections for each image of a batch [B, 3, H, W] in [0, 1] (any resolution)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
    b, _, h, w = images.shape
    if b == 0:
        return []
    x = images.detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    sigma = SMOOTH_SIGMA * min(h, w) / 64.0
    smooth = gaussian_blur(x, torch.full((b,), sigma))

    bg = smooth.flatten(2).median(dim=2).values  # [B, 3]
    d = torch.tensor([COLORS[c] for c in _PALETTE_NAMES]) - torch.tensor(BACKGROUND)  # [K, 3]
    v = smooth - bg.view(b, 3, 1, 1)  # [B, 3, H, W]
    proj = torch.einsum("kc,bchw->bkhw", d, v)  # <v, d_k>
    dd = d.square().sum(1).view(1, -1, 1, 1)
    alpha = (proj / dd).clamp(0.0, 1.0)
    # |v - alpha d|^2 = |v|^2 - 2 alpha <v, d> + alpha^2 |d|^2
    vv = v.square().sum(1, keepdim=True)
    resid2 = (vv - 2.0 * alpha * proj + alpha.square() * dd).clamp_min(0.0)
    best_resid2, best = resid2.min(dim=1, keepdim=True)
    best_alpha = alpha.gather(1, best)
    fg = best_alpha >= ALPHA_THRESHOLD
    on_palette = best_resid2 <= OFF_PALETTE_RESIDUAL**2
    k = len(_PALETTE_NAMES)
    masks = (best == torch.arange(k).view(1, -1, 1, 1)) & fg & on_palette  # [B, K, H, W]
    # off-palette foreground: clearly not background, far from every colour line
    strength = (vv.sqrt() / d.norm(dim=1).median()).clamp(0.0, 1.0)
    off = fg & ~on_palette
    masks = torch.cat([masks, off], 1).numpy()  # [B, K+1, H, W]
    # shape weights: alpha of the unsmoothed image, sharpened to a 1/SHARPEN pixel ramp
    # (undoes part of any blur; noise averages out in the moment sums)
    walpha = torch.einsum("kc,bchw->bkhw", d, x - bg.view(b, 3, 1, 1)) / dd
    walpha = ((walpha - 0.5) * SHARPEN + 0.5).clamp(0.0, 1.0)
    weights = torch.cat([walpha * on_palette, strength * off], 1).numpy()
    background = (~fg).squeeze(1).numpy()  # [B, H, W]
    return _components(masks, weights, background)


def detect(image: torch.Tensor) -> list[Detection]:
    """Detections in one image [3, H, W] in [0, 1]."""
    return detect_batch(image.unsqueeze(0))[0]


def _components(masks: np.ndarray, weights: np.ndarray, background: np.ndarray) -> list[list[Detection]]:
    """Label components of every (image, colour) plane at once, measure soft moments with
    bincount, classify. masks/weights: [B, C, H, W]; background: [B, H, W]."""
    try:
        from scipy import ndimage
    except ImportError as err:  # scipy is a runtime dependency of the oracle only
        raise ImportError("the shapes oracle needs scipy (connected components): pip install scipy") from err
    b, c, h, w = masks.shape
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected within a plane, never across planes
    labels, n = ndimage.label(masks.reshape(b * c, h, w), structure=structure)
    out: list[list[Detection]] = [[] for _ in range(b)]
    if n == 0:
        return out
    # grow each component by a one-pixel rim of background pixels (its anti-aliased edge)
    grown = ndimage.maximum_filter(labels, size=(1, 3, 3))
    rim = (labels == 0) & np.repeat(background, c, axis=0)
    region = np.where(labels > 0, labels, np.where(rim, grown, 0)).ravel()
    wts = np.where(region > 0, weights.reshape(-1), 0.0)
    sel = np.nonzero(wts > 0)[0]
    lab = region[sel]
    wt = wts[sel]
    pix = sel % (h * w)
    ys = (pix // w).astype(np.float64) + 0.5
    xs = (pix % w).astype(np.float64) + 0.5

    m0 = np.bincount(lab, wt, n + 1)
    safe = np.maximum(m0, 1e-9)
    mx = np.bincount(lab, wt * xs, n + 1) / safe
    my = np.bincount(lab, wt * ys, n + 1) / safe
    z = (xs - mx[lab]) + 1j * (ys - my[lab])  # [P] complex offsets from the centroid
    r2 = (z * z.conjugate()).real
    s2 = np.maximum(np.bincount(lab, wt * r2, n + 1), 1e-9)
    zn = np.where(r2 > 0, z / np.sqrt(np.maximum(r2, 1e-12)), 0.0)  # exp(i theta)
    harm = np.zeros((n + 1, 5))
    rot = np.ones_like(zn)
    for m in range(1, 6):
        rot = rot * zn
        val = wt * r2 * rot
        re = np.bincount(lab, val.real, n + 1)
        im = np.bincount(lab, val.imag, n + 1)
        harm[:, m - 1] = np.hypot(re, im) / s2

    # which (image, colour) plane each label lives in
    flat_labels = labels.ravel()
    plane = np.zeros(n + 1, dtype=np.int64)
    plane[flat_labels] = np.arange(flat_labels.size) // (h * w)
    area = m0 / (h * w)
    slices = ndimage.find_objects(labels)
    region3 = region.reshape(b * c, h, w)
    weights3 = weights.reshape(b * c, h, w)
    fits_left = [MAX_FITS] * b
    for j in range(1, n + 1):
        if area[j] < MIN_AREA:
            continue
        img, col = divmod(int(plane[j]), c)
        color = _PALETTE_NAMES[col] if col < len(_PALETTE_NAMES) else None
        shape, guess, dist = classify(harm[j])
        sl = slices[j - 1][1:]
        mask = labels[plane[j]] == j
        touches = bool(sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w)
        solidity = _solidity(mask[sl])
        compact = max(harm[j, 0], harm[j, 1]) < ASYMMETRY_SCALE / 2
        concave_star = solidity < STAR_SOLIDITY and compact
        if not touches and shape != "unknown" and not (shape != "star" and concave_star):
            out[img].append(Detection(shape, color, float(mx[j] / w), float(my[j] / h), float(area[j]), guess, dist))
            continue
        # cut by the frame, unclassified, or a concave "circle": fit templates (fit.py),
        # splitting touching shapes at the distance-transform necks first if that helps;
        # too large a blob, or too many of them, stays as the classifier left it
        if area[j] > MAX_FIT_AREA or fits_left[img] <= 0:
            out[img].append(Detection("unknown" if shape != "star" and concave_star else shape, color,
                                      float(mx[j] / w), float(my[j] / h), float(area[j]), guess, dist))
            continue
        fits_left[img] -= 1
        if concave_star and not touches:  # a star whatever a template fit says (_resolve, step 1): skip the fit
            out[img].append(Detection("star", color, float(mx[j] / w), float(my[j] / h), float(area[j]), "star", dist))
            continue
        own = region3[plane[j]] == j
        soft = np.where(own, weights3[plane[j]], 0.0)
        others = (labels[img * c : (img + 1) * c] > 0).any(0) & ~own
        for part in _resolve(mask, soft, ~others, (h, w), touches, concave_star, (shape, guess, dist)):
            out[img].append(Detection(part[0], color, part[3], part[4], part[5], part[1], part[2]))
    return out


def _solidity(mask: np.ndarray) -> float:
    """Pixels of the component / pixel centres inside the convex hull of its pixel centres
    (1 for a digitised convex shape; ~0.55-0.75 for a five-point star). A pixel centre is
    inside when it is on the inner side of every hull facet (a half-plane test, one matrix
    product for the whole box)."""
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask)
    if len(xs) < 4:
        return 1.0
    try:
        hull = ConvexHull(np.stack([xs, ys], 1).astype(np.float64))
    except QhullError:  # collinear pixels: a line is convex
        return 1.0
    gy, gx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
    normals, offsets = hull.equations[:, :2], hull.equations[:, 2]
    inside = (pts @ normals.T + offsets <= 1e-9).all(1)
    return float(len(xs) / max(int(inside.sum()), 1))


def _resolve(
    mask: np.ndarray,
    soft: np.ndarray,
    care: np.ndarray,
    frame: tuple[int, int],
    touches: bool,
    concave_star: bool,
    harmonic: tuple[str, str, float],
) -> list[tuple[str, str, float, float, float, float]]:
    """Objects in one component the harmonic classifier did not settle, as
    (shape, guess, distance, cx, cy, area) with distance = 1 - IoU of the fit.

    1. The whole component fits a template with IoU >= FIT_IOU: one object of that shape
       (a concave, compact component is a star whatever fits best: circles, squares and
       triangles are convex; this also reads four- and six-point stars as stars).
    2. Otherwise, if it splits at distance-transform necks into parts that each fit: one
       object per part (touching shapes of the same colour).
    3. Otherwise one unclear blob (the nearest shape as its guess).
    A shape cut by the frame counts only if the fitted template is at least CUT_MIN_VISIBLE
    visible (a sliver at the border is not an object)."""
    from .fit import fit_component

    h, w = frame
    whole = fit_component(soft, care, frame)
    parts: list[tuple[str, str, float, np.ndarray, float]] = []
    if whole.iou >= FIT_IOU or concave_star:
        name = "star" if concave_star else whole.shape
        parts = [(name, name, 1.0 - whole.iou, soft, whole.visible)]
    else:
        split = _split(mask)
        fits = []
        for cell in split if len(split) >= 2 else []:  # one cell is the whole component, fitted above
            # the other parts count as empty for this part's fit (touching shapes meet at
            # the neck; a template that reaches into the neighbour is penalised)
            sub_soft = np.where(cell, soft, 0.0)
            fits.append((fit_component(sub_soft, care, frame), sub_soft))
        if len(split) >= 2 and all(f.iou >= FIT_IOU for f, _ in fits):
            parts = [(f.shape, f.shape, 1.0 - f.iou, sw, f.visible) for f, sw in fits]
        else:
            shape, guess, dist = harmonic
            guess = whole.shape if shape == "unknown" or touches else guess
            parts = [("unknown", guess, max(1.0 - whole.iou, UNKNOWN_DISTANCE), soft, whole.visible)]
    out = []
    gy, gx = np.mgrid[0:h, 0:w]
    for shape, guess, dist, sw, visible in parts:
        if touches and visible < CUT_MIN_VISIBLE:
            continue
        m = float(sw.sum())
        if m / (h * w) < MIN_AREA:
            continue
        cx, cy = float((sw * (gx + 0.5)).sum() / m / w), float((sw * (gy + 0.5)).sum() / m / h)
        out.append((shape, guess, float(dist), cx, cy, m / (h * w)))
    return out


def _split(mask: np.ndarray) -> list[np.ndarray]:
    """Split a blob of touching shapes at its necks: peaks of the distance transform (each
    the centre of a maximal inscribed disc, value r_i), kept greedily when no stronger peak
    lies within its disc and the distance transform along the segment to every kept peak
    dips below SPLIT_NECK * min(r_i, r_k); pixels go to the peak of smallest power
    |p - c_i|^2 - r_i^2. Returns each peak's cell of that power diagram over the whole frame
    (so the component's rim goes with its part), or [all True] if nothing splits."""
    from scipy import ndimage

    dt = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    peak = (dt == ndimage.maximum_filter(dt, size=3)) & (dt >= 0.4 * dt.max()) & mask
    ys, xs = np.nonzero(peak)
    order = np.argsort(-dt[ys, xs], kind="stable")
    kept: list[tuple[float, float, float]] = []
    for i in order:
        y, x, r = float(ys[i]), float(xs[i]), float(dt[ys[i], xs[i]])
        ok = True
        for ky, kx, kr in kept:
            if math.hypot(y - ky, x - kx) <= kr:
                ok = False
                break
            t = np.linspace(0.0, 1.0, 32)
            line = dt[np.round(y + t * (ky - y)).astype(int), np.round(x + t * (kx - x)).astype(int)]
            if line.min() > SPLIT_NECK * min(r, kr):
                ok = False
                break
        if ok:
            kept.append((y, x, r))
    if len(kept) < 2:
        return [np.ones_like(mask)]
    gy, gx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    power = np.stack([(gy - y) ** 2 + (gx - x) ** 2 - r**2 for y, x, r in kept])
    owner = power.argmin(0)
    return [owner == k for k in range(len(kept))]


def classify(harmonics: np.ndarray) -> tuple[str, str, float]:
    """(shape or "unknown", nearest shape, distance) from harmonics h_1..h_5.

    Features f = (h1 / A, h2 / A, h3 / P3, h4 / P4, h5 / P5) with A = ASYMMETRY_SCALE and
    P_m = PROTOTYPE_HARMONIC: the circle's prototype is the origin, polygon m's is the unit
    vector e_m, and a harmonic stronger than its prototype counts as a perfect match
    (f_m is clipped to 1 for that distance). The nearest prototype wins; farther than
    UNKNOWN_DISTANCE from all of them, the component is "unknown"."""
    h = np.asarray(harmonics, dtype=np.float64)
    f = np.array([h[0] / ASYMMETRY_SCALE, h[1] / ASYMMETRY_SCALE, h[2], h[3], h[4]])
    for m, proto in PROTOTYPE_HARMONIC.values():
        f[m - 1] = h[m - 1] / proto
    best, best_d = "circle", float(np.linalg.norm(f))
    for name, (m, _) in PROTOTYPE_HARMONIC.items():
        g = f.copy()
        g[m - 1] = min(g[m - 1], 1.0) - 1.0
        dist = float(np.linalg.norm(g))
        if dist < best_d:
            best, best_d = name, dist
    shape = best if best_d <= UNKNOWN_DISTANCE else "unknown"
    return shape, best, best_d
