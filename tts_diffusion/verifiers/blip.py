"""The ImageReward network (BLIP ViT + BLIP "med" BERT + MLP head) in plain torch.

A re-implementation of THUDM/ImageReward's ``ImageReward`` model (``ImageReward.py``,
``models/BLIP/vit.py``, ``models/BLIP/med.py``, image-reward 1.5) that needs neither the
upstream package nor a particular transformers / timm version. Module and parameter
names are the upstream ones, so the official ``ImageReward.pt`` loads strictly; see
:func:`convert_state_dict` for the (small) key mapping.

Architecture (upstream defaults in brackets)
    visual_encoder  ViT, pre-norm blocks, LayerNorm eps 1e-6, qkv bias, exact GELU MLP
                    (ratio 4), learned cls token + absolute position embedding, final
                    LayerNorm; all tokens returned.  [ViT-L/16: 224 px, width 1024,
                    24 blocks, 16 heads -- BLIP's ``create_vit('large')``]
    text_encoder    BERT without token-type embeddings (word + absolute position,
                    LayerNorm), post-norm layers of self-attention -> cross-attention to
                    the image tokens -> GELU feed-forward; no pooler.  [``med_config.json``:
                    hidden 768, 12 layers, 12 heads, intermediate 3072, vocab 30524 =
                    bert-base-uncased + [DEC] + [ENC], cross-attention key/value width =
                    vision width]
    mlp             Linear(h,1024) Dropout Linear(1024,128) Dropout Linear(128,64) Dropout
                    Linear(64,16) Linear(16,1): no activations (upstream comments them
                    out), so it is one affine map; run in float32 as upstream does.
    reward          ``(mlp(text_hidden[:, 0]) - 0.16717362830052426) / 1.0333394966054072``

Masks follow upstream: padded prompt positions get ``-10000`` added to the attention
logits (``(1 - mask) * -10000``, in the model dtype); the image tokens are never masked.
Attention runs through ``F.scaled_dot_product_attention`` (same maths; fused kernels on
GPU). Dropout / drop-path are inference no-ops and are not built.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import TTSInputError
from .score_mlp import ScoreMLP

__all__ = [
    "IMAGE_REWARD_MEAN",
    "IMAGE_REWARD_STD",
    "MED_CONFIG_BASE",
    "MedConfig",
    "VisionConfig",
    "VIT_LARGE",
    "ImageRewardModel",
    "convert_state_dict",
    "check_position_ids",
    "state_dict_key_hash",
    "DROPPED_KEYS",
]

#: reward normalisation constants of ImageReward v1.0 (``ImageReward.py``: self.mean / self.std)
IMAGE_REWARD_MEAN = 0.16717362830052426
IMAGE_REWARD_STD = 1.0333394966054072

#: BLIP's med_config.json (the file ImageReward ships), for random-weight models only;
#: real checkpoints are always paired with the med_config.json file that came with them.
MED_CONFIG_BASE: dict[str, Any] = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "encoder_width": 768,
    "add_cross_attention": True,
}

#: upstream state-dict keys that the reward does not use and that the loader drops
DROPPED_KEYS = (
    "blip.vision_proj.weight",  # image-text contrastive projections (BLIP pre-training)
    "blip.vision_proj.bias",
    "blip.text_proj.weight",
    "blip.text_proj.bias",
    "blip.text_encoder.embeddings.position_ids",  # a persistent arange buffer upstream
)

_ACTS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


# --------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class VisionConfig:
    """BLIP ViT settings; field names are the arguments of upstream ``VisionTransformer``."""

    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VisionConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TTSInputError(f"unknown ImageReward vision config keys {unknown}; known: {sorted(known)}")
        cfg = cls(**{k: d[k] for k in d})
        if cfg.embed_dim % cfg.num_heads or cfg.img_size % cfg.patch_size:
            raise TTSInputError(f"invalid ImageReward vision config {asdict(cfg)}")
        return cfg


#: ImageReward v1.0's image tower (BLIP ``create_vit('large', 224)``)
VIT_LARGE = VisionConfig()


@dataclass(frozen=True)
class MedConfig:
    """The fields of BLIP's ``med_config.json`` that the text encoder uses."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    encoder_width: int = 768

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], encoder_width: int | None = None) -> "MedConfig":
        """From a med_config.json dict. Like upstream ``BLIP_Pretrain``, ``encoder_width``
        (cross-attention key/value width) is overridden by the vision width when given."""
        if "vocab_size" not in d:
            raise TTSInputError("med_config has no vocab_size")
        if not d.get("add_cross_attention", True):
            raise TTSInputError("med_config has add_cross_attention=false; ImageReward needs cross-attention")
        pet = d.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise TTSInputError(f"med_config position_embedding_type={pet!r} is not supported (only 'absolute')")
        act = d.get("hidden_act", "gelu")
        if act not in _ACTS:
            raise TTSInputError(f"med_config hidden_act={act!r} is not supported; known: {sorted(_ACTS)}")
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        if encoder_width is not None:
            kw["encoder_width"] = int(encoder_width)
        cfg = cls(**kw)
        if cfg.hidden_size % cfg.num_attention_heads:
            raise TTSInputError(f"med_config hidden_size {cfg.hidden_size} is not a multiple of the heads")
        return cfg


