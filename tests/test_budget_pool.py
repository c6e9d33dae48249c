"""A shared budget over a list of prompts (pipelines/budget_pool.py): the allocation rule,
exactly, on the embedded shapes model with the exact oracle; reproducible from the seed."""
import pytest
import torch

from tts_diffusion import TTSInputError, TTSPipeline
from tts_diffusion.pipelines.budget_pool import BudgetPool

STEPS = 4


def test_rule_even_split_of_what_is_left_then_second_pass():
    pool = BudgetPool(100, 3)
    a = pool.take(0, 3)  # 33
    pool.give_back(0, a, 8)  # stopped early: 25 back
    b = pool.take(1, 2)  # (100 - 8) // 2 = 46
    pool.give_back(1, b, 46)
    c = pool.take(2, 1)  # 100 - 8 - 46 = 46
    pool.give_back(2, c, 40)
    assert (a, b, c) == (33, 46, 46) and pool.left == 6
    d = pool.take(1, 1)  # pass 2: the rest to the one below stop_score
    assert d == 6 and pool.left == 0
    assert pool.record(1)["allotted"] == [46, 6]
    with pytest.raises(TTSInputError, match="not both"):
        BudgetPool.check(100, 3, 4, 10)
    with pytest.raises(TTSInputError, match="at least 12"):
        BudgetPool.check(11, 3, 4, None)
    with pytest.raises(TTSInputError, match="positive integer"):
        BudgetPool.check(True, 3, 4, None)


@pytest.fixture(scope="module")
def tts():
    return TTSPipeline.from_pretrained()


def _run(tts, prompts, **kw):
    return tts(prompts, searcher="best_of_n", verifier="oracle", num_inference_steps=STEPS, seed=0, progress=False,
               round_size=1, **kw)


def test_pooled_prompts_hand_their_unspent_budget_on(tts):
    prompts = ["a red circle", "two blue squares", "a green triangle"]
    total = 3 * 6 * STEPS
    res = _run(tts, prompts, budget_pool=total, stop_score=1.0)
    spent = sum(r.nfe for r in res)
    assert spent <= total
    pools = [r.settings["pool"] for r in res]
    # pass 1 follows the rule: the even split of what is left, in prompt order
    left = total
    for i, p in enumerate(pools):
        assert p["allotted"][0] == left // (3 - i)
        left -= p["spent"][0]
        assert r_nfe_ok(res[i], p)
    # a prompt that reached stop_score spent less than its share; its rest reached later prompts
    for r, p in zip(res, pools):
        if r.settings["stopped_early"] and len(p["allotted"]) == 1:
            assert p["spent"][0] < p["allotted"][0] or p["spent"][0] == p["allotted"][0]
    # reproducible: the same call gives the same allotments and scores
    again = _run(tts, prompts, budget_pool=total, stop_score=1.0)
    assert [r.settings["pool"] for r in again] == pools and [r.best_score for r in again] == [r.best_score for r in res]


def r_nfe_ok(result, pool_record):
    return result.nfe == sum(pool_record["spent"])


def test_pool_refusals_before_model_work(tts):
    with pytest.raises(TTSInputError, match="not both"):
        _run(tts, ["a red circle", "a blue square"], budget_pool=40, budget=8)
    with pytest.raises(TTSInputError, match="raise it to at least 8"):
        _run(tts, ["a red circle", "a blue square"], budget_pool=7)
