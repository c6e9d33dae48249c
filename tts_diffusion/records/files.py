"""Writing results safely: the output path is checked before any search, files are written
to a temporary name in the same folder and renamed into place (a crash or Ctrl-C never
leaves a half-written image), and the JSON sidecar never replaces a file this toolkit did
not write.

Rules (the README's CLI section states them):
- the image goes to `path`; an existing image there is replaced (as any image tool does);
- the sidecar is `path` with the suffix `.json` (`best.png` -> `best.json`); an existing
  file there is replaced only if it is itself a tts-diffusion sidecar (a JSON object with
  "prompt", "best" and "settings"), otherwise the run is refused before it starts.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..errors import TTSInputError

#: keys every sidecar this toolkit writes has (how an existing .json is recognised as ours)
SIDECAR_KEYS = ("prompt", "best", "settings")


def sidecar_path(image_path: str | os.PathLike) -> Path:
    return Path(image_path).with_suffix(".json")


def image_format(path: Path) -> str | None:
    """The PIL format that writes `path`'s extension as RGB (None if none can)."""
    from PIL import Image

    Image.init()
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        return None
    try:  # some formats register an extension but cannot hold RGB (e.g. XBM)
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=fmt)
    except (OSError, ValueError, KeyError):
        return None
    return fmt


def is_sidecar(path: Path) -> bool:
    """True if `path` is a JSON file this toolkit wrote (safe to replace)."""
    try:
        if path.stat().st_size > 256 * 2**20:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and all(k in data for k in SIDECAR_KEYS)


def check_output_path(path: str | os.PathLike, option: str = "--out") -> tuple[Path, Path]:
    """Validate where an image and its sidecar will be written; returns (image, sidecar).

    Raises TTSInputError (before any work) for: no or unknown extension, `.json`, a
    directory, a missing or unwritable parent folder, or a sidecar path holding a file that
    is not a tts-diffusion sidecar."""
    text = os.fspath(path)
    if not str(text).strip():
        raise TTSInputError(f"{option} is empty: pass an image path such as best.png")
    p = Path(text).expanduser()
    if p.is_dir() or str(text).endswith(("/", os.sep)):
        raise TTSInputError(f"{option} {text} is a directory: pass an image file path such as"
                            f" {Path(text) / 'best.png'}")
    ext = p.suffix.lower()
    if ext == ".json":
        raise TTSInputError(f"{option} {text} ends in .json, which is the sidecar's extension: use .png, .jpg or .webp")
    if not ext:
        raise TTSInputError(f"{option} {text} has no file extension: use .png, .jpg or .webp")
    if image_format(p) is None:
        raise TTSInputError(f"{option} {text}: cannot write {ext} images; use .png, .jpg or .webp")
    parent = p.parent
    if not parent.exists():
        raise TTSInputError(f"{option} {text}: the folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise TTSInputError(f"{option} {text}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TTSInputError(f"{option} {text}: the folder {parent} is not writable")
    if p.exists() and not p.is_file():
        raise TTSInputError(f"{option} {text} exists and is not a regular file")
    side = sidecar_path(p)
    if side.exists() and (not side.is_file() or not is_sidecar(side)):
        raise TTSInputError(f"{option} {text} would overwrite {side}, which is not a tts-diffusion sidecar:"
                            " choose another --out or move that file")
    return p, side


def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call `write(file)` on a temporary file next to `path`, then rename it to `path`
    (atomic on POSIX and Windows); the temporary file is removed on any failure."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _read_umask() -> int:
    """The process umask, read once at import (os.umask changes it, which is unsafe later
    when other threads may be creating files)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def save_image(image: Any, path: Path) -> Path:
    """A PIL image to `path` (format from its extension), atomically."""
    fmt = image_format(Path(path))
    if fmt is None:
        raise TTSInputError(f"cannot write {Path(path).suffix} images; use .png, .jpg or .webp")
    return atomic_write(Path(path), lambda f: image.save(f, format=fmt))


def save_json(data: Any, path: Path) -> Path:
    """`data` as indented JSON at `path`, atomically."""
    text = json.dumps(data, indent=2, default=str)
    return atomic_write(Path(path), lambda f: f.write(text), mode="w")