# --------------------------------------------------------------------------- helpers
def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """Multi-head attention of [B, Lq, D] queries on [B, Lk, D] keys/values."""
    b, lq, d = q.shape
    lk = k.shape[1]
    hd = d // heads
    q = q.view(b, lq, heads, hd).transpose(1, 2)
    k = k.view(b, lk, heads, hd).transpose(1, 2)
    v = v.view(b, lk, heads, hd).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, lq, d)


# --------------------------------------------------------------------------- vision
class _PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _VitAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _VitMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _VitBlock(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = _VitAttention(d, cfg.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = _VitMlp(d, int(d * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BlipVisionTransformer(nn.Module):
    """BLIP's ViT (``models/BLIP/vit.py``): [B, 3, S, S] normalised pixels -> [B, 1 + (S/p)^2, D]."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        n = (cfg.img_size // cfg.patch_size) ** 2
        self.patch_embed = _PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, cfg.embed_dim))
        self.blocks = nn.ModuleList([_VitBlock(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.cfg.img_size, self.cfg.img_size):
            raise TTSInputError(f"BLIP ViT expects {self.cfg.img_size}x{self.cfg.img_size} inputs, got {tuple(x.shape)}")
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed[:, : x.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


# --------------------------------------------------------------------------- text (med BERT)
class _BertEmbeddings(nn.Module):
    def __init__(self, cfg: MedConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(pos)[None])


class _BertSelfAttention(nn.Module):
    def __init__(self, cfg: MedConfig, kv_width: int):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return _sdpa(self.query(x), self.key(kv), self.value(kv), self.heads, mask)


class _BertSelfOutput(nn.Module):
    def __init__(self, cfg: MedConfig, in_width: int):
        super().__init__()
        self.dense = nn.Linear(in_width, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _BertAttention(nn.Module):
    def __init__(self, cfg: MedConfig, kv_width: int):
        super().__init__()
        self.self = _BertSelfAttention(cfg, kv_width)
        self.output = _BertSelfOutput(cfg, cfg.hidden_size)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, kv, mask), x)


class _BertIntermediate(nn.Module):
    def __init__(self, cfg: MedConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = _ACTS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class _BertLayer(nn.Module):
    def __init__(self, cfg: MedConfig):
        super().__init__()
        self.attention = _BertAttention(cfg, cfg.hidden_size)
        self.crossattention = _BertAttention(cfg, cfg.encoder_width)
        self.intermediate = _BertIntermediate(cfg)
        self.output = _BertSelfOutput(cfg, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, image: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, x, mask)
        x = self.crossattention(x, image, None)  # all image tokens attended (upstream mask = 0)
        return self.output(self.intermediate(x), x)


class _BertEncoder(nn.Module):
    def __init__(self, cfg: MedConfig):
        super().__init__()
        self.layer = nn.ModuleList([_BertLayer(cfg) for _ in range(cfg.num_hidden_layers)])


class MedBertModel(nn.Module):
    """BLIP's med ``BertModel(add_pooling_layer=False)`` in 'multimodal' mode (encoder, not
    decoder): returns the last hidden states [B, L, hidden]."""

    def __init__(self, cfg: MedConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = _BertEmbeddings(cfg)
        self.encoder = _BertEncoder(cfg)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        # upstream get_extended_attention_mask: (1 - mask) * -10000 in the model dtype
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.encoder.layer:
            x = layer(x, mask, image_embeds)
        return x


# --------------------------------------------------------------------------- full model
class _Blip(nn.Module):
    def __init__(self, vision: VisionConfig, med: MedConfig):
        super().__init__()
        self.visual_encoder = BlipVisionTransformer(vision)
        self.text_encoder = MedBertModel(med)


class ImageRewardModel(nn.Module):
    """``blip.visual_encoder`` + ``blip.text_encoder`` + ``mlp``; forward gives the
    normalised reward [B] (float32) from normalised pixels and prompt tokens."""

    def __init__(self, vision: VisionConfig, med: MedConfig):
        super().__init__()
        if med.encoder_width != vision.embed_dim:
            med = MedConfig(**{**asdict(med), "encoder_width": vision.embed_dim})
        self.vision_cfg, self.med_cfg = vision, med
        self.blip = _Blip(vision, med)
        self.mlp = ScoreMLP(med.hidden_size)
        self.mean, self.std = IMAGE_REWARD_MEAN, IMAGE_REWARD_STD

    def text_features(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The [CLS] hidden state of the image-conditioned text encoder, [B, hidden]."""
        image_embeds = self.blip.visual_encoder(pixel_values)
        return self.blip.text_encoder(input_ids, attention_mask, image_embeds)[:, 0]

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        r = self.mlp(self.text_features(pixel_values, input_ids, attention_mask))
        return (r - self.mean) / self.std

    @torch.no_grad()
    def init_random(self, seed: int = 0) -> "ImageRewardModel":
        """Random weights (for benchmarks): linear / conv weights N(0, 1/fan_in) (activations
        and rewards stay O(1), so fp16-vs-fp32 and torch-vs-PIL comparisons mean something),
        embeddings / cls / positions N(0, 0.02), biases 0, LayerNorm = identity."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if "LayerNorm" in name or ".norm" in name or name.startswith("blip.visual_encoder.norm"):
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            elif p.ndim >= 2 and "embeddings" not in name and "pos_embed" not in name and "cls_token" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
        return self


POSITION_IDS_KEY = "blip.text_encoder.embeddings.position_ids"


def check_position_ids(value: Any, max_positions: int | None = None) -> None:
    """The checkpoint's ``position_ids`` buffer must be ``arange(n)`` (upstream stores it
    expanded, shape ``[1, n]``; ``n`` = ``max_position_embeddings``, 512 for BERT-base).
    Our text encoder uses positions ``0..L-1`` without the buffer, so a different buffer
    means a checkpoint that we would score differently from upstream: an error."""
    if not isinstance(value, torch.Tensor):
        raise TTSInputError(f"ImageReward checkpoint: {POSITION_IDS_KEY} is a {type(value).__name__}, not a tensor")
    shape = tuple(value.shape)
    n = shape[-1] if shape else 0
    ok_shape = len(shape) in (1, 2) and (len(shape) == 1 or shape[0] == 1)
    if max_positions is not None and n != max_positions:
        ok_shape = False
    if not ok_shape:
        want = f"[1, {max_positions}]" if max_positions is not None else "[1, n]"
        raise TTSInputError(f"ImageReward checkpoint: {POSITION_IDS_KEY} has shape {list(shape)}, expected {want} "
                            f"(max_position_embeddings of med_config)")
    if value.is_floating_point() or value.is_complex() or not torch.equal(
        value.reshape(-1).to("cpu", torch.long), torch.arange(n)
    ):
        raise TTSInputError(f"ImageReward checkpoint: {POSITION_IDS_KEY} is not arange({n}) "
                            f"(got {value.reshape(-1)[:8].tolist()}...); the checkpoint is not an ImageReward one "
                            f"or was modified, and would not score as upstream does")


def convert_state_dict(sd: Mapping[str, torch.Tensor], max_positions: int | None = None) -> dict[str, torch.Tensor]:
    """Upstream ImageReward state dict -> ours.

    Key mapping: identity on the upstream names (``blip.visual_encoder.*``,
    ``blip.text_encoder.*``, ``mlp.layers.{0,2,4,6,7}.*``), after
      - unwrapping ``{"state_dict": ...}`` / ``{"model": ...}`` containers and a leading
        ``module.`` (DataParallel) on every key;
      - checking the ``position_ids`` buffer (if present) with :func:`check_position_ids`
        against ``max_positions`` (``max_position_embeddings``; None: any length);
      - dropping :data:`DROPPED_KEYS` (the BLIP ITC projections ``vision_proj`` /
        ``text_proj`` and the ``position_ids`` buffer), which the reward does not use.
    Anything else missing or unexpected is an error at ``load_state_dict(strict=True)``.
    Accepts what upstream writes (``torch.save(model.state_dict())``: an OrderedDict with
    ``_metadata``, zip or legacy serialisation); the metadata (module versions) is unused.
    """
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
    out = {}
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k == POSITION_IDS_KEY:
            check_position_ids(v, max_positions)
        if k in DROPPED_KEYS:
            continue
        out[k] = v
    return out


def state_dict_key_hash(shapes: Mapping[str, Sequence[int]]) -> str:
    """md5 fingerprint of a state dict's keys and shapes, DiffSynth-Studio's recipe
    (``hash_state_dict_keys(sd, with_shape=True)``), under which the official
    ``ImageReward.pt`` is registered as ``b3cc8e10b76ca98cde653daa5cf63139``: for every
    key the two entries ``"key:d0_d1_..."`` and ``"key"``, sorted, joined by ``","``."""
    import hashlib

    entries = []
    for k, shape in shapes.items():
        entries += [f"{k}:{'_'.join(str(int(d)) for d in shape)}", k]
    return hashlib.md5(",".join(sorted(entries)).encode("utf-8")).hexdigest()


def infer_vision_config(sd: Mapping[str, torch.Tensor], num_heads: int | None = None) -> dict[str, int]:
    """What the checkpoint's shapes say about its ViT (heads excepted)."""
    w = sd.get("blip.visual_encoder.patch_embed.proj.weight")
    pos = sd.get("blip.visual_encoder.pos_embed")
    if w is None or pos is None:
        return {}
    dim, patch = int(w.shape[0]), int(w.shape[-1])
    side = math.isqrt(int(pos.shape[1]) - 1)
    depth = 1 + max(
        (int(k.split(".")[3]) for k in sd if k.startswith("blip.visual_encoder.blocks.")), default=-1
    )
    out = {"img_size": side * patch, "patch_size": patch, "embed_dim": dim, "depth": depth}
    if num_heads:
        out["num_heads"] = num_heads
    return out
