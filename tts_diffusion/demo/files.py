"""The files the page shows and offers, one folder per run under a root the server owns.

Every image the page shows is handed to gradio as a file written here once, atomically,
under a name of its own, never as a PIL image. Gradio caches a PIL image under a name
made from its content and rewrites that file in place each time the same image is sent
again (`processing_utils.save_pil_to_cache`); a browser still fetching the previous copy
then gets a short or overlong body ("Too little / Too much data for declared
Content-Length" in the server log) and shows a broken image. A file path goes through
`save_file_to_cache` instead, which copies under a temporary name, renames into place and
never rewrites an existing copy.
"""
from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from ..records.files import save_image
from ..records.result import SearchResult


class RunFolder:
    """One run's folder: the images shown while it runs and when it ends, and its downloads."""

    def __init__(self, path: Path):
        self.path = path
        self._names = itertools.count()

    def image(self, image: Image.Image) -> str:
        """Write `image` (as shown: already scaled) under a new name; its path."""
        return str(save_image(image, self.path / f"shown_{next(self._names):04d}.png"))

    def save(self, result: SearchResult) -> list[str]:
        """The downloads (`SearchResult.save`): the best image, and with an alpha matte the
        RGBA PNG, the RGB image and the matte; then the JSON run log."""
        seed = result.settings.get("seed")
        image, sidecar = result.save(self.path / f"tts_best_seed{seed}.png")
        extra = [image.with_name(image.stem + s) for s in (".rgb.png", ".alpha.png")] if result.alpha is not None else []
        return [str(p) for p in (image, *extra, sidecar)]


class RunFiles:
    """Per-run folders under one root; folders older than `keep_seconds` are removed when a
    new run starts."""

    def __init__(self, root: str | Path | None = None, keep_seconds: float = 3600.0):
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="tts-demo-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_seconds = keep_seconds

    def new_run(self) -> RunFolder:
        self._prune()
        return RunFolder(Path(tempfile.mkdtemp(dir=self.root)))

    def _prune(self) -> None:
        now = time.time()
        for d in self.root.iterdir():
            try:
                if d.is_dir() and now - d.stat().st_mtime > self.keep_seconds:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass
