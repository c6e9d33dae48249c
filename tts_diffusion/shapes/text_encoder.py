"""The embedded model's text side without transformers: a T5 encoder in torch alone and its
word-level tokenizer over `tokenizers` alone (issue #29: start-up).

Importing transformers costs a CLI run more than the search on a CPU (docs/startup.md): its
`__init__` scans its model sources, and any `PreTrainedModel` pulls in torch._dynamo,
torchvision, scipy and accelerate. The shapes model's text encoder is a 4-layer T5 v1.1 encoder
(gated GELU, relative position bias), 7 MB, so `generate` with the embedded model runs it here:

- `T5Encoder` loads the SAME `text_encoder/model.safetensors` into a module with
  `T5EncoderModel`'s parameter names and computes its forward pass op for op (the SDPA
  attention transformers picks on CPU and GPU, T5's RMS norm, fp32 `wo` under fp16, the fp16
  clamp), so the embeddings are bit-identical (tests/test_startup.py compares them with
  transformers' own class over every prompt of the grammar).
- `WordTokenizer` answers the calls PixArt's `encode_prompt` makes (`padding="max_length"` or
  `"longest"`, `truncation`, `return_tensors="pt"`, `batch_decode`) from `tokenizer.json` the
  way `PreTrainedTokenizerFast` does; any other call or attribute builds the real
  `PreTrainedTokenizerFast` once and hands over to it, so nothing a caller can ask behaves
  differently, only later.

Used only where `pipelines/direct_load.py` is asked for light components (the CLI's runs that do
not compile); `TTSPipeline.from_pretrained` from Python loads transformers' classes as before.
"""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn


class _Config(dict):
    """config.json as attributes (`encoder.config.d_model`), read-only."""

    __getattr__ = dict.__getitem__


class _RMSNorm(nn.Module):
    """T5LayerNorm: scale only, variance in fp32, back to half precision before the scale."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.variance_epsilon = eps

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        variance = h.to(torch.float32).pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            h = h.to(self.weight.dtype)
        return self.weight * h


class _Attention(nn.Module):
    """T5 self-attention: no 1/sqrt(d) scaling, relative position bias added to the scores."""

    def __init__(self, c: _Config, has_bias: bool):
        super().__init__()
        inner = c.num_heads * c.d_kv
        self.n_heads, self.d_kv = c.num_heads, c.d_kv
        self.num_buckets, self.max_distance = c.relative_attention_num_buckets, c.relative_attention_max_distance
        self.q, self.k, self.v = (nn.Linear(c.d_model, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, c.d_model, bias=False)
        if has_bias:
            self.relative_attention_bias = nn.Embedding(self.num_buckets, self.n_heads)

    def _bucket(self, rel: torch.Tensor) -> torch.Tensor:
        """Bidirectional relative-position buckets (Mesh TensorFlow's, as T5Attention computes them)."""
        half = self.num_buckets // 2
        buckets = (rel > 0).to(torch.long) * half
        rel = torch.abs(rel)
        max_exact = half // 2
        large = max_exact + (torch.log(rel.float() / max_exact) / math.log(self.max_distance / max_exact)
                             * (half - max_exact)).to(torch.long)
        large = torch.min(large, torch.full_like(large, half - 1))
        return buckets + torch.where(rel < max_exact, rel, large)

    def compute_bias(self, n: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(n, dtype=torch.long, device=device)
        values = self.relative_attention_bias(self._bucket(pos[None, :] - pos[:, None]))
        return values.permute([2, 0, 1]).unsqueeze(0)  # [1, heads, n, n]

    def forward(self, h: torch.Tensor, mask: torch.Tensor | None, bias: torch.Tensor | None):
        b, n = h.shape[:2]
        q, k, v = (lin(h).view(b, n, -1, self.d_kv).transpose(1, 2) for lin in (self.q, self.k, self.v))
        if bias is None:
            bias = self.compute_bias(n, q.device)
        # transformers' sdpa_attention_forward: the bias, with masked keys at the dtype's minimum, is the additive mask
        attn_mask = bias if mask is None else torch.where(mask, bias, max(torch.finfo(k.dtype).min,
                                                                          torch.finfo(bias.dtype).min))
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.contiguous(), dropout_p=0.0,
                                                         scale=1.0, is_causal=False)
        out = out.reshape(out.shape[0], -1, n, v.shape[-1]).transpose(1, 2).contiguous()
        return self.o(out.reshape(b, n, -1).contiguous()), bias


class _SelfAttentionLayer(nn.Module):
    def __init__(self, c: _Config, has_bias: bool):
        super().__init__()
        self.SelfAttention = _Attention(c, has_bias)
        self.layer_norm = _RMSNorm(c.d_model, c.layer_norm_epsilon)


class _GatedDense(nn.Module):
    def __init__(self, c: _Config):
        super().__init__()
        self.wi_0 = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.wi_1 = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.wo = nn.Linear(c.d_ff, c.d_model, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.wi_0(h)
        gelu = 0.5 * a * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * torch.pow(a, 3.0))))  # gelu_new
        h = gelu * self.wi_1(h)
        if h.dtype != self.wo.weight.dtype and self.wo.weight.dtype != torch.int8:
            h = h.to(self.wo.weight.dtype)  # wo stays fp32 under fp16, as T5's _keep_in_fp32_modules
        return self.wo(h)


