"""Bookkeeping every searcher shares: how many full samples a budget pays for, decode +
verify with accounting, best-so-far, trace, kept candidates, and the SearchResult at the end."""
from __future__ import annotations

import math
import time
import warnings
from typing import Any, Sequence

import torch

from ..core.budget import Budget
from ..core.process import DenoisingProcess
from ..records.result import Candidate, SearchResult, TracePoint, to_uint8
from ..errors import TTSInputError
from ..verifiers.base import Verifier

_INTS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def full_samples(budget: Budget, num_steps: int, calls_per_step: int = 1) -> int:
    """How many complete samples the remaining budget pays for, one sample costing
    `num_steps` steps of `calls_per_step` denoiser calls each (fkc's product mode: 2); a
    clear error if none."""
    cost = num_steps * calls_per_step
    n = budget.remaining_nfe // cost
    if n < 1:
        per_step = f", {calls_per_step} denoiser calls per step" if calls_per_step > 1 else ""
        raise TTSInputError(f"budget of {budget.max_nfe} NFE is below one full sample ({cost} NFE at {num_steps}"
                            f" steps{per_step}); raise the budget to at least {cost}")
    return n


class SearchLog:
    """Scores samples and remembers what a search found.

    `keep_images` bounds how many candidate images are held (the best ones); scores and
    seeds of all candidates are always kept."""

    def __init__(self, proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
                 keep_images: int = 16):
        self.proc, self.verifier, self.prompt, self.budget = proc, verifier, prompt, budget
        self.keep_images = max(1, int(keep_images))
        self.candidates: list[Candidate] = []
        self.best: Candidate | None = None
        self.trace: list[TracePoint] = []
        self._t0 = time.perf_counter()
        self._timings_start = dict(proc.timings.seconds)
        self.nonfinite = 0  # scores that were NaN / inf (recorded as -inf)
        self.nonfinite_images = 0  # candidates whose pixels were NaN / inf (scored -inf)

    def verify(self, images: torch.Tensor) -> torch.Tensor:
        """Verifier scores [B] (float32, CPU) for float images in [0,1]; charged and timed.

        Checked at the boundary: anything but B real numbers (a tensor or sequence of shape
        [B]) raises TTSInputError naming the verifier. A NaN or infinite score is a failed
        judgement, never a winner: it becomes -inf (the worst score: never picked as best,
        zero weight in particle methods), with one warning per search."""
        b = images.shape[0]
        self.budget.charge_verifier(b)
        with self.proc.timings.phase("verify"):
            raw = self.verifier(images.to(self.verifier.device), [self.prompt] * b)
        return self._checked(raw, b)

    def _checked(self, raw: Any, b: int) -> torch.Tensor:
        name = getattr(self.verifier, "name", type(self.verifier).__name__)
        try:
            scores = torch.as_tensor(raw.detach().cpu() if isinstance(raw, torch.Tensor) else raw)
        except (TypeError, ValueError, RuntimeError):
            raise TTSInputError(f"verifier {name!r} returned {type(raw).__name__}, not {b} scores") from None
        if scores.shape != (b,) or not (scores.dtype.is_floating_point or scores.dtype in _INTS):
            raise TTSInputError(f"verifier {name!r} returned scores of shape {tuple(scores.shape)} and dtype "
                                f"{scores.dtype}; expected {b} real numbers (shape [{b}])")
        scores = scores.float()
        bad = ~torch.isfinite(scores)
        if bad.any():
            if self.nonfinite == 0:
                warnings.warn(f"verifier {name!r} returned non-finite scores ({scores[bad].tolist()[:4]}); "
                              "they count as the worst score (-inf)", RuntimeWarning, stacklevel=3)
            self.nonfinite += int(bad.sum())
            scores = torch.where(bad, torch.full_like(scores, -math.inf), scores)
        return scores

    def score_latents(self, latents: torch.Tensor, seeds: Sequence[int | None] | None = None,
                      info: Sequence[dict[str, Any]] | None = None) -> torch.Tensor:
        """Decode clean latents, verify, record them as candidates; returns the scores."""
        images = self.proc.decode(latents)
        scores = self.verify(images)
        self.record(images, scores, seeds, info)
        return scores

    def score_intermediate(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode and verify latents that are not final samples (e.g. Tweedie estimates x0
        for potentials or lookahead rewards): charged to the budget like every verifier call,
        not recorded as candidates. Decoded by the process's preview decoder where it has
        one (core/preview.py). Returns the scores (float32, CPU)."""
        return self.verify(self.proc.decode(latents, preview=True))

    def record(self, images: torch.Tensor, scores: torch.Tensor, seeds: Sequence[int | None] | None = None,
               info: Sequence[dict[str, Any]] | None = None) -> None:
        n = images.shape[0]
        seeds = list(seeds) if seeds is not None else [None] * n
        info = [dict(d) for d in info] if info is not None else [{} for _ in range(n)]
        # an image with NaN / infinite pixels is a failed sample, never a winner (worst score)
        finite = torch.isfinite(images.reshape(n, -1)).all(1).cpu()
        if not bool(finite.all()):
            if self.nonfinite_images == 0:
                warnings.warn("the model produced images with NaN or infinite pixels (too large a guidance scale,"
                              " float16 overflow or broken weights?); they count as the worst score (-inf)",
                              RuntimeWarning, stacklevel=3)
            self.nonfinite_images += int((~finite).sum())
            scores = torch.where(finite, scores, torch.full_like(scores, -math.inf))
            for k in (~finite).nonzero().flatten().tolist():
                info[k]["nonfinite_pixels"] = True
        # only images that can enter the kept set are moved to the CPU
        kept = sorted((c.score for c in self.candidates if c.image is not None), reverse=True)
        floor = kept[self.keep_images - 1] if len(kept) >= self.keep_images else -float("inf")
        order = torch.argsort(scores, descending=True, stable=True).tolist()
        top = {k for k in order[: self.keep_images] if float(scores[k]) > floor}
        new = []
        for k in range(n):
            img = to_uint8(images[k]) if k in top else None
            c = Candidate(score=float(scores[k]), nfe=self.budget.nfe, seed=seeds[k], image=img, info=dict(info[k]))
            new.append(c)
            if self.best is None or c.score > self.best.score:
                if c.image is None:
                    c.image = to_uint8(images[k])
                self.best = c
        self.candidates.extend(new)
        self._trim()
        self.trace.append(TracePoint(self.budget.nfe, self.budget.verifier_calls, self.best.score))
        self.proc.call.best = self.best
        self.proc.call.report(self.budget.nfe, self.budget.max_nfe)

    def _trim(self) -> None:
        with_img = sorted((c for c in self.candidates if c.image is not None), key=lambda c: -c.score)
        for c in with_img[self.keep_images:]:
            if c is not self.best:
                c.image = None

    def result(self, settings: dict[str, Any]) -> SearchResult:
        """The SearchResult: the process's settings, `settings` (what the searcher derived: the
        registry adds its declared options by name) and the verifier's name."""
        if self.best is None:
            raise RuntimeError("the search scored no candidate")
        timings = {k: round(v - self._timings_start.get(k, 0.0), 6) for k, v in self.proc.timings.seconds.items()}
        timings["total"] = round(time.perf_counter() - self._t0, 6)
        return SearchResult(
            prompt=self.prompt, best=self.best, candidates=self.candidates, trace=self.trace,
            nfe=self.budget.nfe, verifier_calls=self.budget.verifier_calls, timings=timings,
            settings={**self.proc.settings(), **settings, "verifier": self.verifier.name,
                      **({"nonfinite_scores": self.nonfinite} if self.nonfinite else {}),
                      **({"nonfinite_images": self.nonfinite_images} if self.nonfinite_images else {})},
            model_rows=self.budget.model_rows,
        )


