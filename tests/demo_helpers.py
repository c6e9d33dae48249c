"""Shared by the demo tests: the embedded model loaded once per test process, and a
test-only searcher with a full parameter spec (every widget kind) registered for a block."""
from __future__ import annotations

import contextlib
import functools
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from tts_diffusion.params import Param  # noqa: E402

PROBE = "demo_probe"

#: one parameter of every kind the demo builds widgets for
PROBE_PARAMS = [
    Param("rounds", int, None, "samples, one per round (default: as many as the budget pays for)", low=1),
    Param("scale", float, 1.0, "a number with a range", low=0.0, high=2.0),
    Param("flip", bool, False, "a flag"),
    Param("mode", str, "a", "a choice", choices=("a", "b", "c")),
    Param("offsets", tuple, (1, 2), "a list of integers"),
    Param("extra_prompt", str, "", "a prompt (free text)"),
    Param("label", str, "probe", "free text that is not a prompt: never on the page"),
    Param("keep_images", int, 16, "candidate images kept", low=1),
]


@functools.lru_cache(maxsize=None)
def default_tts():
    """The embedded shapes model as a TTSPipeline on the CPU (shared; do not mutate)."""
    from tts_diffusion import TTSPipeline

    tts = TTSPipeline.from_pretrained()
    tts.set_progress_bar_config(disable=True)
    return tts


def probe_search(proc, verifier, prompt, budget, generator=None, *, negative_prompt=None, rounds=None,
                 keep_images=16, **options):
    """One sample per round (so the trace has a point per sample); echoes its options."""
    import torch

    from tts_diffusion.searchers.common import SearchLog

    n = int(rounds) if rounds is not None else budget.remaining_nfe // proc.num_steps
    cond = proc.encode(prompt, negative_prompt)
    log = SearchLog(proc, verifier, prompt, budget, keep_images)
    with proc.metered(budget), torch.no_grad():
        for seed in proc.seeds(n, generator):
            x, _ = proc.sample(proc.noise_from_seeds([seed]), cond)
            log.score_latents(x, [seed])
    return log.result({"searcher": PROBE, "rounds": n, **{k: list(v) if isinstance(v, tuple) else v
                                                           for k, v in options.items()}})


@contextlib.contextmanager
def probe_registered():
    """Register the probe searcher for the block, then remove it from the registry."""
    from tts_diffusion.searchers import register_searcher, registry

    register_searcher(PROBE, "test-only: one sample per round, echoes its options", params=PROBE_PARAMS)(probe_search)
    try:
        yield PROBE
    finally:
        registry._REGISTRY.pop(PROBE, None)
