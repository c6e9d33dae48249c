"""CLIP verifier tests: offline, with a tiny random open_clip model written to disk in
open_clip's local-dir layout (open_clip_config.json + open_clip_model.safetensors)."""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import torch

pytest.importorskip("open_clip")

import open_clip  # noqa: E402
from open_clip.transform import image_transform  # noqa: E402
from PIL import Image  # noqa: E402

from tts_diffusion.errors import MissingWeightsError, TTSInputError  # noqa: E402
from tts_diffusion.testing.tiny_clip import MEAN, STD, TINY_CFG, write_tiny_clip  # noqa: E402
from tts_diffusion.verifiers import CLIPVerifier, available_verifiers, load_verifier  # noqa: E402
from tts_diffusion.verifiers.clip import default_clip_source  # noqa: E402
from tts_diffusion.verifiers.preprocess import clip_preprocess  # noqa: E402

TINY_ARCH = "tts-tiny-test"
PROMPTS = ["a red circle", "two blue squares", "a green triangle left of a circle"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No hub, empty caches, no stray checkpoint env var."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TTS_CLIP_CHECKPOINT", raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))  # ~/.cache/clip
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hf-cache"))


@pytest.fixture(autouse=True)
def _tiny_arch(monkeypatch):
    """Register the tiny architecture as an open_clip built-in name (for the named-arch paths)."""
    from open_clip import factory

    monkeypatch.setitem(factory._MODEL_CONFIGS, TINY_ARCH, json.loads(json.dumps(TINY_CFG)))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def verifier(tiny_dir):
    return CLIPVerifier(model=str(tiny_dir))


def _images(n=5, h=64, w=48, seed=0):
    """Smooth random images, quantised to uint8 levels (so the PIL round trip is lossless)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, h // 4 + 1, w // 4 + 1, generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 255).round() / 255


def _to_pil(img):
    return Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _pil_preprocess(model_dir, images):
    _, _, pre = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    return torch.stack([pre(_to_pil(im)) for im in images])


# --------------------------------------------------------------------------- basics
def test_registry_lists_clip():
    assert "clip" in available_verifiers()


def test_shape_dtype_determinism(verifier):
    x = _images(5)
    s1 = verifier(x, PROMPTS[0])
    s2 = verifier(x, [PROMPTS[0]] * 5)
    assert s1.shape == (5,) and s1.dtype == torch.float32 and torch.isfinite(s1).all()
    assert torch.equal(s1, s2)
    assert (s1.abs() <= 1 + 1e-5).all()  # cosine


def test_chunk_size_invariance(verifier):
    x = _images(7, seed=1)
    prompts = [PROMPTS[i % 3] for i in range(7)]
    old = verifier.chunk_size
    try:
        verifier.chunk_size = 1
        a = verifier(x, prompts)
        verifier.chunk_size = 64
        b = verifier(x, prompts)
    finally:
        verifier.chunk_size = old
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_text_cache_hit_gives_identical_scores(verifier):
    verifier.clear_text_cache()
    x = _images(4, seed=2)
    m0, h0 = verifier.cache_misses, verifier.cache_hits
    a = verifier(x, PROMPTS[1])
    assert verifier.cache_misses == m0 + 1 and PROMPTS[1] in verifier._text_cache
    b = verifier(x, PROMPTS[1])
    assert verifier.cache_misses == m0 + 1 and verifier.cache_hits >= h0 + 4 + 3
    assert torch.equal(a, b)
    verifier.clear_text_cache()
    assert torch.equal(verifier(x, PROMPTS[1]), a)


def test_score_is_hand_computed_cosine(verifier, tiny_dir):
    """score == cos(encode_image(pre(x)), encode_text(tok(p))): exactly with our torch
    preprocessing, and to ~1e-2 relative with open_clip's PIL preprocessing."""
    x = _images(4, h=48, w=64, seed=3)
    prompts = [PROMPTS[i % 3] for i in range(4)]
    scores = verifier(x, prompts)
    m, tok = verifier.model, open_clip.get_tokenizer(f"local-dir:{tiny_dir}")
    with torch.no_grad():
        t = m.encode_text(tok(prompts), normalize=True)
        ours = (m.encode_image(verifier.preprocess(x), normalize=True) * t).sum(-1)
        ref_in = _pil_preprocess(tiny_dir, x)
        ref = (m.encode_image(ref_in, normalize=True) * t).sum(-1)
    torch.testing.assert_close(scores, ours, atol=1e-5, rtol=1e-5)
    assert ((scores - ref).abs() / ref.abs()).max() < 1e-2
    # normalised inputs: differences are PIL's uint8 rounding (1 level = 1/255/std ~ 0.015)
    diff = (verifier.preprocess(x) - ref_in).abs()
    assert diff.mean() < 6e-3 and diff.max() < 0.03


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("size", [32, (24, 40)])
def test_torch_preprocess_matches_open_clip(mode, size):
    tf = image_transform(size, False, mean=MEAN, std=STD, resize_mode=mode, interpolation="bicubic")
    for h, w in [(64, 48), (17, 90), (32, 32)]:
        x = _images(2, h, w, seed=h + w)
        ref = torch.stack([tf(_to_pil(im)) for im in x])
        ours = clip_preprocess(x, size, MEAN, STD, resize_mode=mode)
        assert ours.shape == ref.shape
        d = (ours - ref).abs()
        assert d.mean() < 6e-3 and d.max() < 0.035, (mode, size, h, w, d.mean(), d.max())


