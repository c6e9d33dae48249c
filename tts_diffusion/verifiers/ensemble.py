"""Verifier ensembles: combine several verifiers' scores into one.

``EnsembleVerifier(verifiers, weights=None, mode="rank" | "zscore")``

``mode="rank"`` (Ma et al. 2025, "Inference-Time Scaling for Diffusion Models beyond
Scaling Denoising Steps", *Verifier Ensemble*): within the batch, each member's scores are
ranked (1 = worst, B = best; tied scores share the average of their ranks, NaN ranks
lowest) and the ensemble score is the weighted mean rank, in [1, B]. Higher is better.

    Ranks are **batch-relative**: the same image gets a different score in another batch,
    so scores from different calls must not be compared. A searcher that compares
    candidates across rounds should either re-score them jointly in one call, keep the
    members' raw scores (:meth:`member_scores`) and re-combine the union with
    :meth:`combine`, or fix a reference: with ``reference={name: scores}`` (or after
    :meth:`calibrate`) each member's score becomes its mid-percentile within that fixed
    reference pool, ``(#ref < s + #ref <= s) / (2 * n_ref)`` in [0, 1], and the ensemble
    score (weighted mean percentile) no longer depends on the batch.

``mode="zscore"``: weighted sum of standardised scores, ``sum_k w_k (s_k - mu_k) / sd_k``.
Without ``stats`` the mean and (population) standard deviation come from the batch (a
member with zero spread contributes 0), so these scores are batch-relative too; with
``stats={name: (mean, std)}`` (or after :meth:`calibrate`) they are fixed and scores are
comparable across calls.

Weights default to equal and are normalised to sum to 1 (both modes are weighted
averages, so scales do not depend on the number of members); they must be >= 0.

Members run on the whole batch (each chunks internally), never chunk by chunk: ranks and
batch statistics are taken over everything passed in one call. ``verdict`` concatenates
the members' feedback per image (``"[name] text"``, one line per member that gives
feedback) and ANDs the ``correct`` flags of the members that report them.

Registry: ``load_verifier("ensemble", members="clip,oracle", weights="1,1", mode="rank")``;
``members`` may also be a list of names / Verifier objects or a ``{name: verifier}`` dict;
options for one member go in ``member_options={"clip": {...}}`` or as dotted keys
(``**{"clip.model": "ViT-B-32"}``, i.e. ``--verifier-option clip.model=ViT-B-32``);
``device``, ``dtype`` and ``chunk_size`` go to every member built by name.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..errors import TTSInputError
from .base import Verdict, Verifier, check_inputs
from .ensemble_spec import ENSEMBLE, ENSEMBLE_MODES as _MODES
from .registry import load_verifier, register_verifier

__all__ = ["EnsembleVerifier", "average_ranks", "make_ensemble"]

_SHARED = ("device", "dtype", "chunk_size")


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D tensor in ascending order, ties sharing their average rank
    (scipy's ``rankdata(method="average")``); NaN counts as the lowest value. float64."""
    x = torch.nan_to_num(x.double(), nan=float("-inf"))
    n = x.numel()
    if n == 0:
        return x.new_zeros(0)
    order = torch.argsort(x, stable=True)
    _, inverse, counts = torch.unique_consecutive(x[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    avg = ends - (counts.double() - 1) / 2  # mean of the positions start..end (1-based)
    ranks = torch.empty(n, dtype=torch.float64, device=x.device)
    ranks[order] = avg[inverse]
    return ranks


def _percentile(s: torch.Tensor, ref_sorted: torch.Tensor) -> torch.Tensor:
    s = torch.nan_to_num(s.double(), nan=float("-inf"))
    lt = torch.searchsorted(ref_sorted, s, right=False).double()
    le = torch.searchsorted(ref_sorted, s, right=True).double()
    return (lt + le) / (2 * ref_sorted.numel())


class EnsembleVerifier(Verifier):
    """Rank-average or z-score ensemble of verifiers (see the module docstring)."""

    name = "ensemble"

    def __init__(
        self,
        verifiers: Sequence[Verifier | str] | Mapping[str, Verifier | str],
        weights: Sequence[float] | Mapping[str, float] | None = None,
        mode: str = "rank",
        stats: Mapping[str, Sequence[float]] | None = None,
        reference: Mapping[str, Sequence[float] | torch.Tensor] | None = None,
    ):
        super().__init__()
        if mode not in _MODES:
            raise TTSInputError(f"ensemble mode must be one of {_MODES}, got {mode!r}")
        items = list(verifiers.items()) if isinstance(verifiers, Mapping) else [(None, v) for v in verifiers]
        if not items:
            raise TTSInputError("an ensemble needs at least one verifier")
        names: list[str] = []
        members: list[Verifier] = []
        for key, v in items:
            v = load_verifier(v)
            base = key if key is not None else getattr(v, "name", type(v).__name__)
            name, i = base, 2
            while name in names:
                name, i = f"{base}#{i}", i + 1
            names.append(name)
            members.append(v)
        self.member_names = names
        self.members = torch.nn.ModuleList(members)
        self.mode = mode
        self.weights = self._weights(weights)
        self.stats: dict[str, tuple[float, float]] = {}
        self.reference: dict[str, torch.Tensor] = {}
        if stats:
            self.set_stats(stats)
        if reference:
            self.set_reference(reference)

    # ------------------------------------------------------------------ configuration
    def _weights(self, weights) -> list[float]:
        k = len(self.member_names)
        if weights is None:
            w = [1.0] * k
        elif isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(self.member_names))
            if unknown:
                raise TTSInputError(f"weights for unknown ensemble members {unknown}; members: {self.member_names}")
            w = [float(weights.get(n, 1.0)) for n in self.member_names]
        else:
            w = [float(x) for x in weights]
            if len(w) != k:
                raise TTSInputError(f"{len(w)} ensemble weights for {k} members {self.member_names}")
        if any(x < 0 or x != x for x in w) or sum(w) <= 0:
            raise TTSInputError(f"ensemble weights must be >= 0 with a positive sum, got {w}")
        total = sum(w)
        return [x / total for x in w]

    def _check_names(self, d: Mapping[str, Any], what: str) -> None:
        unknown = sorted(set(d) - set(self.member_names))
        if unknown:
            raise TTSInputError(f"{what} for unknown ensemble members {unknown}; members: {self.member_names}")

    def set_stats(self, stats: Mapping[str, Sequence[float]]) -> None:
        """Fixed (mean, std) per member for ``mode="zscore"`` (members not listed use batch stats)."""
        self._check_names(stats, "stats")
        out = {}
        for n, ms in stats.items():
            mean, std = (float(x) for x in ms)
            if not std > 0:
                raise TTSInputError(f"ensemble stats for {n!r}: std must be > 0, got {std}")
            out[n] = (mean, std)
        self.stats.update(out)

    def set_reference(self, reference: Mapping[str, Sequence[float] | torch.Tensor]) -> None:
        """Reference score pools for ``mode="rank"``; must cover every member."""
        self._check_names(reference, "reference")
        missing = [n for n in self.member_names if n not in reference]
        if missing:
            raise TTSInputError(f"reference scores needed for every ensemble member; missing {missing}")
        for n, r in reference.items():
            t = torch.as_tensor(r, dtype=torch.float64).flatten().cpu()
            if t.numel() == 0:
                raise TTSInputError(f"empty reference scores for {n!r}")
            self.reference[n] = torch.sort(torch.nan_to_num(t, nan=float("-inf"))).values

    @torch.no_grad()
    def calibrate(
        self,
        images: torch.Tensor | None = None,
        prompts: Sequence[str] | str | None = None,
        scores: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Fix the normalisation from a calibration set (images + prompts, or members' raw
        scores): per-member (mean, std) for zscore and the reference pools for rank. After
        this, ensemble scores are comparable across calls. Returns the raw scores used."""
        if scores is None:
            if images is None or prompts is None:
                raise TTSInputError("calibrate needs images and prompts, or scores")
            scores = self.member_scores(images, prompts)
        self._check_names(scores, "calibration scores")
        self.set_reference(scores)
        self.set_stats({n: (float(s.double().mean()), float(s.double().std(unbiased=False)) or 1.0)
                        for n, s in scores.items()})
        return dict(scores)

    # ------------------------------------------------------------------ device
    def to(self, *args, **kwargs):
        """Each member's own ``to`` (so per-member dtype rules apply)."""
        for m in self.members:
            m.to(*args, **kwargs)
        return self

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def member_scores(self, images: torch.Tensor, prompts: Sequence[str] | str) -> dict[str, torch.Tensor]:
        """Each member's raw scores [B] (float32, on the images' device)."""
        images, prompts = check_inputs(images, prompts)
        return {n: m(images, prompts).float().to(images.device) for n, m in zip(self.member_names, self.members)}

    def transform(self, name: str, s: torch.Tensor) -> torch.Tensor:
        """One member's scores -> its normalised contribution (rank / percentile / z), float64."""
        s = s.double().flatten()
        if self.mode == "rank":
            if name in self.reference:
                return _percentile(s, self.reference[name].to(s.device))
            return average_ranks(s)
        if name in self.stats:
            mean, std = self.stats[name]
            return (s - mean) / std
        if s.numel() < 2:
            return torch.zeros_like(s)
        sd = s.std(unbiased=False)
        return torch.zeros_like(s) if not bool(sd > 0) else (s - s.mean()) / sd

    def combine(self, scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Ensemble scores [B] (float32) from the members' raw scores (e.g. the union of
        several rounds' :meth:`member_scores`, to rank them jointly)."""
        missing = [n for n in self.member_names if n not in scores]
        if missing:
            raise TTSInputError(f"combine needs scores for every member; missing {missing}")
        sizes = {int(torch.as_tensor(scores[n]).numel()) for n in self.member_names}
        if len(sizes) != 1:
            raise TTSInputError(f"members' score vectors differ in length: {sorted(sizes)}")
        total = None
        for n, w in zip(self.member_names, self.weights):
            t = w * self.transform(n, torch.as_tensor(scores[n]))
            total = t if total is None else total + t.to(total.device)
        return total.float()  # type: ignore[union-attr]

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        """zscore ensembles of differentiable members (ranks have no gradient)."""
        return self.mode == "zscore" and all(m.differentiable for m in self.members)

    def gradient_problem(self) -> str | None:
        if self.differentiable:
            return None
        bad = [n for n, m in zip(self.member_names, self.members) if not m.differentiable]
        why = f"members {bad} are not differentiable" if bad else "mode=rank has no gradient; use mode=zscore"
        from .registry import not_differentiable_message

        return f"{not_differentiable_message('ensemble')} ({why})"

    def score_with_grad(self, images: torch.Tensor, prompts: Sequence[str] | str) -> torch.Tensor:
        """The zscore combination of the members' `score_with_grad` (graph kept)."""
        problem = self.gradient_problem()
        if problem is not None:
            raise TTSInputError(problem)
        images, prompts = check_inputs(images, prompts)
        return self.combine({n: m.score_with_grad(images, prompts).to(images.device)
                             for n, m in zip(self.member_names, self.members)})

    @torch.no_grad()
    def forward(self, images: torch.Tensor, prompts: Sequence[str] | str) -> torch.Tensor:
        # not chunked here: ranks / batch statistics need the whole batch at once
        return self.combine(self.member_scores(images, prompts))

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.forward(images, prompts)

    @torch.no_grad()
    def verdict(self, images: torch.Tensor, prompts: Sequence[str] | str) -> Verdict:
        images, prompts = check_inputs(images, prompts)
        verdicts = {n: m.verdict(images, prompts) for n, m in zip(self.member_names, self.members)}
        scores = self.combine({n: v.scores.float().to(images.device) for n, v in verdicts.items()})
        feedback = None
        if any(v.feedback is not None for v in verdicts.values()):
            feedback = [
                "\n".join(f"[{n}] {v.feedback[i]}" for n, v in verdicts.items() if v.feedback is not None and v.feedback[i])
                for i in range(images.shape[0])
            ]
        flags = [v.correct.to(images.device).bool() for v in verdicts.values() if v.correct is not None]
        correct = None
        if flags:
            correct = flags[0]
            for f in flags[1:]:
                correct = correct & f
        return Verdict(scores=scores, feedback=feedback, correct=correct)

    def extra_repr(self) -> str:
        w = ", ".join(f"{n}={w:.3g}" for n, w in zip(self.member_names, self.weights))
        fixed = " (reference)" if self.reference else " (fixed stats)" if self.stats and self.mode == "zscore" else ""
        return f"mode={self.mode}{fixed}, weights: {w}"


def _split(value: Any) -> list:
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    return list(value)


@register_verifier(ENSEMBLE)
def make_ensemble(
    members: Any = "clip,oracle",
    weights: Any = None,
    mode: str = "rank",
    stats: Mapping[str, Sequence[float]] | None = None,
    reference: Mapping[str, Sequence[float]] | None = None,
    member_options: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> EnsembleVerifier:
    """Factory for the registry (see the module docstring for the options)."""
    per: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (member_options or {}).items()}
    shared: dict[str, Any] = {}
    for k, v in options.items():
        if "." in k:
            who, opt = k.split(".", 1)
            per.setdefault(who, {})[opt] = v
        elif k in _SHARED:
            shared[k] = v
        else:
            raise TTSInputError(
                f"unknown ensemble option {k!r}: use members=, weights=, mode=, stats=, reference=, member_options=, "
                f"'<member>.<option>' or one of {_SHARED}"
            )
    if isinstance(members, Mapping):
        specs = list(members.items())
    else:
        specs = [(m if isinstance(m, str) else None, m) for m in _split(members)]
    names = [n for n, _ in specs if n is not None]
    unknown = sorted(set(per) - set(names))
    if unknown:
        raise TTSInputError(f"options for {unknown}, which are not ensemble members {names}")
    built: dict[str, Verifier] = {}
    for n, spec in specs:
        v = load_verifier(spec, **{**shared, **per.get(n, {})}) if isinstance(spec, str) else load_verifier(spec)
        base = n if n is not None else getattr(v, "name", type(v).__name__)
        name, i = base, 2
        while name in built:
            name, i = f"{base}#{i}", i + 1
        built[name] = v
    if isinstance(weights, str):
        weights = [float(x) for x in _split(weights)]
    return EnsembleVerifier(built, weights=weights, mode=mode, stats=stats, reference=reference)
