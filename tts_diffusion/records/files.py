"""Writing results safely: the output path is checked before any search, files are written
to a temporary name in the same folder and renamed into place (a crash or Ctrl-C never
leaves a half-written image), and the JSON sidecar never replaces a file this toolkit did
not write.

Rules (the README's CLI section states them):
- the image goes to `path`; an existing image there is replaced (as any image tool does);
- the sidecar is `path` with the suffix `.json` (`best.png` -> `best.json`); an existing
  file there is replaced only if it is itself a tts-diffusion sidecar (a JSON object with
  "prompt", "best" and "settings"), otherwise the run is refused before it starts;
- the extra files a run writes (`<stem>.rgb.png` and `<stem>.alpha.png` with rgba,
  `<stem>_chains/` with reflect) follow the same rule: one that exists is replaced only if
  the tts-diffusion sidecar next to it lists it, and the conflict is found before the search;
- image, sidecar and extras are one unit (`OutputUnit`): every file is written to a
  temporary name first and renamed into place only when all are complete (the sidecar
  last, carrying the image's sha256); a failure removes every temporary and leaves an older
  pair untouched;
- one writer per output: `OutputLock` holds `.<name>.lock` next to the image (flock) for
  the run; a second run on the same output is refused with one line.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
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


def extra_paths(image_path: Path, rgba: bool = False, chains: bool = False) -> list[Path]:
    """The extra files (and folder) a run writes beside its image: rgba's RGB image and
    matte, reflect's chain images folder."""
    image_path = Path(image_path)
    out = []
    if rgba:
        out += [image_path.with_name(image_path.stem + ".rgb.png"),
                image_path.with_name(image_path.stem + ".alpha.png")]
    if chains:
        out.append(image_path.with_name(image_path.stem + "_chains"))
    return out


def _owned_names(sidecar: Path) -> set[str]:
    """Names beside `sidecar` that the tts-diffusion sidecar there says it wrote."""
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return set()
    if not isinstance(data, dict) or not all(k in data for k in SIDECAR_KEYS):
        return set()
    names = set()
    files = data.get("files")
    if isinstance(files, dict):
        names |= {v for v in files.values() if isinstance(v, str)}
    for chain in data.get("chains") or []:
        for step in chain if isinstance(chain, list) else []:
            rel = step.get("image") if isinstance(step, dict) else None
            if isinstance(rel, str) and "/" in rel:
                names.add(rel.split("/", 1)[0])
    return names


def check_extras(image_path: Path, extras: list[Path], option: str = "--out") -> None:
    """Refuse (TTSInputError) an extra path that holds something this toolkit did not write:
    it may be replaced only when the tts-diffusion sidecar next to the image lists it."""
    owned = None
    for extra in extras:
        if not os.path.lexists(extra):
            continue
        if owned is None:
            owned = _owned_names(sidecar_path(image_path))
        kind = "folder" if extra.is_dir() else "file"
        want_dir = extra.name.endswith("_chains")
        if extra.name not in owned or extra.is_dir() != want_dir or extra.is_symlink():
            raise TTSInputError(f"{option} {image_path} would overwrite the {kind} {extra}, which this run did not"
                                " write: choose another --out or move it")


def check_output_path(path: str | os.PathLike, option: str = "--out", *, rgba: bool = False,
                      chains: bool = False) -> tuple[Path, Path]:
    """Validate where an image and its sidecar will be written; returns (image, sidecar).

    Raises TTSInputError (before any work) for: no or unknown extension, `.json`, a
    directory, a missing or unwritable parent folder, a sidecar path holding a file that
    is not a tts-diffusion sidecar, or an extra path (`extra_paths`: rgba's, reflect's
    chains) holding something that sidecar does not list."""
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
    check_extras(p, extra_paths(p, rgba=rgba, chains=chains), option)
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


# ------------------------------------------------------------------ one unit of files
#: temporaries being written by this process (removed by `remove_temporaries`, e.g. when a
#: second signal ends the process at once)
_PENDING: set[str] = set()
_PENDING_LOCK = threading.Lock()


def remove_temporaries() -> None:
    """Remove every temporary file or folder this process is writing, and the lock files it
    holds (best effort; safe in a signal handler: takes no lock)."""
    pending = list(_PENDING) + [str(lock.path) for lock in list(_HELD.values())]
    for tmp in pending:
        try:
            shutil.rmtree(tmp) if os.path.isdir(tmp) else os.unlink(tmp)
        except OSError:
            pass


