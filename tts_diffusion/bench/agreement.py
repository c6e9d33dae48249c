"""How far two scorings of the same images agree: Spearman rank correlation (preview
against full-decode rewards, fp16 against fp32 verifiers) and the gap statistics of a
low-precision verifier against its fp32 reference."""
from __future__ import annotations

import torch


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties given their average rank."""
    order = torch.argsort(x, stable=True)
    r = torch.empty(len(x), dtype=torch.float64)
    r[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    for v in torch.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman's rho of two 1-D score tensors (Pearson correlation of their ranks);
    None when either is constant."""
    ra, rb = ranks(a.double().cpu()), ranks(b.double().cpu())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else None


def gap_stats(ref: torch.Tensor, low: torch.Tensor, group: int) -> dict:
    """Gap of `low` against `ref` (1-D float score tensors of equal length): absolute
    differences (also over the std of `ref`), Spearman's rho, and how often the argmax of
    each consecutive `group` agrees (the pick of a best-of-`group` search)."""
    ref, low = ref.double().cpu(), low.double().cpu()
    d = (low - ref).abs()
    std = float(ref.std())
    n = len(ref) // group * group
    picks = (ref[:n].view(-1, group).argmax(1) == low[:n].view(-1, group).argmax(1)).double()
    rho = spearman(ref, low) if len(ref) > 2 else None
    return {
        "max_abs": float(d.max()), "mean_abs": float(d.mean()), "score_std_fp32": std,
        "max_abs_over_std": float(d.max()) / std if std > 0 else float("inf"),
        "mean_abs_over_std": float(d.mean()) / std if std > 0 else float("inf"),
        "spearman": float("nan") if rho is None else rho,
        "best_of_group_agreement": float(picks.mean()) if n else float("nan"),
        "groups": n // group,
    }
