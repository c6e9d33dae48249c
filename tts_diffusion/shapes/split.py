"""Splitting blobs of touching shapes at their necks, batched (torch, CPU or CUDA).

Touching shapes of one colour make one connected blob; its distance transform (the
distance of each pixel to the nearest pixel outside the blob) has a peak at the centre of
each shape's maximal inscribed disc (value r_i) and dips at the neck between them. A peak
is kept, strongest first, when no stronger kept peak lies within its disc and the distance
transform along the segment to every kept peak dips below SPLIT_NECK * min(r_i, r_k); at
least two kept peaks split the blob, each pixel going to the peak of smallest power
|p - c_i|^2 - r_i^2 (a power diagram: the cells follow the discs' sizes). Two shapes that
overlap by more than a neck stay one blob.

Every blob of a batch is cropped to a common box size; the exact Euclidean distance
transform is the lower envelope of parabolas, taken over columns and then rows by brute
force (cheap at blob sizes).
"""
from __future__ import annotations

import torch

#: the distance transform between two centres must dip below this fraction of the smaller
#: inscribed radius (touching shapes have a neck; one shape does not)
SPLIT_NECK = 0.7
#: peaks weaker than this fraction of the blob's strongest are not shape centres
PEAK_FLOOR = 0.4
#: the strongest peaks considered per blob, and the samples of each neck test
MAX_PEAKS = 16
_LINE = 32


def distance_transform(mask: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Exact Euclidean distance [J, H, W] from each pixel of `mask` [J, H, W] (bool) to the
    nearest pixel outside it (pixels beyond the array count as outside; 0 off the mask),
    `chunk` blobs at a time (the brute-force envelope holds H^2 W values per blob)."""
    if mask.shape[0] > chunk:
        return torch.cat([distance_transform(m, chunk) for m in mask.split(chunk)])
    j, h, w = mask.shape
    m = torch.nn.functional.pad(mask, (1, 1, 1, 1))
    hp, wp = h + 2, w + 2
    big = float(hp * hp + wp * wp)
    ys = torch.arange(hp, device=mask.device, dtype=torch.float32)
    xs = torch.arange(wp, device=mask.device, dtype=torch.float32)
    # squared distance to the nearest outside pixel in the same column: min over rows y'
    dy2 = (ys.view(-1, 1) - ys.view(1, -1)).square()  # [y, y']
    col = torch.where(m, big, 0.0)  # [J, y', x]
    g = (dy2.view(1, hp, hp, 1) + col.unsqueeze(1)).amin(2)  # [J, y, x]
    dx2 = (xs.view(-1, 1) - xs.view(1, -1)).square()  # [x, x']
    d2 = (dx2.view(1, 1, wp, wp) + g.unsqueeze(2)).amin(3)  # [J, y, x]
    return (d2.sqrt() * m)[:, 1:-1, 1:-1]


def split_peaks(mask: torch.Tensor) -> torch.Tensor:
    """Kept peaks of the blobs `mask` [J, H, W] (module doc): [J, MAX_PEAKS, 3] rows
    (y, x, r) in crop pixels, r = 0 where no peak is kept. A blob splits when it keeps >= 2."""
    j, h, w = mask.shape
    dev = mask.device
    dt = distance_transform(mask)
    local_max = dt == torch.nn.functional.max_pool2d(dt.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    top = dt.flatten(1).amax(1).view(-1, 1, 1)
    peak = local_max & (dt >= PEAK_FLOOR * top) & mask
    # strongest first, raster order among equals
    score = torch.where(peak, dt, -1.0).flatten(1)
    order = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :MAX_PEAKS]
    r = score.gather(1, order)
    py, px = (order // w).float(), (order % w).float()
    valid = r > 0
    m = order.shape[1]
    # neck test for every pair of candidate peaks: the minimum of dt along the segment
    t = torch.linspace(0.0, 1.0, _LINE, device=dev)
    ly = (py.view(j, m, 1, 1) + t.view(1, 1, 1, -1) * (py.view(j, 1, m, 1) - py.view(j, m, 1, 1))).round().long()
    lx = (px.view(j, m, 1, 1) + t.view(1, 1, 1, -1) * (px.view(j, 1, m, 1) - px.view(j, m, 1, 1))).round().long()
    line = dt.flatten(1).gather(1, (ly * w + lx).view(j, -1)).view(j, m, m, _LINE).amin(-1)
    dist = torch.hypot(py.view(j, m, 1) - py.view(j, 1, m), px.view(j, m, 1) - px.view(j, 1, m))
    smaller = torch.minimum(r.view(j, m, 1), r.view(j, 1, m))
    # peak i is refused by kept peak k when inside k's disc or joined to it without a neck
    refuses = (dist <= r.view(j, 1, m)) | (line > SPLIT_NECK * smaller)  # [J, i, k]
    kept = torch.zeros(j, m, dtype=torch.bool, device=dev)
    for i in range(m):
        ok = valid[:, i] & ~(refuses[:, i] & kept).any(1)
        kept[:, i] = ok
    out = torch.stack([py, px, torch.where(kept, r, 0.0)], -1)
    return out


def power_cells(py: torch.Tensor, px: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """Index of the kept peak of smallest power |p - c|^2 - r^2 for points (py, px) [J, P]
    (pixel indices in the peaks' frame) of blobs with `peaks` [J, M, 3]."""
    y, x, r = peaks.unbind(-1)
    power = (py.unsqueeze(-1) - y.unsqueeze(1)).square() + (px.unsqueeze(-1) - x.unsqueeze(1)).square() - r.unsqueeze(1).square()
    return torch.where((r > 0).unsqueeze(1), power, float("inf")).argmin(-1)
