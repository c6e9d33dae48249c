"""Per-call, per-particle state: the one mechanism that moves particles.

A search call owns a `CallState`. Everything that has one row per particle and must follow
the particles when a searcher selects, duplicates or drops them registers here (T-GATE's
attention caches, a multistep scheduler's history of model outputs, Alfie's attention
accumulators, ...). Searchers never reorder such state by hand: they call

    x, pred, log_w = proc.select(idx, x, pred, log_w)

which indexes what they pass *and* every registered entry with the same `idx` (a LongTensor
of parent rows; repeats duplicate a particle, missing rows drop it). When a searcher starts
a fresh population (new noise), `proc.reset_particles(n)` tells every entry that its rows
are new, so caches restart.

A call's features (tts_diffusion/features/: T-GATE's caching, Alfie's attention capture)
plug in through `CallState.features`, typed by `ModelFeature`: around every denoiser call
the process opens each feature's frame on the rows in flight, asks each whether CFG runs at
this step, and records each one's settings; a feature with per-particle state is also one
of the entries above, so `proc.select` moves it. Alfie's centring rewrites predictions
through `CallState.prediction_hook`. Nothing else reaches into the process.

Model hooks (attention processors installed on a shared model) find the state of the call
that is running through `current_call()`, a per-thread slot (core/thread_slot.py: dynamo
traces its read inside a compiled model), so one model serves many threads at once: each
thread sees its own call. During a denoiser forward,
`CallState.rows` is the slice of particle rows the model sees (the process splits the
batch into chunks of `max_batch` rows), and `CallState.step` the grid point. Row r of a
denoiser call is particle r: a call on fewer rows than the population covers its first
rows (RBF denoises its children, kept first, without the chain states behind them).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator, Protocol, runtime_checkable

import torch

from .thread_slot import ThreadSlot


@runtime_checkable
class ParticleEntry(Protocol):
    """Per-particle state: follows `select` and restarts on `reset`."""

    def select(self, idx: torch.Tensor) -> None: ...

    def reset(self, num_particles: int) -> None: ...


@runtime_checkable
class ModelFeature(Protocol):
    """Something a call plugs into the denoiser (features/): `name` keys it in the call (and
    is the option that turns it on), `label` names it in messages."""

    name: str
    label: str

    def keeps_cfg(self, step: int) -> bool:
        """Whether the denoiser call at grid point `step` runs classifier-free guidance (a
        feature may drop it, as T-GATE does after its gate)."""

    def frame(self, step: int, rows: slice, k: int, device: torch.device,
              dtype: torch.dtype) -> ContextManager[Any]:
        """Open around the denoiser call at grid point `step` on particle rows `rows`; the
        model batch is k rows per particle (k = 2 with CFG)."""

    def settings(self) -> dict[str, Any]:
        """What the result's settings record about the feature."""

    def for_call(self) -> "ModelFeature | None":
        """The feature for another call view of the same process (fresh per-particle state),
        or None when it belongs to this call only."""


#: prediction_hook(proc, x, i, cond, pred) -> the prediction the searcher sees
PredictionHook = Callable[[Any, torch.Tensor, int, Any, Any], Any]


@dataclass(frozen=True)
class Progress:
    """One progress report: NFE spent of the budget and the best candidate so far
    (`best.image` is a uint8 HWC array, `best.score` its verifier score; None before the
    first candidate is scored). `preview`: the searcher's current best estimate where it
    has one before any candidate is final (e.g. the Tweedie estimate x0 of its leading
    particle, uint8 [3,H,W]), else None."""

    nfe: int
    max_nfe: int
    best_score: float | None
    best: Any
    preview: Any = None


