"""Model I/O of each diffusers pipeline architecture: how to encode a prompt, what the
denoiser takes, how latents are laid out and decoded.

This is the only place that knows a pipeline's component names and call signatures. The
sampling math (what the output means, how to step) is in `families.py`; the choice of
family follows the pipeline's *scheduler*, not its architecture (PixArt may run with a
DDPM or a flow-matching scheduler, for example).

Each adapter reproduces exactly what its pipeline's `__call__` does for the same inputs,
so that `DenoisingProcess` with eta = 0 matches the pipeline (see tests/test_faithfulness.py).
"""
from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import torch

from ..errors import TTSInputError

Embeds = dict[str, torch.Tensor]

_LOCK_GUARD = threading.Lock()


def encode_lock(pipe: Any) -> threading.RLock:
    """The lock that serialises prompt encoding on one diffusers pipeline. Its fast
    tokenizers keep padding / truncation settings on the shared backend and the pipelines'
    `encode_prompt` switches them between calls ("max_length", then "longest" to detect
    truncation), so two threads encoding at once can get each other's padding."""
    lock = pipe.__dict__.get("_tts_encode_lock")
    if lock is None:
        with _LOCK_GUARD:
            lock = pipe.__dict__.setdefault("_tts_encode_lock", threading.RLock())
    return lock


def expand_rows(embeds: Embeds, rows: int) -> Embeds:
    """Broadcast conditioning with batch 1 to `rows` rows (no copy where possible)."""
    out = {}
    for k, v in embeds.items():
        out[k] = v.expand(rows, *v.shape[1:]) if v.shape[0] == 1 else v
        if out[k].shape[0] != rows:
            raise ValueError(f"conditioning {k!r} has {v.shape[0]} rows, expected 1 or {rows}")
    return out


def cat_rows(a: Embeds, b: Embeds) -> Embeds:
    return {k: torch.cat([a[k], b[k]]) for k in a}


