"""draft_commit (searchers/draft_commit.py) on tiny diffusers pipelines: every committed
sample is bit-identical to a plain sample of its seed, the commits are the top drafts, the
NFE is exact per draft kind (a cached step counts the blocks the model ran), and pairs that
cannot work are refused with one line before any model work."""
import pytest
import torch

from tts_diffusion import Budget, TTSInputError
from tts_diffusion.core.process import DenoisingProcess
from tts_diffusion.records.result import to_uint8
from tts_diffusion.searchers import load_searcher, min_budget
from tts_diffusion.testing.helpers import BrightnessVerifier
from tts_diffusion.testing.tiny_pipelines import pipeline_call_kwargs

PROMPT = "a red circle"
STEPS = 4


def _proc(pipe, family="flux", steps=STEPS):
    kw = pipeline_call_kwargs(family)
    return DenoisingProcess.from_pipeline(pipe, steps, 4.0, height=kw["height"], width=kw["width"],
                                          max_sequence_length=kw.get("max_sequence_length"))


def _plain(proc, seed, steps=None):
    """The plain sample of `seed` (the full grid, or a process of `steps` steps) and its score."""
    p = proc if steps is None else _proc(proc.adapter.pipe, steps=steps)
    x, _ = p.sample(p.noise_from_seeds([seed]), p.encode(PROMPT))
    img = p.decode(x)
    return to_uint8(img[0]), float(BrightnessVerifier()(img, [PROMPT])[0])


@pytest.mark.parametrize("draft,draft_nfe,commit_nfe", [("steps", 2, 4), ("preview", 2, 2), ("tgate", 4, 4)])
def test_commits_are_plain_samples_of_the_top_drafts_and_nfe_is_exact(tiny_pipe, draft, draft_nfe, commit_nfe):
    proc = _proc(tiny_pipe("flux"))
    n, k = 4, 2
    budget = Budget(100)
    res = load_searcher("draft_commit")(proc, BrightnessVerifier(), PROMPT, budget, torch.Generator().manual_seed(0),
                                        draft=draft, num_samples=n, top_k=k, draft_steps=2, draft_gate=2)
    assert res.nfe == budget.nfe == n * draft_nfe + k * commit_nfe
    assert res.nfe == min_budget("draft_commit", STEPS, draft=draft, num_samples=n, top_k=k, draft_steps=2)
    assert res.verifier_calls == n + k
    drafts = res.settings["drafts"]
    assert len(drafts) == n and sum(d["committed"] for d in drafts) == k
    # the committed ones are the top k by draft score
    ranked = sorted(range(n), key=lambda j: -drafts[j]["draft_score"])
    assert {drafts[j]["seed"] for j in ranked[:k]} == {c.seed for c in res.candidates}
    assert all(c.info["phase"] == "commit" for c in res.candidates)
    # every commit is bit-identical to a plain full sample of its seed, with the same score
    for c in res.candidates:
        img, score = _plain(proc, c.seed)
        assert torch.equal(c.image, img) and c.score == pytest.approx(score, abs=1e-7)
    assert res.best.score == max(c.score for c in res.candidates)
    assert set(res.settings["seconds"]) == {"draft", "commit"}
    if draft == "steps":  # a draft is the plain sample of its seed on the coarser grid
        for d in drafts[:2]:
            assert d["draft_score"] == pytest.approx(_plain(proc, d["seed"], steps=2)[1], abs=1e-6)


def test_tgate_drafts_save_model_rows_and_commits_run_without_it(tiny_pipe):
    proc = _proc(tiny_pipe("sd15"), "sd15")
    res = load_searcher("draft_commit")(proc, BrightnessVerifier(), PROMPT, Budget(100),
                                        torch.Generator().manual_seed(0), draft="tgate", num_samples=3,
                                        draft_gate=2)
    # drafts: CFG (2 rows) before the gate at step 2, 1 row after; the commit: CFG at all 4 steps
    assert res.model_rows == 3 * (2 * 2 + 2 * 1) + 1 * 4 * 2
    assert "tgate" not in proc.call.features  # the call's own setting is back
    img, _ = _plain(proc, res.best.seed)
    assert torch.equal(res.best.image, img)


def test_cache_drafts_count_the_blocks_the_model_ran(tiny_pipe):
    proc = _proc(tiny_pipe("flux"))
    common = dict(draft="cache", num_samples=2, top_k=1)
    full = load_searcher("draft_commit")(proc, BrightnessVerifier(), PROMPT, Budget(100),
                                         torch.Generator().manual_seed(0),
                                         cache_config="FirstBlockCache:threshold=0.0", **common)
    # threshold 0: no step is skipped, every block computed, NFE as without the cache
    assert full.settings["draft_blocks_computed"] == 1.0 and full.nfe == 2 * STEPS + STEPS
    skip = load_searcher("draft_commit")(proc, BrightnessVerifier(), PROMPT, Budget(100),
                                         torch.Generator().manual_seed(0),
                                         cache_config="FirstBlockCache:threshold=100.0", **common)
    share = skip.settings["draft_blocks_computed"]
    assert 0 < share < 1
    charged = 2 * STEPS
    assert skip.nfe == charged - int(charged - share * charged) + STEPS
    # the cache is gone after the drafts, and the commit is the plain sample of its seed
    assert not proc.adapter.denoiser.is_cache_enabled
    img, _ = _plain(proc, skip.best.seed)
    assert torch.equal(skip.best.image, img)


def test_refusals_are_one_line_before_model_work(tiny_pipe):
    search = load_searcher("draft_commit")
    sd = _proc(tiny_pipe("sd15"), "sd15")
    budget = Budget(100)
    with pytest.raises(TTSInputError, match="has no diffusers cache support"):
        search(sd, BrightnessVerifier(), PROMPT, budget, torch.Generator(), draft="cache")
    flux = _proc(tiny_pipe("flux"))
    from tts_diffusion.features.tgate import enable_tgate
    enable_tgate(flux, 2)
    with pytest.raises(TTSInputError, match="cannot be combined with tgate"):
        search(flux, BrightnessVerifier(), PROMPT, budget, torch.Generator(), draft="cache")
    flux = _proc(tiny_pipe("flux"))
    with pytest.raises(TTSInputError, match="no diffusers.hooks config 'Nope'"):
        search(flux, BrightnessVerifier(), PROMPT, budget, torch.Generator(), draft="cache", cache_config="Nope")
    with pytest.raises(TTSInputError, match="needs 10 NFE; the budget has 9"):
        search(flux, BrightnessVerifier(), PROMPT, Budget(9), torch.Generator(), num_samples=4, draft_steps=2)
    assert budget.nfe == 0 and Budget(10).nfe == 0


def test_stop_score_commits_in_draft_order_and_stops(tiny_pipe):
    proc = _proc(tiny_pipe("flux"))
    res = load_searcher("draft_commit")(proc, BrightnessVerifier(), PROMPT, Budget(100),
                                        torch.Generator().manual_seed(0), num_samples=4, top_k=3, draft_steps=2, draft="steps",
                                        stop_score=0.0)
    assert len(res.candidates) == 1 and res.candidates[0].info["draft_rank"] == 0
    assert res.settings["stopped_early"] and res.settings["unspent_nfe"] == 100 - res.nfe == 100 - (4 * 2 + 4)
