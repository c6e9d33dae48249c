"""Verifier ensembles with known-score verifiers (mean brightness and friends): exact
ranks with ties, weights, z-scores, fixed references, feedback, registry options."""
from __future__ import annotations

from typing import Sequence

import pytest
import torch

from tts_diffusion.errors import TTSInputError
from tts_diffusion.verifiers import Verdict, Verifier, available_verifiers, load_verifier
from tts_diffusion.params import Param
from tts_diffusion.registry import Slot
from tts_diffusion.verifiers import registry as vreg
from tts_diffusion.verifiers.ensemble import EnsembleVerifier, average_ranks


class Brightness(Verifier):
    name = "brightness"

    def __init__(self, sign: float = 1.0, chunk_size: int = 64, **_):
        super().__init__()
        self.sign = sign
        self.chunk_size = chunk_size
        self.calls = 0

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        self.calls += 1
        return self.sign * images.mean(dim=(1, 2, 3))


class Constant(Verifier):
    name = "constant"

    def score(self, images, prompts):
        return torch.full((images.shape[0],), 0.5)


class Talker(Brightness):
    """Gives feedback and correctness flags (like the shapes oracle)."""

    name = "talker"

    def verdict(self, images, prompts):
        s = self(images, prompts)
        return Verdict(scores=s, feedback=[f"bright {v:.2f}" for v in s.tolist()], correct=s > 0.25)


def _imgs(levels) -> torch.Tensor:
    """Images whose mean brightness is exactly `levels`."""
    return torch.tensor(levels, dtype=torch.float32)[:, None, None, None].expand(-1, 3, 4, 4).contiguous()


def test_average_ranks_exact():
    r = average_ranks(torch.tensor([3.0, 1.0, 2.0, 2.0, float("nan"), 5.0, 5.0, 5.0]))
    assert r.tolist() == [5.0, 2.0, 3.5, 3.5, 1.0, 7.0, 7.0, 7.0]
    assert average_ranks(torch.zeros(0)).numel() == 0


def test_rank_mode_exact_with_ties_and_weights():
    x = _imgs([0.125, 0.5, 0.25, 0.5, 0.75])
    up, down = Brightness(), Brightness(sign=-1.0)
    assert "ensemble" in available_verifiers()
    ens = EnsembleVerifier({"up": up, "down": down}, mode="rank")
    # up ranks [1, 3.5, 2, 3.5, 5]; down ranks [5, 2.5, 4, 2.5, 1]; mean = 3 everywhere
    assert ens(x, "p").tolist() == [3.0] * 5
    ens_w = EnsembleVerifier({"up": up, "down": down}, weights=[3, 1])
    want = [0.75 * a + 0.25 * b for a, b in zip([1, 3.5, 2, 3.5, 5], [5, 2.5, 4, 2.5, 1])]
    assert ens_w(x, "p").tolist() == want
    # weights by name; a constant member contributes its tied rank (B + 1) / 2 = 3
    ens_c = EnsembleVerifier({"up": up, "c": Constant()}, weights={"up": 1, "c": 1})
    assert ens_c(x, "p").tolist() == [(a + 3) / 2 for a in [1, 3.5, 2, 3.5, 5]]
    assert ens_c.member_names == ["up", "c"]


def test_ranks_span_the_whole_batch_not_member_chunks():
    up = Brightness(chunk_size=2)  # the member scores in chunks of 2 ...
    ens = EnsembleVerifier([up, Brightness(sign=-1.0)])
    assert ens.member_names == ["brightness", "brightness#2"]
    s = ens.member_scores(_imgs([0.9, 0.1, 0.5, 0.3, 0.7]), "p")
    assert up.calls == 3
    # ... but ranks are over all five images
    assert average_ranks(s["brightness"]).tolist() == [5.0, 1.0, 3.0, 2.0, 4.0]
    ens1 = EnsembleVerifier([up])
    assert ens1(_imgs([0.9, 0.1, 0.5, 0.3, 0.7]), "p").tolist() == [5.0, 1.0, 3.0, 2.0, 4.0]


