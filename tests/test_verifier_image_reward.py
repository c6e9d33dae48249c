"""ImageReward verifier: equivalence with the upstream THUDM/ImageReward code, file lookup
and errors. Offline; the network is a small random configuration whose upstream state
dict, inputs, tokens and scores are in tests/fixtures/image_reward (made by
scripts/imagereward_reference.py in an isolated venv with image-reward 1.5,
transformers 4.30.2, timm 0.6.13; see reference.json["versions"])."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from image_reward_fixture import FIX, REF, fixture_images, isolate, upstream_transform
from PIL import Image

from tts_diffusion.errors import MissingWeightsError, TTSInputError
from tts_diffusion.verifiers import available_verifiers, load_verifier
from tts_diffusion.verifiers.blip import (
    DROPPED_KEYS,
    IMAGE_REWARD_MEAN,
    IMAGE_REWARD_STD,
    MED_CONFIG_BASE,
    VIT_LARGE,
    ImageRewardModel,
    MedConfig,
)
from tts_diffusion.verifiers.image_reward import ImageRewardVerifier

UPSTREAM_SCORES = torch.tensor(REF["scores"])


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory)


@pytest.fixture(scope="module")
def verifier():
    return ImageRewardVerifier(model_dir=FIX)


# --------------------------------------------------------------------------- equivalence
def test_registry_and_constants():
    assert "image_reward" in available_verifiers()
    # ImageReward.py: self.mean / self.std
    assert IMAGE_REWARD_MEAN == 0.16717362830052426 and IMAGE_REWARD_STD == 1.0333394966054072


def test_fixture_is_small_and_complete():
    size = sum(f.stat().st_size for f in FIX.iterdir())
    assert size < 3e6, size
    assert REF["versions"]["image-reward"] == "1.5" and REF["versions"]["timm"] == "0.6.13"
    assert [tuple(s) for s in REF["image_sizes_hw"]][:4] == [(224, 224)] * 4


def test_tokens_match_upstream(verifier):
    ids, mask = verifier.tokenizer(REF["prompts"])
    assert ids.tolist() == REF["input_ids"]  # includes truncation at 35, accents, CJK, emoji -> [UNK]
    assert mask.tolist() == REF["attention_mask"]


def test_scores_match_upstream_torch_preprocessing(verifier):
    """224x224 inputs (upstream's Resize+CenterCrop is the identity): our verifier on
    float tensors == upstream ImageReward.score(prompt, PIL) within 1e-4, in one batch."""
    imgs = fixture_images()
    x = torch.stack(imgs[:4])
    scores = verifier(x, REF["prompts"][:4])
    assert scores.dtype == torch.float32 and scores.shape == (4,)
    torch.testing.assert_close(scores, UPSTREAM_SCORES[:4], atol=1e-4, rtol=0)
    assert UPSTREAM_SCORES[:4].std() > 0.1  # the check is not vacuous


def test_scores_match_upstream_resized_inputs(verifier):
    """Non-224 images: with upstream's own PIL preprocessing the model matches within 1e-4;
    our torch preprocessing from float tensors differs by PIL's uint8 rounding only."""
    imgs = fixture_images()
    for i in (4, 5):
        pix = upstream_transform()(Image.open(FIX / REF["images"][i]))[None]
        s = verifier.score_preprocessed(pix, [REF["prompts"][i]])
        torch.testing.assert_close(s, UPSTREAM_SCORES[i : i + 1], atol=1e-4, rtol=0)
        ours = verifier(imgs[i][None], REF["prompts"][i])
        assert (ours - UPSTREAM_SCORES[i]).abs().item() < 5e-3
        d = (verifier.preprocess(imgs[i][None]) - pix).abs()
        assert d.mean() < 6e-3 and d.max() < 0.05, (d.mean(), d.max())  # ~1/4 uint8 level


def test_chunking_broadcast_and_token_cache(verifier):
    imgs = fixture_images()
    x = torch.stack(imgs[:4])
    old = verifier.chunk_size
    try:
        verifier.chunk_size = 3
        a = verifier(x, REF["prompts"][:4])
    finally:
        verifier.chunk_size = old
    torch.testing.assert_close(a, UPSTREAM_SCORES[:4], atol=1e-4, rtol=0)
    b1 = verifier(x, REF["prompts"][0])
    b2 = verifier(x, [REF["prompts"][0]] * 4)
    assert torch.equal(b1, b2) and REF["prompts"][0] in verifier._tokens
    assert abs(b1[0].item() - REF["scores"][0]) < 1e-4


def test_bf16_and_dtype_moves():
    v = ImageRewardVerifier(model_dir=FIX, dtype="bf16")
    assert v.dtype == torch.bfloat16 and v.model.mlp.layers[0].weight.dtype == torch.float32
    x = torch.stack(fixture_images()[:2])
    s = v(x, REF["prompts"][:2])
    assert s.dtype == torch.float32 and torch.isfinite(s).all()
    assert (s - UPSTREAM_SCORES[:2]).abs().max() < 0.15
    v.to("cpu")  # explicit dtype survives a device move; the head stays float32
    assert v.dtype == torch.bfloat16 and v.model.mlp.layers[0].weight.dtype == torch.float32
    v.to(torch.float32)  # (the weights keep their bf16 rounding)
    assert v.dtype == torch.float32 and v.model.blip.text_encoder.embeddings.LayerNorm.weight.dtype == torch.float32
    assert (v(x, REF["prompts"][:2]) - UPSTREAM_SCORES[:2]).abs().max() < 0.15
    v.train()
    assert not v.training and not v.model.training


# --------------------------------------------------------------------------- key mapping
def test_key_mapping_is_identity_minus_documented_keys(verifier, tmp_path):
    upstream = torch.load(FIX / "ImageReward.pt", weights_only=True)
    ours = set(verifier.model.state_dict())
    assert ours == set(upstream) - set(DROPPED_KEYS)
    assert set(DROPPED_KEYS) <= set(upstream)
    # DataParallel prefix and a {"state_dict": ...} wrapper load too
    wrapped = tmp_path / "ImageReward.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in upstream.items()}}, wrapped)
    v = ImageRewardVerifier(checkpoint=wrapped, med_config=FIX / "med_config.json", vocab=FIX / "vocab.txt",
                            vision_config=FIX / "vision_config.json")
    x = torch.stack(fixture_images()[:1])
    torch.testing.assert_close(v(x, REF["prompts"][0]), UPSTREAM_SCORES[:1], atol=1e-4, rtol=0)


def test_strict_load_rejects_other_keys(tmp_path):
    sd = torch.load(FIX / "ImageReward.pt", weights_only=True)
    opts = dict(med_config=FIX / "med_config.json", vocab=FIX / "vocab.txt", vision_config=FIX / "vision_config.json")
    bad = dict(sd, **{"blip.itm_head.weight": torch.zeros(2, 32)})
    torch.save(bad, tmp_path / "extra.pt")
    with pytest.raises(TTSInputError, match="itm_head"):
        ImageRewardVerifier(checkpoint=tmp_path / "extra.pt", **opts)
    short = {k: v for k, v in sd.items() if k != "mlp.layers.7.bias"}
    torch.save(short, tmp_path / "short.pt")
    with pytest.raises(TTSInputError, match="mlp.layers.7.bias"):
        ImageRewardVerifier(checkpoint=tmp_path / "short.pt", **opts)


def test_vision_config_checked_against_checkpoint(tmp_path):
    shutil.copy(FIX / "ImageReward.pt", tmp_path)  # no vision_config.json beside it
    with pytest.raises(TTSInputError, match="vision_config") as e:
        ImageRewardVerifier(checkpoint=tmp_path / "ImageReward.pt", med_config=FIX / "med_config.json",
                            vocab=FIX / "vocab.txt")
    assert "embed_dim: config 1024 vs checkpoint 48" in str(e.value)


def test_real_architecture_layout():
    """The ViT-L + BERT-base model (meta device, no memory) has the upstream names/shapes."""
    with torch.device("meta"):
        m = ImageRewardModel(VIT_LARGE, MedConfig.from_dict(MED_CONFIG_BASE, encoder_width=1024))
    sd = m.state_dict()
    expect = {
        "blip.visual_encoder.patch_embed.proj.weight": (1024, 3, 16, 16),
        "blip.visual_encoder.pos_embed": (1, 197, 1024),
        "blip.visual_encoder.blocks.23.attn.qkv.weight": (3072, 1024),
        "blip.visual_encoder.blocks.23.mlp.fc1.weight": (4096, 1024),
        "blip.text_encoder.embeddings.word_embeddings.weight": (30524, 768),
        "blip.text_encoder.embeddings.position_embeddings.weight": (512, 768),
        "blip.text_encoder.encoder.layer.11.crossattention.self.key.weight": (768, 1024),
        "blip.text_encoder.encoder.layer.11.output.LayerNorm.bias": (768,),
        "mlp.layers.0.weight": (1024, 768),
        "mlp.layers.7.weight": (1, 16),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert len([k for k in sd if k.startswith("blip.visual_encoder.blocks.")]) == 24 * 12
    assert len([k for k in sd if k.startswith("blip.text_encoder.encoder.layer.")]) == 12 * 26
    assert not any("token_type" in k or "pooler" in k for k in sd)


def test_random_weights_mode():
    v = ImageRewardVerifier(random_weights=True, med_config=FIX / "med_config.json",
                            vision_config=FIX / "vision_config.json")
    s = v(torch.rand(2, 3, 64, 80), "a red circle")
    assert s.shape == (2,) and torch.isfinite(s).all()


# --------------------------------------------------------------------------- file lookup
def test_environment_variables(monkeypatch):
    monkeypatch.setenv("TTS_IMAGEREWARD_CHECKPOINT", str(FIX / "ImageReward.pt"))
    monkeypatch.setenv("TTS_IMAGEREWARD_MED_CONFIG", str(FIX / "med_config.json"))
    monkeypatch.setenv("TTS_IMAGEREWARD_VOCAB", str(FIX / "vocab.txt"))
    v = load_verifier("image_reward")
    x = torch.stack(fixture_images()[:1])
    torch.testing.assert_close(v(x, REF["prompts"][0]), UPSTREAM_SCORES[:1], atol=1e-4, rtol=0)
    monkeypatch.delenv("TTS_IMAGEREWARD_CHECKPOINT")
    monkeypatch.delenv("TTS_IMAGEREWARD_MED_CONFIG")
    monkeypatch.delenv("TTS_IMAGEREWARD_VOCAB")
    monkeypatch.setenv("TTS_IMAGEREWARD_DIR", str(FIX))
    assert load_verifier("image_reward", chunk_size=2).chunk_size == 2


def test_hub_cache_lookup():
    """ImageReward.pt / med_config.json from the THUDM/ImageReward cache entry and vocab.txt
    from bert-base-uncased's, without the network."""
    from huggingface_hub import constants

    def put(repo: str, files: list[Path]):
        root = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
        snap = root / "snapshots" / "0123abcd"
        snap.mkdir(parents=True)
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text("0123abcd")
        for f in files:
            shutil.copy(f, snap)

    put("THUDM/ImageReward", [FIX / "ImageReward.pt", FIX / "med_config.json"])
    put("google-bert/bert-base-uncased", [FIX / "vocab.txt"])
    v = ImageRewardVerifier(vision_config=FIX / "vision_config.json")
    assert "models--THUDM--ImageReward" in v.source
    x = torch.stack(fixture_images()[:1])
    torch.testing.assert_close(v(x, REF["prompts"][0]), UPSTREAM_SCORES[:1], atol=1e-4, rtol=0)


def test_missing_files_one_clear_error_fast(monkeypatch, tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(MissingWeightsError) as e:
        load_verifier("image_reward")
    assert time.perf_counter() - t0 < 5
    msg = str(e.value)
    for needed in ("ImageReward.pt", "med_config.json", "vocab.txt", "TTS_IMAGEREWARD_CHECKPOINT",
                   "TTS_IMAGEREWARD_MED_CONFIG", "TTS_IMAGEREWARD_VOCAB", "checkpoint=", "med_config=",
                   "vocab=", "model_dir=", "TTS_IMAGEREWARD_DIR", "THUDM/ImageReward"):
        assert needed in msg, needed
    # only the vocabulary missing: the message is about it alone
    d = tmp_path / "ir"
    d.mkdir()
    shutil.copy(FIX / "ImageReward.pt", d)
    shutil.copy(FIX / "med_config.json", d)
    with pytest.raises(MissingWeightsError) as e:
        ImageRewardVerifier(model_dir=d)
    assert "vocab.txt" in str(e.value) and "TTS_IMAGEREWARD_VOCAB" in str(e.value)
    assert "pass checkpoint=" not in str(e.value)
    # an explicit path that does not exist is named with where it came from
    missing = tmp_path / "nope" / "ImageReward.pt"
    monkeypatch.setenv("TTS_IMAGEREWARD_CHECKPOINT", str(missing))
    with pytest.raises(MissingWeightsError, match="TTS_IMAGEREWARD_CHECKPOINT") as e:
        ImageRewardVerifier(med_config=FIX / "med_config.json", vocab=FIX / "vocab.txt")
    assert str(missing) in str(e.value)
    assert issubclass(MissingWeightsError, TTSInputError)
    assert not os.path.exists(Path.home() / ".cache" / "ImageReward")  # nothing was downloaded
