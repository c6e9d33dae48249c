"""Object detection for the shapes world, batched over images in torch (CPU and CUDA run the
same code): colour unmixing, connected components, shape features, and template fits and
blob splitting for what the features leave open. The oracle (`oracle.py`) checks prompts
against what this finds.

1. Colour unmixing (`unmix.py`): each pixel gets a palette colour, off-palette, or
   background, and a soft weight (its coverage by that colour).
2. Connected components of equal colour (8-connected, `components.py`), all images and
   colours in one call; components smaller than MIN_AREA of the image are specks, ignored.
   Each component gets a one-pixel rim of background pixels (its anti-aliased edge), and a
   component that encloses pixels (an object with another inside it, grammar v2) is
   filled: its shape is read from its outline, and a component whose mass lies at least
   INSIDE_FRACTION in its holes is `inside` it.
3. Shape features (`features.py`): soft moments and rotation-invariant harmonics h_1..h_5,
   classified against the circle, triangle, square and star prototypes; a component far from
   all of them is "unknown" (keeping its nearest guess).
4. Components that step 3 does not settle go to template fitting (`fit.py`): those cut by
   the image border, "unknown" ones, and concave compact ones that are not read as stars
   (solidity < STAR_SOLIDITY, h1 and h2 small: a concave star-like shape is never a circle,
   square or triangle, which are convex; such a component is a star without a fit unless
   cut by the border). A fit with IoU >= FIT_IOU names the component. Otherwise the blob is
   split at the necks of its distance transform (`split.py`: touching shapes of one colour)
   and every part fitted; if all parts fit, each is an object. What still fits nothing
   stays "unknown". A shape cut by the border counts when at least CUT_MIN_VISIBLE (30%) of
   its fitted template lies inside the frame; less is a sliver and ignored. Fits run on at
   most MAX_FITS components of at most MAX_FIT_AREA per image: a blurry intermediate image
   (a Tweedie estimate early in sampling) is many large blobs, where fitting costs time and
   cannot name anything anyway. Shapes the renderer draws (never cut, touching or concave
   unless stars) never reach this step.

Every step is a tensor operation over the whole batch; Python loops run over shapes,
harmonic orders and refinement rounds, never over images or components.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .components import dilate_max, euler_numbers, holes, label_components
from .features import ASYMMETRY_SCALE, CLASSES, classify, moments, solidity
from .fit import fit_templates
from .split import power_cells, split_peaks
from .unmix import PALETTE, coverage, unmix
from .world import SHAPES

#: components smaller than this fraction of the image are specks and ignored (the smallest
#: object of the world covers ~1% of the image)
MIN_AREA = 0.007
#: a component whose pixels fill less than this of their convex hull, and that is not
#: lopsided or elongated, is a star-like concave shape, never a circle, square or triangle
#: (generated five-point stars: 0.70-0.88, small blurred ones highest; a four-point star of
#: 73 px 0.91; digitised discs, squares and triangles >= 0.98)
STAR_SOLIDITY = 0.93
#: template fitting is tried only on components up to this share of the frame and on at most
#: MAX_FITS components per image (module doc)
MAX_FIT_AREA = 0.2
MAX_FITS = 3
#: a template fit with soft IoU >= this names the component's shape
FIT_IOU = 0.8
#: a shape cut by the image border counts as an object when at least this fraction of the
#: fitted template is inside the frame (a sliver at the border is ignored)
CUT_MIN_VISIBLE = 0.3
#: a component is inside another when at least this fraction of its mass lies in the
#: other's holes; holes are filled for at most MAX_HOLE_FILLS components per image
INSIDE_FRACTION = 0.9
MAX_HOLE_FILLS = 4

_STAR = CLASSES.index("star")
_SHAPE_OF_CLASS = [SHAPES.index(c) for c in CLASSES]  # class index -> index into SHAPES


@dataclass(frozen=True)
class Detection:
    """One object found in an image.

    `shape` is one of SHAPES or "unknown" (then `guess` is the nearest shape), `color` a
    palette name or None (off-palette), (cx, cy) the centroid and `area` the soft area
    (with what it encloses), as fractions of the image; `distance` is the distance to the
    nearest shape prototype (0 = perfect, > UNKNOWN_DISTANCE = unknown), or 1 - IoU of a
    template fit; `inside` is the index, in the same image's list, of the detection that
    encloses it, or None."""

    shape: str
    color: str | None
    cx: float
    cy: float
    area: float
    guess: str
    distance: float
    inside: int | None = None


def detect(image: torch.Tensor) -> list[Detection]:
    """Detections in one image [3, H, W] in [0, 1]."""
    return detect_batch(image.unsqueeze(0))[0]


@torch.no_grad()
def detect_batch(images: torch.Tensor) -> list[list[Detection]]:
    """Detections for each image of a batch [B, 3, H, W] in [0, 1] (any resolution), on the
    images' device."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
    b, _, h, w = images.shape
    if b == 0:
        return []
    found = _find(images)
    return _to_detections(found, b)