class ModelAdapter:
    """Base class: a diffusers pipeline seen as (encoder, denoiser, decoder)."""

    #: the model's own guidance is an input embedding (FLUX-dev), not classifier-free guidance
    distilled_guidance: bool = False
    #: the pipeline decodes an fp16 VAE in float32 when its config says `force_upcast`
    #: (SDXL's `needs_upcasting`); the others decode in the VAE's own dtype
    upcasts_vae: bool = False

    def __init__(self, pipe: Any, height: int | None, width: int | None, max_sequence_length: int | None = None):
        self.pipe = pipe
        self.vae = pipe.vae
        self.vae_scale_factor = int(getattr(pipe, "vae_scale_factor", 2 ** (len(self.vae.config.block_out_channels) - 1)))
        default = self.default_size()
        self.height = int(height) if height is not None else default
        self.width = int(width) if width is not None else default
        self.max_sequence_length = max_sequence_length
        self.check_size(self.height, self.width)

    # --- description -----------------------------------------------------------
    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer if getattr(self.pipe, "transformer", None) is not None else self.pipe.unet

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    def default_size(self) -> int:
        sample = getattr(self.pipe, "default_sample_size", None) or self.denoiser.config.sample_size
        return int(sample) * self.vae_scale_factor

    def size_multiple(self) -> int:
        return self.vae_scale_factor

    def check_size(self, height: int, width: int) -> None:
        m = self.size_multiple()
        if height <= 0 or width <= 0 or height % m or width % m:
            raise TTSInputError(
                f"height x width {height}x{width} is not supported by this model: both must be positive"
                f" multiples of {m} (e.g. {self.default_size()}x{self.default_size()})"
            )

    def latent_shape(self, n: int) -> tuple[int, ...]:
        """Shape of the Gaussian noise the pipeline draws (before any packing)."""
        c = self.denoiser.config.in_channels
        return (n, c, self.height // self.vae_scale_factor, self.width // self.vae_scale_factor)

    def pack(self, noise: torch.Tensor) -> torch.Tensor:
        return noise

    def unpack(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def do_cfg(self, guidance_scale: float) -> bool:
        return guidance_scale > 1.0

    def timestep_kwargs(self, scheduler: Any, num_steps: int) -> dict:
        """Extra arguments the pipeline passes to `scheduler.set_timesteps` (flow models)."""
        return {}

    # --- model I/O -----------------------------------------------------------------
    def encode(self, prompt: str, negative_prompt: str | None, cfg: bool) -> tuple[Embeds, Embeds | None]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t: torch.Tensor, embeds: Embeds) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor, vae: torch.nn.Module | None = None) -> torch.Tensor:
        """Latents (native layout) -> float images [B, 3, H, W] in [0, 1], as the pipeline's
        `output_type="pt"` path computes them (with `vae` in place of the pipeline's, e.g. a
        preview decoder, as a drop-in `pipe.vae` would be): in the VAE's dtype, upcast to
        float32 only where the pipeline upcasts (`upcasts_vae`), and mapped to [0, 1] in the
        decoder's output dtype as the pipeline's image processor does, then made float32."""
        latents = self.unpack(latents)
        vae = self.vae if vae is None else vae
        cfg = vae.config
        upcast = self.upcasts_vae and vae.dtype == torch.float16 and getattr(cfg, "force_upcast", False)
        if upcast:
            vae.to(torch.float32)
        try:
            dtype = vae.dtype
            latents = latents.to(dtype)
            mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
            if mean is not None and std is not None:
                c = latents.shape[1]
                mean = torch.tensor(mean).view(1, c, 1, 1).to(latents.device, dtype)
                std = torch.tensor(std).view(1, c, 1, 1).to(latents.device, dtype)
                latents = latents * std / cfg.scaling_factor + mean
            else:
                latents = latents / cfg.scaling_factor
                shift = getattr(cfg, "shift_factor", None)
                if shift is not None:
                    latents = latents + shift
            image = vae.decode(latents, return_dict=False)[0]
        finally:
            if upcast:
                vae.to(torch.float16)
        return (image * 0.5 + 0.5).clamp(0, 1).float()  # VaeImageProcessor.denormalize


class StableDiffusionAdapter(ModelAdapter):
    """SD 1.x / 2.x (UNet2DConditionModel, one CLIP text encoder)."""

    def size_multiple(self) -> int:
        return math.lcm(8, self.vae_scale_factor)  # the SD pipelines require multiples of 8

    def encode(self, prompt, negative_prompt, cfg):
        pos, neg = self.pipe.encode_prompt(prompt, self.device, 1, cfg, negative_prompt)
        return {"encoder_hidden_states": pos}, ({"encoder_hidden_states": neg} if cfg else None)

    def do_cfg(self, guidance_scale):
        return guidance_scale > 1.0 and self.pipe.unet.config.time_cond_proj_dim is None

    def forward(self, x, t, embeds):
        return self.pipe.unet(x, t, encoder_hidden_states=embeds["encoder_hidden_states"], return_dict=False)[0]


class StableDiffusionXLAdapter(StableDiffusionAdapter):
    """SDXL: two text encoders, pooled text embedding and size/crop time ids as added conditioning."""

    upcasts_vae = True

    def encode(self, prompt, negative_prompt, cfg):
        pipe = self.pipe
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt=prompt, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=cfg, negative_prompt=negative_prompt,
        )
        if pipe.text_encoder_2 is None:
            proj_dim = int(pooled.shape[-1])
        else:
            proj_dim = pipe.text_encoder_2.config.projection_dim
        size = (self.height, self.width)
        time_ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=pos.dtype, text_encoder_projection_dim=proj_dim)
        time_ids = time_ids.to(self.device)
        cond = {"encoder_hidden_states": pos, "text_embeds": pooled.to(self.device), "time_ids": time_ids}
        uncond = {"encoder_hidden_states": neg, "text_embeds": neg_pooled.to(self.device), "time_ids": time_ids} if cfg else None
        return cond, uncond

    def forward(self, x, t, embeds):
        added = {"text_embeds": embeds["text_embeds"], "time_ids": embeds["time_ids"]}
        return self.pipe.unet(x, t, encoder_hidden_states=embeds["encoder_hidden_states"],
                              added_cond_kwargs=added, return_dict=False)[0]


