"""CLIP verifier: cosine similarity of image and prompt embeddings, through open_clip.

Score
    ``score = scale * cos(E_img(x), E_txt(prompt))`` where both embeddings are
    L2-normalised in float32. With the default ``scale=1.0`` the score is the raw
    cosine in [-1, 1]; ``scale=100`` gives the CLIPScore convention (Hessel et al. use
    ``100 * max(cos, 0)``; we do **not** clip at 0, so rankings below zero still mean
    something). Higher is better.

Model sources (``CLIPVerifier(model=..., pretrained=..., checkpoint=...)``)
    (a) open_clip architecture + pretrained tag, e.g. ``model="ViT-L-14",
        pretrained="openai"``. The weights are looked up in the local caches
        (Hugging Face hub cache, ``~/.cache/clip``) first, without touching the network.
        If they are not there and the hub is offline (``HF_HUB_OFFLINE=1``), or the
        download fails, one :class:`MissingWeightsError` says what to download and how
        to point at it (``checkpoint=`` or ``TTS_CLIP_CHECKPOINT``). A tag's
        ``quick_gelu`` and preprocessing settings are applied (open_clip 3.x only warns
        on a QuickGELU mismatch, e.g. ``ViT-L-14`` + ``openai``; we force the tag's).
    (b) a local checkpoint file for a named architecture: ``model="ViT-L-14",
        checkpoint="/path/ViT-L-14.pt"`` (or ``pretrained="/path/file"``, or the
        ``TTS_CLIP_CHECKPOINT`` environment variable when neither is given). If
        ``pretrained`` is still a known tag, the file is taken to hold that tag's
        weights (its QuickGELU / preprocessing settings apply). Safetensors, torch
        state dicts and OpenAI's TorchScript archives are accepted.
    (c) a local directory in open_clip's hub layout -- ``open_clip_config.json`` (keys
        ``model_cfg`` and ``preprocess_cfg``) + ``open_clip_model.safetensors`` (or
        ``open_clip_pytorch_model.bin``): ``model="/path/dir"``, ``model="local-dir:/path"``
        or ``checkpoint="/path/dir"``. Loaded with open_clip's native ``local-dir:``
        schema (config, weights and tokenizer all come from the directory).
    (d) ``model="hf-hub:org/repo"`` (open_clip's hub schema), cache first as in (a).
    ``pretrained=None`` with a named architecture gives random weights (benchmarks).

Defaults (registry ``load_verifier("clip")``): the project's domain CLIP at
``<assets>/shapes-clip`` when that directory exists (``<assets>`` is
``$TTS_DIFFUSION_ASSETS`` or the package's ``tts_diffusion/assets``), else ViT-L-14 / openai.

Precision: the whole model is cast to ``dtype`` (default float16 on CUDA, float32
elsewhere); preprocessing runs in float32, the embeddings are normalised and the cosine
taken in float32. ``verifier.to("cuda")`` re-applies the default dtype for the new device
unless a dtype was chosen explicitly.

Text embeddings are cached per prompt string (a search scores many candidates for one
prompt); the cache is cleared when the module is moved or cast.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import MissingWeightsError, TTSInputError
from .base import Verifier
from .clip_spec import CLIP, DEFAULT_MODEL, DEFAULT_PRETRAINED
from .preprocess import clip_preprocess
from .registry import register_verifier

__all__ = ["CLIPVerifier", "make_clip", "default_clip_source", "assets_dir"]

CHECKPOINT_ENV = "TTS_CLIP_CHECKPOINT"
ASSETS_ENV = "TTS_DIFFUSION_ASSETS"
DOMAIN_CLIP_DIRNAME = "shapes-clip"
_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)
_HOWTO = (
    "pass checkpoint=/path/to/weights (or set {env}=/path/to/weights), or point model= at a "
    "local open_clip directory (open_clip_config.json + open_clip_model.safetensors)"
).format(env=CHECKPOINT_ENV)


# --------------------------------------------------------------------------- helpers
from ..paths import assets_dir, domain_clip_path  # noqa: E402  (assets_dir re-exported)


def default_clip_source() -> dict[str, Any]:
    """Options for the default CLIP: the domain CLIP directory if present, else ViT-L-14/openai."""
    domain = domain_clip_path()
    if domain.is_dir():
        return {"model": str(domain)}
    return {"model": DEFAULT_MODEL, "pretrained": DEFAULT_PRETRAINED}


def _hub_offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    if any(os.environ.get(k, "").strip().lower() in truthy for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - hub not installed
        return False


def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", ".", "~")) or os.sep in s or (os.altsep is not None and os.altsep in s)


def _dir_weights(d: Path) -> Path | None:
    for name in _WEIGHT_NAMES:
        if (d / name).is_file():
            return d / name
    found = sorted(d.glob("*.safetensors")) + sorted(d.glob("*.bin")) + sorted(d.glob("*.pth"))
    return found[0] if found else None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _hf_cached(repo_id: str, filename: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        p = try_to_load_from_cache(repo_id, filename)
    except Exception:
        return None
    return p if isinstance(p, str) and os.path.isfile(p) else None


@dataclass
class _Source:
    kind: str  # "tag" | "file" | "dir" | "hub" | "random"
    arch: str  # open_clip name, "local-dir:<path>" or "hf-hub:<id>"
    weights: str | None = None  # local weights file (file/tag/dir+override)
    tag_cfg: dict | None = None  # pretrained-tag config (quick_gelu, mean/std, ...)
    describe: str = ""


# --------------------------------------------------------------------------- resolution
def _resolve_source(model: str, pretrained: str | None, checkpoint: str | os.PathLike | None) -> _Source:
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    model = str(model)
    ckpt = str(checkpoint) if checkpoint is not None else None

    name = model.replace("/", "-")  # open_clip accepts "ViT-L/14" for "ViT-L-14"
    is_arch = name in open_clip.list_models()

    # (c) local directory: model="local-dir:/p", model="/p" (a dir), or checkpoint=dir
    if model.startswith("local-dir:") or (
        not is_arch and not model.startswith("hf-hub:") and (_looks_like_path(model) or os.path.isdir(model))
    ):
        path = Path(model[len("local-dir:"):] if model.startswith("local-dir:") else model).expanduser()
        return _dir_source(path, weights_override=ckpt)
    if ckpt is not None and Path(ckpt).expanduser().is_dir():
        return _dir_source(Path(ckpt).expanduser(), weights_override=None)

    # (d) hub schema
    if model.startswith("hf-hub:"):
        repo = model[len("hf-hub:"):]
        cfg = _hf_cached(repo, "open_clip_config.json")
        weights = next(
            (p for f in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin") if (p := _hf_cached(repo, f))),
            None,
        )
        if cfg and weights:
            return _dir_source(Path(cfg).parent, weights_override=weights, describe=model)
        if _hub_offline():
            raise MissingWeightsError(
                f"CLIP {model}: open_clip_config.json and open_clip_model.safetensors from the Hugging Face "
                f"repo {repo!r} are not in the local cache and the hub is offline (HF_HUB_OFFLINE=1); "
                f"download them into a folder and pass model=/that/folder"
            )
        return _Source("hub", model, describe=model)

    if not is_arch:
        raise TTSInputError(
            f"unknown CLIP model {model!r}: not an open_clip architecture, not an existing directory "
            f"(e.g. ViT-L-14, ViT-B-32, or a folder with open_clip_config.json)"
        )
    tag_cfg = get_pretrained_cfg(name, pretrained) if pretrained else {}

    # (b) explicit local file: checkpoint=, a pretrained= path, or $TTS_CLIP_CHECKPOINT
    if ckpt is None and pretrained and not tag_cfg:
        if _looks_like_path(pretrained) or os.path.exists(pretrained):
            ckpt = pretrained
        else:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise TTSInputError(f"unknown pretrained tag {pretrained!r} for CLIP {name}; known tags: {tags}")
    if ckpt is None and tag_cfg and os.environ.get(CHECKPOINT_ENV):
        ckpt = os.environ[CHECKPOINT_ENV]
    if ckpt is not None:
        p = Path(ckpt).expanduser()
        if p.is_dir():
            return _dir_source(p, weights_override=None)
        if not p.is_file():
            raise MissingWeightsError(
                f"CLIP checkpoint not found: {p} (from checkpoint= / pretrained= / {CHECKPOINT_ENV}); "
                f"it should be the weights file for {name}" + (f" ({pretrained})" if tag_cfg else "")
            )
        return _Source("file", name, weights=str(p), tag_cfg=tag_cfg or None, describe=f"{name} from {p}")

    if not pretrained:
        return _Source("random", name, describe=f"{name} (random weights)")

    # (a) architecture + tag: find the weights in the local caches, without the network
    cached = _cached_tag_weights(tag_cfg)
    if cached:
        return _Source("tag", name, weights=cached, tag_cfg=tag_cfg, describe=f"{name}/{pretrained} from {cached}")
    if _hub_offline():
        why = "the hub is offline (HF_HUB_OFFLINE=1)"
        raise MissingWeightsError(_missing_tag_message(name, pretrained, tag_cfg, why))
    return _Source("tag", name, weights=None, tag_cfg=tag_cfg, describe=f"{name}/{pretrained}")


def _dir_source(path: Path, weights_override: str | None, describe: str = "") -> _Source:
    cfg = path / "open_clip_config.json"
    if not path.is_dir():
        raise MissingWeightsError(
            f"CLIP model directory not found: {path}. Expected a folder with open_clip_config.json and "
            f"open_clip_model.safetensors (pass it as model= or checkpoint=, or set {CHECKPOINT_ENV})"
        )
    if not cfg.is_file():
        raise MissingWeightsError(f"CLIP model directory {path} has no open_clip_config.json")
    try:
        with open(cfg, encoding="utf-8") as f:
            if "model_cfg" not in json.load(f):
                raise ValueError("missing key 'model_cfg'")
    except (ValueError, OSError) as e:
        raise TTSInputError(f"invalid open_clip config {cfg}: {e}") from e
    if weights_override is not None:
        w = Path(weights_override).expanduser()
        if not w.is_file():
            raise MissingWeightsError(f"CLIP checkpoint not found: {w} (checkpoint= for the model in {path})")
        weights = str(w)
    else:
        found = _dir_weights(path)
        if found is None:
            raise MissingWeightsError(
                f"CLIP model directory {path} has open_clip_config.json but no weights: put "
                f"open_clip_model.safetensors (or open_clip_pytorch_model.bin) there, "
                f"or pass checkpoint=/path/to/weights"
            )
        weights = None  # open_clip's local-dir loader finds the same file
    return _Source("dir", f"local-dir:{path}", weights=weights, describe=describe or str(path))


def _cached_tag_weights(tag_cfg: dict) -> str | None:
    if "file" in tag_cfg and os.path.isfile(tag_cfg["file"]):
        return tag_cfg["file"]
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for fn in names:
            if p := _hf_cached(repo, fn):
                return p
    url = tag_cfg.get("url", "")
    if url:
        p = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(p):
            return p
    return None


def _missing_tag_message(name: str, tag: str, tag_cfg: dict, why: str) -> str:
    where = []
    if tag_cfg.get("hf_hub"):
        repo, fn = os.path.split(tag_cfg["hf_hub"])
        where.append(f"huggingface.co/{repo} file {fn or 'open_clip_model.safetensors'}")
    if tag_cfg.get("url"):
        where.append(tag_cfg["url"])
    src = " or ".join(where) or "the open_clip release"
    return (
        f"CLIP weights for {name} (pretrained={tag!r}) are not on disk and {why}. "
        f"Download them from {src}, then {_HOWTO}."
    )


# --------------------------------------------------------------------------- verifier
class CLIPVerifier(Verifier):
    """CLIP score verifier (see module docstring for sources, score and precision)."""

    name = "clip"
    differentiable = True

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pretrained: str | None = DEFAULT_PRETRAINED,
        checkpoint: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        chunk_size: int = 64,
        scale: float = 1.0,
        text_cache_size: int = 4096,
    ):
        super().__init__()
        import open_clip
        from open_clip.model import get_model_preprocess_cfg
        from open_clip.transform import merge_preprocess_dict

        device, dtype = self._placement(device, dtype, chunk_size)
        self.scale = float(scale)
        self.text_cache_size = int(text_cache_size)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

        src = _resolve_source(model, pretrained, checkpoint)
        self.source = src.describe
        kwargs: dict[str, Any] = {}
        if src.tag_cfg:
            if src.tag_cfg.get("quick_gelu", False):
                kwargs["force_quick_gelu"] = True
            kwargs["force_preprocess_cfg"] = merge_preprocess_dict({}, src.tag_cfg)
        try:
            if src.kind == "tag" and src.weights is None:  # online: let open_clip download
                net = open_clip.create_model(src.arch, pretrained=pretrained, **kwargs)
            elif src.weights is None:  # native local-dir: / hf-hub: schema, or random weights
                net = open_clip.create_model(src.arch, **kwargs)
            else:  # architecture (or directory config) first, then our local weights file
                with _drop_log_records("No pretrained weights loaded", "Local config loaded, but no CLIP weights"):
                    net = open_clip.create_model(src.arch, load_weights=False, **kwargs)
                _load_weights(net, src.weights, src.describe)
        except (MissingWeightsError, TTSInputError):
            raise
        except Exception as e:
            if src.kind in ("tag", "hub"):
                raise MissingWeightsError(
                    _missing_tag_message(src.arch, str(pretrained), src.tag_cfg or {}, f"loading failed ({e})")
                    if src.kind == "tag"
                    else f"CLIP {src.arch} could not be loaded ({e}); download the repo and pass model=/folder"
                ) from e
            raise TTSInputError(f"could not load CLIP {src.describe}: {e}") from e

        net.eval().requires_grad_(False)
        self.model = net
        self.tokenizer = _tokenizer(src.arch, _config_key(src.arch))
        pp = dict(get_model_preprocess_cfg(net))
        self.preprocess_cfg = {
            "image_size": pp.get("size", 224),
            "mean": tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            "std": tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)),
            "resize_mode": pp.get("resize_mode", "shortest") or "shortest",
            "interpolation": pp.get("interpolation", "bicubic") or "bicubic",
            "fill_color": pp.get("fill_color", 0),
        }
        self.model.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------ device / dtype
    @property
    def dtype(self) -> torch.dtype:
        for p in self.model.parameters():
            return p.dtype
        return torch.float32

    def to(self, *args, **kwargs):
        device, dtype, non_blocking, memory_format = self._to_args(*args, **kwargs)
        kw: dict[str, Any] = {"non_blocking": non_blocking}
        if device is not None:
            kw["device"] = device
        if dtype is not None:
            kw["dtype"] = dtype
        if memory_format is not None:
            kw["memory_format"] = memory_format
        return super().to(**kw)

    def _apply(self, fn, *args, **kwargs):
        self._text_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ embeddings
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> normalised model input in the model's dtype."""
        return clip_preprocess(images.to(self.device), **self.preprocess_cfg, out_dtype=self.dtype)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 image embeddings [B, D] from images in [0, 1]."""
        return self.image_embeddings(images)

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """`encode_images` keeping the autograd graph when grad is enabled (reward gradients:
        preprocessing is torch, so the embedding is differentiable in the pixels)."""
        feats = self.model.encode_image(self.preprocess(images))
        return F.normalize(feats.float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised float32 text embeddings [N, D], cached per prompt string."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        self.cache_misses += len(missing)
        self.cache_hits += len(prompts) - len(missing)
        if missing:
            tokens = self.tokenizer(missing).to(self.device)
            feats = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            for p, f in zip(missing, feats):
                self._text_cache[p] = f
        out = []
        for p in prompts:
            self._text_cache.move_to_end(p)
            out.append(self._text_cache[p])
        while len(self._text_cache) > max(self.text_cache_size, len(set(prompts))):
            self._text_cache.popitem(last=False)
        return torch.stack(out)

    def clear_text_cache(self) -> None:
        self._text_cache.clear()

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        img = self.image_embeddings(images)
        txt = self.encode_texts(prompts)
        return self.scale * (img * txt).sum(dim=-1)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, dtype={self.dtype}, chunk_size={self.chunk_size}, scale={self.scale}"


@contextlib.contextmanager
def _drop_log_records(*prefixes: str):
    """Silence open_clip's (root-logger) "initialized randomly" warnings while we build an
    architecture whose weights we load right after."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(prefixes)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _config_key(arch: str) -> str:
    if arch.startswith("local-dir:"):
        cfg = Path(arch[len("local-dir:"):]) / "open_clip_config.json"
        return cfg.read_text(encoding="utf-8") if cfg.is_file() else ""
    return ""