@dataclass
class CallState:
    """What one search call carries besides its budget and timings."""

    entries: dict[str, ParticleEntry] = field(default_factory=dict)
    #: particle rows of the chunk being forwarded (set by the process around each model call)
    rows: slice | None = None
    #: grid point of the denoiser call in flight
    step: int | None = None
    #: number of particles the entries currently hold rows for
    num_particles: int | None = None
    #: the call's model features by name, opened around every denoiser call in this order
    features: dict[str, ModelFeature] = field(default_factory=dict)
    #: rewrites every prediction before the searcher sees it (Alfie's centring), or None
    prediction_hook: PredictionHook | None = field(default=None, repr=False)
    #: replaces every `proc.step` (reward guidance, features/guidance.py), or None; called as
    #: step_hook(proc, x, i, pred, eta, noise, generator), it steps through `proc._step`
    step_hook: Callable[..., Any] | None = field(default=None, repr=False)
    #: best candidate so far (kept by the searcher's SearchLog), the searcher's current best
    #: estimate (`Progress.preview`; set by searchers that have one) and the progress listener
    best: Any = None
    preview: Any = None
    #: the Tweedie estimates x0 of the rows of the latest finished denoiser call (what an
    #: interrupted search scores on the way out when they beat its best finished candidate)
    latest_x0: Any = field(default=None, repr=False)
    on_progress: Callable[["Progress"], None] | None = field(default=None, repr=False)

    def report(self, nfe: int, max_nfe: int) -> None:
        """Tell the listener (UI, callback) where the search stands."""
        if self.on_progress is not None:
            best = self.best
            self.on_progress(Progress(nfe, max_nfe, None if best is None else best.score, best, self.preview))

    def register(self, name: str, entry: ParticleEntry) -> ParticleEntry:
        if not isinstance(entry, ParticleEntry):
            raise TypeError(f"{name}: per-particle state must implement select(idx) and reset(n)")
        self.entries[name] = entry
        if self.num_particles is not None:
            entry.reset(self.num_particles)
        return entry

    def get(self, name: str) -> ParticleEntry | None:
        return self.entries.get(name)

    def add_feature(self, feature: ModelFeature) -> ModelFeature:
        """Plug `feature` into this call (replacing one of the same name); one with
        per-particle state is registered as an entry too."""
        if not isinstance(feature, ModelFeature):
            raise TypeError(f"{feature!r}: a model feature needs name, keeps_cfg, frame, settings and for_call")
        self.remove_feature(feature.name)
        self.features[feature.name] = feature
        if isinstance(feature, ParticleEntry):
            self.register(feature.name, feature)
        return feature

    def remove_feature(self, name: str) -> None:
        if self.features.pop(name, None) is not None:
            self.entries.pop(name, None)

    def select(self, idx: torch.Tensor) -> None:
        for entry in self.entries.values():
            entry.select(idx)
        self.num_particles = int(idx.numel())

    def reset(self, num_particles: int) -> None:
        for entry in self.entries.values():
            entry.reset(num_particles)
        self.num_particles = int(num_particles)


_CURRENT: ThreadSlot[CallState] = ThreadSlot("tts_call_state")


def current_call() -> CallState | None:
    """The `CallState` of the search running in this thread (None outside one)."""
    return _CURRENT.get()


@contextlib.contextmanager
def active_call(state: CallState) -> Iterator[CallState]:
    """Make `state` the current call for the block (nests; restores the previous one)."""
    with _CURRENT.use(state):
        yield state


def select_rows(item: Any, idx: torch.Tensor) -> Any:
    """Index one searcher item by particle rows: a tensor, None, a list / tuple of such, or
    anything with an `index(idx)` method (e.g. `Prediction`)."""
    if item is None:
        return None
    if isinstance(item, torch.Tensor):
        return item[idx.to(item.device)]
    if isinstance(item, (list, tuple)):  # before `index`: lists and tuples have an index() method
        if item and _per_particle_value(item[0]):
            # a plain per-particle Python list (e.g. seeds)
            return type(item)(item[int(k)] for k in idx.tolist())
        return type(item)(select_rows(v, idx) for v in item)
    if hasattr(item, "index"):
        return item.index(idx)
    if isinstance(item, dict):
        return {k: select_rows(v, idx) for k, v in item.items()}
    raise TypeError(f"cannot select particle rows of a {type(item).__name__}")


def _per_particle_value(v: Any) -> bool:
    """True for one particle's plain value (a seed, a string, an info object); False for
    items that hold rows themselves (tensors, None, containers, objects with `index`)."""
    if isinstance(v, (str, bytes, int, float, bool)):
        return True
    return not (v is None or isinstance(v, (torch.Tensor, list, tuple, dict)) or hasattr(v, "index"))
