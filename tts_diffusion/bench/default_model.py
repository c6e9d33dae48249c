"""The embedded default model as the benchmark scripts on the shapes world load it."""
from __future__ import annotations

import torch


def load_default_model(device: str | torch.device):
    """`TTSPipeline` of the embedded default model on `device`: float16 on CUDA, float32
    elsewhere, progress bar off."""
    from ..pipelines import TTSPipeline

    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    tts = TTSPipeline.from_pretrained(None, torch_dtype=dtype, device=device)
    tts.set_progress_bar_config(disable=True)
    return tts
