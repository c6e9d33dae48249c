"""What the page shows of a result: images at a size a person can see, the gallery with
score captions, the score-against-NFE table for the plot, reflection chains, the files
to download. Pure functions of a `SearchResult` (no gradio)."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..records.result import Candidate, SearchResult

#: the long side the page shows images at (small images are scaled up by a whole factor)
DISPLAY_SIZE = 512


def to_display(image: Any, size: int = DISPLAY_SIZE) -> Image.Image | None:
    """A uint8 image (CHW or HWC tensor / array) or PIL image, scaled up by the largest whole
    factor that keeps its long side within `size`, nearest-neighbour (sharp pixels, no blur).
    Larger images are returned as they are."""
    if image is None:
        return None
    if isinstance(image, Image.Image):
        pil = image.convert("RGBA" if image.mode in ("RGBA", "LA") else "RGB")
    else:
        arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
            arr = arr.transpose(1, 2, 0)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
        pil = Image.fromarray(arr)
    factor = max(1, size // max(pil.size))
    if factor == 1:
        return pil
    return pil.resize((pil.width * factor, pil.height * factor), Image.NEAREST)


def caption(c: Candidate, best: bool = False) -> str:
    """'score 0.833 · best · 40 NFE · seed 12': the score first, so it shows in a thumbnail
    (the seed only when the method has one)."""
    parts = [f"score {c.score:.3f}"] + (["best"] if best else []) + [f"{c.nfe} NFE"]
    if c.seed is not None:
        parts.append(f"seed {c.seed}")
    return " · ".join(parts)


def gallery_items(result: SearchResult, size: int = DISPLAY_SIZE) -> list[tuple[Image.Image, str]]:
    """Kept candidate images, best first, each with its score caption."""
    kept = [c for c in result.candidates if c.image is not None]
    if result.best.image is not None and all(c is not result.best for c in kept):
        kept.append(result.best)
    kept.sort(key=lambda c: -c.score)
    return [(to_display(c.image, size), caption(c, c is result.best)) for c in kept]


def trace_table(result: SearchResult):
    """Best score against NFE as a staircase (the best so far holds until the next
    improvement): a pandas DataFrame with columns "NFE", "best score"."""
    import pandas as pd

    nfe: list[int] = []
    best: list[float] = []
    for p in result.trace:
        if best and float(p.best_score) != best[-1]:
            nfe.append(int(p.nfe))
            best.append(best[-1])
        nfe.append(int(p.nfe))
        best.append(float(p.best_score))
    return pd.DataFrame({"NFE": nfe, "best score": best})


def summary(result: SearchResult) -> str:
    """One line under the image: score, NFE, candidates, time, seed."""
    seed = result.settings.get("seed")
    took = result.timings.get("total")
    n = len(result.candidates)
    parts = [f"best score **{result.best_score:.3f}**", f"{result.nfe} NFE", f"{n} candidate" + ("" if n == 1 else "s")]
    if took is not None:
        parts.append(f"{took:.1f} s")
    if seed is not None:
        parts.append(f"seed {seed}")
    return "Done: " + " · ".join(parts)


# ------------------------------------------------------------------ reflection chains
def _field(step: Any, *names: str) -> Any:
    for n in names:
        value = step.get(n) if isinstance(step, dict) else getattr(step, n, None)
        if value is not None:
            return value
    return None


def chain_items(result: SearchResult, size: int = DISPLAY_SIZE) -> tuple[list[tuple[Image.Image, str]], str]:
    """Reflection chains (`result.chains`, when the searcher keeps them): one gallery item
    per round (image, "chain c · round r · score") and a Markdown table of the critique and
    the refined prompt per round. Empty when the result has no chains."""
    chains = getattr(result, "chains", None) or []
    items: list[tuple[Image.Image, str]] = []
    rows = ["| chain | round | score | critique | refined prompt |", "|---|---|---|---|---|"]
    for ci, chain in enumerate(chains):
        steps = _field(chain, "rounds", "steps") if not isinstance(chain, (list, tuple)) else chain
        for ri, step in enumerate(steps or []):
            rnd = _field(step, "round")
            rnd = ri if rnd is None else rnd
            score = _field(step, "score")
            score_txt = "" if score is None else f"{float(score):.3f}"
            img = to_display(_field(step, "image"), size)
            if img is not None:
                items.append((img, f"chain {ci} · round {rnd}" + (f" · score {score_txt}" if score_txt else "")))
            critique = _field(step, "critique", "feedback") or ""
            refined = _field(step, "refined_prompt", "prompt") or ""
            rows.append(f"| {ci} | {rnd} | {score_txt} | {_cell(critique)} | {_cell(refined)} |")
    return items, ("\n".join(rows) if len(rows) > 2 else "")


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# --------------------------------------------------------------------- downloads
class RunFiles:
    """Per-run folders for the image + JSON downloads, under one root the server owns;
    folders older than `keep_seconds` are removed when a new run is saved."""

    def __init__(self, root: str | Path | None = None, keep_seconds: float = 3600.0):
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="tts-demo-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_seconds = keep_seconds

    def save(self, result: SearchResult) -> list[str]:
        """Write the best image and its JSON sidecar (`SearchResult.save`); their paths."""
        self._prune()
        folder = Path(tempfile.mkdtemp(dir=self.root))
        seed = result.settings.get("seed")
        image, sidecar = result.save(folder / f"tts_best_seed{seed}.png")
        return [str(image), str(sidecar)]

    def _prune(self) -> None:
        now = time.time()
        for d in self.root.iterdir():
            try:
                if d.is_dir() and now - d.stat().st_mtime > self.keep_seconds:
                    shutil.rmtree(d, ignore_errors=True)
            except OSError:
                pass


def example_prompts(per_category: int = 1, limit: int = 8) -> list[str]:
    """Example prompts for the embedded world: the first `per_category` of each category of
    the evaluation split (through `tts_diffusion.paths`); [] when the split is missing."""
    from .. import paths

    finder = getattr(paths, "eval_prompts_path", None)
    path = finder() if finder is not None else paths.assets_dir() / "prompts" / "shapes_eval.json"
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    seen: dict[str, int] = {}
    out: list[str] = []
    for item in data.get("prompts", []):
        cat = item.get("category", "")
        if seen.get(cat, 0) < per_category:
            seen[cat] = seen.get(cat, 0) + 1
            out.append(item["prompt"])
    return out[:limit]
