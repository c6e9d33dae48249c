"""Aesthetic verifier: LAION improved-aesthetic-predictor head on a CLIP image embedding.
Offline: a tiny random open_clip model in a local dir and random heads in tmp files."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("open_clip")

from safetensors.torch import save_file  # noqa: E402

from tts_diffusion.errors import MissingWeightsError, TTSInputError  # noqa: E402
from tts_diffusion.testing.tiny_clip import MEAN, STD, write_tiny_clip  # noqa: E402
from tts_diffusion.verifiers import CLIPVerifier, available_verifiers, load_verifier  # noqa: E402
from tts_diffusion.verifiers.aesthetic import HEAD_NAME, AestheticVerifier  # noqa: E402
from tts_diffusion.verifiers.preprocess import clip_preprocess  # noqa: E402

LINEAR_IDX = (0, 2, 4, 6, 7)  # upstream MLP.layers indices of the Linear layers
RELU_IDX = (0, 3, 6, 9, 11)  # ... of the ReLU ("reluMSE") variant
SIZES = [(32, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for k in ("TTS_AESTHETIC_HEAD", "TTS_CLIP_CHECKPOINT"):
        monkeypatch.delenv(k, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TTS_DIFFUSION_ASSETS", str(home / "assets"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hf-cache"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def _head_sd(seed: int = 0, idx=LINEAR_IDX, width: int = 32, prefix: str = "") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (fi, fo) in zip(idx, [(width, 1024)] + SIZES[1:]):
        sd[f"{prefix}layers.{i}.weight"] = torch.randn(fo, fi, generator=g) / fi**0.5
        sd[f"{prefix}layers.{i}.bias"] = 0.1 * torch.randn(fo, generator=g)
    return sd


@pytest.fixture(scope="module")
def head_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("head") / HEAD_NAME
    torch.save(_head_sd(), p)
    return p


@pytest.fixture(scope="module")
def verifier(tiny_dir, head_file):
    return AestheticVerifier(head=head_file, model=str(tiny_dir))


def _images(n=4, h=48, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


def _by_hand(tiny_dir, sd, x, relu=False, prefix=""):
    """head(normalize(E_img(pre(x)))) written out: Linear chain, no dropout at inference."""
    clip = CLIPVerifier(model=str(tiny_dir))
    with torch.no_grad():
        pre = clip_preprocess(x, 32, MEAN, STD)
        h = F.normalize(clip.model.encode_image(pre).float(), dim=-1)
        idx = RELU_IDX if relu else LINEAR_IDX
        for j, i in enumerate(idx):
            h = h @ sd[f"{prefix}layers.{i}.weight"].T + sd[f"{prefix}layers.{i}.bias"]
            if relu and j < 4:
                h = h.clamp_min(0)
    return h[:, 0]


def test_registry():
    assert "aesthetic" in available_verifiers()


def test_score_is_head_of_normalised_embedding(verifier, tiny_dir):
    x = _images()
    s = verifier(x, "ignored prompt")
    assert s.shape == (4,) and s.dtype == torch.float32
    torch.testing.assert_close(s, _by_hand(tiny_dir, _head_sd(), x), atol=1e-5, rtol=1e-5)
    # prompt-independent, chunk-independent
    assert torch.equal(s, verifier(x, ["a", "b", "c", "d"]))
    old = verifier.chunk_size
    try:
        verifier.chunk_size = 3
        torch.testing.assert_close(verifier(x, "p"), s, atol=1e-6, rtol=0)
    finally:
        verifier.chunk_size = old


def test_relu_variant_prefixes_and_safetensors(tiny_dir, tmp_path):
    x = _images(seed=1)
    sd = _head_sd(seed=3, idx=RELU_IDX, prefix="mlp.")
    save_file(sd, str(tmp_path / "relu.safetensors"))
    v = AestheticVerifier(head=tmp_path / "relu.safetensors", model=str(tiny_dir))
    assert v.head.relu
    torch.testing.assert_close(v(x, ""), _by_hand(tiny_dir, sd, x, relu=True, prefix="mlp."), atol=1e-5, rtol=1e-5)


def test_env_var_registry_and_shared_clip(tiny_dir, head_file, verifier, monkeypatch):
    x = _images(seed=2)
    monkeypatch.setenv("TTS_AESTHETIC_HEAD", str(head_file))
    v = load_verifier("aesthetic", model=str(tiny_dir), chunk_size=2)
    assert v.chunk_size == 2
    torch.testing.assert_close(v(x, ""), verifier(x, ""), atol=1e-6, rtol=0)
    # an existing CLIPVerifier can be reused (one backbone for CLIP score and aesthetics)
    v2 = AestheticVerifier(clip=verifier.clip)
    assert v2.clip is verifier.clip
    torch.testing.assert_close(v2(x, ""), verifier(x, ""), atol=1e-6, rtol=0)


def test_head_stays_float32(tiny_dir, head_file):
    v = AestheticVerifier(head=head_file, model=str(tiny_dir), dtype="bf16")
    assert v.dtype == torch.bfloat16 and v.head.layers[0].weight.dtype == torch.float32
    v.to("cpu")
    v.to(torch.float32)
    assert v.clip.dtype == torch.float32 and v.head.layers[0].weight.dtype == torch.float32
    s = v(_images(2), "")
    assert s.dtype == torch.float32 and torch.isfinite(s).all()


def test_missing_head_one_clear_error(tiny_dir, tmp_path, monkeypatch):
    t0 = time.perf_counter()
    with pytest.raises(MissingWeightsError) as e:
        AestheticVerifier(model=str(tiny_dir))
    msg = str(e.value)
    assert HEAD_NAME in msg and "TTS_AESTHETIC_HEAD" in msg and "head=" in msg
    assert "TTS_CLIP_CHECKPOINT" not in msg  # the CLIP is there
    missing = tmp_path / "nope.pth"
    monkeypatch.setenv("TTS_AESTHETIC_HEAD", str(missing))
    with pytest.raises(MissingWeightsError, match="TTS_AESTHETIC_HEAD") as e:
        load_verifier("aesthetic", model=str(tiny_dir))
    assert str(missing) in str(e.value)
    # default backbone (ViT-L-14/openai) not cached either: both files are named at once
    monkeypatch.delenv("TTS_AESTHETIC_HEAD")
    with pytest.raises(MissingWeightsError) as e:
        load_verifier("aesthetic")
    assert HEAD_NAME in str(e.value) and "TTS_CLIP_CHECKPOINT" in str(e.value)
    assert time.perf_counter() - t0 < 5


def test_bad_heads(tiny_dir, tmp_path):
    torch.save(_head_sd(width=768), tmp_path / "wide.pth")
    with pytest.raises(TTSInputError, match="768"):
        AestheticVerifier(head=tmp_path / "wide.pth", model=str(tiny_dir))
    torch.save({"fc.weight": torch.zeros(1, 32)}, tmp_path / "other.pth")
    with pytest.raises(TTSInputError, match="not an improved-aesthetic-predictor head"):
        AestheticVerifier(head=tmp_path / "other.pth", model=str(tiny_dir))
