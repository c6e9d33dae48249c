"""What reruns a search: package versions, the model and verifier weights (with hashes),
and a strict-JSON writer for the sidecar next to an image.

Weight hashes are sha256 over the bytes of a model's weight files (relative path and
contents, in sorted path order), cached per file path + size + mtime in
``$XDG_CACHE_HOME/tts-diffusion/weights_sha256.json`` (``~/.cache`` by default), so hashing the
embedded model costs one read of 31 MB once and a stat per file afterwards.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import threading
from importlib import metadata
from pathlib import Path
from typing import Any

#: file endings that hold weights (configs and tokenizers are not hashed: they are small
#: text files recorded by the model path, and a changed config changes the weights' meaning
#: only together with them)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".onnx", ".gguf")
#: distributions whose versions a sidecar records
PACKAGES = {"tts-diffusion": "tts-diffusion", "torch": "torch", "diffusers": "diffusers",
            "transformers": "transformers", "open_clip": "open-clip-torch"}

_lock = threading.Lock()
_memo: dict[tuple[str, int, int], str] = {}


def versions() -> dict[str, str | None]:
    """Installed versions (None when a package is absent) and the Python version."""
    out: dict[str, str | None] = {}
    for key, dist in PACKAGES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    if out["tts-diffusion"] is None:  # running from a source tree that is not installed
        from .. import __version__

        out["tts-diffusion"] = __version__
    out["python"] = platform.python_version()
    return out


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "tts-diffusion" / "weights_sha256.json"


def _file_sha256(path: Path, disk: dict[str, str]) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    disk_key = "|".join(map(str, key))
    digest = disk.get(disk_key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        disk[disk_key] = digest
    _memo[key] = digest
    return digest


def weights_sha256(path: str | os.PathLike) -> str | None:
    """sha256 over a weight file, or over every weight file under a folder (sorted by
    relative path; each contributes its relative path and its own sha256). None when the
    path holds no weight files."""
    root = Path(path).expanduser()
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    else:
        return None
    if not files:
        return None
    with _lock:
        cache = _cache_file()
        try:
            disk = json.loads(cache.read_text())
        except (OSError, ValueError):
            disk = {}
        n_before = len(disk)
        total = hashlib.sha256()
        for f in files:
            rel = f.name if f == root else f.relative_to(root).as_posix()
            total.update(rel.encode() + b"\0" + _file_sha256(f, disk).encode() + b"\n")
        if len(disk) != n_before:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(disk, indent=0, sort_keys=True))
                tmp.replace(cache)
            except OSError:
                pass  # a read-only home only costs re-hashing next time
    return total.hexdigest()


def hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub model already in the cache (no download)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, or no hub client: no hash
        return None


def describe_weights(source: str | os.PathLike | None) -> dict[str, Any]:
    """{"source", "path", "sha256"} for a local folder/file or a cached hub id."""
    if source is None:
        return {"source": None, "path": None, "sha256": None}
    src = str(source)
    path = Path(src).expanduser()
    if not path.exists():
        path = hub_snapshot(src)
    if path is None:
        return {"source": src, "path": None, "sha256": None, "note": "not a local path and not in the hub cache"}
    return {"source": src, "path": str(path.resolve()), "sha256": weights_sha256(path)}


def strict_json(obj: Any) -> tuple[Any, list[str]]:
    """`obj` with non-finite floats replaced by None (and tuples as lists); the second value
    lists the JSON paths that were non-finite, for a note in the file."""
    replaced: list[str] = []

    def walk(x: Any, where: str) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            replaced.append(f"{where}={x}")
            return None
        if isinstance(x, dict):
            return {str(k): walk(v, f"{where}.{k}") for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
            try:
                return walk(x.item(), where)
            except (TypeError, ValueError, RuntimeError):
                pass
        return str(x)

    return walk(obj, "$"), replaced


def dumps_strict(obj: Any) -> str:
    """JSON text without NaN/Infinity tokens: non-finite numbers become null and are listed
    under "non_finite" (when `obj` is a dict)."""
    clean, replaced = strict_json(obj)
    if replaced and isinstance(clean, dict):
        clean["non_finite"] = {"note": "these values were NaN or infinite and are written as null",
                               "paths": replaced}
    return json.dumps(clean, indent=2, allow_nan=False)
