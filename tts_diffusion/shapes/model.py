"""The recipe of the embedded default text-to-image model of the shapes world.

A small PixArt-Sigma-layout pipeline, loadable offline with plain diffusers::

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(str(tts_diffusion.paths.default_model_path()))   # -> PixArtSigmaPipeline
    images = pipe("a photo of a red circle", **pipe_call_kwargs(pipe)).images

Components (sizes in `ShapesModelConfig`):

- ``tokenizer``: a word-level ``tokenizers`` tokenizer over the grammar's `VOCABULARY`, built in
  code (no download), saved as a ``PreTrainedTokenizerFast``; T5 special ids: pad ``<pad>`` = 0,
  eos ``</s>`` = 1 (appended to every prompt), unk ``<unk>`` = 2. ``model_max_length`` is small
  (prompts are at most 10 words), and ``max_sequence_length`` should be passed to the pipeline,
  whose default (300) only pads with masked tokens and costs time.
- ``text_encoder``: a small ``T5EncoderModel`` (T5 v1.1 gated-GELU), trained jointly with the
  transformer from scratch.
- ``transformer``: ``PixArtTransformer2DModel`` (adaLN-single DiT with cross-attention to the
  text), ``out_channels == in_channels`` so the pipeline does not split a learned sigma.
- ``vae``: ``AutoencoderKL`` with two downsamplings (f = 4): 64x64x3 images <-> 16x16x4 latents.
  The per-channel latent mean is folded into the VAE's quant convolutions (`fold_latent_mean`),
  so latents are centred and only ``scaling_factor`` is needed, which is all PixArt's pipeline
  applies (it ignores ``shift_factor``).
- ``scheduler``: rectified flow ``x_t = (1 - t) x_0 + t eps`` (Liu et al. 2022; Esser et al.
  2024, eq. 3 with a = 1 - t, b = t); the transformer predicts the velocity ``v = eps - x_0`` at
  ``timestep = 1000 t``. Sampling is the Euler ODE step ``x_{t'} = x_t + (t' - t) v``, run by
  ``DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
  solver_order=1)``: first-order DPM-Solver++ is DDIM, and DDIM on this interpolant is exactly
  the Euler step (x_{t'} = (1 - t') x0_hat + t' eps_hat with x0_hat = x_t - t v). ``flow_shift``
  warps the grid ``t -> s t / (1 + (s - 1) t)`` (Esser et al. 2024, eq. 23).
  ``FlowMatchEulerDiscreteScheduler`` cannot be used: in diffusers 0.42.1 it has neither
  ``init_noise_sigma`` nor ``scale_model_input``, which ``PixArtSigmaPipeline.__call__`` calls
  (AttributeError at the first call). The DPM-Solver scheduler passes integer timesteps
  ``floor(1000 t)`` to the transformer, like every DDPM-style scheduler.

PixArt's ``__call__`` needs ``use_resolution_binning=False`` (its aspect-ratio bins know only
transformer sample sizes 32..256) and ``clean_caption=False`` (else it needs bs4 + ftfy);
`pipe_call_kwargs` returns these with the model's own defaults (steps, guidance, size).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..paths import default_model_path
from .grammar import VOCABULARIES, VOCABULARY

__all__ = [
    "ShapesModelConfig",
    "ARCHITECTURES",
    "architecture",
    "SPECIAL_TOKENS",
    "PIXART_SIGMA_BLOCKS",
    "t5_v11_encoder_config",
    "build_tokenizer",
    "build_text_encoder",
    "build_transformer",
    "build_vae",
    "init_transformer_weights",
    "build_scheduler",
    "assemble_pipeline",
    "save_pipeline",
    "store_weights_as",
    "load_pipeline",
    "pipe_call_kwargs",
    "fold_latent_mean",
    "encode_prompts",
    "model_defaults",
    "MODEL_DEFAULTS_FILE",
    "TTS_DEFAULTS_FILE",
]

#: T5's special tokens and their ids (T5 convention: pad 0, eos 1, unk 2).
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "</s>", "<unk>")

#: A JSON file in the pipeline folder (diffusers ignores it) with the model's sampling
#: defaults and training/evaluation numbers; `pipe_call_kwargs` reads its "defaults" entry.
MODEL_DEFAULTS_FILE = "training_report.json"
#: The sampling defaults in the form `tts_diffusion.pipelines.tts_pipeline` reads (its DEFAULTS_FILE).
TTS_DEFAULTS_FILE = "tts_defaults.json"


@dataclass
class ShapesModelConfig:
    """Sizes of the model (defaults: the v1 model; `ARCHITECTURES` names each version)."""

    image_size: int = 64
    # VAE: len(vae_channels) - 1 downsamplings -> f = 4
    vae_channels: tuple[int, ...] = (32, 64, 128)
    vae_layers_per_block: int = 1
    latent_channels: int = 4
    #: self-attention in the VAE's mid block (diffusers' default)
    vae_mid_attention: bool = True
    # transformer
    heads: int = 6
    head_dim: int = 32
    layers: int = 5
    patch_size: int = 2
    # text encoder (T5 v1.1 layout)
    text_dim: int = 192
    text_heads: int = 6
    text_head_dim: int = 32
    text_ff: int = 512
    text_layers: int = 4
    max_length: int = 16
    # sampling defaults
    num_inference_steps: int = 20
    guidance_scale: float = 4.5
    shift: float = 1.0
    #: the prompt grammar the model is trained on (`tts_defaults.json` records it)
    grammar: str = "v1"
    vocabulary: list[str] = field(default_factory=lambda: list(VOCABULARIES["v1"]))

    @property
    def tokens(self) -> int:
        """Side of the transformer's token grid (latent side / patch)."""
        return self.latent_size // self.patch_size

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_scale_factor

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["vae_channels"] = list(self.vae_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShapesModelConfig":
        d = dict(d)
        if "vae_channels" in d:
            d["vae_channels"] = tuple(d["vae_channels"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


#: The model versions: v1 (64 px, 8x8 tokens; what `ShapesModelConfig()` gives) and v2
#: (144 px, a 12x12 token grid: VAE f = 4 to 36x36x4 latents, patch 3; v1's transformer
#: widths, a deeper text encoder). The token count is set by the CPU budget (a search at equal
#: NFE <= 3x v1's): see MODEL_CARD.md, "Architecture".
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "v1": {},
    "v2": dict(image_size=144, vae_channels=(16, 32, 64), heads=6, head_dim=32, layers=5, patch_size=3,
               text_dim=192, text_heads=6, text_head_dim=32, text_ff=512, text_layers=6, max_length=16,
               grammar="v2"),
}


def architecture(name: str, **overrides) -> ShapesModelConfig:
    """The `ShapesModelConfig` of model version `name` ("v1", "v2"), with `overrides`."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; available: {', '.join(ARCHITECTURES)}")
    kw = {**ARCHITECTURES[name], **overrides}
    kw.setdefault("vocabulary", list(VOCABULARIES[kw.get("grammar", "v1")]))
    return ShapesModelConfig(**kw)


# ----------------------------------------------------------------------------- components
#: PixArt-Sigma's DiT blocks (adaLN-single conditioning, biased attention, tanh-GELU, no
#: resolution/aspect micro-conditions): the settings of the real checkpoint, shared by this
#: model and the tiny ``pixart_sigma`` test pipeline (`tts_diffusion.testing.tiny_pipelines`).
PIXART_SIGMA_BLOCKS: dict[str, Any] = dict(
    attention_bias=True,
    activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000,
    norm_type="ada_norm_single",
    norm_elementwise_affine=False,
    norm_eps=1e-6,
    use_additional_conditions=False,
)


def t5_v11_encoder_config(vocab_size: int, *, d_model: int, d_kv: int, d_ff: int, num_layers: int, num_heads: int,
                          relative_attention_num_buckets: int, **extra):
    """``T5Config`` of a T5 v1.1 encoder (gated-GELU feed-forward, as the T5-XXL text encoders of
    PixArt-Sigma, SD3 and FLUX): encoder only, no cache, no dropout, T5's pad id 0 and eos id 1;
    `extra` adds fields. This model's text encoder and the tiny test pipelines' use it."""
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=relative_attention_num_buckets,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        **extra,
    )


def build_tokenizer(vocabulary: Sequence[str] = VOCABULARY, max_length: int = 16):
    """Word-level T5-style tokenizer over `vocabulary`, built with ``tokenizers`` (no download).

    Ids: <pad>=0, </s>=1, <unk>=2, then the words in sorted order. Text is NFKC-normalised,
    lower-cased, punctuation becomes a space, and words are split on whitespace; "</s>" is
    appended to every sequence (as T5 does), so the empty prompt is the single token </s>.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in sorted(set(vocabulary)):
        if w not in vocab:
            vocab[w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s<>/]"), " ")]
    )
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
        padding_side="right",
    )


