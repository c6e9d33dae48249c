"""Tiny, random-initialised, fully offline diffusers pipelines for faithfulness tests.

One builder per model family, all float32 on CPU with the progress bar disabled.  Nothing is
downloaded: the CLIP BPE tokenizer is rebuilt from the merges file that ships inside
``open_clip`` and the T5-like tokenizer is a small Unigram vocabulary built with ``tokenizers``.
Every component is created right after ``torch.manual_seed(seed)``, so two builds with the same
seed are bit-identical.

Usage::

    pipe = make_tiny_pipeline("sd3", seed=0)
    out = pipe(prompt="a red circle", num_inference_steps=2, guidance_scale=5.0,
               generator=torch.Generator().manual_seed(0), output_type="pt",
               **pipeline_call_kwargs("sd3"))

Families (all VAEs have two levels, so ``vae_scale_factor == 2``; ``h``/``w`` are pixels):

* ``sd15``  StableDiffusionPipeline, UNet2DConditionModel (32, 64), CLIPTextModel (hidden 32),
  DDIM (scaled_linear 0.00085..0.012, "leading", steps_offset 1, epsilon, set_alpha_to_one False).
  Legal h, w: multiples of 8 (``check_inputs`` hard-codes ``% 8``; latents are h/2 x w/2).
* ``sd21v`` same, UNet with linear projections, ``prediction_type="v_prediction"``. Multiples of 8.
* ``sdxl``  StableDiffusionXLPipeline, CLIPTextModel + CLIPTextModelWithProjection (32 + 32 ->
  cross_attention_dim 64, pooled projection 32), UNet ``addition_embed_type="text_time"``,
  ``addition_time_embed_dim=8``, ``projection_class_embeddings_input_dim = 6*8 + 32 = 80``,
  ``force_zeros_for_empty_prompt=True``, no watermarker, DDIM as sd15. Multiples of 8.
* ``pixart_sigma`` PixArtSigmaPipeline, PixArtTransformer2DModel (patch 2, learned sigma:
  ``out_channels = 2 * in_channels = 8``), T5EncoderModel (d_model 32), DDIM with the real
  checkpoint's ``DPMSolverMultistepScheduler()`` noise schedule (linear 1e-4..0.02, epsilon,
  "linspace", steps_offset 0) and ``set_alpha_to_one=True``. Multiples of 8 (hard-coded ``% 8``;
  also multiples of vae_scale_factor * patch = 4).
* ``sd3``   StableDiffusion3Pipeline, SD3Transformer2DModel (patch 2, 16 latent channels),
  2x CLIPTextModelWithProjection (32 + 32 = 64 zero-padded to T5 d_model 64) + T5EncoderModel,
  FlowMatchEulerDiscreteScheduler(shift=3.0). Multiples of vae_scale_factor * patch_size = 4
  (ValueError otherwise).
* ``flux``  FluxPipeline, FluxTransformer2DModel (``guidance_embeds=True`` as FLUX.1-dev,
  16 latent channels packed 2x2 -> in_channels 64), CLIPTextModel (pooled 32) + T5EncoderModel
  (d_model 32), FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True,
  base/max shift 0.5/1.15, base/max image seq len 256/4096). Multiples of vae_scale_factor * 2 = 4
  (otherwise only a warning and a silent round-down of the output size).

The default test size is 32x32 for every family (``DEFAULT_SIZE``; 16x16 latents).
PixArt: ``use_resolution_binning`` (default True in ``__call__``) only accepts transformer
sample sizes 32/64/128/256 (ours is 16 -> "Invalid sample size") and would snap sizes to a bin,
so always pass ``use_resolution_binning=False`` (``pipeline_call_kwargs`` does). PixArt's default
``clean_caption=True`` needs bs4+ftfy and silently falls back to False when they are missing,
so pass ``clean_caption=False`` explicitly for reproducibility.

CPU threads: use ``torch.set_num_threads(1)`` when comparing outputs bit-for-bit across
processes; the intra-op thread count changes float reduction order (~1e-7 differences), and on a
loaded 2-core machine 2 threads are 10-40x slower than 1 for these tiny models.

Real-model values mirrored: VAE ``scaling_factor``/``shift_factor`` (SD1.5/2.1 0.18215; SDXL and
PixArt-Sigma 0.13025; SD3 1.5305/0.0609 without quant convs; FLUX 0.3611/0.1159 without quant
convs), latent channels (4, 4, 4, 4, 16, 16 -> FLUX packed 64), CLIP max length 77, T5 special ids
(pad 0, eos 1, unk 2), SDXL ``force_zeros_for_empty_prompt=True`` and ``pad_token='!'`` on the
second CLIP tokenizer, SD3 scheduler ``shift=3.0``, FLUX-dev scheduler (``shift=3.0``,
``use_dynamic_shifting=True``, base/max shift 0.5/1.15, base/max seq len 256/4096).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import atexit
import gzip
import json
import shutil
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import torch

from tts_diffusion.shapes.model import PIXART_SIGMA_BLOCKS, t5_v11_encoder_config

FAMILIES = ("sd15", "sd21v", "sdxl", "pixart_sigma", "sd3", "flux")

#: Default (smallest comfortable) pixel size used by the tests for every family.
DEFAULT_SIZE = 32

#: Pixel height/width must be a multiple of this, per family (see module docstring).
SIZE_MULTIPLE = {"sd15": 8, "sd21v": 8, "sdxl": 8, "pixart_sigma": 8, "sd3": 4, "flux": 4}

#: ``max_sequence_length`` passed to the T5-using pipelines in tests (their defaults are
#: PixArt 300, SD3 256, FLUX 512; a non-default value also checks that wrappers forward it).
T5_MAX_SEQUENCE_LENGTH = 32

#: Number of CLIP BPE merges kept (the full CLIP vocab has 48894 merges / 49408 tokens).
CLIP_NUM_MERGES = 1000

# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------

_CACHE_LOCK = threading.Lock()
_PROCESS_CACHE_DIR: str | None = None


def _process_cache_dir() -> str:
    """A temp dir private to this process (removed at exit) for the tokenizer files."""
    global _PROCESS_CACHE_DIR
    with _CACHE_LOCK:
        if _PROCESS_CACHE_DIR is None or not os.path.isdir(_PROCESS_CACHE_DIR):
            _PROCESS_CACHE_DIR = tempfile.mkdtemp(prefix=f"tts_tiny_tok_{os.getpid()}_")
            atexit.register(shutil.rmtree, _PROCESS_CACHE_DIR, True)
        return _PROCESS_CACHE_DIR


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 reversible byte -> unicode map (same as open_clip.tokenizer.bytes_to_unicode)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _clip_bpe_path() -> str:
    """Path of open_clip's ``bpe_simple_vocab_16e6.txt.gz`` (= ``open_clip.tokenizer.default_bpe()``),
    located without importing open_clip (its import costs several seconds)."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = os.path.join(location, "bpe_simple_vocab_16e6.txt.gz")
        if os.path.isfile(candidate):
            return candidate
    import open_clip

    return open_clip.tokenizer.default_bpe()


