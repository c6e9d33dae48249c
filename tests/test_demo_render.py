"""What the page shows of a result, without a browser: images scaled up sharp, an RGBA
result as a cut-out over a checkerboard beside its matte (and its three files to
download), gallery captions with score, NFE and seed, the score plot (every candidate a
point, the best so far a staircase, whole-number NFE ticks, 2-3 decimals), reflection
rounds with critique, prompt and why a prompt stayed, and status lines in the page's words."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tts_diffusion.records.result import Candidate, ChainStep, SearchResult, TracePoint
from tts_diffusion.core.state import Progress
from tts_diffusion.demo.files import RunFiles
from tts_diffusion.demo.plot import score_plot
from tts_diffusion.demo.render import CHECKER, best_images, chain_items, example_prompts, gallery_items, to_display
from tts_diffusion.demo.status import error_message, running_message, waiting_message

PROMPT = "a photo of a red circle"


def test_to_display_scales_up_by_whole_factors_without_blur():
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    big = np.asarray(to_display(img))
    assert big.shape == (512, 512, 3)
    ref = img.permute(1, 2, 0).numpy()
    assert np.array_equal(big[::8, ::8], ref) and np.array_equal(big[7::8, 7::8], ref)  # every pixel an 8x8 block
    assert to_display(np.zeros((600, 300, 3), np.uint8)).size == (300, 600)  # large images stay as they are


def _result(scores, nfes=None, chains=None, alpha=None, settings=None):
    nfes = nfes or [10 * (k + 1) for k in range(len(scores))]
    cands = [Candidate(score=s, nfe=n, seed=k, image=torch.full((3, 4, 4), 10 * k, dtype=torch.uint8))
             for k, (s, n) in enumerate(zip(scores, nfes))]
    best = max(cands, key=lambda c: c.score)
    trace, run = [], -1.0
    for c in cands:
        run = max(run, c.score)
        if not trace or trace[-1].nfe != c.nfe:
            trace.append(TracePoint(c.nfe, 1, run))
        else:
            trace[-1] = TracePoint(c.nfe, 1, run)
    r = SearchResult(PROMPT, best, cands, trace, max(nfes), len(scores), {"total": 0.5}, {"seed": 7, **(settings or {})})
    r.alpha = alpha
    if chains is not None:
        r.chains = chains
    return r


def test_captions_show_score_nfe_and_seed_on_two_lines():
    items = gallery_items(_result([0.2, 0.9, 0.5]))
    assert [c.split("\n")[0] for _, c in items] == ["score 0.900 · best", "score 0.500", "score 0.200"]
    assert items[0][1] == "score 0.900 · best\n20 NFE · seed 1"


def test_plot_shows_every_candidate_and_the_best_so_far():
    fig = score_plot(_result([0.2, 0.9, 0.5]))
    ax = fig.axes[0]
    assert ax.collections[0].get_offsets().tolist() == [[10, 0.2], [20, 0.9], [30, 0.5]]  # one point each
    xs, ys = ax.lines[0].get_data()  # the staircase, to the end of the budget
    assert list(xs) == [10, 20, 30] and list(ys) == [0.2, 0.9, 0.9] and ax.lines[0].get_drawstyle() == "steps-post"
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert all(float(t).is_integer() for t in ticks)
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all(len(x.split(".")[1]) in (2, 3) for x in labels)


def test_plot_of_a_single_budget_still_draws_its_points():
    fig = score_plot(_result([1.0] * 8, nfes=[160] * 8))
    ax = fig.axes[0]
    assert len(ax.collections[0].get_offsets()) == 8
    lo, hi = ax.get_ylim()
    assert lo < 1.0 < hi and ax.get_xlim()[0] <= 160 <= ax.get_xlim()[1]
    assert [t.get_text() for t in ax.texts] == ["×8"]  # coinciding points say how many


def test_rgba_result_is_a_cutout_over_a_checkerboard_beside_its_matte(tmp_path):
    alpha = torch.zeros(4, 4, dtype=torch.uint8)
    alpha[1:3, 1:3] = 255  # an opaque square in the middle
    r = _result([0.5], alpha=alpha)
    r.best.image = torch.zeros(3, 4, 4, dtype=torch.uint8)  # black subject
    shown, matte = best_images(r)
    arr = np.asarray(shown)
    assert arr.shape == (512, 512, 3)
    assert arr[256, 256].tolist() == [0, 0, 0]  # the subject
    corner = {tuple(arr[y, x]) for y in (0, CHECKER[0]) for x in (0, CHECKER[0])}
    assert corner == {CHECKER[1], CHECKER[2]}  # transparent: the checkerboard shows
    m = np.asarray(matte)
    assert m[256, 256].tolist() == [255, 255, 255] and m[0, 0].tolist() == [0, 0, 0]
    files = RunFiles(tmp_path).new_run().save(r)
    names = [p.rsplit("/", 1)[1] for p in files]
    assert names == ["tts_best_seed7.png", "tts_best_seed7.rgb.png", "tts_best_seed7.alpha.png", "tts_best_seed7.json"]
    assert Image.open(files[0]).mode == "RGBA" and Image.open(files[2]).mode == "L"
    assert best_images(_result([0.5]))[1] is None  # no matte without rgba


def _step(r, prompt, critique="", accepted=True, score=0.5):
    return ChainStep(r, r, score, 10 * r, prompt, critique, [], "both", accepted,
                     torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_reflection_rounds_show_critique_prompt_and_why_it_stayed():
    assert chain_items(_result([0.1])) == ([], "")
    four = "a photo of four purple stars"
    crit = "expected 4 purple stars, found 2"
    chain = [_step(0, four), _step(1, four, crit), _step(2, four, crit, accepted=False)]
    other = "a photo of a square and a red triangle"
    chain2 = [_step(0, other), _step(1, "a photo of a red triangle and a square", "the triangle is not red", score=1.0)]
    items, text = chain_items(_result([0.1], chains=[chain, chain2], settings={"refiner": "rules"}))
    assert len(items) == 5 and items[1][1] == "chain 1 · round 1\nscore 0.500"
    lines = text.splitlines()
    assert "**Chain 1**" in lines and "**Chain 2**" in lines
    assert "- round 1 · score **0.500** · kept as the chain's head" in lines
    assert "- round 2 · score **0.500** · not better than the head: dropped" in lines
    assert f"    - critique: {crit}" in lines
    assert (f"    - prompt: {four} (unchanged: the shapes grammar has one phrasing for a counting prompt)"
            in lines)
    assert "    - prompt: a photo of a red triangle and a square" in lines  # refined: no note


def test_status_lines():
    assert "place 2, 1 request ahead of yours (1 running)" in waiting_message(1, 1, 4.2)
    assert "place 1, next in line" in waiting_message(0, 1, 0.0)
    assert "working, no candidate scored yet" in running_message("smc", None, 3.0)
    p = Progress(40, 160, None, None)
    assert "40 / 160 NFE · no candidate scored yet" in running_message("smc", p, 5.0)
    assert "since the last report" not in running_message("smc", p, 5.0, quiet=1.0)
    assert "working (scoring or denoising), 6 s since the last report" in running_message("smc", p, 9.0, quiet=6.2)
    q = Progress(80, 160, 0.75, object())
    assert "best so far **0.750**" in running_message("best_of_n", q, 2.0)


@pytest.mark.parametrize("api, page", [
    ("rgba=True cannot be combined with T-GATE: use one", 'the "RGBA" toggle cannot be combined with T-GATE'),
    ("the alpha verifier scores RGBA mattes: use it with rgba=True (--rgba)", 'use it with the "RGBA" toggle'),
    ("rgba=True does not work with the reflect searcher yet", 'the "RGBA" toggle does not work'),
])
def test_errors_in_the_pages_words(api, page):
    msg = error_message(api)
    assert page in msg and "rgba=" not in msg and "--rgba" not in msg


def test_example_prompts_come_from_the_eval_split():
    ex = example_prompts()
    assert 3 <= len(ex) <= 8 and all(p.startswith("a photo of") for p in ex)