def build_text_encoder(cfg: ShapesModelConfig, vocab_size: int):
    """A small T5 v1.1 encoder (gated-GELU feed-forward, relative position buckets)."""
    from transformers import T5EncoderModel

    config = t5_v11_encoder_config(
        vocab_size, d_model=cfg.text_dim, d_kv=cfg.text_head_dim, d_ff=cfg.text_ff, num_layers=cfg.text_layers,
        num_heads=cfg.text_heads, relative_attention_num_buckets=16, tie_word_embeddings=False,
    )
    return T5EncoderModel(config)


def build_transformer(cfg: ShapesModelConfig):
    """PixArt-Sigma's DiT at toy scale: velocity output only (out_channels = in_channels)."""
    from diffusers import PixArtTransformer2DModel

    inner = cfg.heads * cfg.head_dim
    return PixArtTransformer2DModel(
        num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        num_layers=cfg.layers,
        cross_attention_dim=inner,
        sample_size=cfg.latent_size,
        patch_size=cfg.patch_size,
        caption_channels=cfg.text_dim,
        norm_num_groups=32,
        interpolation_scale=1,
        **PIXART_SIGMA_BLOCKS,
    )


@torch.no_grad()
def init_transformer_weights(transformer) -> None:
    """PixArt's initialisation (Chen et al. 2023, PixArt-alpha code, ``initialize_weights``,
    after DiT): Xavier-uniform linears and patch embedding, N(0, 0.02) timestep and caption
    MLPs, zero cross-attention output projections and a zero output layer, so every block
    starts close to the identity and the first prediction is 0."""
    import torch.nn as nn

    for m in transformer.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    w = transformer.pos_embed.proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(transformer.pos_embed.proj.bias)
    emb = transformer.adaln_single.emb.timestep_embedder
    for lin in (emb.linear_1, emb.linear_2, transformer.adaln_single.linear):
        nn.init.normal_(lin.weight, std=0.02)
    if transformer.caption_projection is not None:
        for lin in (transformer.caption_projection.linear_1, transformer.caption_projection.linear_2):
            nn.init.normal_(lin.weight, std=0.02)
    for block in transformer.transformer_blocks:
        out = block.attn2.to_out[0]
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
    nn.init.zeros_(transformer.proj_out.weight)
    nn.init.zeros_(transformer.proj_out.bias)


