"""Shared by the ImageReward tests: the fixture in tests/fixtures/image_reward (a small random
network with its upstream state dict, images, prompts, tokens and scores, made by
scripts/imagereward_reference.py), the isolation each test runs in, and upstream's own
torchvision preprocessing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FIX = Path(__file__).parent / "fixtures" / "image_reward"
REF = json.loads((FIX / "reference.json").read_text())
#: the environment variables that point ImageReward at files
ENV_VARS = ("TTS_IMAGEREWARD_CHECKPOINT", "TTS_IMAGEREWARD_MED_CONFIG", "TTS_IMAGEREWARD_VOCAB", "TTS_IMAGEREWARD_DIR")
#: OpenAI CLIP's normalisation, which upstream ImageReward uses
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def isolate(monkeypatch, tmp_path_factory) -> None:
    """No hub, empty caches and assets, no stray ImageReward environment variables."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for k in ENV_VARS:
        monkeypatch.delenv(k, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))  # ~/.cache/ImageReward
    monkeypatch.setenv("TTS_DIFFUSION_ASSETS", str(home / "assets"))
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hf-cache"))


def fixture_images(n: int | None = None) -> list[torch.Tensor]:
    """The first `n` (default: all) fixture PNGs as float [3, H, W] in [0, 1] (exactly the
    uint8 values / 255)."""
    out = []
    for name in REF["images"][:n]:
        arr = np.array(Image.open(FIX / name).convert("RGB"))
        out.append(torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    return out


def upstream_transform():
    """Upstream ImageReward's ``_transform(224)`` (torchvision on the PIL image)."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    return Compose([
        Resize(224, interpolation=InterpolationMode.BICUBIC),
        CenterCrop(224),
        lambda im: im.convert("RGB"),
        ToTensor(),
        Normalize(CLIP_MEAN, CLIP_STD),
    ])
