"""Where the project's shipped assets live (the embedded default model, domain CLIP,
prompt sets). `TTS_DIFFUSION_ASSETS` overrides the location."""
from __future__ import annotations

import os
from pathlib import Path


def assets_dir() -> Path:
    env = os.environ.get("TTS_DIFFUSION_ASSETS")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "assets"


def domain_clip_path() -> Path:
    """The CLIP trained on the shapes world (open_clip local-dir layout)."""
    return assets_dir() / "shapes-clip"


def default_model_path() -> Path:
    """The embedded shapes text-to-image model (diffusers format)."""
    return assets_dir() / "shapes-model"
