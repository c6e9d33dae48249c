"""Wall-clock accounting per phase (encode, denoise, decode, verify).

On CUDA each phase is bracketed by CUDA events recorded in stream order, so timing never
blocks the host: the CPU keeps queueing kernels while the GPU works (a synchronise per
denoiser step would expose every kernel launch). The events are resolved when the
numbers are read. On the CPU, phases use the host clock. Nested phases of the same name
count once."""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

import torch


class Timings:
    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._seconds: dict[str, float] = defaultdict(float)
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self._open: set[str] = set()

    @property
    def _cuda(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_available()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name in self._open:
            yield
            return
        self._open.add(name)
        if self._cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._pending.append((name, start, end))
                self._open.discard(name)
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] += time.perf_counter() - t0
            self._open.discard(name)

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per phase so far (waits for queued GPU work of timed phases)."""
        for name, start, end in self._pending:
            end.synchronize()
            self._seconds[name] += start.elapsed_time(end) / 1000.0
        self._pending.clear()
        return self._seconds

    def reset(self) -> None:
        self.seconds  # noqa: B018 - drain pending events
        self._seconds.clear()

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in self.seconds.items()}
