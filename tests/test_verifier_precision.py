"""fp16/bf16 against fp32: the statistics of scripts/bench_verifier_precision.py on exact
answers, and ``dtype=float32`` one verifier option away (it survives the move to CUDA,
where the default would be fp16)."""
from __future__ import annotations

import pytest
import torch
from image_reward_fixture import FIX

from tts_diffusion.bench.agreement import gap_stats
from tts_diffusion.verifiers import verifier_params
from tts_diffusion.verifiers import load_verifier


def test_gap_stats_exact():
    ref = torch.tensor([0.0, 1.0, 2.0, 3.0])
    low = torch.tensor([0.0, 1.5, 3.5, 2.9])
    st = gap_stats(ref, low, group=2)
    assert st["max_abs"] == pytest.approx(1.5) and st["mean_abs"] == pytest.approx((0.5 + 1.5 + 0.1) / 4)
    std = float(ref.double().std())  # sample std, sqrt(5/3)
    assert st["score_std_fp32"] == pytest.approx(std) and st["max_abs_over_std"] == pytest.approx(1.5 / std)
    assert st["spearman"] == pytest.approx(1 - 6 * 2 / (4 * 15))  # ranks 1 2 3 4 vs 1 2 4 3
    assert st["best_of_group_agreement"] == 0.5 and st["groups"] == 2  # group 1 agrees, group 2 does not


@pytest.mark.parametrize("name, opts", [
    ("image_reward", {"model_dir": str(FIX)}),
    ("clip", {"model": "tts-precision-test-tiny", "pretrained": None}),
])
def test_float32_is_one_option_away_and_survives_a_cuda_move(name, opts, monkeypatch):
    if name == "clip":
        from open_clip import factory

        from tts_diffusion.testing.tiny_clip import TINY_CFG

        monkeypatch.setitem(factory._MODEL_CONFIGS, "tts-precision-test-tiny", TINY_CFG)
    parsed = verifier_params(name).parse(("dtype=float32",))  # --verifier-option dtype=float32
    assert parsed == {"dtype": "float32"}
    explicit = load_verifier(name, **opts, **parsed)
    auto = load_verifier(name, **opts)
    assert explicit.dtype == auto.dtype == torch.float32  # on CPU both are fp32 ...
    # ... but a move to CUDA (what TTSPipeline does) casts only the automatic one to fp16
    assert explicit._to_args(torch.device("cuda"))[1] is None
    assert auto._to_args(torch.device("cuda"))[1] == torch.float16