def test_scale_and_bf16(tiny_dir, verifier):
    x = _images(3, seed=4)
    base = verifier(x, PROMPTS[2])
    v100 = CLIPVerifier(model=f"local-dir:{tiny_dir}", scale=100.0)
    torch.testing.assert_close(v100(x, PROMPTS[2]), 100 * base, atol=1e-3, rtol=1e-5)
    vb = CLIPVerifier(model=str(tiny_dir), dtype="bf16")
    assert vb.dtype == torch.bfloat16
    sb = vb(x, PROMPTS[2])
    assert sb.dtype == torch.float32
    torch.testing.assert_close(sb, base, atol=5e-2, rtol=0)
    vb.to("cpu")  # explicit dtype survives a device move
    assert vb.dtype == torch.bfloat16 and not vb._text_cache
    vb.to(torch.float32)
    assert vb.dtype == torch.float32


# --------------------------------------------------------------------------- sources
def test_sources_agree(tiny_dir, verifier, tmp_path, monkeypatch):
    """local dir (3 spellings), checkpoint file for a named arch (safetensors and a torch
    state dict), pretrained=<file>, and $TTS_CLIP_CHECKPOINT all load the same weights."""
    x = _images(3, seed=5)
    want = verifier(x, PROMPTS[0])
    from open_clip.factory import load_state_dict

    sd = load_state_dict(str(tiny_dir / "open_clip_model.safetensors"))
    pt = tmp_path / "tiny.pt"
    torch.save({"state_dict": sd}, pt)
    st = tiny_dir / "open_clip_model.safetensors"
    variants = [
        dict(model=f"local-dir:{tiny_dir}"),
        dict(checkpoint=str(tiny_dir)),
        dict(model=TINY_ARCH, pretrained=None, checkpoint=str(st)),
        dict(model=TINY_ARCH, pretrained=None, checkpoint=pt),
        dict(model=TINY_ARCH, pretrained=str(pt)),
    ]
    for opts in variants:
        torch.testing.assert_close(CLIPVerifier(**opts)(x, PROMPTS[0]), want, atol=1e-6, rtol=0, msg=str(opts))
    # env var stands in for the download of a known tag
    from open_clip import pretrained as pre

    monkeypatch.setitem(pre._PRETRAINED, TINY_ARCH, {"tag": {"hf_hub": "tts-test/tiny/", "mean": MEAN, "std": STD}})
    monkeypatch.setenv("TTS_CLIP_CHECKPOINT", str(st))
    v = load_verifier("clip", model=TINY_ARCH, pretrained="tag")
    torch.testing.assert_close(v(x, PROMPTS[0]), want, atol=1e-6, rtol=0)