class PixArtAdapter(ModelAdapter):
    """PixArt-Sigma / PixArt-alpha: cross-attention DiT with a T5 encoder and attention mask.
    Learned-sigma outputs are split as the pipeline does."""

    def encode(self, prompt, negative_prompt, cfg):
        kw = {}
        if self.max_sequence_length is not None:
            kw["max_sequence_length"] = self.max_sequence_length
        pos, pos_mask, neg, neg_mask = self.pipe.encode_prompt(
            prompt, cfg, negative_prompt="" if negative_prompt is None else negative_prompt,
            num_images_per_prompt=1, device=self.device, clean_caption=False, **kw,
        )
        cond = {"encoder_hidden_states": pos, "encoder_attention_mask": pos_mask}
        uncond = {"encoder_hidden_states": neg, "encoder_attention_mask": neg_mask} if cfg else None
        return cond, uncond

    def forward(self, x, t, embeds):
        tr = self.pipe.transformer
        out = tr(x, encoder_hidden_states=embeds["encoder_hidden_states"],
                 encoder_attention_mask=embeds["encoder_attention_mask"], timestep=t,
                 added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
        if tr.config.out_channels // 2 == x.shape[1]:
            out = out.chunk(2, dim=1)[0]
        return out

    def size_multiple(self) -> int:
        return self.vae_scale_factor * int(self.pipe.transformer.config.patch_size)


class SD3Adapter(ModelAdapter):
    """Stable Diffusion 3 (MMDiT, three text encoders, pooled projection)."""

    def encode(self, prompt, negative_prompt, cfg):
        kw = {}
        if self.max_sequence_length is not None:
            kw["max_sequence_length"] = self.max_sequence_length
        pos, neg, pooled, neg_pooled = self.pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=cfg, negative_prompt=negative_prompt, **kw,
        )
        cond = {"encoder_hidden_states": pos, "pooled_projections": pooled}
        uncond = {"encoder_hidden_states": neg, "pooled_projections": neg_pooled} if cfg else None
        return cond, uncond

    def size_multiple(self) -> int:
        return self.vae_scale_factor * int(self.pipe.transformer.config.patch_size)

    def timestep_kwargs(self, scheduler, num_steps):
        if scheduler.config.get("use_dynamic_shifting", None):
            from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

            p = self.pipe.transformer.config.patch_size
            seq = (self.height // self.vae_scale_factor // p) * (self.width // self.vae_scale_factor // p)
            return {"mu": calculate_shift(seq, scheduler.config.get("base_image_seq_len", 256),
                                          scheduler.config.get("max_image_seq_len", 4096),
                                          scheduler.config.get("base_shift", 0.5),
                                          scheduler.config.get("max_shift", 1.16))}
        return {}

    def forward(self, x, t, embeds):
        return self.pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=embeds["encoder_hidden_states"],
                                     pooled_projections=embeds["pooled_projections"], return_dict=False)[0]


