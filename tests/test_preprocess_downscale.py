"""Torch preprocessing (tts_diffusion.verifiers.preprocess) against the upstream PIL
transforms at real downscales: 512 -> 224 and 1024 -> 224 (and non-square 1024 x 768),
on natural-looking images made in code (tts_diffusion/testing/natural_images.py: gradients, shapes with
sharp edges, stripes, grain).

Upstream transforms:
  - ImageReward ``_transform(224)``: Resize(224, BICUBIC) + CenterCrop(224) + ToTensor + Normalize;
  - open_clip ``image_transform_v2`` for ViT-L-14's preprocess config (size 224, bicubic,
    resize_mode shortest, OpenAI mean/std).

Tolerances (measured values in brackets):
  pixels, in uint8 levels before normalisation: mean <= 0.35 [0.26-0.27], max <= 1.5 [0.88-0.99].
    PIL rounds its output to uint8 (uniform rounding error: mean 0.25, max 0.5 level) and
    its first pass to uint8 too (another <= 0.5 level), so ~1 level is the floor; the
    un-antialiased resize is 4-5 levels off on average and a one-pass resize without
    PIL's intermediate clamp up to ~8 levels at saturated edges -- both are checked to fail.
  scores: max |ours - upstream-on-PIL-pixels| <= 2% of the score std across the images
    [ImageReward fixture 0.5%, tiny CLIP at 224 0.4-0.5%]; without antialiasing the gap
    is 8-14% of the std, so the tolerance separates the two.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from image_reward_fixture import CLIP_MEAN as MEAN
from image_reward_fixture import CLIP_STD as STD
from image_reward_fixture import FIX, upstream_transform  # upstream ImageReward.py ``_transform(224)``
from PIL import Image

from tts_diffusion.verifiers import preprocess as pp
from tts_diffusion.testing.natural_images import natural_images, to_float
from tts_diffusion.verifiers.image_reward import ImageRewardVerifier


SIZES = [(512, 512), (1024, 1024), (768, 1024)]
PROMPT = "a red ball on a green field under a blue sky"


def _open_clip_transform():
    """open_clip's inference transform for ViT-L-14's preprocess config."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    vis = open_clip.get_model_config("ViT-L-14")["vision_cfg"]
    cfg = PreprocessCfg(size=vis["image_size"])  # ViT-L-14 keeps the defaults: OpenAI mean/std, bicubic, shortest
    assert cfg.mean == MEAN and cfg.interpolation == "bicubic" and cfg.resize_mode == "shortest"
    return image_transform_v2(cfg, is_train=False)


UPSTREAM = {"image_reward": upstream_transform, "open_clip": _open_clip_transform}


@pytest.fixture(scope="module")
def images() -> dict[tuple[int, int], np.ndarray]:
    return {hw: natural_images(4, hw, seed=3) for hw in SIZES}


def _upstream(arr: np.ndarray, which: str) -> torch.Tensor:
    tf = UPSTREAM[which]()
    return torch.stack([tf(Image.fromarray(im)) for im in arr])


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| of two normalised inputs, in uint8 levels of the [0, 1] image."""
    return (a - b).abs() * torch.tensor(STD).reshape(3, 1, 1) * 255


@pytest.mark.parametrize("which", sorted(UPSTREAM))
@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_pixels_match_upstream_pil_transform(images, which, hw):
    arr = images[hw]
    ref = _upstream(arr, which)
    ours = pp.clip_preprocess(to_float(arr), 224, MEAN, STD)
    assert ours.shape == ref.shape == (4, 3, 224, 224)
    d = _levels(ours, ref)
    assert d.mean() <= 0.35 and d.max() <= 1.5, (float(d.mean()), float(d.max()))


def test_tolerance_rejects_known_wrong_resizes(images, monkeypatch):
    """The pixel tolerance is tight enough to catch (a) no antialiasing, (b) one 2-D pass
    without PIL's clamp between the horizontal and vertical passes."""
    arr = images[(1024, 1024)]
    ref = _upstream(arr, "image_reward")
    x = to_float(arr)
    no_aa = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False, antialias=False).clamp(0, 1)
    one_pass = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    norm = lambda y: (y - torch.tensor(MEAN).reshape(3, 1, 1)) / torch.tensor(STD).reshape(3, 1, 1)  # noqa: E731
    assert _levels(norm(no_aa), ref).mean() > 2.0
    assert _levels(norm(one_pass), ref).max() > 2.0


def _score_pixels(verifier, pixels: torch.Tensor, prompt: str, monkeypatch) -> torch.Tensor:
    """The verifier's score with its preprocessing replaced by ready pixels."""
    with monkeypatch.context() as m:
        m.setattr(verifier, "preprocess", lambda imgs: pixels.to(verifier.device, verifier.dtype))
        return verifier(torch.zeros(len(pixels), 3, 8, 8), prompt)


@pytest.fixture(scope="module")
def tiny_clip_224(tmp_path_factory):
    """A tiny random open_clip model with a 224-px image tower (patch 32)."""
    from tts_diffusion.testing import tiny_clip
    from tts_diffusion.verifiers.clip import CLIPVerifier

    d = tmp_path_factory.mktemp("clip224")
    cfg = {**tiny_clip.TINY_CFG, "vision_cfg": {**tiny_clip.TINY_CFG["vision_cfg"], "image_size": 224, "patch_size": 32}}
    old, tiny_clip.TINY_CFG = tiny_clip.TINY_CFG, cfg
    try:
        tiny_clip.write_tiny_clip(d, seed=1)
    finally:
        tiny_clip.TINY_CFG = old
    return CLIPVerifier(model=str(d))


@pytest.mark.parametrize("hw", [(512, 512), (1024, 1024)], ids=lambda hw: f"{hw[0]}")
def test_scores_match_upstream_preprocessing(images, tiny_clip_224, hw, monkeypatch):
    """Scores through our torch path vs through upstream's PIL pixels, relative to the
    score std across the images: ImageReward (upstream-made fixture weights) and CLIP."""
    arr = np.concatenate([images[hw], natural_images(4, hw, seed=4)])
    x = to_float(arr)
    ir = ImageRewardVerifier(model_dir=FIX)
    for verifier, which in ((ir, "image_reward"), (tiny_clip_224, "open_clip")):
        ref = _score_pixels(verifier, _upstream(arr, which), PROMPT, monkeypatch)
        ours = verifier(x, PROMPT)
        std = ref.std()
        assert std > 0
        gap = (ours - ref).abs().max() / std
        assert gap <= 0.02, (which, float(gap))
        # the same comparison without antialiasing fails: the tolerance is not vacuous
        interpolate = F.interpolate
        with monkeypatch.context() as m:
            m.setattr(F, "interpolate", lambda *a, **k: interpolate(*a, **{**k, "antialias": False}))
            bad = verifier(x, PROMPT)
        assert (bad - ref).abs().max() / std > 0.04, which