class OutputUnit:
    """Files written as one unit: `stage` each (a temporary next to its final name, written
    and fsynced), then `commit` renames them all into place in the order staged (stage the
    sidecar last). Leaving the `with` block without `commit` (any exception, Ctrl-C)
    removes every temporary; the files already there are untouched."""

    def __init__(self) -> None:
        self._staged: list[tuple[str, Path]] = []

    def __enter__(self) -> "OutputUnit":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.discard()

    def _track(self, tmp: str, final: Path) -> None:
        with _PENDING_LOCK:
            _PENDING.add(tmp)
        self._staged.append((tmp, final))

    def stage(self, path: Path, write: Callable[[Any], None], mode: str = "wb") -> str:
        """Write `write(file)` to a temporary next to `path`; returns the temporary's path."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self._track(tmp, path)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        return tmp

    def stage_image(self, image: Any, path: Path) -> str:
        fmt = image_format(Path(path))
        if fmt is None:
            raise TTSInputError(f"cannot write {Path(path).suffix} images; use .png, .jpg or .webp")
        return self.stage(path, lambda f: image.save(f, format=fmt))

    def stage_folder(self, path: Path, images: dict[str, Any]) -> str:
        """A folder of images {file name: PIL image}, written under a temporary folder."""
        path = Path(path)
        tmp = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self._track(tmp, path)
        os.chmod(tmp, 0o777 & ~_UMASK)
        for name, image in images.items():
            target = Path(tmp) / name
            fmt = image_format(target)
            with open(target, "wb") as f:
                image.save(f, format=fmt)
                f.flush()
                os.fsync(f.fileno())
        return tmp

    def commit(self) -> None:
        """Rename every staged temporary into place (a folder replaces the old one)."""
        folders = {final.parent for _, final in self._staged}
        for tmp, final in self._staged:
            if os.path.isdir(tmp):
                old = None
                if os.path.isdir(final) and not os.path.islink(final):
                    old = tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old.", suffix=".tmp")
                    os.rmdir(old)
                    os.rename(final, old)
                os.rename(tmp, final)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            with _PENDING_LOCK:
                _PENDING.discard(tmp)
        self._staged = []
        _fsync_dir(*folders)

    def discard(self) -> None:
        for tmp, _ in self._staged:
            try:
                shutil.rmtree(tmp) if os.path.isdir(tmp) else os.unlink(tmp)
            except FileNotFoundError:
                pass
            with _PENDING_LOCK:
                _PENDING.discard(tmp)
        self._staged = []


def _fsync_dir(*folders: Path) -> None:
    for d in folders:
        try:
            fd = os.open(d, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------ one writer per output
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, one writer is the user's care
    fcntl = None  # type: ignore[assignment]

_HELD: dict[str, "OutputLock"] = {}
_HELD_LOCK = threading.Lock()


def lock_path(image_path: Path) -> Path:
    image_path = Path(image_path)
    return image_path.with_name(f".{image_path.name}.lock")


class OutputLock:
    """An exclusive lock on one output (`.<name>.lock` next to the image, flock): taken
    before a run's search and held until its files are written, so two runs never mix
    their files; a busy output is refused with one line (TTSInputError). Re-entrant within
    a process (the CLI holds it for the run, `SearchResult.save` takes it again)."""

    def __init__(self, image_path: Path, option: str = "--out"):
        self.image_path, self.option = Path(image_path), option
        self.path = lock_path(self.image_path)
        self._key = str(self.path.resolve())
        self._fd: int | None = None
        self._outer: OutputLock | None = None

    def acquire(self) -> "OutputLock":
        with _HELD_LOCK:
            held = _HELD.get(self._key)
            if held is not None:  # this process holds it already
                self._outer = held
                return self
            if fcntl is None:
                return self
            for _ in range(20):
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise TTSInputError(f"{self.option} {self.image_path} is being written by another tts-diffusion"
                                        f" run (lock {self.path}): wait for it or choose another {self.option}")
                try:  # the holder before us may have removed the file: lock the one on disk
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    os.write(fd, f"{os.getpid()}\n".encode())
                    self._fd = fd
                    _HELD[self._key] = self
                    return self
                os.close(fd)
            raise TTSInputError(f"{self.option} {self.image_path}: could not lock {self.path}")

    def release(self) -> None:
        with _HELD_LOCK:
            if self._outer is not None or self._fd is None:
                self._outer = None
                return
            _HELD.pop(self._key, None)
            try:
                os.unlink(self.path)  # while still holding it: the next run locks a fresh file
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
