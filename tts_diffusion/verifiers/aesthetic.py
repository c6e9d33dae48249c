"""LAION aesthetic predictor (christophschuhmann/improved-aesthetic-predictor) as a verifier.

Score
    ``head(normalize(E_img(x)))``: the CLIP ViT-L/14 (OpenAI) image embedding,
    L2-normalised, through the predictor's MLP head; the prompt is ignored. With the
    released head ``sac+logos+ava1-l14-linearMSE.pth`` scores are on the AVA 1-10 scale
    (most images 4-7); higher is better.

Head (``head=`` or ``TTS_AESTHETIC_HEAD``; else ``<assets>/aesthetic/<name>`` or
``~/.cache/ImageReward/<name>``, where the image-reward package keeps it)
    A torch state dict (``.pth``/``.pt``) or safetensors file with the upstream keys of
    ``MLP.layers``: Linear(768,1024) Dropout(0.2) Linear(1024,128) Dropout(0.2)
    Linear(128,64) Dropout(0.1) Linear(64,16) Linear(16,1), i.e. ``layers.{0,2,4,6,7}``
    (the "linearMSE" heads: no activations, as in upstream ``simple_inference.py``). The
    "reluMSE" variant (a ReLU after each of the first four Linear layers, keys
    ``layers.{0,3,6,9,11}``) is recognised from its keys. Prefixes ``mlp.`` / ``model.`` /
    ``module.`` are stripped. The input width must equal the CLIP embedding width.
    Missing head: one :class:`MissingWeightsError` naming the file, ``head=`` and
    ``TTS_AESTHETIC_HEAD`` (and, if the CLIP weights are missing too, those).

Backbone
    A :class:`CLIPVerifier` (``model=``, ``pretrained=``, ``checkpoint=`` as there; default
    ViT-L-14 / openai from the local caches or ``TTS_CLIP_CHECKPOINT``), whose torch
    preprocessing, dtype handling (fp16 on CUDA) and L2-normalised float32
    ``encode_images`` are used as they are. The head runs in float32. (Upstream
    normalises the fp16 embedding in numpy fp16; we normalise in float32.)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..errors import MissingWeightsError, TTSInputError
from ..paths import assets_dir
from .aesthetic_spec import AESTHETIC, HEAD_ENV, HEAD_NAME
from .base import Verifier
from .clip import CLIPVerifier, _resolve_source
from .clip_spec import DEFAULT_MODEL, DEFAULT_PRETRAINED
from .registry import register_verifier
from .score_mlp import LINEAR_IDX, RELU_IDX, ScoreMLP

__all__ = ["AestheticVerifier", "AestheticHead", "make_aesthetic", "HEAD_ENV", "HEAD_NAME"]

HEAD_URL = "github.com/christophschuhmann/improved-aesthetic-predictor"
_PREFIXES = ("module.", "model.", "mlp.")


AestheticHead = ScoreMLP  # upstream ``MLP.layers``; its state dict loads as is


def _head_candidates() -> list[Path]:
    return [assets_dir() / "aesthetic" / HEAD_NAME, Path("~/.cache/ImageReward").expanduser() / HEAD_NAME]


def _missing_head_message(detail: str) -> str:
    return (
        f"Aesthetic head weights {detail}. Download {HEAD_NAME} (the LAION improved aesthetic predictor's "
        f"MLP head, {HEAD_URL}) and pass head=/path/to/{HEAD_NAME} or set {HEAD_ENV}=/path/to/{HEAD_NAME}"
    )


def resolve_head(head: str | os.PathLike | None) -> tuple[str | None, str | None]:
    """(path, None) or (None, problem) for the head file; no network."""
    if head is not None or os.environ.get(HEAD_ENV):
        src = "head=" if head is not None else HEAD_ENV
        p = Path(head if head is not None else os.environ[HEAD_ENV]).expanduser()
        if p.is_dir():
            p = p / HEAD_NAME
        if not p.is_file():
            return None, _missing_head_message(f"not found: {p} (from {src})")
        return str(p), None
    for p in _head_candidates():
        if p.is_file():
            return str(p), None
    where = ", ".join(str(p) for p in _head_candidates())
    return None, _missing_head_message(f"are not on disk (looked for {HEAD_NAME} in {where})")


def load_head(path: str) -> AestheticHead:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TTSInputError(f"could not read the aesthetic head {path}: {e}") from e
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    clean: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for pre in _PREFIXES:
            if k.startswith(pre):
                k = k[len(pre):]
        clean[k] = v
    idx = tuple(sorted({int(k.split(".")[1]) for k in clean if k.startswith("layers.") and k.endswith(".weight")}))
    if idx not in (LINEAR_IDX, RELU_IDX):
        raise TTSInputError(
            f"{path} is not an improved-aesthetic-predictor head: expected Linear layers at layers.{LINEAR_IDX} "
            f"(linear) or layers.{RELU_IDX} (ReLU variant), found {idx or sorted(clean)[:8]}"
        )
    head = AestheticHead(int(clean["layers.0.weight"].shape[1]), relu=idx == RELU_IDX)
    try:
        head.load_state_dict(clean, strict=True)
    except RuntimeError as e:
        raise TTSInputError(f"aesthetic head {path} does not fit the upstream layout: {' '.join(str(e).split())[:400]}") from e
    return head.eval().requires_grad_(False)


class AestheticVerifier(Verifier):
    """LAION aesthetic score of each image (prompts are ignored); see the module docstring."""

    name = "aesthetic"
    differentiable = True

    def __init__(
        self,
        head: str | os.PathLike | None = None,
        model: str = DEFAULT_MODEL,
        pretrained: str | None = DEFAULT_PRETRAINED,
        checkpoint: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        chunk_size: int = 64,
        clip: CLIPVerifier | None = None,
    ):
        super().__init__()
        head_path, problem = resolve_head(head)
        if problem is not None:
            if clip is None:  # say everything that is missing at once (CLIP lookup is local and fast)
                try:
                    _resolve_source(str(model), pretrained, checkpoint)
                except MissingWeightsError as e:
                    problem = f"{problem}. Also: {e}"
            raise MissingWeightsError(problem)
        self.head = load_head(head_path)  # type: ignore[arg-type]
        self.head_path = head_path
        if clip is None:
            clip = CLIPVerifier(model=model, pretrained=pretrained, checkpoint=checkpoint, device=device,
                                dtype=dtype, chunk_size=chunk_size)
        self.clip = clip
        self.chunk_size = int(chunk_size)
        width = getattr(clip.model.visual, "output_dim", None)
        if width is not None and int(width) != self.head.layers[0].in_features:
            raise TTSInputError(
                f"aesthetic head {head_path} takes {self.head.layers[0].in_features}-d embeddings but CLIP "
                f"{clip.source} gives {width}-d (the released heads need ViT-L/14, 768-d)"
            )
        self.head.to(self.clip.device)

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.dtype

    def to(self, *args, **kwargs):
        """Moves / casts the CLIP backbone (its own dtype rules apply); the head moves
        device only and stays float32."""
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        self.clip.to(*args, **kwargs)
        if device is not None:
            self.head.to(device=device, non_blocking=non_blocking)
        return self

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 CLIP image embeddings [B, D]."""
        return self.clip.encode_images(images)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        emb = self.clip.image_embeddings(images)  # graph kept under score_with_grad
        return self.head(emb.to(self.head.layers[0].weight.device))

    def extra_repr(self) -> str:
        return f"head={self.head_path!r}, relu={self.head.relu}, clip={self.clip.source!r}"


@register_verifier(AESTHETIC)
def make_aesthetic(**options: Any) -> AestheticVerifier:
    """Factory for the registry: head, model, pretrained, checkpoint, device, dtype, chunk_size."""
    if options.get("model", "") is None:
        options.pop("model")
    return AestheticVerifier(**options)