def _write_clip_tokenizer_files(directory: Path, num_merges: int) -> None:
    bpe_path = _clip_bpe_path()
    with gzip.open(bpe_path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    # Line 0 is the "#version" header; CLIP uses lines[1 : 49152 - 256 - 2 + 1].
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]][:num_merges]
    byte_tokens = list(_bytes_to_unicode().values())
    vocab_list = byte_tokens + [t + "</w>" for t in byte_tokens]
    vocab_list += ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    assert len(vocab) == len(vocab_list), "duplicate CLIP vocab entries"

    directory.mkdir(parents=True, exist_ok=True)
    tmp_suffix = f".tmp{os.getpid()}_{threading.get_ident()}"
    files = {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
        "tokenizer_config.json": json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "do_lower_case": True,
            }
        ),
    }
    # tokenizer_config.json last: its presence marks a complete directory.
    for name, text in files.items():
        tmp = directory / (name + tmp_suffix)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, directory / name)


def clip_tokenizer(cache_dir: str | os.PathLike | None = None, *, pad_token: str = "<|endoftext|>",
                   num_merges: int = CLIP_NUM_MERGES):
    """A real ``transformers.CLIPTokenizer`` built offline from open_clip's BPE merges.

    The vocab is derived exactly like CLIP's own tokenizer (byte tokens, byte tokens + ``</w>``,
    merges, ``<|startoftext|>``, ``<|endoftext|>``) but truncated to the first ``num_merges``
    merges, so ``len(tokenizer) == 512 + num_merges + 2`` (1514 by default; bos 1512, eos 1513).
    ``model_max_length`` is 77. The files are written once per process into ``cache_dir``
    (default: a per-process temp dir) and loaded with ``from_pretrained`` from that local path.
    ``pad_token='!'`` gives the OpenCLIP-style padding of SDXL's/SD3's second tokenizer.
    """
    from transformers import CLIPTokenizer

    base = Path(cache_dir) if cache_dir is not None else Path(_process_cache_dir())
    directory = base / f"clip_bpe_{num_merges}"
    if not (directory / "tokenizer_config.json").exists():
        _write_clip_tokenizer_files(directory, num_merges)
    kwargs = {} if pad_token == "<|endoftext|>" else {"pad_token": pad_token}
    tok = CLIPTokenizer.from_pretrained(str(directory), local_files_only=True, **kwargs)
    if len(tok) != 512 + num_merges + 2 or tok.model_max_length != 77:
        raise RuntimeError(f"offline CLIP tokenizer is broken: len={len(tok)}, max={tok.model_max_length}")
    return tok


