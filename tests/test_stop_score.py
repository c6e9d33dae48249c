"""Stop when satisfied (`stop_score`) in the particle searchers whose loops score Tweedie
estimates or nothing at all (fkc, rbf, svdd, code), on the embedded shapes model with the
exact oracle: a reachable stop_score ends the search early with the rest of the budget
reported unspent and an image that reaches it; an unreachable one changes nothing; a shared
budget over prompts (`budget_pool`) hands what a prompt did not spend to the next."""
import numpy as np
import pytest

from tts_diffusion import TTSPipeline

STEPS = 10
PROMPT = "a red circle"
#: searcher -> (its options, the budget): small populations, so a run is a few seconds
CASES = {
    "fkc": ({"num_particles": 2}, 2 * STEPS),
    "rbf": ({"num_particles": 1, "init_pool": 2}, 16),
    "svdd": ({"num_particles": 1, "num_children": 2}, 1 + 2 * (STEPS - 1)),
    "code": ({"num_particles": 1, "num_children": 2, "block": 3}, 1 + 2 * (STEPS - 1)),
}


@pytest.fixture(scope="module")
def tts():
    return TTSPipeline.from_pretrained()


def _run(tts, name, **kw):
    opts, budget = CASES[name]
    return tts(PROMPT, searcher=name, verifier="oracle", num_inference_steps=STEPS, budget=budget, seed=0,
               progress=False, **opts, **kw)


def _cost_when_stopped(name: str, at: int) -> int | None:
    """The NFE of a search that stops at grid point `at` and finishes its one state alone
    (1 NFE a step to grid point n-1): everything before `at` as planned, then n-1-at."""
    opts = CASES[name][0]
    k = opts["num_particles"]
    if name == "fkc":
        before = k * (at + 1)  # K particles denoised at grid points 0..at
    elif name in ("svdd", "code"):
        before = k + k * opts["num_children"] * at  # the start, then M children a particle and step
    else:
        return None  # rbf: what the chains spent depends on their rollovers (checked against the trace)
    return before + STEPS - 1 - at


@pytest.mark.parametrize("name", list(CASES))
def test_reachable_stop_score_ends_early_and_reports_the_rest(tts, name):
    res = _run(tts, name, stop_score=1.0)
    budget = CASES[name][1]
    at = res.settings["stopped_at"]
    assert at is not None and res.settings["stopped_early"] is True
    assert res.best_score >= 1.0  # the oracle's pass: the returned image reaches stop_score
    assert res.settings["unspent_nfe"] == budget - res.nfe > 0
    cost = _cost_when_stopped(name, at)
    assert cost is None or res.nfe == cost
    # the rest of the population ended where it was reached: one final candidate
    assert len(res.candidates) == 1 and res.candidates[0].score == res.best_score


@pytest.mark.parametrize("name", list(CASES))
def test_unreached_stop_score_changes_nothing(tts, name):
    free = _run(tts, name)
    never = _run(tts, name, stop_score=2.0)  # the oracle scores in [0, 1]
    assert "unspent_nfe" not in free.settings and "stopped_at" not in free.settings
    assert never.settings["stopped_early"] is False and never.settings["stopped_at"] is None
    assert never.nfe == free.nfe and never.settings["unspent_nfe"] == CASES[name][1] - free.nfe
    assert never.scores == free.scores
    assert np.array_equal(np.asarray(never.images[0]), np.asarray(free.images[0]))


def test_a_shared_budget_hands_on_what_fkc_did_not_spend(tts):
    """budget_pool keys off each result's `stopped_early` and NFE: with fkc (its default K:
    as many particles as the share pays for) the first prompt stops early, its rest goes to
    the next prompts by the documented rule, and the total stays within the pool."""
    prompts = [PROMPT, "two blue squares", "a green triangle"]
    total = 3 * 2 * STEPS
    res = tts(prompts, searcher="fkc", verifier="oracle", num_inference_steps=STEPS, seed=0, progress=False,
              budget_pool=total, stop_score=1.0)
    pools = [r.settings["pool"] for r in res]
    assert sum(r.nfe for r in res) == sum(sum(p["spent"]) for p in pools) <= total
    left = total
    for i, (r, p) in enumerate(zip(res, pools)):
        assert p["allotted"][0] == left // (3 - i)  # pass 1: the even split of what is left
        left -= p["spent"][0]
        assert r.settings["stopped_early"] == (r.best_score >= 1.0)
    first = res[0]
    assert first.settings["stopped_early"] is True and pools[0]["spent"][0] < pools[0]["allotted"][0]
    assert pools[1]["allotted"][0] > total // 3  # the first prompt's rest reached the next one


def test_bench_pool_runs_rbf_with_options_fitted_to_the_even_share(tmp_path):
    """`bench --pool` with rbf and stop_score: its declared pool (25 noises a chain) does not fit
    2 samples' share at 2 steps, so the pooled call fits the options as an unpooled cell
    does (fit_to_budget) instead of refusing the whole pool; the records keep the rule."""
    from tts_diffusion.bench import SweepConfig, read_records, run_sweep
    from tts_diffusion.bench.readout import fit_to_budget

    out = tmp_path / "pool.jsonl"
    run_sweep(SweepConfig(out=out, methods=["rbf"], budgets=[2], num_prompts=6, steps=2, device="cpu", pool=True,
                          options={"rbf": {"stop_score": 1.0}}), echo=lambda s: None)
    recs = read_records(out)
    fitted = fit_to_budget("rbf", 2 * 2, 2, {"stop_score": 1.0})
    assert len(recs) == 6 and all(r["options"] == fitted for r in recs) and fitted["init_pool"] < 25
    assert all(r["pool_ledger"]["total"] == 6 * 2 * 2 for r in recs) and sum(r["nfe"] for r in recs) <= 24
    assert all(r["stopped_early"] == (r["score"] >= 1.0) for r in recs)


def test_every_searcher_declares_the_one_stop_score():
    from tts_diffusion.searchers import available_searchers, searcher_params
    from tts_diffusion.searchers.vocabulary import STOP_SCORE

    for name in available_searchers():
        assert searcher_params(name).get("stop_score") == STOP_SCORE, name


def test_reflect_reports_what_it_did_not_spend(tts):
    """reflect stops before its first round when an initial sample passes, and says so as
    every searcher does (what budget_pool's second pass reads)."""
    kw = dict(searcher="reflect", verifier="oracle", num_inference_steps=STEPS, budget=80, seed=0, progress=False)
    free = tts(PROMPT, **kw)
    res = tts(PROMPT, stop_score=1.0, **kw)
    assert res.settings["stopped_early"] is True and res.best_score >= 1.0
    assert res.settings["rounds_run"] == 0 < free.settings["rounds_run"]
    assert res.settings["unspent_nfe"] == 80 - res.nfe > 0 and res.nfe < free.nfe
