"""The benchmarks read a best-of-N run at its largest budget off at every smaller budget
(tts_diffusion/bench/readout.py). That readout must equal an actual run at the smaller budget."""
import pytest
import torch

from tts_diffusion import Budget
from tts_diffusion.bench import eval_prompts, picked
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.searchers import load_searcher
from tts_diffusion.testing.helpers import BrightnessVerifier

STEPS = 3


def _proc(tiny_pipe):
    return DenoisingProcess.from_pipeline(tiny_pipe("sd15"), STEPS, 4.0, height=32, width=32, max_batch=4)


def test_best_of_n_read_off_at_smaller_budgets_equals_runs_at_those_budgets(tiny_pipe):
    proc, ver = _proc(tiny_pipe), BrightnessVerifier()
    search = load_searcher("best_of_n")
    big = search(proc, ver, "a red circle", Budget(8 * STEPS), torch.Generator().manual_seed(3), keep_images=100)
    for k in (1, 2, 5, 8):
        small = search(proc, ver, "a red circle", Budget(k * STEPS), torch.Generator().manual_seed(3))
        got = picked(big, k * STEPS, STEPS)
        assert got is not None, f"nothing read off at {k} samples"
        assert got.seed == small.best.seed
        assert got.score == pytest.approx(small.best_score, abs=1e-6)


def test_other_searchers_are_read_off_by_the_nfe_of_their_candidates(tiny_pipe):
    proc, ver = _proc(tiny_pipe), BrightnessVerifier()
    res = load_searcher("smc")(proc, ver, "a red circle", Budget(4 * STEPS), torch.Generator().manual_seed(0))
    assert picked(res, 4 * STEPS, STEPS).score == pytest.approx(res.best_score)
    assert picked(res, STEPS - 1, STEPS) is None  # nothing was finished within less than one sample


def test_eval_prompts_are_balanced_and_nested():
    small, large = eval_prompts(12), eval_prompts(24)
    cats = {p["category"] for p in large}
    assert len(small) == 12 and len(large) == 24
    assert all(sum(p["category"] == c for p in small) == 12 // len(cats) for c in cats)
    assert all(p in large for p in small)
