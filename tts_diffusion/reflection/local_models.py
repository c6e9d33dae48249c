"""Local transformers models for critics and refiners: found on disk or one clear error."""
from __future__ import annotations

from pathlib import Path

from ..errors import MissingWeightsError

_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def model_folder(path: str | None, option: str, what: str) -> Path:
    """The folder of a transformers model (config.json + weights), or MissingWeightsError
    naming the missing file and the option that points at it."""
    if not path:
        raise MissingWeightsError(f"{what} needs a local transformers model folder: pass {option}=/path/to/folder"
                                  " (config.json, weights, and its tokenizer / processor files)")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise MissingWeightsError(f"{what}: model folder {folder} not found; point {option}= at a local"
                                  " transformers model folder")
    if not (folder / "config.json").is_file():
        raise MissingWeightsError(f"{what}: {folder / 'config.json'} not found; point {option}= at a"
                                  " transformers model folder (save_pretrained layout)")
    if not any(f for pat in _WEIGHTS for f in folder.glob(pat)):
        raise MissingWeightsError(f"{what}: no weights (model.safetensors or pytorch_model.bin) in {folder};"
                                  f" point {option}= at a folder that holds them")
    return folder
