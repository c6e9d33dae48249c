"""Connected components of label images, batched in torch (CPU and CUDA alike).

`label_components` labels the connected regions of equal class in a batch of class maps
by union-find with pointer jumping over the pixel graph (Shiloach & Vishkin, 1982: hook
every root onto the smallest root it touches, `scatter_reduce(amin)`, then jump pointers
until every pixel points at its root; repeat until no edge joins two roots). It is exact
for any component shape, which the iterative max-pooling of `kornia.contrib.connected_components`
is not (it splits long thin components after its fixed number of passes, REFERENCES.md §14);
kornia 0.9's exact `connected_components_union_find` takes one binary mask, while the oracle
labels all colours of a batch in one call and fills holes (4-connected, below), and kornia is
not a dependency of the package (nor installed on the GPU machines).

`holes` finds, for components with holes (Euler number below one, counted from 2x2 pixel
quads as in Gray 1971), the pixels each encloses: the 4-connected regions of the other
pixels of its bounding box that do not reach the box's border.
"""
from __future__ import annotations

import torch

#: neighbour offsets (dy, dx) whose edges, with their mirror images, make 8- / 4-connectivity
_OFFSETS = {8: ((0, 1), (1, 0), (1, 1), (1, -1)), 4: ((0, 1), (1, 0))}


def label_components(classes: torch.Tensor, connectivity: int = 8) -> tuple[torch.Tensor, int]:
    """Labels [N, H, W] int64 of the connected regions of equal class in `classes` [N, H, W]
    (integers; negative = no component): 0 off-component, 1..n in raster order of each
    component's first pixel over the flattened batch. Returns (labels, n)."""
    n_img, h, w = classes.shape
    device = classes.device
    fg = classes >= 0
    flat_fg = fg.reshape(-1)
    pix = flat_fg.nonzero().squeeze(1)  # compact id -> flat pixel index
    labels = torch.zeros(n_img * h * w, dtype=torch.int64, device=device)
    if pix.numel() == 0:
        return labels.view(n_img, h, w), 0
    compact = torch.full((n_img * h * w,), -1, dtype=torch.int64, device=device)
    compact[pix] = torch.arange(pix.numel(), device=device)
    compact = compact.view(n_img, h, w)
    src, dst = [], []
    for dy, dx in _OFFSETS[connectivity]:
        y0, y1 = 0, h - dy
        xa0, xa1 = max(0, -dx), w - max(0, dx)
        a = classes[:, y0:y1, xa0:xa1]
        b = classes[:, y0 + dy : y1 + dy, xa0 + dx : xa1 + dx]
        joined = (a >= 0) & (a == b)
        src.append(compact[:, y0:y1, xa0:xa1][joined])
        dst.append(compact[:, y0 + dy : y1 + dy, xa0 + dx : xa1 + dx][joined])
    src, dst = torch.cat(src), torch.cat(dst)
    parent = torch.arange(pix.numel(), device=device)
    while src.numel():
        ps, pd = parent[src], parent[dst]
        live = ps != pd
        src, dst, ps, pd = src[live], dst[live], ps[live], pd[live]
        if not src.numel():
            break
        # hook each root onto the smallest root joined to it (parents only decrease: no cycles)
        parent.scatter_reduce_(0, torch.maximum(ps, pd), torch.minimum(ps, pd), reduce="amin")
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if torch.equal(grand, parent):
                break
            parent = grand
    roots, inverse = torch.unique(parent, return_inverse=True)
    labels[pix] = inverse + 1
    return labels.view(n_img, h, w), int(roots.numel())


def euler_numbers(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Euler number (components minus holes, 8-connected foreground) of each component
    1..n of `labels` [N, H, W]: [n + 1] int64 (entry 0 unused). Each 2x2 quad of the padded
    image adds, for every label in it, +1 if it holds one of its pixels, -1 if three, -2 if
    two on a diagonal; the sum divided by 4 is the Euler number (Gray 1971)."""
    p = torch.nn.functional.pad(labels, (1, 1, 1, 1))
    a, b, c, d = p[:, :-1, :-1], p[:, :-1, 1:], p[:, 1:, :-1], p[:, 1:, 1:]
    mixed = ((a != b) | (a != c) | (a != d)).nonzero(as_tuple=True)  # a uniform quad adds nothing
    quad = torch.stack([a[mixed], b[mixed], c[mixed], d[mixed]], 1)  # [Q, 4]
    total = torch.zeros(n + 1, dtype=torch.int64, device=labels.device)
    for i in range(4):
        lab = quad[:, i]
        same = quad == lab.unsqueeze(1)  # [Q, 4]
        first = (lab > 0) & ~same[:, :i].any(1)  # count each label of a quad once
        k = same.sum(1)
        diagonal = (k == 2) & ((same[:, 0] & same[:, 3]) | (same[:, 1] & same[:, 2]))
        contrib = (k == 1).long() - (k == 3).long() - 2 * diagonal.long()
        total.index_add_(0, lab[first], contrib[first])
    return total // 4


def holes(labels: torch.Tensor, owners: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Pixels enclosed by each component of `owners` [J] (labels of `labels` [N, H, W]):
    the 4-connected regions of the other pixels of its bounding box that reach neither the
    box's border nor the frame's. `boxes` [J, 5] holds rows (image, y0, y1, x0, x1), the
    bounds inclusive. Returns the hole pixels as rows (owner, flat pixel index) [P, 2]."""
    device = labels.device
    if owners.numel() == 0:
        return torch.zeros(0, 2, dtype=torch.int64, device=device)
    _, h, w = labels.shape
    img, y0, y1, x0, x1 = (c.view(-1, 1, 1) for c in boxes.unbind(1))
    bh, bw = int((boxes[:, 2] - boxes[:, 1]).max()) + 1, int((boxes[:, 4] - boxes[:, 3]).max()) + 1
    ry = y0 + torch.arange(bh, device=device).view(1, -1, 1)
    rx = x0 + torch.arange(bw, device=device).view(1, 1, -1)
    inside = (ry <= y1) & (rx <= x1)  # the crops are padded to the largest box
    flat = (img * h + ry.clamp(max=h - 1)) * w + rx.clamp(max=w - 1)
    own = labels.reshape(-1)[flat] == owners.view(-1, 1, 1)
    free_labels, n = label_components(torch.where(inside & ~own, 0, -1), connectivity=4)
    border = inside & ((ry == y0) | (ry == y1) | (rx == x0) | (rx == x1) | (ry == 0) | (ry == h - 1) | (rx == 0)
                       | (rx == w - 1))
    open_region = torch.zeros(n + 1, dtype=torch.bool, device=device)
    open_region[free_labels[border]] = True
    hole = (free_labels > 0) & ~open_region[free_labels]
    k, yy, xx = hole.nonzero().unbind(1)
    return torch.stack([owners[k], flat[k, yy, xx]], 1)


def dilate_max(labels: torch.Tensor) -> torch.Tensor:
    """The largest label in each pixel's 3x3 neighbourhood (exact integer max filter)."""
    p = torch.nn.functional.pad(labels, (1, 1, 1, 1))
    h, w = labels.shape[-2:]
    out = labels.clone()
    for dy in range(3):
        for dx in range(3):
            out = torch.maximum(out, p[..., dy : dy + h, dx : dx + w])
    return out
