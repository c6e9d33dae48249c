"""The embedded default model (tts_diffusion/assets/shapes-model, `paths.default_model_path()`) and its recipe (tts_diffusion.shapes.model).

Offline and CPU only. Tests of the shipped asset skip (with the command that builds it) when
the asset is not there; the recipe tests always run on tiny random components.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json

import pytest
import torch

from tts_diffusion.paths import default_model_path
from tts_diffusion.shapes import model as M
from tts_diffusion.shapes.grammar import VOCABULARIES, model_grammar

#: the words of the grammar the shipped model speaks (its tokenizer's vocabulary)
VOCABULARY = VOCABULARIES[model_grammar()]

ASSET = default_model_path()
BUILT = (ASSET / "model_index.json").is_file()
needs_asset = pytest.mark.skipif(
    not BUILT, reason=f"{ASSET} not built yet: run `python scripts/train_shapes_model.py --out {ASSET}` on a GPU"
)

MiB = 2**20


@pytest.fixture(scope="module")
def pipe():
    from diffusers import DiffusionPipeline

    p = DiffusionPipeline.from_pretrained(str(ASSET), local_files_only=True)
    p.set_progress_bar_config(disable=True)
    return p


# ----------------------------------------------------------------------------- the asset
@needs_asset
def test_loads_offline_as_pixart_sigma(pipe):
    from diffusers import AutoencoderKL, PixArtSigmaPipeline, PixArtTransformer2DModel
    from transformers import T5EncoderModel

    assert isinstance(pipe, PixArtSigmaPipeline)
    assert isinstance(pipe.transformer, PixArtTransformer2DModel)
    assert isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, T5EncoderModel)
    tr = pipe.transformer.config
    assert tr.out_channels == tr.in_channels  # no learned-sigma split in the pipeline
    sc = pipe.scheduler.config
    assert sc.use_flow_sigmas and sc.prediction_type == "flow_prediction" and sc.solver_order == 1
    assert tr.sample_size * pipe.vae_scale_factor == 64
    assert pipe.transformer.dtype == torch.float32


@needs_asset
def test_file_sizes_within_limits():
    files = {p: p.stat().st_size for p in ASSET.rglob("*") if p.is_file()}
    weights = {p: s for p, s in files.items() if p.suffix in (".safetensors", ".bin", ".pt", ".pth")}
    assert 1 <= len(weights) <= 8
    assert max(weights.values()) <= 16 * MiB, {str(p): s for p, s in weights.items()}
    assert sum(weights.values()) <= 60 * MiB
    assert sum(files.values()) <= 60 * MiB
    assert (ASSET / "MODEL_CARD.md").is_file()


@needs_asset
def test_tokenizer_known_ids(pipe):
    tok = pipe.tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    # ids are 3 + the word's rank in the sorted grammar vocabulary; </s> appended
    assert tok("a photo of a red circle").input_ids == [3, 17, 14, 3, 19, 9, 1]
    assert tok("A photo of three stars.").input_ids == [3, 17, 14, 25, 24, 1]
    assert tok("").input_ids == [1]
    assert tok("a photo of a dragon").input_ids[-2:] == [2, 1]
    for rank, word in enumerate(sorted(VOCABULARY)):
        assert tok(word).input_ids == [3 + rank, 1], word
    # the shipped tokenizer is the one the recipe builds
    assert tok.get_vocab() == M.build_tokenizer(VOCABULARY).get_vocab()
    padded = tok(["a photo of a red circle"], padding="max_length", max_length=16).input_ids[0]
    assert padded == [3, 17, 14, 3, 19, 9, 1] + [0] * 9


@needs_asset
def test_red_circle_passes_the_oracle(pipe):
    from tts_diffusion.shapes.oracle import check_batch

    n, k = 8, 6  # see MODEL_CARD.md: single object / colours are >= 0.9 accurate
    kw = M.pipe_call_kwargs(pipe)
    gens = [torch.Generator().manual_seed(s) for s in range(n)]
    with torch.inference_mode():
        images = pipe(["a photo of a red circle"] * n, generator=gens, output_type="pt", **kw).images
    assert images.shape == (n, 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    results = check_batch(images, "a photo of a red circle")
    ok = sum(r.correct for r in results)
    assert ok >= k, [r.feedback for r in results]


@needs_asset
def test_long_max_sequence_length_gives_the_same_image(pipe):
    """Padding is masked everywhere, so the pipeline's default max_sequence_length (300)
    only costs time; the short one the model card recommends gives the same image."""
    kw = M.pipe_call_kwargs(pipe, num_inference_steps=3)
    outs = []
    for L in (kw["max_sequence_length"], 300):
        kw["max_sequence_length"] = L
        with torch.inference_mode():
            outs.append(pipe("a photo of two squares", generator=torch.Generator().manual_seed(0),
                             output_type="pt", **kw).images)
    assert torch.allclose(outs[0], outs[1], atol=2e-4)


@needs_asset
def test_report_matches_defaults(pipe):
    report = json.loads((ASSET / M.MODEL_DEFAULTS_FILE).read_text())
    d = M.model_defaults(ASSET)
    assert d["num_inference_steps"] == report["defaults"]["num_inference_steps"]
    assert pipe.scheduler.config.flow_shift == pytest.approx(report["defaults"]["shift"])
    assert set(report["eval"]["per_category"]) == {"single_object", "two_object", "counting", "colors", "position",
                                                   "color_attr"}


# ----------------------------------------------------------------------------- the recipe
def _tiny_cfg() -> M.ShapesModelConfig:
    return M.ShapesModelConfig(image_size=16, vae_channels=(8, 8), latent_channels=4, heads=2, head_dim=8,
                               layers=1, text_dim=16, text_heads=2, text_head_dim=8, text_ff=32, text_layers=1)


def test_tokenizer_built_in_code():
    tok = M.build_tokenizer(VOCABULARY, max_length=16)
    assert tok.model_max_length == 16
    assert len(tok) == len(VOCABULARY) + 3
    assert tok("a photo of a red circle").input_ids == [3, 17, 14, 3, 19, 9, 1]


def test_fold_latent_mean_keeps_round_trip():
    torch.manual_seed(0)
    vae = M.build_vae(_tiny_cfg()).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        y = vae.decode(z).sample
        m = z.mean(dim=(0, 2, 3))
        M.fold_latent_mean(vae, m)
        z2 = vae.encode(x).latent_dist.mode()
        y2 = vae.decode(z2).sample
    assert torch.allclose(z2, z - m.view(1, -1, 1, 1), atol=1e-5)
    assert torch.allclose(y2, y, atol=1e-5)


def test_scheduler_is_euler_on_the_rectified_flow():
    """With the exact velocity of a point mass x0, the pipeline's sampler lands on x0: the
    scheduler integrates dx/dt = v with v = eps - x0, x_t = (1 - t) x0 + t eps, timestep 1000 t."""
    cfg = _tiny_cfg()
    tok = M.build_tokenizer(VOCABULARY, cfg.max_length)
    torch.manual_seed(0)
    tr = M.build_transformer(cfg)
    pipe = M.assemble_pipeline(tok, M.build_text_encoder(cfg, len(tok)), tr, M.build_vae(cfg), M.build_scheduler(2.0))
    x0 = torch.randn(1, 4, cfg.latent_size, cfg.latent_size)

    class Exact(torch.nn.Module):
        config, dtype, device = tr.config, torch.float32, torch.device("cpu")

        def forward(self, x, timestep=None, **_):
            t = timestep.float().view(-1, 1, 1, 1) / 1000.0
            return ((x - x0) / t,)  # v = eps - x0 = (x_t - x0) / t

    pipe.transformer = Exact()
    out = pipe("a photo of a circle", generator=torch.Generator().manual_seed(0), output_type="latent",
               **M.pipe_call_kwargs(pipe, num_inference_steps=10)).images
    # integer timesteps floor(1000 t) make the velocity slightly off; the error stays small
    assert (out - x0).abs().max() < 0.02


# ----------------------------------------------------------------------------- the domain CLIP
CLIP_ASSET = ASSET.parent / "shapes-clip"


@pytest.mark.skipif(not (CLIP_ASSET / "open_clip_config.json").is_file(),
                    reason=f"{CLIP_ASSET} not built yet: run `python scripts/train_shapes_clip.py --out {CLIP_ASSET}`")
def test_domain_clip_loads_offline_and_prefers_the_true_prompt():
    import numpy as np
    import open_clip
    import torch.nn.functional as F

    from tts_diffusion.shapes.grammar import sample_scenes
    from tts_diffusion.shapes.mismatch import mismatched_prompt
    from tts_diffusion.shapes.renderer import render

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{CLIP_ASSET}")
    tok = open_clip.get_tokenizer(f"local-dir:{CLIP_ASSET}")
    pre = json.loads((CLIP_ASSET / "open_clip_config.json").read_text())["preprocess_cfg"]
    assert pre["image_size"] == 64 and tok.context_length == 32
    cats = ("single_object", "two_object", "counting", "colors", "color_attr")  # relations are its weak spot
    scenes = sample_scenes(20, seed=7, categories=cats)
    rng = np.random.default_rng(0)
    negatives = [mismatched_prompt(s, rng)[0] for s in scenes]
    x = (render(scenes) - torch.tensor(pre["mean"]).view(1, 3, 1, 1)) / torch.tensor(pre["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        img = F.normalize(model.eval().encode_image(x), dim=-1)
        pos = F.normalize(model.encode_text(tok([s.prompt for s in scenes])), dim=-1)
        neg = F.normalize(model.encode_text(tok(negatives)), dim=-1)
    wins = ((img * pos).sum(-1) > (img * neg).sum(-1)).sum().item()
    assert wins >= 18, wins  # >= 0.99 on held-out renders of these categories (README.md)