# Small English vocabulary for the T5-like tokenizer; anything else falls back to characters.
_T5_WORDS = """
a an the of and or with without in on at to from by for under over above below behind near next
is are was be this that these those it its there one two three four five some many few
red green blue yellow orange purple pink black white gray grey brown gold silver colorful dark light
bright circle square triangle cube sphere star heart line shape round big small large tiny tall
short long wide cat dog bird horse cow fish lion tiger bear elephant rabbit fox owl person man
woman child boy girl people face hand car bus truck bicycle boat train plane house building city
street road tree flower forest mountain river lake sea ocean beach sky cloud sun moon snow rain
water fire grass field garden table chair book cup bottle apple banana cake pizza clock lamp
photo photograph painting drawing picture image portrait landscape style art digital oil
watercolor sketch cartoon anime realistic detailed high quality beautiful cute old new happy sad
standing sitting running flying holding wearing eating playing looking left right top bottom
middle background foreground night day morning evening sunset winter summer spring autumn
""".split()


def _t5_vocab() -> list[tuple[str, float]]:
    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    seen = {p for p, _ in vocab}

    def add(piece: str, score: float) -> None:
        if piece not in seen:
            seen.add(piece)
            vocab.append((piece, score))

    for w in dict.fromkeys(_T5_WORDS):
        add("\u2581" + w, -4.0)  # whole words (with the SentencePiece word-boundary marker) win
    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-_/&+*#%@=<>[]{}|~`$^\\"
    for c in chars:
        add("\u2581" + c, -9.0)
        add(c, -10.0)
    return vocab


@lru_cache(maxsize=1)
def _t5_vocab_cached() -> tuple[tuple[str, float], ...]:
    return tuple(_t5_vocab())


def t5_tokenizer(model_max_length: int = 512):
    """A T5-style fast tokenizer (``transformers.T5TokenizerFast``) built offline.

    Unigram model over a small vocabulary (special ids: ``<pad>``=0, ``</s>``=1, ``<unk>``=2),
    lowercase normalizer, T5's WhitespaceSplit + Metaspace("▁") pre-tokenizer/decoder and a
    post-processor that appends ``</s>``. Known words get one id; unknown words fall back to
    single characters (so ids are never all ``<unk>``). No ``<extra_id_*>`` sentinels.
    ``len(tokenizer)`` is the text encoder's ``vocab_size``.
    """
    from tokenizers import normalizers
    from transformers import T5TokenizerFast

    tok = T5TokenizerFast(vocab=list(_t5_vocab_cached()), extra_ids=0, model_max_length=model_max_length)
    tok.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    if (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) != (0, 1, 2):
        raise RuntimeError("T5-like tokenizer special ids are not (0, 1, 2)")
    return tok


# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------


def _seeded(seed: int, factory):
    torch.manual_seed(seed)
    module = factory()
    return module.eval()


def _clip_text_config(tok, hidden_size: int = 32, projection_dim: int = 32, num_layers: int = 2,
                      hidden_act: str = "quick_gelu"):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=37,
        projection_dim=projection_dim,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,  # != 2 -> pooled output taken at the first eos position
        pad_token_id=tok.pad_token_id,
    )


def _t5_encoder(seed: int, tok, d_model: int):
    from transformers import T5EncoderModel

    config = t5_v11_encoder_config(len(tok), d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, decoder_start_token_id=0)
    return _seeded(seed, lambda: T5EncoderModel(config))


