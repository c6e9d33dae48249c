"""Preview decoding: a small decoder in place of the full VAE where a search scores
intermediate latents (Tweedie estimates x0 at potential steps in smc, paths, svdd, code,
rbf), so that a reward potential costs a fraction of a full decode.

A preview decoder is anything with the VAE's interface (`decode(latents, return_dict=False)`
and a `config` with `scaling_factor` / `shift_factor`), e.g. diffusers' `AutoencoderTiny`
in the TAESD format (taesd for SD 1.x/2.x, taesdxl for SDXL, taesd3 for SD3, taef1 for
FLUX), loaded from a local folder. It takes the place of the VAE in the pipeline's own
decode math (`ModelAdapter.decode`), exactly as it would as a drop-in `pipe.vae`. Final
candidates are always decoded by the full VAE."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import TTSInputError


def load_preview_decoder(spec: Any, like: torch.nn.Module) -> torch.nn.Module:
    """`spec`: a module with the VAE interface, or a local folder in diffusers'
    AutoencoderTiny (TAESD) format; placed on the device and dtype of `like` (the VAE)."""
    if isinstance(spec, (str, os.PathLike)):
        folder = Path(spec).expanduser()
        if not (folder / "config.json").is_file():
            raise TTSInputError(f"preview decoder {str(spec)!r} is not a folder with a diffusers config.json "
                                f"(download e.g. madebyollin/taesd there, or train one with "
                                f"scripts/train_preview_decoder.py)")
        from diffusers import AutoencoderTiny

        try:
            module = AutoencoderTiny.from_pretrained(str(folder))
        except (OSError, ValueError) as e:
            raise TTSInputError(f"preview decoder {folder} could not be loaded as AutoencoderTiny: "
                                f"{str(e).splitlines()[0][:200]}") from None
    elif isinstance(spec, torch.nn.Module) and hasattr(spec, "decode") and hasattr(spec, "config"):
        module = spec
    else:
        raise TTSInputError(f"preview_decoder must be a folder path or a VAE-like module, got {type(spec).__name__}")
    if getattr(module.config, "latent_channels", None) not in (None, like.config.latent_channels):
        raise TTSInputError(f"preview decoder takes {module.config.latent_channels} latent channels, the model's VAE "
                            f"{like.config.latent_channels}")
    p = next(like.parameters())
    return module.to(p.device, p.dtype).eval().requires_grad_(False)
