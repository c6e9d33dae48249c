"""SearchResult: what a search returns (best image, candidates with scores, the trace of
best score against NFE spent, timings, and the settings that reproduce it)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import TTSInputError
from .files import OutputLock, OutputUnit, check_output_path, file_sha256


#: bumped when the sidecar layout changes incompatibly (`tts-diffusion replay` checks it).
#: 2: `run` is the `SearchRequest` serialised (version 1 also held the dtype and device, which
#: `settings` records)
SIDECAR_VERSION = 2
#: the versions `tts-diffusion replay` reads
READS_SIDECAR_VERSIONS = (1, 2)


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
class ChainStep:
    """One step of a reflection chain (searchers/reflect.py): round 0 is the chain's initial
    sample, round r >= 1 the image generated from the critique of the chain head before it.
    `candidate` indexes `SearchResult.candidates`; `accepted`: it became the chain head."""

    round: int
    candidate: int
    score: float
    nfe: int
    prompt: str  # the prompt the generator was given (refined from round 1 on)
    critique: str = ""  # the critique of the head this step was refined from
    claims: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "noise"  # noise | prompt | image | both
    accepted: bool = True
    image: torch.Tensor | None = field(default=None, repr=False)  # uint8 [3,H,W], CPU

    def to_dict(self, image_file: str | None = None) -> dict[str, Any]:
        d = {"round": self.round, "candidate": self.candidate, "score": _num(self.score), "nfe": self.nfe,
             "prompt": self.prompt, "critique": self.critique, "claims": self.claims, "mode": self.mode,
             "accepted": self.accepted}
        if image_file is not None:
            d["image"] = image_file
        return d


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
    #: how many images `images` returns (None: every kept candidate) and in which form
    #: ("pil", "pt": float [k,3,H,W] in [0,1], "np": float [k,H,W,3] in [0,1]); TTSPipeline
    #: sets them from `num_images_per_prompt` and `output_type`
    num_images: int | None = None
    output_type: str = "pil"
    #: the search was stopped (Ctrl-C) before it finished: `best` is the best found so far
    interrupted: bool = False
    #: the signal that stopped it (SIGINT, SIGTERM, SIGHUP), when one did
    signal: str | None = None
    #: what reruns it (set by TTSPipeline): model source, verifier and its options, the call's
    #: arguments with defaults filled in ("run"); `save` adds versions and weight hashes
    provenance: dict[str, Any] = field(default_factory=dict)
    #: the best image's alpha matte, uint8 [H, W] (rgba=True), else None
    alpha: torch.Tensor | None = field(default=None, repr=False)
    #: the colour channels of `rgba`, uint8 [H, W, 3] (rgba=True): the best image with the
    #: canvas's share of its edge pixels' colours replaced by the subject's (decontaminated,
    #: pipelines/matte.py `foreground_colours`), else None
    foreground: torch.Tensor | None = field(default=None, repr=False)
    #: reflection chains (searcher "reflect"): chains[k][r] is chain k's round r
    chains: list[list[ChainStep]] = field(default_factory=list)
    #: model cost: rows forwarded through the denoiser (CFG rows counted twice; see Budget.model_rows)
    model_rows: int = 0

    @property
    def image(self) -> Image.Image:
        """The best image as PIL."""
        assert self.best.image is not None
        return to_pil(self.best.image)

    @property
    def rgba(self) -> Image.Image | None:
        """The best image with its alpha matte as an RGBA PIL image (rgba=True), else None; its
        colours are `foreground` (edge colours decontaminated) where set, else the image's."""
        if self.alpha is None:
            return None
        rgb = self.image if self.foreground is None else Image.fromarray(self.foreground.cpu().numpy(), "RGB")
        img = rgb.convert("RGBA")
        img.putalpha(Image.fromarray(self.alpha.cpu().numpy()))
        return img

    @property
    def best_score(self) -> float:
        return self.best.score

    @property
    def scores(self) -> list[float]:
        return [c.score for c in self.candidates]

    @property
    def images(self) -> Any:
        """Kept candidate images, best first: the `num_images` best (all kept when None), as
        PIL images, a float tensor [k,3,H,W] ("pt") or a float array [k,H,W,3] ("np")."""
        kept = sorted((c for c in self.candidates if c.image is not None), key=lambda c: -c.score)
        if self.best.image is not None and all(c is not self.best for c in kept):
            kept.insert(0, self.best)
        if self.num_images is not None:
            kept = kept[: self.num_images]
        return format_images([c.image for c in kept], self.output_type)

    def to_dict(self, chain_images: dict[tuple[int, int], str] | None = None) -> dict[str, Any]:
        def cand(c: Candidate) -> dict[str, Any]:
            d = {"score": _num(c.score), "nfe": c.nfe, "seed": c.seed}
            d.update(c.info)
            return d

        return {
            "prompt": self.prompt,
            "best": cand(self.best),
            "nfe": self.nfe,
            "verifier_calls": self.verifier_calls,
            "model_rows": self.model_rows,
            "candidates": [cand(c) for c in self.candidates],
            "trace": [{"nfe": p.nfe, "verifier_calls": p.verifier_calls, "best_score": _num(p.best_score)} for p in self.trace],
            "timings": self.timings,
            "settings": self.settings,
            **({"interrupted": True} if self.interrupted else {}),
            **({"signal": self.signal} if self.interrupted and self.signal else {}),
            **({"chains": [[st.to_dict((chain_images or {}).get((k, r))) for r, st in enumerate(chain)]
                           for k, chain in enumerate(self.chains)]} if self.chains else {}),
        }

    def sidecar(self, command_line: list[str] | None = None,
                chain_images: dict[tuple[int, int], str] | None = None) -> dict[str, Any]:
        """The sidecar record: `to_dict()` plus what reruns the search (versions, model and
        verifier weights with sha256, every setting, the command line)."""
        from .provenance import describe_weights, versions

        prov = self.provenance
        out = self.to_dict(chain_images)
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
        .json; `sidecar()`) as one unit (records/files.py `OutputUnit`): every file goes to a
        temporary first and all are renamed into place only when all are complete, the
        sidecar last, recording the image's sha256; a failure leaves the files already there
        untouched. The path is checked first: a sidecar path holding a file that is not a
        tts-diffusion sidecar, or an extra path holding a file that sidecar does not list,
        is refused; the output's lock (`OutputLock`) is held while writing.
        `command_line` is recorded (the CLI passes sys.argv).

        With an alpha matte (rgba=True) `path` must be a PNG and holds the RGBA image; the
        plain RGB image goes to `<stem>.rgb.png` and the matte to `<stem>.alpha.png` (8-bit
        grey); the sidecar's "files" entry says where. Reflection chains' images go to
        `<stem>_chains/chain<k>_round<r>.png`, referenced from the sidecar by relative path."""
        from .provenance import dumps_strict

        chain_files = {(k, r): f"{Path(path).stem}_chains/chain{k}_round{r}.png"
                       for k, chain in enumerate(self.chains) for r, st in enumerate(chain) if st.image is not None}
        image_path, sidecar = check_output_path(path, option="output path", rgba=self.alpha is not None,
                                                chains=bool(chain_files))
        record = {"image": image_path.name, **self.sidecar(command_line, chain_files)}
        if self.alpha is not None:
            if image_path.suffix.lower() != ".png":  # other formats drop or mangle alpha
                raise TTSInputError(f"an RGBA result is written as PNG: use a .png path, not {image_path.name}")
            rgb = image_path.with_name(image_path.stem + ".rgb.png")
            alpha = image_path.with_name(image_path.stem + ".alpha.png")
            record["files"] = {"rgba": image_path.name, "rgb": rgb.name, "alpha": alpha.name}
        dumps_strict(record)  # before any file is written: a bad record loses nothing
        with OutputLock(image_path, option="output path"), OutputUnit() as unit:
            if self.alpha is None:
                tmp = unit.stage_image(self.image, image_path)
            else:
                unit.stage_image(self.image, rgb)
                unit.stage_image(Image.fromarray(self.alpha.cpu().numpy()), alpha)
                tmp = unit.stage_image(self.rgba, image_path)
            if chain_files:
                unit.stage_folder(image_path.with_name(image_path.stem + "_chains"),
                                  {rel.split("/", 1)[1]: to_pil(self.chains[k][r].image)
                                   for (k, r), rel in chain_files.items()})
            record["image_sha256"] = file_sha256(tmp)  # pairs the sidecar with its image
            text = dumps_strict(record)
            unit.stage(sidecar, lambda f: f.write(text), mode="w")
            unit.commit()
        return image_path, sidecar


def image_problem(result: "SearchResult") -> str | None:
    """Why `result`'s best image is not a picture to present, or None: the model's output was
    not finite (NaN or infinite pixels: every candidate failed), or the image is one flat
    colour (what NaN output decodes to, or a model that draws nothing)."""
    best = result.best
    if best.info.get("nonfinite_pixels") or (isinstance(best.score, float) and best.score == -math.inf
                                               and result.settings.get("nonfinite_images")):
        return ("the model's output was not finite (NaN or infinite pixels) for every candidate: try a smaller"
                " guidance scale, float32, or check the model's weights")
    image = best.image
    if image is not None and image.numel() and bool((image == image.reshape(image.shape[0], -1)[:, :1, None]).all()):
        colour = tuple(int(v) for v in image.reshape(image.shape[0], -1)[:, 0])
        return (f"the best image is one flat colour {colour}, not a picture (non-finite model output or a model that"
                " draws nothing): try a smaller guidance scale, float32, or check the model's weights")
    return None


def format_images(images: list[torch.Tensor], output_type: str = "pil") -> Any:
    """uint8 [3,H,W] CPU images -> a list of PIL images ("pil"), a float tensor [k,3,H,W] in
    [0,1] ("pt") or a float32 array [k,H,W,3] in [0,1] ("np"), as diffusers returns them."""
    if output_type == "pil":
        return [to_pil(im) for im in images]
    batch = torch.stack(images).float() / 255.0 if images else torch.zeros(0, 3, 0, 0)
    if output_type == "pt":
        return batch
    if output_type == "np":
        return batch.permute(0, 2, 3, 1).numpy()
    raise ValueError(f"output_type {output_type!r}: use pil, pt or np")


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


class SearchResults(list):
    """The results of a list of prompts (one search per prompt, in prompt order). `images`
    concatenates each result's images prompt by prompt, as diffusers orders a batch."""

    @property
    def images(self) -> Any:
        parts = [r.images for r in self]
        if not parts:
            return []
        if isinstance(parts[0], list):
            return [im for part in parts for im in part]
        if isinstance(parts[0], torch.Tensor):
            return torch.cat(parts)
        import numpy as np

        return np.concatenate(parts)
