"""Where the pieces of a sweep run: one process per device (accelerate), and optionally the
verifier on a device of its own (a large verifier beside the model's GPU)."""
from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Sequence

import torch

from ..verifiers.base import Verifier


class OnDevice(Verifier):
    """A verifier kept on `device`: images move there to be scored and the scores come back
    on the images' device, so the searcher never sees the split."""

    def __init__(self, inner: Verifier, device: torch.device):
        super().__init__()
        self.inner = inner.to(device)
        self.name = inner.name
        self.chunk_size = inner.chunk_size
        self._home = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._home

    def check_prompt(self, prompt: str) -> None:
        self.inner.check_prompt(prompt)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.inner(images.to(self._home), list(prompts)).to(images.device)


class SingleProcess:
    """The PartialState interface for one process without accelerate."""

    num_processes, process_index, is_main_process = 1, 0, True

    def __init__(self, cpu: bool):
        self.device = torch.device("cpu" if cpu or not torch.cuda.is_available() else "cuda")

    @contextlib.contextmanager
    def split_between_processes(self, items: list) -> Iterator[list]:
        yield items

    def wait_for_everyone(self) -> None:
        pass


def process_state(cpu: bool):
    """accelerate's PartialState (one process per device under `accelerate launch` or
    torchrun; a single process otherwise), or a stand-in when accelerate is missing.
    `cpu=True`: the processes talk over gloo and their device is left to the caller."""
    try:
        from accelerate import PartialState
    except ImportError:
        return SingleProcess(cpu)
    if cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        # several processes pinned to one device (e.g. torchrun ... --device cuda:0): a gloo group
        # from the start, before accelerate picks NCCL on a CUDA host, whose collectives would
        # put rank r on cuda:r ("invalid device ordinal" on a one-GPU host, seen on an H100)
        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")
    return PartialState(cpu=cpu)


#: one counter key per sweep run in this process group (every process runs the same sweeps)
_SWEEPS = itertools.count()


def claim(state, items: list, store=None, key: str | None = None) -> Iterator:
    """This process's share of `items` (the same list on every process), claimed one item at a
    time from a counter all processes share (the process group's key-value store): a process
    that runs faster takes more, so the sweep ends when its work does, not when the slowest of
    fixed, equal shares does (on a 4-GPU host equal shares took 127-151 s for the same work).
    One process: every item, in order. Without a store (no process group), accelerate's fixed
    contiguous shares."""
    key = key or f"tts_diffusion/bench/next/{next(_SWEEPS)}"
    if state.num_processes == 1:
        yield from items
        return
    store = store if store is not None else group_store()
    if store is None:
        with state.split_between_processes(items) as share:
            yield from share
        return
    while (i := store.add(key, 1) - 1) < len(items):
        yield items[i]


def group_store():
    """The default process group's store (a TCPStore under accelerate / torchrun), or None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    try:
        return dist.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return None


def gather(state, records: list[dict]) -> list[dict]:
    """Every process's records on every process (accelerate's gather_object)."""
    if state.num_processes == 1:
        return list(records)
    from accelerate.utils import gather_object

    return list(gather_object(records))