# ----------------------------------------------------------------- the batched pipeline
def _find(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every detection of the batch as tensors (module doc, steps 1-4)."""
    b, _, h, w = images.shape
    hw = h * w
    dev = images.device
    um = unmix(images)
    labels, n = label_components(um.label)
    if n == 0:
        return {}
    k = len(PALETTE)
    flat = labels.view(-1)
    fgpix = (flat > 0).nonzero().squeeze(1)
    lab_fg = flat[fgpix]
    comp_class = torch.zeros(n + 1, dtype=torch.int64, device=dev).scatter_(0, lab_fg, um.label.view(-1)[fgpix])
    comp_img = torch.zeros(n + 1, dtype=torch.int64, device=dev).scatter_(0, lab_fg, fgpix // hw)
    fg_count = torch.zeros(n + 1, dtype=torch.int64, device=dev).index_add_(0, lab_fg, torch.ones_like(lab_fg))
    xs_fg, ys_fg = fgpix % w, (fgpix // w) % h
    big = torch.iinfo(torch.int64).max
    box = torch.stack([
        torch.full((n + 1,), big, device=dev).scatter_reduce(0, lab_fg, xs_fg, "amin"),
        torch.full((n + 1,), big, device=dev).scatter_reduce(0, lab_fg, ys_fg, "amin"),
        torch.full((n + 1,), -1, device=dev).scatter_reduce(0, lab_fg, xs_fg, "amax"),
        torch.full((n + 1,), -1, device=dev).scatter_reduce(0, lab_fg, ys_fg, "amax")], 1)  # x0 y0 x1 y1

    # the rim: background pixels next to a component take the largest neighbouring label
    grown = dilate_max(labels).view(-1)
    rimpix = ((um.label.view(-1) < 0) & (grown > 0)).nonzero().squeeze(1)
    lab_rim = grown[rimpix]
    cls_rim = comp_class[lab_rim]
    rim_offset = um.offset.permute(0, 2, 3, 1).reshape(-1, 3)[rimpix]
    rim_alpha = coverage(rim_offset, cls_rim.clamp(max=k - 1)) * um.palette_ok.view(-1)[rimpix]
    w_rim = torch.where(cls_rim < k, rim_alpha, 0.0)

    # holes: components with an Euler number below one enclose pixels; fill the first few
    euler = euler_numbers(labels, n)
    area_px = float(hw)
    ids = torch.arange(n + 1, device=dev)
    cand = (euler < 1) & (fg_count >= MIN_AREA * area_px) & (ids > 0)
    cand = cand & (_rank_in_image(cand, comp_img, b) < MAX_HOLE_FILLS)
    owners = cand.nonzero().squeeze(1)
    hole = holes(labels, owners, torch.stack([comp_img[owners], box[owners, 1], box[owners, 3], box[owners, 0],
                                               box[owners, 2]], 1))
    hole_owner = torch.zeros(b * hw, dtype=torch.int64, device=dev)
    hole_owner[hole[:, 1]] = hole[:, 0]
    keep_rim = hole_owner[rimpix] != lab_rim  # an owner's rim inside its own hole is filled instead
    w_fg = um.weight.view(-1)[fgpix]
    ent_lab = torch.cat([lab_fg, lab_rim[keep_rim], hole[:, 0]])
    ent_pix = torch.cat([fgpix, rimpix[keep_rim], hole[:, 1]])
    ent_w = torch.cat([w_fg, w_rim[keep_rim], torch.ones(hole.shape[0], device=dev)])
    live = ent_w > 0
    ent_lab, ent_pix, ent_w = ent_lab[live], ent_pix[live], ent_w[live]
    ent_x, ent_y = (ent_pix % w).float() + 0.5, ((ent_pix // w) % h).float() + 0.5
    mom = moments(ent_lab, ent_w, ent_x, ent_y, n)
    mass, mx, my, harm = mom[:, 0], mom[:, 1], mom[:, 2], mom[:, 3:]

    # containment: the component whose holes hold most of a component's own mass
    own_owner = hole_owner[fgpix]
    container = torch.zeros(n + 1, dtype=torch.int64, device=dev).scatter_reduce(0, lab_fg, own_owner, "amax")
    held = torch.zeros(n + 1, device=dev).index_add_(0, lab_fg, w_fg * (own_owner == container[lab_fg]) * (own_owner > 0))
    own_mass = torch.zeros(n + 1, device=dev).index_add_(0, lab_fg, w_fg)
    container = torch.where((container > 0) & (held >= INSIDE_FRACTION * own_mass.clamp_min(1e-9)), container, 0)

    # solidity over each component's boundary pixels (the hull of a set is its boundary's)
    padded = torch.nn.functional.pad(labels, (1, 1, 1, 1))
    inner = torch.ones_like(labels, dtype=torch.bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        inner &= padded[:, dy : dy + h, dx : dx + w] == labels
    bpix = ((flat > 0) & ~inner.view(-1)).nonzero().squeeze(1)
    filled = fg_count.index_add(0, hole[:, 0], torch.ones_like(hole[:, 0]))  # what a filled component covers
    sol = solidity(flat[bpix], bpix % w, (bpix // w) % h, n, filled)

    cls, nearest, dist = classify(harm)
    area = mass / area_px
    keep = (area >= MIN_AREA) & (ids > 0)
    touches = (box[:, 0] == 0) | (box[:, 1] == 0) | (box[:, 2] == w - 1) | (box[:, 3] == h - 1)
    compact = harm[:, :2].amax(1) < ASYMMETRY_SCALE / 2
    concave_star = (sol < STAR_SOLIDITY) & compact
    common = keep & ~touches & (cls >= 0) & ~((cls != _STAR) & concave_star)
    rest = keep & ~common
    fits = rest & (area <= MAX_FIT_AREA)
    fits = fits & (_rank_in_image(fits, comp_img, b) < MAX_FITS)
    direct_star = fits & concave_star & ~touches  # a star whatever a template fit says
    to_fit = fits & ~direct_star

    shape = torch.where(cls >= 0, torch.tensor(_SHAPE_OF_CLASS, device=dev)[cls.clamp_min(0)], -1)
    shape = torch.where(rest & ~fits & (cls != _STAR) & concave_star, -1, shape)  # left as the classifier said
    shape = torch.where(direct_star, SHAPES.index("star"), shape)
    guess = torch.tensor(_SHAPE_OF_CLASS, device=dev)[nearest]
    guess = torch.where(direct_star, SHAPES.index("star"), guess)
    out = {"img": comp_img, "color": comp_class, "shape": shape, "guess": guess, "dist": dist, "cx": mx / w,
           "cy": my / h, "area": area, "container": container, "id": ids}
    plain = keep & ~to_fit
    found = {key: v[plain] for key, v in out.items()}
    if bool(to_fit.any()):
        ctx = _Context(labels, ent_lab, ent_pix, ent_w, um, grown, hw, (h, w))
        resolved = _resolve(to_fit.nonzero().squeeze(1), ctx, mass, mx, my, box, touches, concave_star, cls, nearest,
                            dist, comp_img, comp_class)
        found = {key: torch.cat([found[key], resolved[key]]) for key in found}
    return found


def _rank_in_image(flags: torch.Tensor, img: torch.Tensor, b: int) -> torch.Tensor:
    """For each flagged entry, how many flagged entries of its image come before it (label
    order); a large number for entries not flagged."""
    order = torch.cumsum(torch.nn.functional.one_hot(img, b) * flags.unsqueeze(1), 0)
    rank = order.gather(1, img.unsqueeze(1)).squeeze(1) - 1
    return torch.where(flags, rank, torch.iinfo(torch.int64).max)


@dataclass
class _Context:
    """What template fits sample: component labels, the pixel entries (label, flat pixel,
    weight) of every component with its rim, and the frame."""

    labels: torch.Tensor
    ent_lab: torch.Tensor
    ent_pix: torch.Tensor
    ent_w: torch.Tensor
    um: object
    grown: torch.Tensor
    hw: int
    frame: tuple[int, int]


def _resolve(comps: torch.Tensor, ctx: _Context, mass, mx, my, box, touches, concave_star, cls, nearest, dist,
             comp_img, comp_class) -> dict[str, torch.Tensor]:
    """Fit (and, failing that, split and fit the parts of) components `comps` (module doc,
    step 4). Returns their detections as tensors."""
    h, w = ctx.frame
    dev = comps.device
    b = ctx.labels.shape[0]
    # dense maps of the region weights: pixel -> (component incl. rim, weight)
    region = torch.zeros(b * ctx.hw, dtype=torch.int64, device=dev)
    weight = torch.zeros(b * ctx.hw, device=dev)
    region[ctx.ent_pix] = ctx.ent_lab
    weight[ctx.ent_pix] = ctx.ent_w
    fg_label = ctx.labels.view(-1)

    def sampler(jobs: torch.Tensor, cells: torch.Tensor | None, peaks: torch.Tensor | None):
        img = comp_img[jobs]

        def sample(px: torch.Tensor, py: torch.Tensor):
            u, v = px - 0.5, py - 0.5
            x0, y0 = torch.floor(u), torch.floor(v)
            fx, fy = u - x0, v - y0
            wsum = torch.zeros_like(px)
            csum = torch.zeros_like(px)
            for ddx, ddy, f in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
                xx, yy = (x0 + ddx).long(), (y0 + ddy).long()
                ok = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
                pix = (img.view(-1, 1) * h + yy.clamp(0, h - 1)) * w + xx.clamp(0, w - 1)
                mine = region[pix] == jobs.view(-1, 1)
                if cells is not None:
                    mine = mine & (power_cells(yy.double(), xx.double(), peaks) == cells.view(-1, 1))
                wsum += f * (weight[pix] * mine * ok)
                care = ((fg_label[pix] == 0) | (region[pix] == jobs.view(-1, 1))) & ok
                csum += f * care
            return wsum, csum

        return sample

    wholes = fit_templates(sampler(comps, None, None), mass[comps], mx[comps], my[comps], box[comps], ctx.frame)
    named = (wholes.iou >= FIT_IOU) | concave_star[comps]
    shape = torch.where(concave_star[comps], SHAPES.index("star"), wholes.shape)
    res = {"img": comp_img[comps], "color": comp_class[comps], "shape": shape, "guess": shape,
           "dist": 1.0 - wholes.iou, "cx": mx[comps] / w, "cy": my[comps] / h, "area": mass[comps] / ctx.hw,
           "container": torch.zeros_like(comps), "id": comps, "visible": wholes.visible}
    # not named: unclear blobs unless they split into parts that all fit
    unnamed = ~named
    guess_cls = torch.tensor(_SHAPE_OF_CLASS, device=dev)[nearest[comps]]
    res["guess"] = torch.where(unnamed & ((cls[comps] < 0) | touches[comps]), wholes.shape, torch.where(named, shape, guess_cls))
    res["shape"] = torch.where(unnamed, -1, res["shape"])
    res["dist"] = torch.where(unnamed, torch.clamp(1.0 - wholes.iou, min=0.5), res["dist"])
    parts = None
    if bool(unnamed.any()):
        parts = _split_and_fit(comps[unnamed], ctx, sampler, box, comp_img, comp_class)
        if parts is not None:
            done = torch.isin(comps, parts["id"])
            res = {key: v[~done] for key, v in res.items()}
    if parts is not None:
        res = {key: torch.cat([res[key], parts[key]]) for key in res}
    # a shape cut by the border counts only when enough of its template is visible
    keep = ~(touches[res["id"]] & (res["visible"] < CUT_MIN_VISIBLE)) & (res["area"] >= MIN_AREA)
    res.pop("visible")
    return {key: v[keep] for key, v in res.items()}


def _split_and_fit(comps: torch.Tensor, ctx: _Context, sampler, box, comp_img, comp_class) -> dict | None:
    """Split components `comps` at their necks and fit every part; the components all of
    whose parts fit are returned as parts (others are left out: they stay unclear)."""
    h, w = ctx.frame
    dev = comps.device
    x0, y0, x1, y1 = (box[comps, i] for i in range(4))
    bh, bw = int((y1 - y0).max()) + 1, int((x1 - x0).max()) + 1
    ry = y0.view(-1, 1, 1) + torch.arange(bh, device=dev).view(1, -1, 1)
    rx = x0.view(-1, 1, 1) + torch.arange(bw, device=dev).view(1, 1, -1)
    pix = (comp_img[comps].view(-1, 1, 1) * h + ry.clamp(max=h - 1)) * w + rx.clamp(max=w - 1)
    mask = (ctx.labels.view(-1)[pix] == comps.view(-1, 1, 1)) & (ry <= y1.view(-1, 1, 1)) & (rx <= x1.view(-1, 1, 1))
    peaks = split_peaks(mask)
    peaks[..., 0] += y0.view(-1, 1).double()  # to image pixel indices
    peaks[..., 1] += x0.view(-1, 1).double()
    n_kept = (peaks[..., 2] > 0).sum(1)
    splits = n_kept >= 2
    if not bool(splits.any()):
        return None
    comps, peaks = comps[splits], peaks[splits]
    job_comp, job_cell = (peaks[..., 2] > 0).nonzero().unbind(1)  # one job per kept peak
    job_peaks = peaks[job_comp]
    jobs = comps[job_comp]
    # each part's soft mass and centroid from the component's pixel entries in its cell
    sel = torch.isin(ctx.ent_lab, comps)
    e_lab, e_pix, e_w = ctx.ent_lab[sel], ctx.ent_pix[sel], ctx.ent_w[sel]
    pos = torch.searchsorted(comps, e_lab)  # comps are sorted (label order)
    ey, ex = ((e_pix // w) % h).double(), (e_pix % w).double()
    e_cell = power_cells(ey.view(-1, 1), ex.view(-1, 1), peaks[pos]).view(-1)
    key = pos * peaks.shape[1] + e_cell
    slots = comps.numel() * peaks.shape[1]
    m = torch.zeros(slots, device=dev, dtype=torch.float64).index_add_(0, key, e_w.double())
    sx = torch.zeros_like(m).index_add_(0, key, e_w.double() * (ex + 0.5))
    sy = torch.zeros_like(m).index_add_(0, key, e_w.double() * (ey + 0.5))
    big = torch.iinfo(torch.int64).max
    ix, iy = ex.long(), ey.long()
    part_box = torch.stack([torch.full((slots,), big, device=dev).scatter_reduce(0, key, ix, "amin"),
                            torch.full((slots,), big, device=dev).scatter_reduce(0, key, iy, "amin"),
                            torch.full((slots,), -1, device=dev).scatter_reduce(0, key, ix, "amax"),
                            torch.full((slots,), -1, device=dev).scatter_reduce(0, key, iy, "amax")], 1)
    jk = job_comp * peaks.shape[1] + job_cell
    pm = m[jk]
    pcx, pcy = sx[jk] / pm.clamp_min(1e-9), sy[jk] / pm.clamp_min(1e-9)
    fits = fit_templates(sampler(jobs, job_cell, job_peaks), pm, pcx, pcy, part_box[jk], ctx.frame)
    misfits = torch.zeros(comps.numel(), dtype=torch.int64, device=dev).index_add_(0, job_comp, (fits.iou < FIT_IOU).long())
    all_fit = misfits == 0
    ok = all_fit[job_comp]
    if not bool(ok.any()):
        return None
    jobs, fits_ok = jobs[ok], ok
    return {"img": comp_img[jobs], "color": comp_class[jobs], "shape": fits.shape[fits_ok], "guess": fits.shape[fits_ok],
            "dist": (1.0 - fits.iou)[fits_ok], "cx": (pcx / w)[fits_ok], "cy": (pcy / h)[fits_ok],
            "area": (pm / ctx.hw)[fits_ok], "container": torch.zeros_like(jobs), "id": jobs,
            "visible": fits.visible[fits_ok]}


def _to_detections(found: dict[str, torch.Tensor], b: int) -> list[list[Detection]]:
    """Detection objects per image, in component order (the one Python loop: over detections)."""
    out: list[list[Detection]] = [[] for _ in range(b)]
    if not found:
        return out
    order = torch.sort(found["id"], stable=True).indices
    cols = {k: v[order].tolist() for k, v in found.items()}
    counts = [0] * b
    position: dict[int, int] = {}  # component id -> index of its (first) detection in its image's list
    for comp, img in zip(cols["id"], cols["img"]):
        position.setdefault(comp, counts[img])
        counts[img] += 1
    for i, img in enumerate(cols["img"]):
        shape, color, container = cols["shape"][i], cols["color"][i], cols["container"][i]
        out[img].append(Detection(
            SHAPES[shape] if shape >= 0 else "unknown", PALETTE[color] if color < len(PALETTE) else None,
            cols["cx"][i], cols["cy"][i], cols["area"][i], SHAPES[cols["guess"][i]], cols["dist"][i],
            position.get(container) if container > 0 else None))
    return out
