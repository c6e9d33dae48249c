"""ImageReward verifier (Xu et al. 2023, THUDM/ImageReward v1.0), without the upstream package.

Score
    The ImageReward human-preference reward of each (image, prompt): BLIP ViT-L image
    tokens -> BLIP's BERT over the prompt with cross-attention to them -> MLP on the
    [CLS] feature -> ``(r - 0.16717362830052426) / 1.0333394966054072``. Roughly
    standard-normal over generated images; higher is better. The network is
    :mod:`tts_diffusion.verifiers.blip` (plain torch, runs on current transformers/timm).
    Equivalence with the upstream code is tested on a small random configuration
    (``tests/fixtures/image_reward``, made by ``scripts/imagereward_reference.py``).

Files (all local; nothing is downloaded)
    ``ImageReward.pt``     the checkpoint (zai-org/ImageReward, formerly THUDM/ImageReward, on the hub)
    ``med_config.json``    the BLIP text-encoder config (same repo)
    ``vocab.txt``          the bert-base-uncased WordPiece vocabulary (google-bert/bert-base-uncased)

    Each is looked up, first hit wins:
      1. the option: ``checkpoint=``, ``med_config=``, ``vocab=``;
      2. the environment: ``TTS_IMAGEREWARD_CHECKPOINT``, ``TTS_IMAGEREWARD_MED_CONFIG``,
         ``TTS_IMAGEREWARD_VOCAB``;
      3. a folder holding them under these names: ``model_dir=`` or ``TTS_IMAGEREWARD_DIR``,
         then the checkpoint's own folder, then ``<assets>/image-reward``;
      4. the local caches: the Hugging Face hub cache (``zai-org/ImageReward``, then the
         repository's former name ``THUDM/ImageReward``, for the first two -- a
         med_config.json beside the found checkpoint wins; ``google-bert/bert-base-uncased``
         / ``bert-base-uncased`` for the vocab) and ``~/.cache/ImageReward`` (where the
         upstream package downloads to).
    An explicit path that does not exist, or any file not found, gives one
    :class:`MissingWeightsError` that lists every missing file with its option and
    environment variable. Lookups never touch the network.

    The checkpoint loads with ``load_state_dict(strict=True)`` after the documented key
    mapping of :func:`tts_diffusion.verifiers.blip.convert_state_dict` (identity on the
    upstream names; ``vision_proj``/``text_proj``/``position_ids`` dropped, the last after
    checking that it is ``arange(max_position_embeddings)``). Both serialisations that
    ``torch.save(model.state_dict())`` writes (zip and legacy) load, ``weights_only``.
    ``vision_config=`` (dict or JSON file; default: a ``vision_config.json`` beside the
    checkpoint, else BLIP ViT-L/16 at 224) describes the image tower; only needed for
    non-standard (test) checkpoints. It is checked against the checkpoint's shapes.

Preprocessing
    Upstream resizes PIL images (shortest side to 224, bicubic), centre-crops 224 and
    normalises with the CLIP mean/std. We do the same in torch on the device from float
    images in [0, 1] (:func:`clip_preprocess`); the two agree up to PIL's uint8 rounding,
    also at 512 -> 224 and 1024 -> 224 (tests/test_preprocess_downscale.py).
    Prompts are tokenised like upstream (lower-cased WordPiece, ``[CLS] ... [SEP]``,
    truncated and padded to 35 tokens; ``ImageReward.score`` keeps ``[CLS]`` first, the
    ``[ENC]`` swap belongs to BLIP's ITM head only); token ids are cached per prompt and
    equal transformers' slow ``BertTokenizer`` with a full-size vocabulary
    (tests/test_image_reward_tokenizer.py).

Precision
    The network runs in ``dtype`` (default float16 on CUDA, float32 elsewhere); the MLP
    head (weights kept in float32 by ``verifier.to(...)``) and the normalisation run in
    float32, as upstream. ``verifier.to("cuda")`` re-applies the default dtype for the
    device unless a dtype was chosen explicitly.

``random_weights=True`` builds the real architecture (or ``vision_config`` /
``med_config`` dict) with random weights and a small built-in vocabulary: for timing only.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..errors import MissingWeightsError, TTSInputError
from ..paths import assets_dir
from .base import Verifier
from .blip import (
    MED_CONFIG_BASE,
    VIT_LARGE,
    ImageRewardModel,
    MedConfig,
    VisionConfig,
    convert_state_dict,
    infer_vision_config,
)
from .clip import _hf_cached
from .image_reward_spec import IMAGE_REWARD
from .preprocess import clip_preprocess
from .registry import register_verifier

__all__ = ["ImageRewardVerifier", "BertWordPieceTokenizer", "resolve_image_reward_files", "make_image_reward"]

CHECKPOINT_ENV = "TTS_IMAGEREWARD_CHECKPOINT"
MED_CONFIG_ENV = "TTS_IMAGEREWARD_MED_CONFIG"
VOCAB_ENV = "TTS_IMAGEREWARD_VOCAB"
DIR_ENV = "TTS_IMAGEREWARD_DIR"
HUB_REPOS = ("zai-org/ImageReward", "THUDM/ImageReward")  # the hub repository moved to zai-org; old caches keep THUDM
HUB_REPO = HUB_REPOS[0]
VOCAB_REPOS = ("google-bert/bert-base-uncased", "bert-base-uncased")
CHECKPOINT_NAME = "ImageReward.pt"
MED_CONFIG_NAME = "med_config.json"
VOCAB_NAME = "vocab.txt"
VISION_CONFIG_NAME = "vision_config.json"
MAX_LENGTH = 35  # upstream tokenizer(..., max_length=35)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------- tokenizer
class BertWordPieceTokenizer:
    """bert-base-uncased tokenisation as upstream uses it (``BertTokenizer`` + the special
    tokens ``[DEC]`` and ``[ENC]`` that BLIP adds), through the ``tokenizers`` library:
    lower-casing, accent stripping, punctuation / CJK splitting, WordPiece, ``[CLS] ... [SEP]``,
    truncation and padding to ``max_length``."""

    def __init__(self, vocab: str | os.PathLike | Mapping[str, int], max_length: int = MAX_LENGTH):
        from tokenizers import BertWordPieceTokenizer as _WP

        v = dict(vocab) if isinstance(vocab, Mapping) else str(vocab)
        self._tok = _WP(v, lowercase=True, clean_text=True, handle_chinese_chars=True, strip_accents=None)
        self._tok.add_special_tokens(["[DEC]", "[ENC]"])
        pad = self._tok.token_to_id("[PAD]")
        if pad is None or self._tok.token_to_id("[CLS]") is None or self._tok.token_to_id("[SEP]") is None:
            raise TTSInputError(f"vocabulary {vocab if not isinstance(vocab, Mapping) else '<dict>'} lacks [PAD]/[CLS]/[SEP]")
        self.max_length = int(max_length)
        self._tok.enable_truncation(self.max_length)
        self._tok.enable_padding(length=self.max_length, pad_id=pad, pad_token="[PAD]")

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask), both int64 [N, max_length]."""
        enc = self._tok.encode_batch(list(prompts))
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask


def _builtin_vocab() -> dict[str, int]:
    """A small vocabulary (specials, ASCII letters and digits, WordPiece continuations of
    them, punctuation) that tokenises any ASCII prompt; for random-weight models."""
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    toks += chars + ["##" + c for c in chars if c.isalnum()]
    return {t: i for i, t in enumerate(dict.fromkeys(toks))}


# --------------------------------------------------------------------------- file lookup
def _from_cache(repos: Sequence[str], name: str) -> str | None:
    for repo in repos:
        if p := _hf_cached(repo, name):
            return p
    p = Path("~/.cache/ImageReward").expanduser() / name
    return str(p) if name != VOCAB_NAME and p.is_file() else None


def resolve_image_reward_files(
    checkpoint: str | os.PathLike | None = None,
    med_config: str | os.PathLike | None = None,
    vocab: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None,
    need_med_config: bool = True,
    need_vocab: bool = True,
) -> dict[str, str | None]:
    """Paths of ImageReward.pt, med_config.json and vocab.txt (see the module docstring
    for the search order); one MissingWeightsError naming everything that is missing.
    ``need_*=False`` skips a file that the caller supplies otherwise (its entry is None)."""
    problems: list[str] = []

    def explicit(value, env: str, option: str, what: str) -> tuple[str | None, bool]:
        src = f"{option}=" if value is not None else env
        value = value if value is not None else os.environ.get(env) or None
        if value is None:
            return None, False
        p = Path(value).expanduser()
        if p.is_dir():
            p = p / what
        if not p.is_file():
            problems.append(f"{what}: {p} (from {src}) does not exist")
            return None, True
        return str(p), True

    dirs: list[Path] = []
    mdir = model_dir if model_dir is not None else os.environ.get(DIR_ENV) or None
    if mdir is not None:
        d = Path(mdir).expanduser()
        if not d.is_dir():
            src = "model_dir=" if model_dir is not None else DIR_ENV
            problems.append(f"ImageReward folder {d} (from {src}) does not exist")
        else:
            dirs.append(d)

    ckpt, tried = explicit(checkpoint, CHECKPOINT_ENV, "checkpoint", CHECKPOINT_NAME)
    if ckpt is None and not tried:
        ckpt = next((str(d / CHECKPOINT_NAME) for d in dirs if (d / CHECKPOINT_NAME).is_file()), None)
    if ckpt is not None:
        dirs.append(Path(ckpt).parent)
    dirs.append(assets_dir() / "image-reward")
    if ckpt is None and not tried:
        ckpt = next((str(d / CHECKPOINT_NAME) for d in dirs if (d / CHECKPOINT_NAME).is_file()), None)
        ckpt = ckpt or _from_cache(HUB_REPOS, CHECKPOINT_NAME)

    def find(value, env, option, name, repos):
        p, tried = explicit(value, env, option, name)
        if p is None and not tried:
            p = next((str(d / name) for d in dirs if (d / name).is_file()), None) or _from_cache(repos, name)
        return p, tried

    med, med_tried = find(med_config, MED_CONFIG_ENV, "med_config", MED_CONFIG_NAME, HUB_REPOS) \
        if need_med_config else (None, True)
    voc, voc_tried = find(vocab, VOCAB_ENV, "vocab", VOCAB_NAME, VOCAB_REPOS) if need_vocab else (None, True)

    missing = []
    if ckpt is None and not tried:
        missing.append(f"{CHECKPOINT_NAME} (huggingface.co/{HUB_REPO}, formerly {HUB_REPOS[1]}): pass checkpoint=/path/to/{CHECKPOINT_NAME} "
                       f"or set {CHECKPOINT_ENV}")
    if med is None and not med_tried:
        missing.append(f"{MED_CONFIG_NAME} (huggingface.co/{HUB_REPO}, formerly {HUB_REPOS[1]}): pass med_config=/path/to/{MED_CONFIG_NAME} "
                       f"or set {MED_CONFIG_ENV}")
    if voc is None and not voc_tried:
        missing.append(f"{VOCAB_NAME} (bert-base-uncased's vocabulary, huggingface.co/{VOCAB_REPOS[0]}): pass "
                       f"vocab=/path/to/{VOCAB_NAME} or set {VOCAB_ENV}")
    if problems or missing:
        raise MissingWeightsError(
            "ImageReward needs files that are not on disk (nothing is downloaded): "
            + "; ".join(problems + missing)
            + f". Alternatively put {CHECKPOINT_NAME}, {MED_CONFIG_NAME} and {VOCAB_NAME} in one folder and pass "
            f"model_dir=/that/folder or set {DIR_ENV}. (Searched: {', '.join(str(d) for d in dict.fromkeys(dirs))}, "
            f"the Hugging Face hub cache and ~/.cache/ImageReward.)"
        )
    return {"checkpoint": ckpt, "med_config": med, "vocab": voc}