class _FeedForwardLayer(nn.Module):
    def __init__(self, c: _Config):
        super().__init__()
        self.DenseReluDense = _GatedDense(c)
        self.layer_norm = _RMSNorm(c.d_model, c.layer_norm_epsilon)


def _clamp_fp16(h: torch.Tensor) -> torch.Tensor:
    if h.dtype != torch.float16:
        return h
    top = torch.where(torch.isinf(h).any(), torch.finfo(h.dtype).max - 1000, torch.finfo(h.dtype).max)
    return torch.clamp(h, min=-top, max=top)


class _Block(nn.Module):
    def __init__(self, c: _Config, has_bias: bool):
        super().__init__()
        self.layer = nn.ModuleList([_SelfAttentionLayer(c, has_bias), _FeedForwardLayer(c)])

    def forward(self, h, mask, bias):
        attn, ff = self.layer
        out, bias = attn.SelfAttention(attn.layer_norm(h), mask, bias)
        h = _clamp_fp16(h + out)
        h = _clamp_fp16(h + ff.DenseReluDense(ff.layer_norm(h)))
        return h, bias


class _Stack(nn.Module):
    def __init__(self, c: _Config, embed: nn.Embedding):
        super().__init__()
        self.embed_tokens = embed
        self.block = nn.ModuleList([_Block(c, i == 0) for i in range(c.num_layers)])
        self.final_layer_norm = _RMSNorm(c.d_model, c.layer_norm_epsilon)


class T5Encoder(nn.Module):
    """`T5EncoderModel` (gated-GELU T5 v1.1 encoder, inference only) with its parameter names;
    `self(input_ids, attention_mask)[0]` is the last hidden state, bit for bit."""

    #: the configurations this module computes exactly as transformers does
    SUPPORTED = {"feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new", "is_decoder": False}

    def __init__(self, config: dict):
        super().__init__()
        self.config = _Config(config)
        self.shared = nn.Embedding(self.config.vocab_size, self.config.d_model)
        self.encoder = _Stack(self.config, self.shared)  # embed_tokens is tied to shared

    @classmethod
    def supports(cls, config: dict) -> bool:
        return all(config.get(k) == v for k, v in cls.SUPPORTED.items()) and config.get("tie_word_embeddings", True)

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype | None = None) -> "T5Encoder":
        """The encoder in `folder` (config.json + model.safetensors), in `dtype` (None: the
        float32 of the file; float16 keeps the `wo` projections in fp32), in eval mode (as
        `T5EncoderModel.from_pretrained` leaves it)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not cls.supports(config):
            raise ValueError(f"{folder} is not a gated-GELU T5 encoder this module computes exactly")
        model = cls(config)  # on the CPU: initialising meta tensors would import torch._dynamo (torch._refs)
        state = load_file(str(folder / "model.safetensors"))
        state.setdefault("encoder.embed_tokens.weight", state.get("shared.weight"))
        if dtype is not None:
            keep = dtype == torch.float16  # transformers keeps `wo` in fp32 for fp16 only
            state = {k: (v if (keep and ".wo." in k) or not v.is_floating_point() else v.to(dtype))
                     for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        model.encoder.embed_tokens = model.shared
        return model.eval()

    @property
    def dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    @property
    def device(self) -> torch.device:
        return next(p.device for p in self.parameters())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        h = self.encoder.embed_tokens(input_ids)
        # transformers' create_bidirectional_mask for SDPA: no mask when nothing is padded
        mask = None
        if attention_mask is not None and not attention_mask.all():
            mask = attention_mask.to(device=h.device, dtype=torch.bool)[:, None, None, :].expand(-1, 1, h.shape[1], -1)
        bias = None
        for block in self.encoder.block:
            h, bias = block(h, mask, bias)
        return (self.encoder.final_layer_norm(h),)


class _Encoding(dict):
    """`BatchEncoding`'s attribute access (`.input_ids`, `.attention_mask`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e


