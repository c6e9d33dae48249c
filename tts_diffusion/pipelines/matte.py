"""Alfie's alpha matte from attention maps (Quattrini et al. 2024, sec. 3.3), pure functions.

Notation: `n(x) = (x - min x) / (max x - min x)` (min-max normalisation; 0 where x is
constant), `up` = bicubic upsampling from the token grid to the image size, C_k the cross
map of subject word k on the token grid (the mean of its sub-token columns), S the self
map (row q: where query token q attends).

    w       = n(mean_k C_k)                                          guide weights
    ff(p)   = w(p) * sum_q w(q) S[q](p) / sum_q w(q)                 self-attention-guided map
    alpha_s = clip((1 + k) * n(n(up(ff)) + n(mean_k up(C_k))), 0, 1), k = 0.5

Cut-out: a GrabCut trimap per subject map A_k = n(up(C_k)) with thresholds at 0.8 / 0.3 /
0.1 of max A_k (sure FG / probable FG / probable BG / sure BG), merged over subjects with
precedence sure FG > probable FG > probable BG > sure BG; `cv2.grabCut` (5 iterations,
initialised with the mask); where the mask has no sure/probable background or foreground
sample (GrabCut cannot fit its models) it is initialised with a rectangle instead: the
centring window (border h/8, w/8). Final alpha = G * alpha_s, G = 1 on (probable) foreground.

Cost: GrabCut at the image size is most of a matte (0.4-0.9 s per 512 px candidate on the
H200 host, docs/bench_alfie_pixart_xl.json; soft alpha and trimap take milliseconds). It is not shrunk: a cut at the token
grid upsampled, fewer iterations or a crop to the uncertain band would change the mask (its
colour models are fitted on every pixel and its smoothness term on the pixel grid), and the
verifier scores each candidate's composite, so every candidate needs its exact matte.
`RGBAVerifier` runs the candidates' GrabCuts in parallel threads instead.

The contrast matte (`contrast_matte`, what `rgba=True` uses; issue #28). The same steps
(attention maps -> trimap -> GrabCut), with the seed and the final alpha changed where the
paper's versions lose on diffuse maps (measured on the embedded model, docs/benchmarks.md):

    P[p]    = C[p, :] / sum_l C[p, l]             pixel p's distribution over the prompt's tokens
    P_bg    = mean of P over the border tokens     the centring border follows the background
                                                   trajectory: the attention of "nothing"
    D(p)    = 1/2 sum_l |P[p, l] - P_bg[l]|        total variation: how unlike the background p attends
    D_s(p)  = sum_q w(q) S[q](p) / sum_q w(q),  w = n(D)     self-attention propagation (Alfie's ff)

- Every token of the prompt counts (every object the prompt names is the subject); with
  `columns` (an explicit `subject=`) P keeps those tokens and lumps the rest into one bin.
- Trimap on A = n(up(D_s)) with Otsu's threshold t (diffuse maps have no fixed "0.8 of the
  max" level): probable FG above t, probable BG in [t/2, t], sure BG below t/2 and on the
  centring border (outside the window, which is background by construction; the window is
  grown by 1/32 of the side, 2 px at 64 px, as the decoder spreads the latent window a
  little). The outer 2 px are always alpha 0. No sure FG:
  on an 8x8-token map the top of A spreads over canvas pixels, and canvas seeded as sure FG
  pulls the canvas colour into GrabCut's foreground model (measured: IoU 0.94 -> 0.65).
- Final alpha = the binary cut G (not G times the soft map, which leaves a half-opaque fog
  where the map is diffuse and a faint subject where it is weak), with a one-pixel rim
  outside G from the local colour line: F = mean colour of G's interior within 3 px,
  B = mean colour outside G's 2-px dilation within 3 px (both from the image itself), and
  alpha = clip(2 <p - B, F - B> / |F - B|^2, 0, 1): a pixel half-way between is opaque, one
  a quarter covered is alpha 0.5 (the edge where the RGB visibly differs from the canvas);
  rim values below 0.3 (less than 15% covered) are 0, so the canvas around many small shapes
  is not left faintly opaque (measured: counting images with <= 2% of the canvas left 57% ->
  100%, IoU unchanged).
- Inverted cut (GrabCut labels the canvas foreground): A is lower inside G than outside it
  in the window -> G is replaced by its complement inside the window. An empty cut falls back
  to {A > t} inside the window. (A sample where the model drew only a faint ghost is cut
  upright, on the ghost: the attention peaks there.)
- Colours (`foreground_colours`, what the RGBA's colour channels hold): the edge pixels of
  the cut-out (alpha > 0 outside its core) are mixes of subject and canvas; left as they are,
  opaque ones show a light outline over any other background. Each is moved along its local
  colour line to the subject's end (I + (1 - t)(F - B), F, B and t as for the rim, from the
  image itself), as matting tools decontaminate edge colours. Measured with the known canvas
  (docs/benchmarks.md): the canvas share of the edge colours falls from about 0.5 to 0.01.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: GrabCut trimap thresholds relative to each subject map's maximum (Alfie's defaults)
SURE_FG, MAYBE_FG, MAYBE_BG = 0.8, 0.3, 0.1


def minmax(x: torch.Tensor) -> torch.Tensor:
    """n(x) = (x - min x) / (max x - min x); zeros where x is constant."""
    x = x.float()
    lo, hi = x.min(), x.max()
    if not bool(hi > lo):
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic upsampling of maps [..., gh, gw] to [..., H, W] (align_corners=False)."""
    lead = maps.shape[:-2]
    x = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    y = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    return y.reshape(*lead, *size)