def _read_json(value: str | os.PathLike | Mapping[str, Any], what: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    p = Path(value).expanduser()
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MissingWeightsError(f"ImageReward {what} not found: {p}") from None
    except (OSError, ValueError) as e:
        raise TTSInputError(f"invalid ImageReward {what} {p}: {e}") from e


def _load_checkpoint(path: str) -> dict[str, torch.Tensor]:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with code objects, ...
        raise TTSInputError(f"could not read ImageReward checkpoint {path}: {e}") from e


# --------------------------------------------------------------------------- verifier
class ImageRewardVerifier(Verifier):
    """ImageReward verifier (see the module docstring for files, score and precision)."""

    name = "image_reward"
    differentiable = True

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        med_config: str | os.PathLike | Mapping[str, Any] | None = None,
        vocab: str | os.PathLike | Mapping[str, int] | None = None,
        model_dir: str | os.PathLike | None = None,
        vision_config: str | os.PathLike | Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        chunk_size: int = 64,
        random_weights: bool = False,
        seed: int = 0,
        token_cache_size: int = 4096,
    ):
        super().__init__()
        device, dtype = self._placement(device, dtype, chunk_size)
        self.token_cache_size = int(token_cache_size)
        self._tokens: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

        if random_weights:
            med_d = _read_json(med_config, "med_config") if med_config is not None else dict(MED_CONFIG_BASE)
            vis = _vision_config(vision_config, None) if vision_config is not None else VIT_LARGE
            net = ImageRewardModel(vis, MedConfig.from_dict(med_d, encoder_width=vis.embed_dim)).init_random(seed)
            self.tokenizer = BertWordPieceTokenizer(vocab if vocab is not None else _builtin_vocab())
            self.source = f"random weights (ViT {vis.embed_dim}x{vis.depth}, text {net.med_cfg.hidden_size}x{net.med_cfg.num_hidden_layers})"
        else:
            med_given, vocab_given = isinstance(med_config, Mapping), isinstance(vocab, Mapping)
            files = resolve_image_reward_files(
                checkpoint, None if med_given else med_config, None if vocab_given else vocab, model_dir,
                need_med_config=not med_given, need_vocab=not vocab_given,
            )
            med_d = _read_json(med_config if isinstance(med_config, Mapping) else files["med_config"], "med_config")
            max_pos = med_d.get("max_position_embeddings")
            try:
                sd = convert_state_dict(_load_checkpoint(files["checkpoint"]), max_positions=max_pos)
            except TTSInputError as e:
                raise TTSInputError(f"{files['checkpoint']}: {e}") from None
            vc = vision_config
            if vc is None:
                side = Path(files["checkpoint"]).parent / VISION_CONFIG_NAME
                vc = str(side) if side.is_file() else None
            vis = _vision_config(vc, sd)
            net = ImageRewardModel(vis, MedConfig.from_dict(med_d, encoder_width=vis.embed_dim))
            try:
                net.load_state_dict(sd, strict=True)
            except RuntimeError as e:
                msg = " ".join(str(e).split())
                raise TTSInputError(
                    f"ImageReward checkpoint {files['checkpoint']} does not fit the architecture from "
                    f"{files['med_config'] or 'med_config'} / vision {asdict(vis)}: {msg[:600]}"
                ) from e
            self.tokenizer = BertWordPieceTokenizer(vocab if isinstance(vocab, Mapping) else files["vocab"])
            self.source = files["checkpoint"]
            self.files = files
        if self.tokenizer.vocab_size > net.med_cfg.vocab_size:
            raise TTSInputError(
                f"the vocabulary has {self.tokenizer.vocab_size} tokens (with [DEC], [ENC]) but the text encoder "
                f"only {net.med_cfg.vocab_size}: wrong vocab.txt for this med_config"
            )
        if net.med_cfg.max_position_embeddings < MAX_LENGTH:
            raise TTSInputError(f"med_config max_position_embeddings < {MAX_LENGTH}")
        net.eval().requires_grad_(False)
        self.model = net
        self.preprocess_cfg = {
            "image_size": net.vision_cfg.img_size,
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
            "resize_mode": "shortest",
            "interpolation": "bicubic",
        }
        self._move(device=device, dtype=dtype)

    # ------------------------------------------------------------------ device / dtype
    @property
    def dtype(self) -> torch.dtype:
        return self.model.blip.visual_encoder.pos_embed.dtype

    def to(self, *args, **kwargs):
        device, dtype, non_blocking, _ = self._to_args(*args, **kwargs)
        return self._move(device=device, dtype=dtype, non_blocking=non_blocking)

    def _move(self, device=None, dtype=None, non_blocking: bool = False):
        """BLIP body to `device`/`dtype`; the MLP head to `device` only (it stays float32)."""
        kw: dict[str, Any] = {"non_blocking": non_blocking}
        if device is not None:
            kw["device"] = device
        self.model.mlp.to(**kw)
        if dtype is not None:
            kw["dtype"] = dtype
        self.model.blip.to(**kw)
        return self

    # ------------------------------------------------------------------ scoring
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> normalised 224x224 input in the model's dtype."""
        return clip_preprocess(images.to(self.device), **self.preprocess_cfg, out_dtype=self.dtype)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) [N, 35] on the device, cached per prompt string."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._tokens]
        if missing:
            ids, mask = self.tokenizer(missing)
            for p, i, m in zip(missing, ids, mask):
                self._tokens[p] = (i, m)
        for p in prompts:
            self._tokens.move_to_end(p)
        ids = torch.stack([self._tokens[p][0] for p in prompts])
        mask = torch.stack([self._tokens[p][1] for p in prompts])
        while len(self._tokens) > max(self.token_cache_size, len(set(prompts))):
            self._tokens.popitem(last=False)
        return ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)

    @torch.no_grad()
    def score_preprocessed(self, pixel_values: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Rewards [B] (float32) for already-normalised 224x224 inputs (e.g. upstream's PIL path)."""
        return self._rewards(pixel_values, prompts)

    def _rewards(self, pixel_values: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        ids, mask = self.tokenize(list(prompts))
        return self.model(pixel_values.to(self.device, self.dtype), ids, mask)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        # graph kept under score_with_grad (torch preprocessing, no PIL round trip)
        return self._rewards(self.preprocess(images), prompts)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, dtype={self.dtype}, chunk_size={self.chunk_size}"


def _vision_config(value, sd: Mapping[str, torch.Tensor] | None) -> VisionConfig:
    """Vision config from a dict / JSON file / None (ViT-L), checked against the checkpoint."""
    if value is None:
        cfg = VIT_LARGE
    elif isinstance(value, str) and value.lower() in ("large", "vit-l", "vit_large"):
        cfg = VIT_LARGE
    else:
        cfg = VisionConfig.from_dict(_read_json(value, "vision_config"))
    if sd is not None:
        seen = infer_vision_config(sd)
        bad = {k: (getattr(cfg, k), v) for k, v in seen.items() if getattr(cfg, k) != v}
        if bad:
            hint = {**asdict(cfg), **seen}
            raise TTSInputError(
                f"the ImageReward checkpoint's image tower does not match the vision config "
                f"({', '.join(f'{k}: config {a} vs checkpoint {b}' for k, (a, b) in bad.items())}); "
                f"pass vision_config= (e.g. {hint}) or put a {VISION_CONFIG_NAME} beside the checkpoint"
            )
    return cfg


# --------------------------------------------------------------------------- registry
@register_verifier(IMAGE_REWARD)
def make_image_reward(**options) -> ImageRewardVerifier:
    """Factory for the registry: options are ImageRewardVerifier's (checkpoint, med_config,
    vocab, model_dir, vision_config, device, dtype, chunk_size, random_weights)."""
    return ImageRewardVerifier(**options)
