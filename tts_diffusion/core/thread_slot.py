"""ThreadSlot: a value that model hooks read, set per thread around a model call.

Hooks installed on a shared model (T-GATE's, features/tgate.py; Alfie's capture processors,
features/attention_capture.py; the call state they look up, core/state.py) find what the call in flight in their thread asks of them through a slot:
the caller sets it for the block (`with slot.use(value)`), the hook reads `slot.get()`.
Each thread sees only its own value, so one model serves many threads at once.

Why not a `contextvars.ContextVar`: under torch.compile the hooks run inside the traced
denoiser, and dynamo in torch 2.11 cannot trace `ContextVar.get()` (2.14 can): every hooked
attention module broke the graph (17 breaks and 50 graphs for a 2-step SD-1.5 run, and
dynamo fell back to running whole frames eagerly). An attribute of a `threading.local` traces
on every torch we support: dynamo reads it, guards on it (per thread, at call time) and
keeps one graph. The attribute is set in the thread-local's `__init__`, so a thread that
never set it reads None through the same guards (no extra graph for a new thread).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class _PerThread(threading.local):
    def __init__(self) -> None:  # runs once in every thread that touches the slot
        self.value = None


class ThreadSlot(Generic[T]):
    """A per-thread value (None until set in that thread), readable inside compiled code."""

    def __init__(self, name: str):
        self.name = name
        self._local = _PerThread()

    def get(self) -> T | None:
        return self._local.value

    @contextlib.contextmanager
    def use(self, value: T | None) -> Iterator[T | None]:
        """`value` is this thread's for the block (nests; the previous one comes back)."""
        previous, self._local.value = self._local.value, value
        try:
            yield value
        finally:
            self._local.value = previous

    def __repr__(self) -> str:
        return f"ThreadSlot({self.name!r})"
