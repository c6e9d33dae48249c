"""ImageReward checkpoint format and lookup: the fixture re-saved the way upstream saves
(``torch.save(model.state_dict())``: an OrderedDict with ``_metadata``, the expanded
``position_ids`` buffer, the unused ``vision_proj``/``text_proj``; zip and legacy
serialisation) loads and scores identically; a wrong ``position_ids`` is rejected; the
full-size model's key/shape set matches the official file's registered fingerprint; the
hub cache is searched under the repository's new name (zai-org) and its old one (THUDM)."""
from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from image_reward_fixture import FIX, REF, fixture_images, isolate

from tts_diffusion.errors import TTSInputError
from tts_diffusion.verifiers.blip import (
    DROPPED_KEYS,
    MED_CONFIG_BASE,
    VIT_LARGE,
    ImageRewardModel,
    MedConfig,
    check_position_ids,
    state_dict_key_hash,
)
from tts_diffusion.verifiers.image_reward import ImageRewardVerifier

OPTS = dict(med_config=FIX / "med_config.json", vocab=FIX / "vocab.txt", vision_config=FIX / "vision_config.json")
#: md5 of the official ImageReward.pt's keys and shapes as DiffSynth-Studio registers it
#: (diffsynth ``hash_state_dict_keys(state_dict, with_shape=True)``), quoted in issue 14
OFFICIAL_KEY_HASH = "b3cc8e10b76ca98cde653daa5cf63139"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory)


def _images(n: int = 3) -> torch.Tensor:
    return torch.stack(fixture_images(n))


