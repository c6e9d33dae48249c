"""Where the project's shipped assets live: the embedded default model, the domain CLIP
and the prompt sets, package data under ``tts_diffusion/assets/`` (they ship in the wheel).
`TTS_DIFFUSION_ASSETS` overrides the location. Every lookup of a shipped file goes
through a function here."""
from __future__ import annotations

import os
from pathlib import Path

ASSETS_ENV = "TTS_DIFFUSION_ASSETS"


def assets_dir() -> Path:
    """``$TTS_DIFFUSION_ASSETS`` if set, else the package's own ``assets/`` folder."""
    env = os.environ.get(ASSETS_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent / "assets"


def domain_clip_path() -> Path:
    """The CLIP trained on the shapes world (open_clip local-dir layout)."""
    return assets_dir() / "shapes-clip"


def default_model_path() -> Path:
    """The embedded shapes text-to-image model (diffusers format)."""
    return assets_dir() / "shapes-model"


def eval_prompts_path() -> Path:
    """The fixed evaluation split of the shapes world (``{"prompts": [...]}`` JSON)."""
    return assets_dir() / "prompts" / "shapes_eval.json"


def is_default_model(id_or_path: str | os.PathLike | None) -> bool:
    """True for the embedded shapes model (None, or a path to its folder)."""
    if id_or_path is None:
        return True
    try:
        return Path(str(id_or_path)).expanduser().resolve() == default_model_path().resolve()
    except OSError:
        return False
