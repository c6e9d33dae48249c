"""Where the pieces of a sweep run: one process per device (accelerate), and optionally the
verifier on a device of its own (a large verifier beside the model's GPU)."""
from __future__ import annotations

import contextlib
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
    return PartialState(cpu=cpu)


def gather(state, records: list[dict]) -> list[dict]:
    """Every process's records on every process (accelerate's gather_object)."""
    if state.num_processes == 1:
        return list(records)
    from accelerate.utils import gather_object

    return list(gather_object(records))