class WordTokenizer:
    """The embedded model's tokenizer (`tokenizer/tokenizer.json`) over `tokenizers` alone,
    for the calls PixArt's `encode_prompt` makes; anything else goes to the real
    `PreTrainedTokenizerFast`, built on first need."""

    #: keyword arguments answered here; a call with any other goes to PreTrainedTokenizerFast
    CALL_KWARGS = {"padding", "max_length", "truncation", "add_special_tokens", "return_tensors",
                   "return_attention_mask"}

    #: attributes diffusers probes components for (hasattr) that PreTrainedTokenizerFast does not
    #: have either (tests/test_startup.py checks): answered here without building it
    ABSENT = frozenset({"is_loaded_in_4bit", "is_loaded_in_8bit"})

    def __init__(self, folder: str | Path):
        from tokenizers import Tokenizer

        self.name_or_path = str(folder)
        self._folder = Path(folder)
        config = json.loads((self._folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        if config.get("padding_side", "right") != "right" or config.get("truncation_side", "right") != "right":
            raise ValueError(f"{folder}: only right padding and truncation are handled here")
        self.model_max_length = int(config["model_max_length"])
        self._tokenizer = Tokenizer.from_file(str(self._folder / "tokenizer.json"))
        self.pad_token = config["pad_token"]
        self.pad_token_id = self._tokenizer.token_to_id(self.pad_token)
        self._real: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: Any = None) -> "WordTokenizer":
        """The tokenizer in `folder` (`dtype` is ignored: as T5Encoder.from_pretrained's signature)."""
        return cls(folder)

    def real(self) -> Any:
        """transformers' PreTrainedTokenizerFast from the same folder."""
        with self._lock:
            if self._real is None:
                from transformers import PreTrainedTokenizerFast

                self._real = PreTrainedTokenizerFast.from_pretrained(str(self._folder))
            return self._real

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in self.ABSENT:
            raise AttributeError(name)
        return getattr(self.real(), name)

    def __len__(self) -> int:
        return len(self.real())

    def __call__(self, text: str | Sequence[str], **kw: Any) -> Any:
        padding, truncation = kw.get("padding", False), kw.get("truncation", False)
        if (set(kw) - self.CALL_KWARGS or kw.get("return_tensors") != "pt" or not kw.get("add_special_tokens", True)
                or kw.get("return_attention_mask") is False or padding not in ("max_length", "longest", True)
                or truncation not in (False, True) or (padding == "max_length" and kw.get("max_length") is None)
                or (truncation and kw.get("max_length") is None)
                or not (isinstance(text, str) or (isinstance(text, (list, tuple)) and text
                                                  and all(isinstance(t, str) for t in text)))):
            return self.real()(text, **kw)
        texts = [text] if isinstance(text, str) else list(text)
        tk = self._tokenizer  # set_truncation_and_padding, as PreTrainedTokenizerFast does per call
        with self._lock:
            if truncation:
                tk.enable_truncation(kw["max_length"], stride=0, strategy="longest_first", direction="right")
            else:
                tk.no_truncation()
            tk.enable_padding(length=kw["max_length"] if padding == "max_length" else None, direction="right",
                              pad_id=self.pad_token_id, pad_type_id=0, pad_token=self.pad_token, pad_to_multiple_of=None)
            encodings = tk.encode_batch(texts, add_special_tokens=True, is_pretokenized=False)
        return _Encoding(input_ids=torch.tensor([e.ids for e in encodings], dtype=torch.long),
                         attention_mask=torch.tensor([e.attention_mask for e in encodings], dtype=torch.long))
