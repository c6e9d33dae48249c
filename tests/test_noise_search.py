"""Zero-order search and search over paths (Ma et al. 2025) against verifiers whose score is
a known function of the image."""
import math

import pytest
import torch

from tts_diffusion import Budget, TTSInputError
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.searchers import available_searchers, load_searcher
from tts_diffusion.searchers.paths import path_cost, path_schedule
from tts_diffusion.searchers.zero_order import shell_neighbours
from tts_diffusion.testing.helpers import BrightnessVerifier
from tts_diffusion.testing.tiny_pipelines import pipeline_call_kwargs

PROMPT = "a red circle"


def _proc(pipe, steps=4, max_batch=16, cls=DenoisingProcess):
    kw = pipeline_call_kwargs("flux")
    return cls.from_pipeline(pipe, steps, 4.0, height=kw["height"], width=kw["width"],
                             max_sequence_length=kw.get("max_sequence_length"), max_batch=max_batch)


def test_registered():
    assert {"best_of_n", "zero_order", "paths"} <= set(available_searchers())


@pytest.mark.parametrize("step", [0.05, 0.5, 1.0, 2.0])
def test_neighbours_sit_on_the_shell_at_the_stated_distance(step):
    pivot = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ys = shell_neighbours(pivot, 64, step, torch.Generator().manual_seed(1))
    r = pivot.norm()
    assert torch.allclose(ys.flatten(1).norm(dim=1), r.expand(64), rtol=1e-5)
    assert torch.allclose((ys - pivot).flatten(1).norm(dim=1), (step * r).expand(64), rtol=1e-5)
    if step < 2.0:  # directions are random: neighbours differ from each other
        assert (ys[0] - ys[1]).norm() > 1e-3 * r
    else:  # distance 2 r is the antipode
        assert torch.allclose(ys, -pivot.expand_as(ys), atol=1e-5)
    with pytest.raises(TTSInputError):
        shell_neighbours(pivot, 2, 2.5)


def test_zero_order_pivot_improves_monotonically_and_spends_exactly(tiny_pipe):
    proc = _proc(tiny_pipe("flux"))
    budget = Budget(proc.num_steps * (1 + 3 * 4) + 3)  # 3 iterations of 4 neighbours (+ spare NFE)
    res = load_searcher("zero_order")(proc, BrightnessVerifier(), PROMPT, budget, torch.Generator().manual_seed(0),
                                      num_children=4, step_size=0.6)
    assert res.settings["num_rounds"] == 3 and res.nfe == proc.num_steps * 13 <= budget.max_nfe
    best = [p.best_score for p in res.trace]
    assert len(best) == 4 and best == sorted(best)
    assert res.best_score == pytest.approx(max(res.scores))
    # the pivot only moves to an improving neighbour ("keep"): each iteration's neighbours are
    # centred on the best noise found so far, so the best never comes from a stale pivot
    again = load_searcher("zero_order")(proc, BrightnessVerifier(), PROMPT, Budget(budget.max_nfe),
                                        torch.Generator().manual_seed(0), num_children=4, step_size=0.6)
    assert again.scores == res.scores  # deterministic per seed


def test_zero_order_beats_its_pivot_on_a_smooth_objective(tiny_pipe):
    """Brightness is smooth in the noise: zero-order steps must climb above the first pivot."""
    proc = _proc(tiny_pipe("flux"))
    wins = 0
    for seed in range(3):
        res = load_searcher("zero_order")(proc, BrightnessVerifier(), PROMPT, Budget(proc.num_steps * 13),
                                          torch.Generator().manual_seed(seed), num_children=4, step_size=0.8)
        wins += res.best_score > res.candidates[0].score
    assert wins == 3


def test_zero_order_options_checked(tiny_pipe):
    proc = _proc(tiny_pipe("flux"))
    zo = load_searcher("zero_order")
    with pytest.raises(TTSInputError, match="on_stall"):
        zo(proc, BrightnessVerifier(), PROMPT, Budget(100), torch.Generator(), on_stall="nope")
    with pytest.raises(TTSInputError, match="need"):
        zo(proc, BrightnessVerifier(), PROMPT, Budget(proc.num_steps * 5), torch.Generator(), num_children=4, num_rounds=2)