def build_vae(cfg: ShapesModelConfig):
    """AutoencoderKL for the renders (f = 2 ** (len(vae_channels) - 1))."""
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=min(32, cfg.vae_channels[0]),
        sample_size=cfg.image_size,
        scaling_factor=1.0,
        mid_block_add_attention=cfg.vae_mid_attention,
    )


def build_scheduler(shift: float = 1.0):
    """The flow-matching Euler sampler that PixArtSigmaPipeline can drive (see module docstring):
    sigmas ``linspace(1, 0)`` warped by `shift`, velocity ("flow_prediction") model output."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        use_flow_sigmas=True,
        prediction_type="flow_prediction",
        flow_shift=float(shift),
        solver_order=1,
        algorithm_type="dpmsolver++",
        final_sigmas_type="zero",
        lower_order_final=True,
    )


@torch.no_grad()
def fold_latent_mean(vae, mean: torch.Tensor) -> None:
    """Centre the VAE's latents in place: the posterior mean becomes ``z - mean`` and the
    decoder sees ``z' + mean`` through ``post_quant_conv`` (a 1x1 conv, W (z' + m) + b =
    W z' + (W m + b)), so encode/decode round trips are unchanged. `mean` has
    ``latent_channels`` entries. Requires the VAE's quant convs (``use_quant_conv`` and
    ``use_post_quant_conv``, diffusers' defaults)."""
    c = vae.config.latent_channels
    mean = mean.to(vae.quant_conv.bias.device, torch.float32).view(c)
    # quant_conv outputs (mean, logvar): shift only the first c channels
    vae.quant_conv.bias[:c] -= mean.to(vae.quant_conv.bias.dtype)
    w = vae.post_quant_conv.weight.float().view(vae.post_quant_conv.weight.shape[0], c)
    vae.post_quant_conv.bias += (w @ mean).to(vae.post_quant_conv.bias.dtype)


