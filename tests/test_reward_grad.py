"""Differentiable rewards through the x0 estimate (core/reward_grad.py): for every
differentiable verifier, the gradient through the tiny SD pipeline's VAE decoder and the
verifier's torch preprocessing matches central finite differences (float64 copies of the
networks); non-differentiable verifiers are refused with one line naming the differentiable
ones; the budget is charged by the documented rule."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("open_clip")

from image_reward_fixture import FIX, isolate  # noqa: E402

from tts_diffusion.core.budget import BACKWARD_NFE, Budget  # noqa: E402
from tts_diffusion.core.process import DenoisingProcess  # noqa: E402
from tts_diffusion.core.reward_grad import reward_and_grad  # noqa: E402
from tts_diffusion.errors import TTSInputError  # noqa: E402
from tts_diffusion.testing.tiny_clip import write_tiny_clip  # noqa: E402
from tts_diffusion.testing.tiny_pipelines import make_tiny_pipeline  # noqa: E402
from tts_diffusion.verifiers import differentiable_verifiers, load_verifier  # noqa: E402
from tts_diffusion.verifiers.aesthetic import AestheticVerifier, HEAD_NAME  # noqa: E402
from tts_diffusion.verifiers.base import FunctionVerifier  # noqa: E402
from tts_diffusion.verifiers.clip import CLIPVerifier  # noqa: E402
from tts_diffusion.verifiers.ensemble import EnsembleVerifier  # noqa: E402
from tts_diffusion.verifiers.image_reward import ImageRewardVerifier  # noqa: E402

PROMPT = "a red circle"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory)


@pytest.fixture(scope="module")
def proc64():
    """The tiny SD 1.5 pipeline in float64 (its own copy: the shared fixture stays float32)."""
    pipe = make_tiny_pipeline("sd15", seed=3)
    pipe.to(torch.float64)
    return DenoisingProcess.from_pipeline(pipe, num_steps=2, guidance_scale=1.0)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def _head(path, width=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (fi, fo) in zip((0, 2, 4, 6, 7), [(width, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]):
        sd[f"layers.{i}.weight"] = torch.randn(fo, fi, generator=g) / fi**0.5
        sd[f"layers.{i}.bias"] = 0.1 * torch.randn(fo, generator=g)
    torch.save(sd, path)
    return path


def _verifiers(clip_dir, tmp_path):
    clip = CLIPVerifier(model=str(clip_dir), scale=100.0).to(torch.float64)
    aes = AestheticVerifier(head=_head(tmp_path / HEAD_NAME), clip=clip)
    ir = ImageRewardVerifier(model_dir=FIX).to(torch.float64)
    ens = EnsembleVerifier({"clip": clip, "aesthetic": aes}, mode="zscore",
                           stats={"clip": (0.0, 2.0), "aesthetic": (0.0, 0.5)})
    fn = FunctionVerifier(lambda im, p: (im[:, 0] - im[:, 2]).mean(dim=(1, 2)) * 10, differentiable=True)
    return {"clip": clip, "aesthetic": aes, "image_reward": ir, "ensemble": ens, "function": fn}


def test_declared_differentiable_verifiers():
    assert differentiable_verifiers() == ["aesthetic", "clip", "image_reward"]


@pytest.mark.parametrize("which", ["clip", "aesthetic", "image_reward", "ensemble", "function"])
def test_gradient_matches_finite_differences(proc64, clip_dir, tmp_path, which):
    v = _verifiers(clip_dir, tmp_path)[which]
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(proc64.adapter.latent_shape(2), generator=g, dtype=torch.float64) * 0.5
    budget = Budget(max_nfe=0)
    with proc64.metered(budget):
        rg = reward_and_grad(proc64, v, x0, PROMPT)
    assert budget.reward_grads == 2 and budget.verifier_calls == 2 and budget.nfe == 0
    assert rg.grad.shape == x0.shape and rg.grad.abs().sum() > 0
    # the reward itself is the verifier's ordinary score of the decoded image
    assert torch.allclose(rg.reward.double(), v(proc64.decode(x0), PROMPT).double(), rtol=1e-5, atol=1e-6)
    h = 3e-3  # decoded images are float32 (adapter.decode): larger steps keep rounding out
    for k in range(2):
        d = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        d = d / d.norm()
        r_plus = v(proc64.decode(x0 + h * d), PROMPT).double()
        r_minus = v(proc64.decode(x0 - h * d), PROMPT).double()
        fd = (r_plus - r_minus) / (2 * h)
        an = (rg.grad * d).flatten(1).sum(1)
        assert torch.allclose(an, fd, rtol=1e-2, atol=1e-3 * float(rg.grad.norm())), (which, an, fd)


def test_non_differentiable_verifiers_refused(proc64, clip_dir, tmp_path):
    x0 = torch.zeros(proc64.adapter.latent_shape(1), dtype=torch.float64)
    with pytest.raises(TTSInputError, match=r"'oracle' is not differentiable.*aesthetic, clip, image_reward"):
        reward_and_grad(proc64, load_verifier("oracle"), x0, "a red circle")
    clip = _verifiers(clip_dir, tmp_path)["clip"]
    rank = EnsembleVerifier({"clip": clip, "oracle": load_verifier("oracle")}, mode="zscore")
    with pytest.raises(TTSInputError, match=r"\['oracle'\] are not differentiable"):
        reward_and_grad(proc64, rank, x0, "a red circle")
    with pytest.raises(TTSInputError, match="mode=rank has no gradient"):
        reward_and_grad(proc64, EnsembleVerifier({"clip": clip}, mode="rank"), x0, PROMPT)
    with pytest.raises(TTSInputError, match="'alpha' is not differentiable"):
        load_verifier("alpha").score_with_grad(torch.zeros(1, 3, 4, 4), PROMPT)


def test_budget_rule():
    b = Budget(max_nfe=10)
    b.charge_denoiser_backward(3)
    assert BACKWARD_NFE == 2 and b.nfe == 6 and b.denoiser_backwards == 3
    b.charge_reward_grad(4)
    assert b.verifier_calls == 4 and b.reward_grads == 4 and b.nfe == 6
    with pytest.raises(Exception, match="NFE budget exceeded"):
        b.charge_denoiser_backward(3)
