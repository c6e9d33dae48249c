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


def alpha_matte(image: np.ndarray, c: torch.Tensor, self_map: torch.Tensor, k: float = 0.5,
                iterations: int = 5) -> tuple[np.ndarray, dict]:
    """Final alpha [H, W] float32 in [0, 1] = GrabCut(trimap(C)) * alpha_s, for an RGB uint8
    image [H, W, 3], subject maps C [K, gh, gw] and the self map S [N, N]."""
    size = image.shape[:2]
    soft = soft_alpha(c, self_map, size, k).numpy()
    fg, how = grabcut(image, trimap(c, size), iterations)
    return (fg.astype(np.float32) * soft).astype(np.float32), {"grabcut_init": how}
