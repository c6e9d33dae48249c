"""The shapes model recipe's storage and training helpers, on tiny random components (CPU, seconds):
model versions, float16 weight files that load as float32, sharded checkpoints."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

import pytest
import torch

from tts_diffusion.shapes import model as M
from tts_diffusion.shapes.grammar import VOCABULARIES
from tts_diffusion.shapes.training import EMA, load_sharded, save_sharded


def _tiny(**kw) -> M.ShapesModelConfig:
    return M.architecture("v2", **{**dict(image_size=24, vae_channels=(8, 8), heads=2, head_dim=8, layers=1,
                                           text_dim=16, text_heads=2, text_head_dim=8, text_ff=32, text_layers=1),
                                    **kw})


def test_architectures():
    assert M.architecture("v1") == M.ShapesModelConfig()
    v2 = M.architecture("v2")
    assert (v2.image_size, v2.latent_size, v2.tokens, v2.grammar) == (144, 36, 12, "v2")
    assert v2.vocabulary == VOCABULARIES["v2"] and M.architecture("v1").vocabulary == VOCABULARIES["v1"]
    assert M.architecture("v2", layers=2).layers == 2
    with pytest.raises(ValueError, match="unknown architecture"):
        M.architecture("v3")


def test_float16_files_load_as_float32(tmp_path):
    from diffusers import DiffusionPipeline
    from safetensors.torch import load_file

    cfg = _tiny()
    tok = M.build_tokenizer(cfg.vocabulary, cfg.max_length)
    torch.manual_seed(0)
    pipe = M.assemble_pipeline(tok, M.build_text_encoder(cfg, len(tok)), M.build_transformer(cfg), M.build_vae(cfg),
                               M.build_scheduler(2.0))
    report = {"config": cfg.to_dict(), "defaults": {"num_inference_steps": 3, "guidance_scale": 4.5,
                                                   "max_sequence_length": cfg.max_length, "shift": 2.0}}
    M.save_pipeline(pipe, tmp_path / "m", report, weights_dtype=torch.float16)
    files = sorted((tmp_path / "m").rglob("*.safetensors"))
    assert len(files) == 3
    assert all(t.dtype == torch.float16 for f in files for t in load_file(str(f)).values() if t.is_floating_point())
    assert json.loads((tmp_path / "m" / M.TTS_DEFAULTS_FILE).read_text())["grammar"] == "v2"
    loaded = DiffusionPipeline.from_pretrained(str(tmp_path / "m"))
    for name in ("text_encoder", "transformer", "vae"):
        module = getattr(loaded, name)
        assert next(module.parameters()).dtype == torch.float32, name
        for k, v in module.state_dict().items():  # the float16 rounding of the saved weights, nothing else
            assert torch.equal(v, getattr(pipe, name).state_dict()[k].half().float()), (name, k)


def test_float16_refuses_overflow(tmp_path):
    from safetensors.torch import save_file

    (tmp_path / "x").mkdir()
    save_file({"w": torch.tensor([1.0, 7e4])}, str(tmp_path / "x" / "w.safetensors"))
    with pytest.raises(ValueError, match="beyond"):
        M.store_weights_as(tmp_path, torch.float16)


def test_sharded_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    sd = {f"layer{i}.weight": torch.randn(64, 64) for i in range(5)} | {"step": torch.tensor(7)}
    names = save_sharded(sd, tmp_path, "flow", max_bytes=40_000)  # 16 KiB a tensor: two a shard
    assert names == [f"flow-{i:02d}.safetensors" for i in range(3)]
    back = load_sharded(tmp_path, "flow")
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    names = save_sharded(sd, tmp_path, "flow", dtype=torch.float16)  # one shard now: the old ones go
    assert names == ["flow-00.safetensors"] and len(list(tmp_path.glob("flow-*"))) == 1
    half = load_sharded(tmp_path, "flow")
    assert half["step"].dtype == torch.int64 and torch.equal(half["layer0.weight"], sd["layer0.weight"].half().float())
    with pytest.raises(FileNotFoundError):
        load_sharded(tmp_path, "ema")


def test_ema_tracks_the_average():
    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA([p], decay=0.5)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update()  # decay warm-up: min(0.5, 2 / 11) -> shadow = 1 - 2/11
    assert torch.allclose(ema.shadow[0], torch.full((3,), 9 / 11))
    ema.copy_to()
    assert torch.allclose(p, torch.full((3,), 9 / 11))