def test_path_schedule_and_cost():
    assert path_schedule(10, 4, 1, 3) == [(4, 3, 6), (6, 5, 8), (8, 7, 10)]
    assert path_schedule(10, 10, 1, 2) == []
    assert path_cost(10, num_particles=2, num_children=3, start=4, delta_f=1, delta_b=3) == (2 * 4 + 3 * 2 * 3 * 3, 3 * 2 * 3)
    with pytest.raises(TTSInputError):
        path_schedule(10, 4, 2, 2)


class RecordingProcess(DenoisingProcess):
    """Logs the grid points the search visits."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.renoised, self.denoised, self.reindexed = [], [], []

    def renoise(self, x, i, j, generator=None, noise=None):
        self.renoised.append((i, j, x.shape[0]))
        return super().renoise(x, i, j, generator, noise)

    def denoise(self, x, i, cond):
        self.denoised.append((i, x.shape[0]))
        return super().denoise(x, i, cond)

    def select(self, idx, *items):
        self.reindexed.append(torch.as_tensor(idx).tolist())
        return super().select(idx, *items)


def test_paths_renoise_to_the_stated_level_and_keep_the_best(tiny_pipe):
    proc = _proc(tiny_pipe("flux"), steps=6, cls=RecordingProcess)
    nfe, calls = path_cost(6, 2, 3, 2, 1, 2)
    budget = Budget(nfe)
    res = load_searcher("paths")(proc, BrightnessVerifier(), PROMPT, budget, torch.Generator().manual_seed(0),
                                 num_particles=2, num_children=3, start=2, delta_f=1, delta_b=2)
    assert proc.renoised == [(2, 1, 6), (3, 2, 6), (4, 3, 6), (5, 4, 6)]
    # initial paths run 0..1, then each round denoises its 6 children from j to k
    assert proc.denoised[:2] == [(0, 2), (1, 2)]
    assert proc.denoised[2:] == [(1, 6), (2, 6), (2, 6), (3, 6), (3, 6), (4, 6), (4, 6), (5, 6)]
    assert res.nfe == nfe == budget.nfe and res.verifier_calls == calls
    assert len(res.candidates) == 6 and res.best_score == pytest.approx(max(res.scores))
    assert proc.reindexed[0] == [0, 0, 0, 1, 1, 1]  # per-particle state follows the branching
    # sigma is mapped to the nearest grid point
    res2 = load_searcher("paths")(proc, BrightnessVerifier(), PROMPT, Budget(nfe), torch.Generator().manual_seed(0),
                                  num_particles=2, num_children=3, sigma=proc.family.s(2), delta_f=1, delta_b=2)
    assert res2.settings["start"] == 2 and res2.scores == res.scores


def test_paths_children_land_on_the_renoised_marginal(tiny_pipe):
    """Forward noising by Delta_f must put the children at noise level s_j around a_j/a_i x_i."""
    proc = _proc(tiny_pipe("flux"), steps=6)
    x = torch.zeros(4000, 4, 8, 8)
    y = proc.renoise(x, 4, 2, torch.Generator().manual_seed(0))
    f = proc.family
    r = f.a(2) / f.a(4)
    expected_std = math.sqrt(f.s(2) ** 2 - (r * f.s(4)) ** 2)
    assert y.std().item() == pytest.approx(expected_std, rel=0.01)


def test_best_of_n_monotone_in_budget(tiny_pipe):
    proc = _proc(tiny_pipe("flux"))
    best = []
    for samples in (1, 2, 4, 8):
        res = load_searcher("best_of_n")(proc, BrightnessVerifier(), PROMPT, Budget(samples * proc.num_steps),
                                         torch.Generator().manual_seed(11))
        best.append(res.best_score)
    assert best == sorted(best)
