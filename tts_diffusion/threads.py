"""CPU threads for torch (torch-free module: the CLI reads it before importing torch).

torch's default, every core, collapses when other processes share the cores (160 NFE on 2
shared cores: 16.6 s against 2.0 s with 1 thread), and on a GPU host several bench
processes, each with every core, starve the CPU work they do (the oracle judge)."""
from __future__ import annotations

import os


def default_threads(processes: int = 1) -> int:
    """Half of this process's share of the cores it may run on, at most 4, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores // (2 * max(1, processes))))
