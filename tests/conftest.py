import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the old import paths of the shared worlds (tests/analytic.py, ...) alias tts_diffusion.testing; to be removed
sys.path.insert(0, os.path.dirname(__file__))

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