def assemble_pipeline(tokenizer, text_encoder, transformer, vae, scheduler):
    """The diffusers ``PixArtSigmaPipeline`` made of the given components."""
    from diffusers import PixArtSigmaPipeline

    pipe = PixArtSigmaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe, path: str | os.PathLike, report: dict | None = None,
                  weights_dtype: torch.dtype = torch.float32) -> Path:
    """``save_pretrained`` in safetensors, with the tokenizer recorded as
    ``PreTrainedTokenizerFast`` (the class name that both transformers 4.x and 5.x load;
    transformers 5 would otherwise write its internal ``TokenizersBackend``). `report`
    (defaults, training and evaluation numbers) goes to `MODEL_DEFAULTS_FILE`, and its
    config's ``grammar`` to `TTS_DEFAULTS_FILE`. `weights_dtype` float16 halves the files
    (`store_weights_as`); loading still gives float32 unless a dtype is asked for."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path, safe_serialization=True)
    if weights_dtype != torch.float32:
        store_weights_as(path, weights_dtype)
    index_file = path / "model_index.json"
    index = json.loads(index_file.read_text())
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    tok_cfg_file = path / "tokenizer" / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_file.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg_file.write_text(json.dumps(tok_cfg, indent=2, sort_keys=True) + "\n")
    # T5EncoderModel may write a generation config; an encoder never generates
    gen = path / "text_encoder" / "generation_config.json"
    if gen.exists():
        gen.unlink()
    if report is not None:
        (path / MODEL_DEFAULTS_FILE).write_text(json.dumps(report, indent=2) + "\n")
        d = report.get("defaults")
        if d:
            size = pipe.transformer.config.sample_size * pipe.vae_scale_factor
            tts = {"num_inference_steps": int(d["num_inference_steps"]), "guidance_scale": float(d["guidance_scale"]),
                   "height": size, "width": size, "max_sequence_length": int(d["max_sequence_length"])}
            grammar = (report.get("config") or {}).get("grammar")
            if grammar:
                tts["grammar"] = grammar
            (path / TTS_DEFAULTS_FILE).write_text(json.dumps(tts) + "\n")
    for f in path.rglob("*"):  # safetensors writes 0600 files; assets are meant to be shared
        if f.is_file():
            f.chmod(0o644)
    return path


def store_weights_as(path: str | os.PathLike, dtype: torch.dtype) -> dict[str, float]:
    """Rewrite every ``*.safetensors`` under the pipeline folder `path` with its floating-point
    tensors in `dtype` (float16 / bfloat16), and record float32 as the text encoder's ``dtype``
    so that transformers' ``dtype="auto"`` loads it in float32 like the diffusers components
    (which load in float32 unless ``torch_dtype`` says otherwise). Returns, per file, the largest
    relative rounding error of a tensor (max |w - w16| / max |w|); refuses a tensor that would
    overflow `dtype`."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    limit = torch.finfo(dtype).max
    errors = {}
    for f in sorted(path.rglob("*.safetensors")):
        tensors = load_file(str(f))
        out, worst = {}, 0.0
        for k, t in tensors.items():
            if not t.is_floating_point():
                out[k] = t
                continue
            peak = t.abs().max().item() if t.numel() else 0.0
            if not peak < limit:
                raise ValueError(f"{f.relative_to(path)}: {k} has |w| up to {peak:.3g}, beyond {dtype}")
            out[k] = t.to(dtype).contiguous()
            if peak > 0:
                worst = max(worst, ((out[k].float() - t.float()).abs().max() / peak).item())
        save_file(out, str(f), metadata={"format": "pt"})
        errors[str(f.relative_to(path))] = worst
    te_cfg = path / "text_encoder" / "config.json"
    if te_cfg.is_file():
        cfg = json.loads(te_cfg.read_text())
        cfg["dtype"] = "float32"
        cfg.pop("torch_dtype", None)
        te_cfg.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return errors


