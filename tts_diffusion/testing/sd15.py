"""An SD-1.5-architecture pipeline with random weights at real size (or a tiny one), built
in code: UNet2DConditionModel and AutoencoderKL with runwayml/stable-diffusion-v1-5's
configs, a CLIP text encoder (ViT-L/14 text tower) and the full CLIP BPE vocabulary. For
speed benchmarks that need the real shapes and no download, and the command-line options of
their best-of-N setting (`add_best_of_n_args`)."""
from __future__ import annotations

import argparse

import torch


def add_best_of_n_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of the SD-1.5-size best-of-N speed setting (best-of-32, 512x512, 25 DDIM steps,
    CFG 7.5) that the speed benchmarks share: --device, --n, --steps, --size, --guidance,
    --max-batch, --repeats and --tiny (`build_sd15`'s tiny models, a CPU smoke test)."""
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--max-batch", type=int, default=32, help="rows per denoiser call (CFG doubles the UNet batch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="tiny models (CPU smoke test)")
    return ap


def build_sd15(device: torch.device | str, dtype: torch.dtype, tiny: bool = False):
    """An SD-1.5-shaped pipeline with random weights (no download)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tts_diffusion.testing.tiny_pipelines import clip_tokenizer

    torch.manual_seed(0)
    if tiny:
        unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4,
                                    out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                    norm_num_groups=8)
        vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)
        tok = clip_tokenizer()
        te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    else:
        unet = UNet2DConditionModel(  # runwayml/stable-diffusion-v1-5 unet/config.json
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(  # its vae/config.json
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512)
        tok = clip_tokenizer(num_merges=48894)  # the full CLIP BPE vocabulary (49408)
        te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                          num_attention_heads=12, max_position_embeddings=77))
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device, dtype)
