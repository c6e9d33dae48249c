"""Wall-clock accounting per phase (encode, denoise, decode, verify).

On CUDA the device is synchronised at phase boundaries so that each phase's time is its
own work, not work queued earlier. Nested phases of the same name count once."""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

import torch


class Timings:
    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.seconds: dict[str, float] = defaultdict(float)
        self._open: set[str] = set()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name in self._open:
            yield
            return
        self._open.add(name)
        self._sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - t0
            self._open.discard(name)

    def reset(self) -> None:
        self.seconds.clear()

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in self.seconds.items()}