def subject_maps(cross: torch.Tensor, spans: Sequence[Sequence[int]], grid: tuple[int, int]) -> torch.Tensor:
    """C_k [K, gh, gw]: the mean over subject word k's token columns of cross [N, L]."""
    gh, gw = grid
    if cross.shape[0] != gh * gw:
        raise ValueError(f"cross map has {cross.shape[0]} image tokens, the grid {gh}x{gw} has {gh * gw}")
    maps = [cross[:, list(span)].float().mean(dim=1) for span in spans]
    return torch.stack(maps).reshape(len(spans), gh, gw)


def guided_map(c: torch.Tensor, self_map: torch.Tensor) -> torch.Tensor:
    """ff [gh, gw] from C_k [K, gh, gw] and S [N, N]:
    w = n(mean_k C_k); ff(p) = w(p) sum_q w(q) S[q](p) / sum_q w(q)."""
    gh, gw = c.shape[-2:]
    w = minmax(c.float().mean(dim=0)).reshape(-1)
    total = w.sum()
    if not bool(total > 0):
        return torch.zeros(gh, gw)
    agg = (w @ self_map.float()) / total  # sum_q w(q) S[q](p) / sum_q w(q)
    return (w * agg).reshape(gh, gw)


def soft_alpha(c: torch.Tensor, self_map: torch.Tensor, size: tuple[int, int], k: float = 0.5) -> torch.Tensor:
    """alpha_s [H, W] in [0, 1] = clip((1 + k) n(n(up(ff)) + n(mean_k up(C_k))), 0, 1)."""
    ff = minmax(upsample(guided_map(c, self_map), size))
    cr = minmax(upsample(c.float(), size).mean(dim=0))
    return ((1 + k) * minmax(ff + cr)).clamp(0, 1)


def trimap(c: torch.Tensor, size: tuple[int, int], thresholds: tuple[float, float, float] = (SURE_FG, MAYBE_FG, MAYBE_BG)
           ) -> np.ndarray:
    """GrabCut mask [H, W] (cv2.GC_* codes) from subject maps C_k [K, gh, gw]: per map
    A_k = n(up(C_k)), sure FG above t0 max A_k, probable FG in (t1, t0], probable BG in
    (t2, t1], sure BG below; merged over maps, the more foreground class winning."""
    import cv2

    hi, mid, lo = thresholds
    # class rank: 0 sure BG < 1 probable BG < 2 probable FG < 3 sure FG
    rank = torch.zeros(size, dtype=torch.long)
    for a in minmax_each(upsample(c.float(), size)):
        m = a.max()
        r = torch.zeros(size, dtype=torch.long)
        r[a > lo * m] = 1
        r[a > mid * m] = 2
        r[a > hi * m] = 3
        rank = torch.maximum(rank, r)
    codes = np.array([cv2.GC_BGD, cv2.GC_PR_BGD, cv2.GC_PR_FGD, cv2.GC_FGD], dtype=np.uint8)
    return codes[rank.numpy()]


def minmax_each(maps: torch.Tensor) -> torch.Tensor:
    """n() applied to each map of a stack [K, H, W] separately."""
    return torch.stack([minmax(m) for m in maps])


