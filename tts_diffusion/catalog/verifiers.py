"""The built-in verifiers as `tts-diffusion list` shows them, declared once and without torch:
name, one-line description and options (params.py). Each verifier module registers its
factory with its entry from here (`@register_verifier(CLIP)`), so the live registry and
`list` read the same objects. Names the options' help text quotes (default models, the
aesthetic head's file and variable) are declared here and imported by the verifier modules."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..params import Param, ParamSpec


@dataclass(frozen=True)
class VerifierEntry:
    """What the registry knows about a verifier besides its factory."""

    name: str
    description: str
    params: ParamSpec

    @classmethod
    def declare(cls, name: str, description: str = "", *, params: Sequence[Param] = ()) -> "VerifierEntry":
        return cls(name, description, ParamSpec(f"verifier {name!r}", list(params)))


#: dtype names the verifiers' `dtype` option takes (their Python values may also be torch.dtype)
DTYPES = ("fp16", "bf16", "fp32", "float16", "bfloat16", "float32", "half", "float")


def placement_params(chunk_size: int = 64) -> list[Param]:
    """device, dtype and chunk_size, declared the same way for every verifier with weights."""
    return [
        Param("device", str, None, "device to run on, e.g. cpu, cuda, cuda:1 (default: cpu; the pipeline moves it)"),
        Param("dtype", str, None, "weights' dtype (default: fp16 on CUDA, fp32 elsewhere)", choices=DTYPES),
        Param("chunk_size", int, chunk_size, "images per forward pass", low=1),
    ]


# -------------------------------------------------------------------------- clip
DEFAULT_MODEL = "ViT-L-14"
DEFAULT_PRETRAINED = "openai"

CLIP = VerifierEntry.declare(
    "clip", "CLIP score (cosine of image and prompt embeddings) through open_clip",
    params=[
        Param("model", str, None, "open_clip architecture (e.g. ViT-L-14) or a local model folder "
              "(default: the project's domain CLIP when present, else ViT-L-14)"),
        Param("pretrained", str, None, "open_clip pretrained tag (default: openai with ViT-L-14)"),
        Param("checkpoint", str, None, "path to a weights file for `model` (default: none, use `pretrained`)"),
        *placement_params(64),
        Param("scale", float, 1.0, "multiplier of the cosine similarity", low=0.0, low_open=True),
        Param("text_cache_size", int, 4096, "prompt embeddings kept in memory", low=0),
    ])


# ------------------------------------------------------------------------ oracle
ORACLE = VerifierEntry.declare(
    "oracle", "exact checker for the embedded shapes world (counts, colours, shapes, positions)",
    params=[
        Param("chunk_size", int, 256, "images per batch", low=1),
        Param("device", str, None, "accepted for symmetry with other verifiers and ignored (the oracle runs on CPU)"),
        Param("dtype", str, None, "accepted for symmetry with other verifiers and ignored", choices=DTYPES),
    ])


# ------------------------------------------------------------------ image_reward
IMAGE_REWARD = VerifierEntry.declare(
    "image_reward", "ImageReward human-preference reward (BLIP ViT-L + BERT), THUDM v1.0 weights",
    params=[
        Param("checkpoint", str, None, "ImageReward.pt (default: looked up in model_dir / the Hugging Face cache)"),
        Param("med_config", str, None, "BERT med_config.json (default: next to the checkpoint, else built in)"),
        Param("vocab", str, None, "bert-base-uncased vocab.txt (default: next to the checkpoint / in the cache)"),
        Param("model_dir", str, None, "folder holding ImageReward.pt, med_config.json and vocab.txt"),
        Param("vision_config", str, None, "vision tower config json (default: inferred from the checkpoint)"),
        *placement_params(64),
        Param("random_weights", bool, False, "random weights of the real architecture (benchmarks, tests)"),
        Param("seed", int, 0, "seed of random_weights", low=0),
        Param("token_cache_size", int, 4096, "tokenised prompts kept in memory", low=0),
    ])


# --------------------------------------------------------------------- aesthetic
HEAD_ENV = "TTS_AESTHETIC_HEAD"
HEAD_NAME = "sac+logos+ava1-l14-linearMSE.pth"

AESTHETIC = VerifierEntry.declare(
    "aesthetic", "LAION aesthetic predictor: MLP head on the CLIP ViT-L/14 image embedding (prompt ignored)",
    params=[
        Param("head", str, None, f"the MLP head file (default: ${HEAD_ENV}, else {HEAD_NAME} in the cache)"),
        Param("model", str, DEFAULT_MODEL, "open_clip architecture of the image embedding"),
        Param("pretrained", str, DEFAULT_PRETRAINED, "open_clip pretrained tag", nullable=True),
        Param("checkpoint", str, None, "path to CLIP weights for `model` (default: none, use `pretrained`)"),
        *placement_params(64),
    ])


# ---------------------------------------------------------------------- ensemble
ENSEMBLE_MODES = ("rank", "zscore")

ENSEMBLE = VerifierEntry.declare(
    "ensemble", "rank-average (Ma et al. 2025) or z-score weighted ensemble of other verifiers",
    params=[
        Param("members", str, "clip,oracle", "member verifiers, comma separated (Python: also a list or "
              "{name: verifier})"),
        Param("weights", tuple, None, "one weight >= 0 per member, e.g. 1,2 (default: equal)", item_type=float),
        Param("mode", str, "rank", "rank: mean within-batch rank; zscore: weighted standardised scores",
              choices=ENSEMBLE_MODES),
        Param("device", str, None, "device of every member built by name"),
        Param("dtype", str, None, "dtype of every member built by name", choices=DTYPES),
        Param("chunk_size", int, None, "chunk size of every member built by name (default: each member's own)",
              low=1),
    ])


# ------------------------------------------------------------------------- alpha
ALPHA = VerifierEntry.declare(
    "alpha", "matte quality of rgba candidates: transparent border and a sharp (binary) matte",
    params=[
        Param("border_width", int, 2, "border band in pixels that should be transparent", low=1),
        Param("border_weight", float, 0.5, "weight of the border term (the rest: sharpness)", low=0.0, high=1.0),
    ])


#: name -> entry of every built-in verifier (each is registered by its module in tts_diffusion.verifiers)
BUILTIN_VERIFIERS: dict[str, VerifierEntry] = {
    e.name: e for e in (CLIP, ORACLE, IMAGE_REWARD, AESTHETIC, ENSEMBLE, ALPHA)}
