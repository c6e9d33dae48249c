"""SearchResult: what a search returns (best image, candidates with scores, the trace of
best score against NFE spent, timings, and the settings that reproduce it)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image


#: bumped when the sidecar layout changes incompatibly (`tts-diffusion replay` checks it)
SIDECAR_VERSION = 1


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
    #: what reruns it (set by TTSPipeline): model source, verifier and its options, the call's
    #: arguments with defaults filled in ("run"); `save` adds versions and weight hashes
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> Image.Image:
        """The best image as PIL."""
        assert self.best.image is not None
        return to_pil(self.best.image)

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

    def sidecar(self, command_line: list[str] | None = None) -> dict[str, Any]:
        """The sidecar record: `to_dict()` plus what reruns the search (versions, model and
        verifier weights with sha256, every setting, the command line)."""
        from .provenance import describe_weights, versions

        prov = self.provenance
        out = self.to_dict()
        out["sidecar_version"] = SIDECAR_VERSION
        out["versions"] = versions()
        out["command_line"] = list(command_line) if command_line is not None else None
        if prov:
            from ..paths import default_model_path

            source = prov.get("model_source")
            out["model"] = describe_weights(source if source is not None else default_model_path())
            out["model"]["source"] = source  # None: the embedded default model
            ver = dict(prov.get("verifier", {}))
            ver["weights"] = {k: describe_weights(v) for k, v in ver.get("options", {}).items()
                              if isinstance(v, str) and Path(v).expanduser().exists()}
            out["verifier"] = ver
            out["run"] = prov.get("run")
            if "note" in prov:
                out["note"] = prov["note"]
        return out

    def save(self, path: str | Path, command_line: list[str] | None = None) -> tuple[Path, Path]:
        """Write the best image to `path` and a strict-JSON sidecar next to it (same name,
        .json; `sidecar()`); `command_line` is recorded (the CLI passes sys.argv)."""
        from .provenance import dumps_strict

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.image.save(path)
        sidecar = path.with_suffix(".json")
        record = {"image": path.name, **self.sidecar(command_line)}
        sidecar.write_text(dumps_strict(record))
        return path, sidecar


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
