"""A tiny random open_clip model written to disk in open_clip's local-dir layout
(open_clip_config.json + open_clip_model.safetensors), for offline verifier tests."""
from __future__ import annotations

import json
from pathlib import Path

import torch

MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP normalisation
STD = (0.26862954, 0.26130258, 0.27577711)
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def write_tiny_clip(d: Path, seed: int = 0) -> Path:
    """Write the tiny model (weights from `seed`) into folder `d`; returns `d`."""
    import open_clip
    from safetensors.torch import save_file

    cfg = {"model_cfg": TINY_CFG,
           "preprocess_cfg": {"mean": list(MEAN), "std": list(STD), "interpolation": "bicubic", "resize_mode": "shortest"}}
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{d}", load_weights=False)
    save_file(model.state_dict(), str(d / "open_clip_model.safetensors"))
    return d