def test_zscore_mode_batch_and_fixed_stats():
    x = _imgs([0.1, 0.2, 0.6, 0.3])
    lv = torch.tensor([0.1, 0.2, 0.6, 0.3], dtype=torch.float64)
    z = (lv - lv.mean()) / lv.std(unbiased=False)
    up, down = Brightness(), Brightness(sign=-1.0)
    ens = EnsembleVerifier({"up": up, "down": down}, weights=[2, 1], mode="zscore")
    torch.testing.assert_close(ens(x, "p").double(), z / 3, atol=1e-6, rtol=0)
    # zero spread contributes zero
    ens0 = EnsembleVerifier({"up": up, "c": Constant()}, mode="zscore")
    torch.testing.assert_close(ens0(x, "p").double(), z / 2, atol=1e-6, rtol=0)
    # fixed stats: not batch-relative any more
    ensf = EnsembleVerifier({"up": up, "down": down}, mode="zscore", stats={"up": (0.5, 0.25), "down": (-0.5, 0.5)})
    want = 0.5 * (lv - 0.5) / 0.25 + 0.5 * (-lv + 0.5) / 0.5
    torch.testing.assert_close(ensf(x, "p").double(), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(ensf(x[:1], "p").double(), want[:1], atol=1e-6, rtol=0)


def test_reference_makes_rank_scores_batch_independent():
    up, down = Brightness(), Brightness(sign=-1.0)
    ens = EnsembleVerifier({"up": up, "down": down}, weights=[3, 1])
    calib = _imgs([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    raw = ens.calibrate(calib, "p")
    assert set(raw) == {"up", "down"} and set(ens.reference) == {"up", "down"}
    x = _imgs([0.35, 0.8, 0.05])
    batch = ens(x, "p")
    single = torch.cat([ens(x[i : i + 1], "p") for i in range(3)])
    assert torch.equal(batch, single)
    # 0.35: up is above 3 of 8 reference scores -> 3/8; down is above 5 of 8 -> 5/8
    assert batch[0].item() == pytest.approx(0.75 * 3 / 8 + 0.25 * 5 / 8)
    # 0.8 ties the top reference score: mid-percentile (7 + 8) / 16
    assert batch[1].item() == pytest.approx(0.75 * 15 / 16 + 0.25 * 1 / 16)
    with pytest.raises(TTSInputError, match="every ensemble member"):
        EnsembleVerifier({"up": up, "down": down}, reference={"up": [0.0, 1.0]})


def test_combine_union_equals_joint_scoring():
    up, down = Brightness(), Brightness(sign=-1.0)
    ens = EnsembleVerifier({"up": up, "down": down}, weights=[2, 1])
    a, b = _imgs([0.1, 0.7, 0.3]), _imgs([0.5, 0.2])
    sa, sb = ens.member_scores(a, "p"), ens.member_scores(b, "p")
    union = {k: torch.cat([sa[k], sb[k]]) for k in sa}
    assert torch.equal(ens.combine(union), ens(torch.cat([a, b]), "p"))


def test_verdict_concatenates_feedback_and_ands_correct():
    x = _imgs([0.1, 0.3, 0.5])
    t1, t2 = Talker(), Talker(sign=1.0)
    t2.verdict = lambda images, prompts: Verdict(  # type: ignore[method-assign]
        scores=images.mean(dim=(1, 2, 3)), feedback=["", "two says hi", "two says bye"],
        correct=torch.tensor([True, False, True]))
    ens = EnsembleVerifier({"one": t1, "two": t2, "up": Brightness()})
    v = ens.verdict(x, "p")
    assert v.feedback == ["[one] bright 0.10", "[one] bright 0.30\n[two] two says hi",
                          "[one] bright 0.50\n[two] two says bye"]
    assert v.correct.tolist() == [False, False, True]
    assert torch.equal(v.scores, ens(x, "p"))
    assert EnsembleVerifier([Brightness()]).verdict(x, "p").feedback is None


def _brightness_entry(name: str, sign: float) -> Slot:
    """A registered Brightness verifier whose declared `sign` default is `sign`."""
    entry = vreg.VerifierEntry.declare(name, "test", params=[Param("sign", float, sign, "score sign"),
                                                             Param("chunk_size", int, 64, "chunk", low=1)])
    return Slot(entry, lambda **o: Brightness(**o))


def test_registry_options(monkeypatch):
    monkeypatch.setitem(vreg._REGISTRY, "t_up", _brightness_entry("t_up", 1.0))
    monkeypatch.setitem(vreg._REGISTRY, "t_down", _brightness_entry("t_down", -1.0))
    ens = load_verifier("ensemble", members="t_up, t_down", weights="3,1", mode="rank", chunk_size=7,
                        **{"t_down.sign": -2.0})
    assert ens.member_names == ["t_up", "t_down"] and ens.weights == [0.75, 0.25]
    assert [m.chunk_size for m in ens.members] == [7, 7] and ens.members[1].sign == -2.0
    x = _imgs([0.2, 0.1, 0.4])
    assert ens(x, "p").tolist() == [0.75 * 2 + 0.25 * 2, 0.75 * 1 + 0.25 * 3, 0.75 * 3 + 0.25 * 1]
    ens2 = load_verifier("ensemble", members=["t_up", Constant()], mode="zscore",
                         member_options={"t_up": {"chunk_size": 3}})
    assert ens2.member_names == ["t_up", "constant"] and ens2.members[0].chunk_size == 3
    with pytest.raises(TTSInputError, match="verifier 'ensemble' has no option 'bogus'; valid: members"):
        load_verifier("ensemble", members="t_up", bogus=1)
    with pytest.raises(TTSInputError, match="not ensemble members"):
        load_verifier("ensemble", members="t_up", **{"t_down.sign": 1.0})
    with pytest.raises(TTSInputError, match="unknown verifier"):
        load_verifier("ensemble", members="t_up,no_such_verifier")


def test_bad_arguments():
    b = Brightness()
    with pytest.raises(TTSInputError, match="mode"):
        EnsembleVerifier([b], mode="median")
    with pytest.raises(TTSInputError, match=">= 0"):
        EnsembleVerifier([b, Constant()], weights=[1, -1])
    with pytest.raises(TTSInputError, match="2 members"):
        EnsembleVerifier([b, Constant()], weights=[1])
    with pytest.raises(TTSInputError, match="at least one"):
        EnsembleVerifier([])
    with pytest.raises(TTSInputError, match="unknown ensemble members"):
        EnsembleVerifier({"b": b}, mode="zscore", stats={"x": (0, 1)})
    with pytest.raises(TTSInputError, match="std"):
        EnsembleVerifier({"b": b}, mode="zscore", stats={"b": (0, 0)})
    with pytest.raises(TTSInputError, match="images but"):
        EnsembleVerifier([b])(_imgs([0.1, 0.2]), ["a", "b", "c"])
