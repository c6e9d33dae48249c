"""Run one search in a worker thread and stream its progress.

`TTSPipeline.run` reports a `Progress` (NFE spent, budget, best candidate so far)
through `progress_callback` after every denoiser call and every scored round, from the
thread that runs the search. `stream_run` runs the call in a worker thread and yields
those reports (coalesced: at most one every `min_interval` seconds, always the newest,
and always when the best score changes), then the `SearchResult`. With `heartbeat`, a
silence of that many seconds (a verifier scoring a large batch, a slow denoiser call)
yields a `Quiet` with the seconds since the last report, so the page can say it is still
working instead of seeming frozen. A request that fails
re-raises its exception in the caller. When the consumer stops listening (the visitor
left, the generator was closed) the next progress report stops the search, so an
abandoned request does not keep the server busy.

Each call gets its own process view, budget and call state (`DenoisingProcess.for_call`),
so one `TTSPipeline` serves many requests at once.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from ..records.result import SearchResult
from ..core.state import Progress
from ..request import SearchRequest


class RunCancelled(Exception):
    """Raised inside the search when its listener went away."""


@dataclass
class _Finished:
    result: SearchResult | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class Quiet:
    """No progress report for `seconds`: the search is working on something that does not
    report (scoring, decoding, a long denoiser call)."""

    seconds: float


def stream_run(tts: Any, request: SearchRequest, *, min_interval: float = 0.25, max_batch: int = 16,
               heartbeat: float | None = None) -> Iterator[Progress | Quiet | SearchResult]:
    """Yield `Progress` reports while `tts.run(request)` runs (with the server's `max_batch`),
    and a `Quiet` after each `heartbeat` seconds without one, then its result."""
    events: queue.Queue = queue.Queue()
    cancelled = threading.Event()

    def on_progress(p: Progress) -> None:
        if cancelled.is_set():
            raise RunCancelled("the request was abandoned")
        events.put(p)

    def work() -> None:
        try:
            result = tts.run(dataclasses.replace(request, max_batch=max_batch), progress=False,
                             progress_callback=on_progress)
            events.put(_Finished(result=result))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, re-raised there
            events.put(_Finished(error=e))

    worker = threading.Thread(target=work, name="tts-demo-run", daemon=True)
    worker.start()
    last_sent = last_report = time.monotonic()
    last_best: float | None = None
    pending: Progress | None = None
    try:
        while True:
            if pending is not None:
                timeout = max(0.0, min_interval - (time.monotonic() - last_sent))
            else:
                timeout = None if heartbeat is None else max(0.0, heartbeat - (time.monotonic() - last_sent))
            try:
                item = events.get(timeout=timeout)
            except queue.Empty:
                item = None
            if isinstance(item, _Finished):
                if item.error is not None:
                    raise item.error
                yield item.result
                return
            if item is not None:
                pending, last_report = item, time.monotonic()
                if item.best_score == last_best and time.monotonic() - last_sent < min_interval:
                    continue
            if pending is not None:
                last_sent, last_best = time.monotonic(), pending.best_score
                yield pending
                pending = None
            elif item is None:  # the heartbeat ran out with nothing new
                last_sent = time.monotonic()
                yield Quiet(last_sent - last_report)
    finally:
        cancelled.set()