def stopped(log: SearchLog, stop_score: float | None) -> bool:
    """Stop when satisfied: the best score so far reaches `stop_score` (None: never)."""
    return stop_score is not None and log.best is not None and log.best.score >= stop_score


def reached(rewards: torch.Tensor | Sequence[float], stop_score: float | None) -> int | None:
    """Stop when satisfied, at a potential step / round scored by `rewards` (one per row:
    Tweedie estimates' or children's rewards): the row of the best reward when it reaches
    `stop_score`, else None (always None without stop_score)."""
    if stop_score is None:
        return None
    r = torch.as_tensor(rewards, dtype=torch.float64).reshape(-1)
    best = int(torch.argmax(r))
    return best if float(r[best]) >= stop_score else None


def stop_checks(num_steps: int) -> set[int]:
    """Grid points where a searcher whose loop scores nothing (fkc) scores its particles'
    Tweedie estimates for `stop_score`: smc's default potential steps, every max(1, n // 5)
    grid points from that one on (about five checks a run, K verifier calls each)."""
    interval = max(1, num_steps // 5)
    return set(range(min(interval, num_steps - 1), num_steps, interval))


def unspent(budget: Budget, stop_score: float | None, log: SearchLog) -> dict[str, Any]:
    """What the result's settings say about stopping: whether stop_score was reached and the
    NFE left unspent (what a shared budget over prompts hands on)."""
    if stop_score is None:
        return {}
    return {"stopped_early": stopped(log, stop_score), "unspent_nfe": budget.remaining_nfe}
