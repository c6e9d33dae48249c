import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import functools  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# one thread: tiny models are overhead-bound, and more threads spin-wait on a busy 2-core box
torch.set_num_threads(1)


@functools.lru_cache(maxsize=None)
def _tiny(family: str):
    from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline

    return make_tiny_pipeline(family)


@pytest.fixture
def tiny_pipe():
    """tiny_pipe(family) -> a cached tiny random pipeline (do not mutate it)."""
    return _tiny
