"""SearchResult: what a search returns (best image, candidates with scores, the trace of
best score against NFE spent, timings, and the settings that reproduce it)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3,H,W] float in [0,1] or uint8 -> PIL RGB."""
    if image.dtype != torch.uint8:
        image = to_uint8(image)
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0,1] -> uint8 on the CPU (same rounding as diffusers' numpy_to_pil)."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


@dataclass
class Candidate:
    """One scored sample. `seed` reproduces its initial noise where the method starts from
    one (best-of-N); `image` is kept for the best `keep_images` candidates only."""

    score: float
    nfe: int  # NFE spent when it was scored
    seed: int | None = None
    image: torch.Tensor | None = field(default=None, repr=False)  # uint8 [3,H,W], CPU
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pil(self) -> Image.Image | None:
        return None if self.image is None else to_pil(self.image)


@dataclass
class TracePoint:
    nfe: int
    verifier_calls: int
    best_score: float


@dataclass
class SearchResult:
    prompt: str
    best: Candidate
    candidates: list[Candidate]
    trace: list[TracePoint]
    nfe: int
    verifier_calls: int
    timings: dict[str, float]
    settings: dict[str, Any]
    #: the best image's alpha matte, uint8 [H, W] (rgba=True), else None
    alpha: torch.Tensor | None = field(default=None, repr=False)

    @property
    def image(self) -> Image.Image:
        """The best image as PIL."""
        assert self.best.image is not None
        return to_pil(self.best.image)

    @property
    def rgba(self) -> Image.Image | None:
        """The best image with its alpha matte as an RGBA PIL image (rgba=True), else None."""
        if self.alpha is None:
            return None
        img = self.image.convert("RGBA")
        img.putalpha(Image.fromarray(self.alpha.cpu().numpy()))
        return img

    @property
    def best_score(self) -> float:
        return self.best.score

    @property
    def scores(self) -> list[float]:
        return [c.score for c in self.candidates]

    @property
    def images(self) -> list[Image.Image]:
        """Kept candidate images, best first."""
        kept = sorted((c for c in self.candidates if c.image is not None), key=lambda c: -c.score)
        return [to_pil(c.image) for c in kept]

    def to_dict(self) -> dict[str, Any]:
        def cand(c: Candidate) -> dict[str, Any]:
            d = {"score": _num(c.score), "nfe": c.nfe, "seed": c.seed}
            d.update(c.info)
            return d

        return {
            "prompt": self.prompt,
            "best": cand(self.best),
            "nfe": self.nfe,
            "verifier_calls": self.verifier_calls,
            "candidates": [cand(c) for c in self.candidates],
            "trace": [{"nfe": p.nfe, "verifier_calls": p.verifier_calls, "best_score": _num(p.best_score)} for p in self.trace],
            "timings": self.timings,
            "settings": self.settings,
        }

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write the best image to `path` and a JSON sidecar next to it (same name, .json).

        With an alpha matte (rgba=True) `path` is an RGBA PNG (a .png suffix is enforced:
        other formats drop or mangle alpha), the plain RGB image goes to `<stem>.rgb.png` and
        the matte to `<stem>.alpha.png` (8-bit grey); the sidecar's "files" entry says where."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        if self.alpha is None:
            self.image.save(path)
        else:
            path = path.with_suffix(".png")
            rgb, alpha = path.with_name(path.stem + ".rgb.png"), path.with_name(path.stem + ".alpha.png")
            self.rgba.save(path)
            self.image.save(rgb)
            Image.fromarray(self.alpha.cpu().numpy()).save(alpha)
            data["files"] = {"rgba": path.name, "rgb": rgb.name, "alpha": alpha.name}
        sidecar = path.with_suffix(".json")
        sidecar.write_text(json.dumps(data, indent=2, default=str))
        return path, sidecar


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
