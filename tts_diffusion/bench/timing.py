"""Wall-clock timing for the speed benchmarks (scripts/bench_*.py): CUDA work is waited
for before and after each timed call, so the times are of the work, not of its launch."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, list[float], Any]:
    """Run `fn` `repeats` times: (median seconds, every time, the last result)."""
    times, out = [], None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out
