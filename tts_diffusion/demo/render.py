"""What the page shows of a result: images at a size a person can see (an RGBA cut-out
over a checkerboard, its matte beside it), the gallery with score captions, reflection
rounds with their critique and prompt. Pure functions of a `SearchResult` (no gradio);
`files.RunFolder` writes the images, `plot` draws the scores, `status` the status line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..records.result import Candidate, SearchResult
from ..reflection.refiners import kept_reason

#: the long side the page shows images at (small images are scaled up by a whole factor)
DISPLAY_SIZE = 512
#: checkerboard behind a cut-out: square side in display pixels, light and dark grey
CHECKER = (16, (236, 236, 236), (200, 200, 200))


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


def over_checkerboard(rgba: Image.Image, square: int = CHECKER[0]) -> Image.Image:
    """An RGBA image composited over a grey checkerboard (where it is transparent, the
    checkerboard shows), as RGB."""
    w, h = rgba.size
    yy, xx = np.mgrid[0:h, 0:w]
    dark = ((yy // square + xx // square) % 2).astype(bool)
    board = np.where(dark[..., None], np.array(CHECKER[2], np.uint8), np.array(CHECKER[1], np.uint8))
    out = Image.fromarray(board.astype(np.uint8), "RGB")
    out.paste(rgba, (0, 0), rgba)
    return out


def best_images(result: SearchResult, size: int = DISPLAY_SIZE) -> tuple[Image.Image, Image.Image | None]:
    """(the best image as shown, its matte as shown or None). With an alpha matte (rgba) the
    image is the cut-out over a checkerboard and the matte a grey image (white: opaque)."""
    if result.alpha is None:
        return to_display(result.best.image, size), None
    cutout = over_checkerboard(to_display(result.rgba, size))
    return cutout, to_display(Image.fromarray(result.alpha.cpu().numpy()).convert("RGB"), size)


def caption(c: Candidate, best: bool = False) -> str:
    """Two lines, 'score 0.833 · best' and '40 NFE · seed 12': the score first, so it shows
    in a thumbnail (the seed only when the method has one)."""
    second = [f"{c.nfe} NFE"] + ([f"seed {c.seed}"] if c.seed is not None else [])
    return f"score {c.score:.3f}" + (" · best" if best else "") + "\n" + " · ".join(second)


def gallery_items(result: SearchResult, size: int = DISPLAY_SIZE) -> list[tuple[Image.Image, str]]:
    """Kept candidate images, best first, each with its score caption."""
    kept = [c for c in result.candidates if c.image is not None]
    if result.best.image is not None and all(c is not result.best for c in kept):
        kept.append(result.best)
    kept.sort(key=lambda c: -c.score)
    return [(to_display(c.image, size), caption(c, c is result.best)) for c in kept]


# ------------------------------------------------------------------ reflection chains
def chain_items(result: SearchResult, size: int = DISPLAY_SIZE) -> tuple[list[tuple[Image.Image, str]], str]:
    """Reflection chains (`result.chains`): one gallery item per round (image, "chain 1 ·
    round 2" / score) and Markdown that lists, per chain and round, the score, whether the
    round's image became the chain's head, the critique it answered and the prompt it was
    generated from, with the reason where the rules refiner kept the prompt. Empty when
    the result has no chains. A list, not a table: it stays readable on a phone."""
    items: list[tuple[Image.Image, str]] = []
    lines: list[str] = []
    for ci, chain in enumerate(result.chains):
        lines += ["", f"**Chain {ci + 1}**", ""]
        head_prompt = chain[0].prompt if chain else ""
        for step in chain:
            if step.image is not None:
                items.append((to_display(step.image, size), f"chain {ci + 1} · round {step.round}\n"
                                                             f"score {step.score:.3f}"))
            what = ("the initial sample" if step.round == 0 else
                    "kept as the chain's head" if step.accepted else "not better than the head: dropped")
            lines.append(f"- round {step.round} · score **{step.score:.3f}** · {what}")
            if step.critique:
                lines.append(f"    - critique: {_one_line(step.critique)}")
            if step.round > 0:
                note = ""
                if step.prompt == head_prompt and step.critique:
                    why = kept_reason(step.prompt) if result.settings.get("refiner") == "rules" else ""
                    note = f" (unchanged{': ' + why if why else ''})"
                lines.append(f"    - prompt: {_one_line(step.prompt)}{note}")
                if step.accepted:
                    head_prompt = step.prompt
    return items, "\n".join(lines).strip()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


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