def centre_rect(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centring window in pixels as (x, y, w, h): a border of H/8 and W/8 (Alfie's mask)."""
    h, w = size
    bh, bw = h // 8, w // 8
    return (bw, bh, w - 2 * bw, h - 2 * bh)


def grabcut(image: np.ndarray, mask: np.ndarray, iterations: int = 5) -> tuple[np.ndarray, str]:
    """Binary foreground [H, W] (bool) from GrabCut on an RGB uint8 image [H, W, 3].

    Initialised with `mask` when it has both a (probable) background and a (probable)
    foreground sample, else with the centring rectangle. Returns (foreground, how)."""
    import cv2

    img = np.ascontiguousarray(image[..., ::-1])  # OpenCV wants BGR
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    fg_codes = (cv2.GC_FGD, cv2.GC_PR_FGD)
    has_fg = bool(np.isin(mask, fg_codes).any())
    has_bg = bool(np.isin(mask, (cv2.GC_BGD, cv2.GC_PR_BGD)).any())
    m = mask.copy()
    how = "mask"
    # GrabCut seeds its colour models with k-means++ on OpenCV's RNG, which is per thread and
    # advances with every call: a fixed seed makes the cut a function of its inputs alone
    # (the same in any thread, whatever ran before)
    cv2.setRNGSeed(0)
    try:
        if not (has_fg and has_bg):
            raise cv2.error("trimap lacks a foreground or background sample")
        cv2.grabCut(img, m, None, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        how = "rect"
        m = np.zeros(mask.shape, np.uint8)
        bgd[:], fgd[:] = 0, 0
        cv2.setRNGSeed(0)
        cv2.grabCut(img, m, centre_rect(mask.shape), bgd, fgd, int(iterations), cv2.GC_INIT_WITH_RECT)
    return np.isin(m, fg_codes), how


# --------------------------------------------------------------------- contrast matte
def border_tokens(grid: tuple[int, int], latent: tuple[int, int], patch: int) -> torch.Tensor:
    """Bool [gh * gw]: the image tokens wholly on the centring border (outside the window of
    `centre_rect` on the latent), i.e. on the background trajectory."""
    lh, lw = latent
    window = torch.zeros(1, 1, lh, lw)
    bh, bw = lh // 8, lw // 8
    window[..., bh : lh - bh, bw : lw - bw] = 1.0
    inside = F.max_pool2d(window, patch).reshape(-1)[: grid[0] * grid[1]]
    if inside.numel() != grid[0] * grid[1]:
        raise ValueError(f"latent {latent} with patch {patch} does not give the token grid {grid}")
    return inside < 0.5


def contrast_map(cross: torch.Tensor, grid: tuple[int, int], border: torch.Tensor,
                 columns: Sequence[int] | None = None) -> torch.Tensor:
    """D [gh, gw]: total variation distance between each pixel's distribution over the prompt
    tokens and the border tokens' mean (module docstring). cross [N, L] (any positive scale)."""
    c = cross.float().clamp_min(0)
    if columns is not None:
        cols = sorted(set(int(j) for j in columns))
        rest = c.sum(dim=1, keepdim=True) - c[:, cols].sum(dim=1, keepdim=True)
        c = torch.cat([c[:, cols], rest.clamp_min(0)], dim=1)
    p = c / c.sum(dim=1, keepdim=True).clamp_min(1e-12)
    if not bool(border.any()):
        raise ValueError("no border tokens: the token grid is too small for a centring border")
    ref = p[border].mean(dim=0)
    return (0.5 * (p - ref).abs().sum(dim=1)).reshape(grid)


def propagate(d: torch.Tensor, self_map: torch.Tensor) -> torch.Tensor:
    """D_s [gh, gw] = sum_q w(q) S[q](p) / sum_q w(q), w = n(D): where the contrasting tokens attend."""
    w = minmax(d).reshape(-1)
    total = w.sum()
    if not bool(total > 0):
        return torch.zeros_like(d, dtype=torch.float32)
    return ((w @ self_map.float()) / total).reshape(d.shape)


def window_mask(size: tuple[int, int], grow: int = 0) -> np.ndarray:
    """Bool [H, W]: the centring window in pixels (`centre_rect`), grown by `grow` px a side."""
    x, y, w, h = centre_rect(size)
    m = np.zeros(size, bool)
    m[max(0, y - grow) : y + h + grow, max(0, x - grow) : x + w + grow] = True
    return m


#: transparent border of every contrast matte, in pixels
CLEAR_BORDER = 2


def otsu_threshold(a: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (256 bins)."""
    import cv2

    t, _ = cv2.threshold(np.round(np.clip(a, 0, 1) * 255).astype(np.uint8), 0, 255,
                         cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t) / 255


def contrast_trimap(a: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, float]:
    """GrabCut mask from A = n(up(D_s)) [H, W]: probable FG above Otsu's t, probable BG in
    [t/2, t], sure BG below t/2 and outside the window. Returns (mask, t)."""
    import cv2

    t = otsu_threshold(a)
    code = np.full(a.shape, cv2.GC_PR_BGD, np.uint8)
    code[a > t] = cv2.GC_PR_FGD
    code[a < t / 2] = cv2.GC_BGD
    code[~window] = cv2.GC_BGD
    return code, t


def rim_alpha(image: np.ndarray, cut: np.ndarray, gain: float = 2.0, radius: int = 3, floor: float = 0.3) -> np.ndarray:
    """Alpha [H, W]: 1 on the cut, clip(gain <p - B, F - B> / |F - B|^2, 0, 1) on the one-pixel
    rim outside it (F, B: local means of the cut's interior and of the outside beyond a 2-px
    dilation, within `radius` px), 0 elsewhere. Rim values below `floor` (a pixel less than
    floor / gain covered: canvas with a tinge) are 0."""
    import cv2

    g8 = cut.astype(np.uint8)
    k3 = np.ones((3, 3), np.uint8)
    rim = cv2.dilate(g8, k3).astype(bool) & ~cut
    alpha = cut.astype(np.float32)
    if not rim.any():
        return alpha
    x = image.astype(np.float32) / 255
    inner = cv2.erode(g8, k3).astype(bool)
    outer = ~cv2.dilate(g8, k3, iterations=2).astype(bool)
    ksize = (2 * radius + 1, 2 * radius + 1)

    def box(m: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(m.astype(np.float32), -1, ksize, normalize=False, borderType=cv2.BORDER_CONSTANT)

    n_f, n_b = box(inner), box(outer)
    fcol = np.stack([box(x[..., ch] * inner) for ch in range(3)], -1) / np.maximum(n_f, 1e-6)[..., None]
    bcol = np.stack([box(x[..., ch] * outer) for ch in range(3)], -1) / np.maximum(n_b, 1e-6)[..., None]
    d = fcol - bcol
    dd = (d * d).sum(-1)
    a = np.clip(gain * ((x - bcol) * d).sum(-1) / np.maximum(dd, 1e-6), 0, 1)
    a[a < floor] = 0.0
    ok = rim & (n_f > 0) & (n_b > 0) & (dd > 0.01)
    alpha[ok] = a[ok]
    return alpha


def foreground_colours(image: np.ndarray, alpha: np.ndarray, radius: int = 3) -> np.ndarray:
    """The RGBA's colour channels [H, W, 3] for an RGB image [H, W, 3] (uint8, or float in
    [0, 1]: the same dtype comes back) and its alpha [H, W] in [0, 1]:
    at the matte's edge the background's share of each pixel's colour is replaced by the
    subject's (colour decontamination, as matting tools estimate the foreground colour F of
    I = a F + (1 - a) B; without it an opaque edge pixel keeps its mix with the canvas and the
    cut-out shows a light outline over anything else).

    F and B are the local means, within `radius` px, of the subject's core (alpha 1, not on its
    edge) and of the clear background (alpha 0, not next to the matte), both from the image
    itself; t = <I - B, F - B> / |F - B|^2 is the pixel's position on that colour line, and an
    edge pixel (alpha > 0, not in the core) becomes I + (1 - t)(F - B) for t < 1: moved along
    the line to the subject's end, keeping its own deviation from the line (texture, noise).
    Pixels with t >= 1, the core, the transparent part and pixels with no local F or B (or
    |F - B| < 0.1) keep the image's colour. A thin part (no core within `radius`) takes F from
    twice the radius."""
    import cv2

    k3 = np.ones((3, 3), np.uint8)
    core = cv2.erode((alpha >= 1.0).astype(np.uint8), k3).astype(bool)
    clear = cv2.erode((alpha <= 0.0).astype(np.uint8), k3, borderType=cv2.BORDER_REPLICATE).astype(bool)
    edge = (alpha > 0) & ~core
    out = image.copy()
    if not edge.any():
        return out
    # only the edge's neighbourhood matters (the widest window, 2 * radius, around an edge pixel)
    ys, xs = np.nonzero(edge)
    pad = 2 * radius + 1
    win = np.s_[max(0, ys.min() - pad) : ys.max() + pad + 1, max(0, xs.min() - pad) : xs.max() + pad + 1]
    u8 = image.dtype == np.uint8
    x = image[win].astype(np.float32) / (255 if u8 else 1)
    core, clear, edge = core[win], clear[win], edge[win]

    def local_mean(m: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        k = (2 * r + 1, 2 * r + 1)
        n = cv2.boxFilter(m.astype(np.float32), -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
        s = np.stack([cv2.boxFilter(x[..., c] * m, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
                      for c in range(3)], -1)
        return s / np.maximum(n, 1e-6)[..., None], n

    fcol, n_f = local_mean(core, radius)
    far, n_far = local_mean(core, 2 * radius)
    thin = n_f == 0
    fcol[thin], n_f[thin] = far[thin], n_far[thin]
    bcol, n_b = local_mean(clear, radius)
    d = fcol - bcol
    dd = (d * d).sum(-1)
    t = ((x - bcol) * d).sum(-1) / np.maximum(dd, 1e-6)
    ok = edge & (n_f > 0) & (n_b > 0) & (dd > 0.01) & (t < 1)
    moved = np.clip(x[ok] + (1 - np.clip(t[ok], 0, 1))[:, None] * d[ok], 0, 1)
    out[win][ok] = np.round(moved * 255).astype(np.uint8) if u8 else moved.astype(image.dtype)
    return out


def contrast_matte(image: np.ndarray, cross: torch.Tensor, self_map: torch.Tensor, grid: tuple[int, int],
                   border: torch.Tensor, columns: Sequence[int] | None = None, iterations: int = 5,
                   rim_gain: float = 2.0) -> tuple[np.ndarray, dict]:
    """Alpha [H, W] float32 in [0, 1] of an RGB uint8 image [H, W, 3] from the cross map
    [N, L], the self map [N, N] and the border tokens (module docstring, "contrast matte")."""
    size = image.shape[:2]
    d = contrast_map(cross, grid, border, columns)
    a = minmax(upsample(propagate(d, self_map)[None], size)[0]).numpy()
    # the latent window decodes a little wider (the VAE's receptive field): grow it by 1/32
    window = window_mask(size, min(size) // 32)
    code, t = contrast_trimap(a, window)
    cut, how = grabcut(image, code, iterations)
    cut &= window
    info: dict = {"grabcut_init": how, "matte": "contrast", "otsu_threshold": round(t, 4), "inverted_fixed": False,
                  "empty_fallback": False}
    cut, info["inverted_fixed"] = orient(cut, a, window)
    if not cut.any():
        cut = window & (a > t)
        info["empty_fallback"] = True
    alpha = rim_alpha(image, cut, rim_gain)
    b = CLEAR_BORDER
    alpha[:b] = alpha[-b:] = 0.0
    alpha[:, :b] = alpha[:, -b:] = 0.0
    return alpha.astype(np.float32), info


def orient(cut: np.ndarray, a: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, bool]:
    """(cut, flipped): a cut on which the attention map A is lower than on the rest of the
    window is inverted (the canvas taken for the subject): its complement in the window."""
    rest = window & ~cut
    if cut.any() and rest.any() and a[cut].mean() < a[rest].mean():
        return rest, True
    return cut, False


def alpha_matte(image: np.ndarray, c: torch.Tensor, self_map: torch.Tensor, k: float = 0.5,
                iterations: int = 5) -> tuple[np.ndarray, dict]:
    """Final alpha [H, W] float32 in [0, 1] = GrabCut(trimap(C)) * alpha_s, for an RGB uint8
    image [H, W, 3], subject maps C [K, gh, gw] and the self map S [N, N]."""
    size = image.shape[:2]
    soft = soft_alpha(c, self_map, size, k).numpy()
    fg, how = grabcut(image, trimap(c, size), iterations)
    return (fg.astype(np.float32) * soft).astype(np.float32), {"grabcut_init": how}