def _upstream_style_state_dict() -> OrderedDict:
    """The fixture as ``nn.Module.state_dict()`` returns it upstream: an OrderedDict in
    module order with ``_metadata`` (per-module versions) and the expanded position_ids."""
    sd = torch.load(FIX / "ImageReward.pt", weights_only=True)
    out = OrderedDict(sd.items())
    prefixes = {""} | {k.rsplit(".", 1)[0] for k in sd} | {k.rsplit(".", 2)[0] for k in sd if k.count(".") > 1}
    out._metadata = OrderedDict((p, {"version": 1}) for p in sorted(prefixes))
    n = json.loads((FIX / "med_config.json").read_text())["max_position_embeddings"]
    out["blip.text_encoder.embeddings.position_ids"] = torch.arange(n).expand((1, -1))  # as BertEmbeddings registers it
    assert set(DROPPED_KEYS) <= set(out)
    return out


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_upstream_saved_checkpoint_loads_and_scores_equal(tmp_path, legacy):
    sd = _upstream_style_state_dict()
    path = tmp_path / "ImageReward.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    with open(path, "rb") as f:  # the zip format starts with PK, the legacy one with a pickle magic number
        assert (f.read(2) == b"PK") != legacy
    reloaded = torch.load(path, weights_only=True)
    assert hasattr(reloaded, "_metadata") and reloaded["blip.text_encoder.embeddings.position_ids"].shape[0] == 1
    ours = ImageRewardVerifier(checkpoint=path, **OPTS)
    ref = ImageRewardVerifier(model_dir=FIX)
    x = _images()
    s_ours, s_ref = ours(x, REF["prompts"][:3]), ref(x, REF["prompts"][:3])
    assert torch.equal(s_ours, s_ref)
    torch.testing.assert_close(s_ours, torch.tensor(REF["scores"][:3]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("bad, match", [
    (lambda n: torch.arange(n).flip(0)[None], "not arange"),
    (lambda n: (torch.arange(n) + 1)[None], "not arange"),
    (lambda n: torch.arange(n - 1)[None], "shape"),
    (lambda n: torch.arange(n).float()[None], "not arange"),
    (lambda n: torch.arange(2 * n).reshape(2, n), "shape"),
])
def test_wrong_position_ids_is_an_error(tmp_path, bad, match):
    sd = _upstream_style_state_dict()
    n = sd["blip.text_encoder.embeddings.position_ids"].shape[-1]
    sd["blip.text_encoder.embeddings.position_ids"] = bad(n)
    torch.save(sd, tmp_path / "ImageReward.pt")
    with pytest.raises(TTSInputError, match=match) as e:
        ImageRewardVerifier(checkpoint=tmp_path / "ImageReward.pt", **OPTS)
    assert "position_ids" in str(e.value) and str(tmp_path) in str(e.value)


def test_position_ids_accepted_forms():
    check_position_ids(torch.arange(512).expand(1, -1), 512)  # upstream's expanded buffer
    check_position_ids(torch.arange(512), 512)  # a flattened one
    check_position_ids(torch.arange(40)[None])  # length unchecked without a config
    with pytest.raises(TTSInputError, match=r"expected \[1, 512\]"):
        check_position_ids(torch.arange(40)[None], 512)


def test_full_size_key_shape_hash_matches_the_official_checkpoint():
    """Our full-size model (meta device) + the keys the loader drops have exactly the
    official file's keys and shapes (fingerprint registered by DiffSynth-Studio)."""
    with torch.device("meta"):
        m = ImageRewardModel(VIT_LARGE, MedConfig.from_dict(MED_CONFIG_BASE, encoder_width=1024))
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    dropped = {
        "blip.vision_proj.weight": (256, 1024), "blip.vision_proj.bias": (256,),  # BLIP embed_dim 256
        "blip.text_proj.weight": (256, 768), "blip.text_proj.bias": (256,),
        "blip.text_encoder.embeddings.position_ids": (1, 512),
    }
    assert set(dropped) == set(DROPPED_KEYS) and not set(dropped) & set(shapes)
    assert len(shapes) + len(dropped) == 625
    assert state_dict_key_hash({**shapes, **dropped}) == OFFICIAL_KEY_HASH
    # the fingerprint sees a single wrong shape or missing key
    assert state_dict_key_hash({**shapes, **dropped, "blip.text_encoder.embeddings.position_ids": (512,)}) != OFFICIAL_KEY_HASH
    assert state_dict_key_hash(shapes) != OFFICIAL_KEY_HASH


def test_key_hash_recipe_on_the_fixture():
    """The recipe as a literal: "k:d0_d1" and "k" per key, sorted, comma-joined, md5."""
    import hashlib

    shapes = {"b.w": (2, 3), "a": (4,)}
    assert state_dict_key_hash(shapes) == hashlib.md5(b"a,a:4,b.w,b.w:2_3").hexdigest()


def _put_in_cache(repo: str, files: list[Path], cache: Path, rev: str = "0123abcd") -> Path:
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(rev)
    for f in files:
        shutil.copy(f, snap)
    return snap


@pytest.mark.parametrize("repo", ["zai-org/ImageReward", "THUDM/ImageReward"])
def test_hub_cache_under_new_and_old_repository_name(repo):
    import os

    cache = Path(os.environ["HF_HUB_CACHE"])
    _put_in_cache(repo, [FIX / "ImageReward.pt", FIX / "med_config.json"], cache)
    _put_in_cache("google-bert/bert-base-uncased", [FIX / "vocab.txt"], cache)
    v = ImageRewardVerifier(vision_config=FIX / "vision_config.json")
    assert f"models--{repo.replace('/', '--')}" in v.source and f"models--{repo.replace('/', '--')}" in v.files["med_config"]
    torch.testing.assert_close(v(_images(1), REF["prompts"][0]), torch.tensor(REF["scores"][:1]), atol=1e-4, rtol=0)


def test_new_repository_name_wins_over_the_old_one():
    import os

    cache = Path(os.environ["HF_HUB_CACHE"])
    new = _put_in_cache("zai-org/ImageReward", [FIX / "ImageReward.pt", FIX / "med_config.json"], cache)
    _put_in_cache("THUDM/ImageReward", [FIX / "med_config.json"], cache)
    _put_in_cache("bert-base-uncased", [FIX / "vocab.txt"], cache)
    v = ImageRewardVerifier(vision_config=FIX / "vision_config.json")
    assert v.files["checkpoint"] == str(new / "ImageReward.pt") and v.files["med_config"] == str(new / "med_config.json")