def _vae(seed: int, latent_channels: int, scaling_factor: float, shift_factor: float | None = None,
         quant_conv: bool = True):
    from diffusers import AutoencoderKL

    return _seeded(
        seed,
        lambda: AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16),  # two levels -> vae_scale_factor 2
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=8,
            sample_size=32,
            scaling_factor=scaling_factor,
            shift_factor=shift_factor,
            use_quant_conv=quant_conv,
            use_post_quant_conv=quant_conv,
        ),
    )


def _unet(seed: int, **family_kwargs):
    """The sd15 / sd21v / sdxl UNet: two levels (32, 64), one cross-attention level; the
    family's conditioning in `family_kwargs`."""
    from diffusers import UNet2DConditionModel

    return _seeded(
        seed,
        lambda: UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=32,
            **family_kwargs,
        ),
    )


def _ddim(**overrides):
    from diffusers import DDIMScheduler

    config = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )
    config.update(overrides)
    return DDIMScheduler(**config)


def _build_sd(seed: int, v_prediction: bool):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    unet = _unet(
        seed,
        cross_attention_dim=32,
        attention_head_dim=(2, 4) if v_prediction else 4,
        use_linear_projection=v_prediction,  # SD2.x uses linear proj_in/proj_out
    )
    vae = _vae(seed, latent_channels=4, scaling_factor=0.18215)
    tok = clip_tokenizer()
    text_encoder = _seeded(
        seed, lambda: CLIPTextModel(_clip_text_config(tok, hidden_act="gelu" if v_prediction else "quick_gelu"))
    )
    scheduler = _ddim(prediction_type="v_prediction" if v_prediction else "epsilon")
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def _build_sdxl(seed: int):
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tok = clip_tokenizer()
    tok_2 = clip_tokenizer(pad_token="!")
    text_encoder = _seeded(seed, lambda: CLIPTextModel(_clip_text_config(tok, hidden_size=32)))
    text_encoder_2 = _seeded(
        seed,
        lambda: CLIPTextModelWithProjection(
            _clip_text_config(tok_2, hidden_size=32, projection_dim=32, hidden_act="gelu")
        ),
    )
    addition_time_embed_dim = 8
    unet = _unet(
        seed,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time",
        addition_time_embed_dim=addition_time_embed_dim,
        # 6 micro-conditioning ints (orig h,w, crop top,left, target h,w) + pooled TE2 projection
        projection_class_embeddings_input_dim=6 * addition_time_embed_dim + text_encoder_2.config.projection_dim,
        cross_attention_dim=text_encoder.config.hidden_size + text_encoder_2.config.hidden_size,
    )
    vae = _vae(seed, latent_channels=4, scaling_factor=0.13025)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tok,
        tokenizer_2=tok_2,
        unet=unet,
        scheduler=_ddim(),
        image_encoder=None,
        feature_extractor=None,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def _build_pixart_sigma(seed: int):
    from diffusers import PixArtSigmaPipeline, PixArtTransformer2DModel

    tok = t5_tokenizer(model_max_length=300)
    text_encoder = _t5_encoder(seed, tok, d_model=32)
    heads, head_dim = 2, 8
    transformer = _seeded(
        seed,
        lambda: PixArtTransformer2DModel(
            sample_size=16,
            num_layers=2,
            patch_size=2,
            attention_head_dim=head_dim,
            num_attention_heads=heads,
            caption_channels=text_encoder.config.d_model,
            in_channels=4,
            out_channels=8,  # learned sigma: the pipeline keeps noise_pred.chunk(2, dim=1)[0]
            cross_attention_dim=heads * head_dim,
            **PIXART_SIGMA_BLOCKS,  # no resolution/aspect micro-conditions, as PixArt-Sigma
        ),
    )
    vae = _vae(seed, latent_channels=4, scaling_factor=0.13025)  # PixArt-Sigma ships the SDXL VAE
    # The real checkpoint uses DPMSolverMultistepScheduler() with default config (linear betas
    # 1e-4..0.02, epsilon, timestep_spacing "linspace", steps_offset 0, final step to sigma 0).
    # Same noise schedule here, DDIM sampler; set_alpha_to_one=True -> last step lands on x0.
    scheduler = _ddim(
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        timestep_spacing="linspace",
        steps_offset=0,
        set_alpha_to_one=True,
    )
    return PixArtSigmaPipeline(
        tokenizer=tok, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def _build_sd3(seed: int):
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tok = clip_tokenizer()
    tok_2 = clip_tokenizer(pad_token="!")
    tok_3 = t5_tokenizer(model_max_length=512)
    text_encoder = _seeded(
        seed, lambda: CLIPTextModelWithProjection(_clip_text_config(tok, hidden_size=32, projection_dim=32))
    )
    text_encoder_2 = _seeded(
        seed + 1,  # different weights from text_encoder (as CLIP-L vs CLIP-G)
        lambda: CLIPTextModelWithProjection(
            _clip_text_config(tok_2, hidden_size=32, projection_dim=32, hidden_act="gelu")
        ),
    )
    # joint_attention_dim = T5 d_model >= concat of the two CLIP hidden sizes (zero-padded up to it).
    text_encoder_3 = _t5_encoder(seed, tok_3, d_model=64)
    heads, head_dim = 2, 16
    transformer = _seeded(
        seed,
        lambda: SD3Transformer2DModel(
            sample_size=16,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=2,
            attention_head_dim=head_dim,
            num_attention_heads=heads,
            joint_attention_dim=text_encoder_3.config.d_model,
            caption_projection_dim=heads * head_dim,
            pooled_projection_dim=text_encoder.config.projection_dim + text_encoder_2.config.projection_dim,
            pos_embed_max_size=32,
        ),
    )
    vae = _vae(seed, latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tok_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tok_3,
    )


def _build_flux(seed: int):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    tok = clip_tokenizer()
    tok_2 = t5_tokenizer(model_max_length=512)
    text_encoder = _seeded(seed, lambda: CLIPTextModel(_clip_text_config(tok, hidden_size=32)))
    text_encoder_2 = _t5_encoder(seed, tok_2, d_model=32)
    latent_channels = 16
    transformer = _seeded(
        seed,
        lambda: FluxTransformer2DModel(
            patch_size=1,
            in_channels=4 * latent_channels,  # 2x2-packed latents
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=text_encoder_2.config.d_model,
            pooled_projection_dim=text_encoder.config.hidden_size,  # CLIPTextModel pooler_output
            guidance_embeds=True,  # FLUX.1-dev
            axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
        ),
    )
    vae = _vae(seed, latent_channels=latent_channels, scaling_factor=0.3611, shift_factor=0.1159, quant_conv=False)
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tok_2,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )


_BUILDERS = {
    "sd15": lambda seed: _build_sd(seed, v_prediction=False),
    "sd21v": lambda seed: _build_sd(seed, v_prediction=True),
    "sdxl": _build_sdxl,
    "pixart_sigma": _build_pixart_sigma,
    "sd3": _build_sd3,
    "flux": _build_flux,
}


def make_tiny_pipeline(family: str, seed: int = 0):
    """Build the tiny pipeline of ``family`` (one of ``FAMILIES``): float32, CPU, no progress bar.

    Deterministic: each component is built right after ``torch.manual_seed(seed)`` (the global
    RNG state is saved and restored, so callers' RNG streams are untouched).
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    with torch.random.fork_rng(devices=[]):
        pipe = _BUILDERS[family](seed)
    pipe = pipe.to("cpu")
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module) and component.dtype != torch.float32:
            raise RuntimeError(f"{family}: {name} is {component.dtype}, expected float32")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_call_kwargs(family: str, height: int = DEFAULT_SIZE, width: int | None = None) -> dict:
    """Extra ``__call__`` keyword arguments for a faithful comparison with the tiny pipeline.

    Always ``height``/``width`` (the pipelines' defaults would be ``sample_size * vae_scale_factor``
    or, for FLUX, 128 * 2 = 256); plus ``use_resolution_binning=False`` and ``clean_caption=False``
    for PixArt, and ``max_sequence_length`` for the T5 pipelines (PixArt, SD3, FLUX).
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    width = height if width is None else width
    mult = SIZE_MULTIPLE[family]
    if height % mult or width % mult:
        raise ValueError(f"{family}: height/width must be multiples of {mult}, got {height}x{width}")
    kwargs: dict = {"height": height, "width": width}
    if family == "pixart_sigma":
        kwargs.update(use_resolution_binning=False, clean_caption=False, max_sequence_length=T5_MAX_SEQUENCE_LENGTH)
    elif family in ("sd3", "flux"):
        kwargs["max_sequence_length"] = T5_MAX_SEQUENCE_LENGTH
    return kwargs


__all__ = [
    "FAMILIES",
    "DEFAULT_SIZE",
    "SIZE_MULTIPLE",
    "T5_MAX_SEQUENCE_LENGTH",
    "clip_tokenizer",
    "t5_tokenizer",
    "make_tiny_pipeline",
    "pipeline_call_kwargs",
]