def test_pretrained_tag_from_hub_cache(tiny_dir, verifier, monkeypatch):
    """A known tag resolves to the local HF cache without the network; the tag's
    quick_gelu is forced (open_clip 3.x would only warn)."""
    from huggingface_hub import constants
    from open_clip import pretrained as pre
    from open_clip.transformer import QuickGELU

    snap = os.path.join(constants.HF_HUB_CACHE, "models--tts-test--tiny", "snapshots", "abc123")
    os.makedirs(snap)
    shutil.copy(tiny_dir / "open_clip_model.safetensors", snap)
    os.makedirs(os.path.join(constants.HF_HUB_CACHE, "models--tts-test--tiny", "refs"))
    with open(os.path.join(constants.HF_HUB_CACHE, "models--tts-test--tiny", "refs", "main"), "w") as f:
        f.write("abc123")
    cfg = {"hf_hub": "tts-test/tiny/", "mean": MEAN, "std": STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    monkeypatch.setitem(pre._PRETRAINED, TINY_ARCH, {"plain": cfg, "qg": {**cfg, "quick_gelu": True}})
    x = _images(3, seed=6)
    v = CLIPVerifier(model=TINY_ARCH, pretrained="plain")
    torch.testing.assert_close(v(x, PROMPTS[0]), verifier(x, PROMPTS[0]), atol=1e-6, rtol=0)
    vq = CLIPVerifier(model=TINY_ARCH, pretrained="qg")
    assert isinstance(vq.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)


def test_torchscript_checkpoint(tiny_dir, verifier, tmp_path):
    """OpenAI ships TorchScript archives (ViT-L-14.pt); they load as checkpoint files."""
    m = open_clip.create_model(f"local-dir:{tiny_dir}").eval()
    with pytest.warns(FutureWarning):  # torch.jit is deprecated in torch 2.1x
        torch.jit.script(m).save(str(tmp_path / "ts.pt"))
    x = _images(2, seed=7)
    v = CLIPVerifier(model=TINY_ARCH, pretrained=None, checkpoint=tmp_path / "ts.pt")
    torch.testing.assert_close(v(x, PROMPTS[1]), verifier(x, PROMPTS[1]), atol=1e-6, rtol=0)


def test_default_source_is_domain_clip(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_DIFFUSION_ASSETS", str(tmp_path))
    assert default_clip_source() == {"model": "ViT-L-14", "pretrained": "openai"}
    shutil.copytree(tiny_dir, tmp_path / "shapes-clip")
    assert default_clip_source() == {"model": str(tmp_path / "shapes-clip")}
    v = load_verifier("clip", chunk_size=2)
    assert v.source == str(tmp_path / "shapes-clip") and v.chunk_size == 2


# --------------------------------------------------------------------------- errors
def test_missing_pretrained_weights_fail_fast_offline():
    t0 = time.perf_counter()
    with pytest.raises(MissingWeightsError) as e:
        CLIPVerifier(model="ViT-L-14", pretrained="openai")
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    assert "TTS_CLIP_CHECKPOINT" in msg and "checkpoint=" in msg
    assert "timm/vit_large_patch14_clip_224.openai" in msg and "HF_HUB_OFFLINE" in msg
    with pytest.raises(MissingWeightsError, match="hf-hub|offline"):
        CLIPVerifier(model="hf-hub:tts-test/not-cached")


def test_missing_local_files(tiny_dir, tmp_path, monkeypatch):
    missing = tmp_path / "nope" / "model.safetensors"
    with pytest.raises(MissingWeightsError, match="TTS_CLIP_CHECKPOINT") as e:
        CLIPVerifier(model=TINY_ARCH, checkpoint=missing)
    assert str(missing) in str(e.value)
    monkeypatch.setenv("TTS_CLIP_CHECKPOINT", str(missing))
    with pytest.raises(MissingWeightsError, match="TTS_CLIP_CHECKPOINT"):
        CLIPVerifier(model="ViT-L-14", pretrained="openai")
    with pytest.raises(MissingWeightsError, match="not found"):
        CLIPVerifier(model=str(tmp_path / "no-such-dir"))
    empty = tmp_path / "no-weights"
    empty.mkdir()
    shutil.copy(tiny_dir / "open_clip_config.json", empty)
    with pytest.raises(MissingWeightsError, match="no weights"):
        CLIPVerifier(model=str(empty))
    # MissingWeightsError is a TTSInputError (the CLI prints it and exits 2)
    assert issubclass(MissingWeightsError, TTSInputError)


def test_bad_names():
    with pytest.raises(TTSInputError, match="unknown CLIP model"):
        CLIPVerifier(model="NotAModel-123")
    with pytest.raises(TTSInputError, match="unknown pretrained tag"):
        CLIPVerifier(model="ViT-L-14", pretrained="no_such_tag")