class FluxAdapter(ModelAdapter):
    """FLUX.1: packed 2x2 latents with position ids, guidance as an input embedding
    (`guidance_scale`), and optional true classifier-free guidance (`true_cfg_scale` with a
    negative prompt), as FluxPipeline does."""

    distilled_guidance = True

    def __init__(self, pipe, height, width, max_sequence_length=None):
        super().__init__(pipe, height, width, max_sequence_length)
        h, w = self._latent_hw()
        self.img_ids = pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)
        self.guidance: float | None = None  # set by the process

    def size_multiple(self) -> int:
        return self.vae_scale_factor * 2

    def _latent_hw(self) -> tuple[int, int]:
        return 2 * (self.height // (self.vae_scale_factor * 2)), 2 * (self.width // (self.vae_scale_factor * 2))

    def latent_shape(self, n):
        h, w = self._latent_hw()
        return (n, self.pipe.transformer.config.in_channels // 4, h, w)

    def pack(self, noise):
        b, c, h, w = noise.shape
        return self.pipe._pack_latents(noise, b, c, h, w)

    def unpack(self, latents):
        return self.pipe._unpack_latents(latents, self.height, self.width, self.vae_scale_factor)

    def do_cfg(self, guidance_scale):
        return guidance_scale > 1.0

    def timestep_kwargs(self, scheduler, num_steps):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
        if getattr(scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        h, w = self._latent_hw()
        mu = calculate_shift((h // 2) * (w // 2), scheduler.config.get("base_image_seq_len", 256),
                             scheduler.config.get("max_image_seq_len", 4096),
                             scheduler.config.get("base_shift", 0.5), scheduler.config.get("max_shift", 1.15))
        return {"sigmas": sigmas, "mu": mu}

    def encode(self, prompt, negative_prompt, cfg):
        # the text position ids travel with the embeddings (a leading row axis of 1 so they
        # broadcast like them), never on the adapter: one adapter serves concurrent calls
        kw = {}
        if self.max_sequence_length is not None:
            kw["max_sequence_length"] = self.max_sequence_length
        pos, pooled, txt_ids = self.pipe.encode_prompt(prompt=prompt, prompt_2=None, device=self.device,
                                                       num_images_per_prompt=1, **kw)
        cond = {"encoder_hidden_states": pos, "pooled_projections": pooled, "txt_ids": _row_axis(txt_ids)}
        uncond = None
        if cfg:
            neg, neg_pooled, neg_ids = self.pipe.encode_prompt(prompt=negative_prompt or "", prompt_2=None,
                                                               device=self.device, num_images_per_prompt=1, **kw)
            uncond = {"encoder_hidden_states": neg, "pooled_projections": neg_pooled, "txt_ids": _row_axis(neg_ids)}
        return cond, uncond

    def forward(self, x, t, embeds):
        tr = self.pipe.transformer
        b = x.shape[0]
        guidance = None
        if tr.config.guidance_embeds:
            guidance = torch.full([b], float(self.guidance if self.guidance is not None else 3.5),
                                  device=x.device, dtype=torch.float32)
        t = t.to(x.dtype)
        return tr(hidden_states=x, timestep=t / 1000, guidance=guidance,
                  pooled_projections=embeds["pooled_projections"], encoder_hidden_states=embeds["encoder_hidden_states"],
                  txt_ids=embeds["txt_ids"][0], img_ids=self.img_ids, return_dict=False)[0]


def _row_axis(ids: torch.Tensor) -> torch.Tensor:
    """FLUX position ids [seq, 3] (older diffusers: [1, seq, 3]) -> [1, seq, 3]."""
    return ids if ids.dim() == 3 else ids[None]


def adapter_for(pipe: Any) -> type[ModelAdapter]:
    """The adapter class for a diffusers pipeline, chosen by its components."""
    name = type(pipe).__name__
    if getattr(pipe, "transformer", None) is not None:
        cls = type(pipe.transformer).__name__
        if cls.startswith("Flux"):
            return FluxAdapter
        if cls.startswith("SD3"):
            return SD3Adapter
        if cls.startswith("PixArt"):
            return PixArtAdapter
    if getattr(pipe, "unet", None) is not None:
        if getattr(pipe, "text_encoder_2", None) is not None or "XL" in name:
            return StableDiffusionXLAdapter
        return StableDiffusionAdapter
    raise TTSInputError(
        f"{name} is not supported yet: tts-diffusion wraps Stable Diffusion 1.x/2.x, SDXL, PixArt, SD3 and FLUX pipelines"
    )