@functools.lru_cache(maxsize=8)
def _tokenizer(arch: str, config_key: str):
    """open_clip tokenizer, shared between verifiers of one architecture / config (building
    the BPE tables takes ~0.3 s; tokenizers hold no per-call state)."""
    import open_clip

    return open_clip.get_tokenizer(arch)


def _load_weights(net: torch.nn.Module, path: str, what: str) -> None:
    """Load a local weights file into `net` (strict): safetensors / torch state dicts through
    open_clip's loader (weights_only), TorchScript archives (OpenAI's .pt) through torch.jit."""
    import open_clip

    try:
        if _is_torchscript(Path(path)):
            import warnings

            from open_clip.model import resize_pos_embed

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated
                sd = torch.jit.load(path, map_location="cpu").state_dict()
            skip = {"input_resolution", "context_length", "vocab_size"}
            skip |= {
                f"{mn}.{b}" if mn else b
                for mn, m in net.named_modules()
                for b in getattr(m, "_non_persistent_buffers_set", ())
            }
            sd = {k: v for k, v in sd.items() if k not in skip}
            resize_pos_embed(sd, net)
            net.load_state_dict(sd, strict=True)
        else:
            open_clip.load_checkpoint(net, path, strict=True, weights_only=True)
    except RuntimeError as e:
        raise TTSInputError(f"CLIP checkpoint {path} does not fit {what}: {str(e).splitlines()[0]}") from e


# --------------------------------------------------------------------------- registry
@register_verifier(CLIP)
def make_clip(**options) -> CLIPVerifier:
    """Factory for the registry. Without `model` (and `checkpoint`) options the project's
    domain CLIP (``<assets>/shapes-clip``) is used when present, else ViT-L-14/openai."""
    options = {k: v for k, v in options.items() if not (k == "model" and v is None)}
    if "model" not in options and options.get("checkpoint") is None:
        if "pretrained" in options:  # a tag without an architecture: the default architecture
            options["model"] = DEFAULT_MODEL
        else:
            options.update(default_clip_source())
            if options["model"] == DEFAULT_MODEL:
                try:
                    return CLIPVerifier(**options)
                except MissingWeightsError as e:
                    domain = assets_dir() / DOMAIN_CLIP_DIRNAME
                    raise MissingWeightsError(
                        f"{e} (The default, the project's domain CLIP at {domain}, is not there either; "
                        f"set {ASSETS_ENV} to the assets folder that holds {DOMAIN_CLIP_DIRNAME}/.)"
                    ) from e
    return CLIPVerifier(**options)