def load_pipeline(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
):
    """Load the default model (``paths.default_model_path()`` unless `path`) offline, progress bar off."""
    from diffusers import DiffusionPipeline

    from ..errors import MissingWeightsError

    path = Path(path) if path is not None else default_model_path()
    if not (path / "model_index.json").is_file():
        raise MissingWeightsError(
            f"no diffusers pipeline at {path} (model_index.json missing); build it with "
            "`python scripts/train_shapes_model.py --out tts_diffusion/assets/shapes-model` or set TTS_DIFFUSION_ASSETS"
        )
    pipe = DiffusionPipeline.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def model_defaults(pipe_or_path) -> dict[str, Any]:
    """The sampling defaults recorded with a saved model (steps, guidance, max_sequence_length),
    falling back to `ShapesModelConfig`'s for an unsaved pipeline."""
    path = pipe_or_path if isinstance(pipe_or_path, (str, os.PathLike)) else getattr(
        getattr(pipe_or_path, "config", None), "_name_or_path", None
    )
    cfg = ShapesModelConfig()
    defaults = {
        "num_inference_steps": cfg.num_inference_steps,
        "guidance_scale": cfg.guidance_scale,
        "max_sequence_length": cfg.max_length,
    }
    if path:
        f = Path(path) / MODEL_DEFAULTS_FILE
        if f.is_file():
            defaults.update(json.loads(f.read_text()).get("defaults", {}))
    return defaults


def pipe_call_kwargs(pipe=None, **overrides) -> dict[str, Any]:
    """Keyword arguments for ``pipe(prompt, **kwargs)`` with the model's defaults: size from the
    transformer config, steps and guidance recorded at training, no resolution binning, no
    caption cleaning, and the tokenizer's short ``max_sequence_length``."""
    kw: dict[str, Any] = dict(use_resolution_binning=False, clean_caption=False)
    if pipe is not None:
        d = model_defaults(pipe)
        size = pipe.transformer.config.sample_size * pipe.vae_scale_factor
        kw.update(
            height=size,
            width=size,
            num_inference_steps=int(d["num_inference_steps"]),
            guidance_scale=float(d["guidance_scale"]),
            max_sequence_length=int(min(d["max_sequence_length"], pipe.tokenizer.model_max_length)),
        )
    kw.update(overrides)
    return kw


def encode_prompts(tokenizer, prompts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask [N, max_length] exactly as PixArt's ``encode_prompt`` makes
    them (``padding="max_length"``, truncation, eos appended)."""
    out = tokenizer(
        list(prompts), padding="max_length", max_length=max_length, truncation=True, add_special_tokens=True,
        return_tensors="pt",
    )
    return out.input_ids, out.attention_mask
