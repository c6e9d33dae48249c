#!/usr/bin/env python
"""Make the ImageReward equivalence fixture with the *upstream* code (THUDM/ImageReward).

The ``image-reward`` package does not import with current transformers (its BLIP "med"
BERT imports helpers that transformers 5 removed) and pins ``timm==0.6.13``, which
conflicts with open-clip-torch. So this script runs the upstream model in an isolated
virtual environment with the versions it needs, and writes a small fixture that
``tests/test_verifier_image_reward.py`` loads into our re-implementation
(``tts_diffusion.verifiers.image_reward``) and compares score by score.

Two stages:

1. ``python scripts/imagereward_reference.py`` (any interpreter of the project):
   creates the venv (default ``/tmp/ir-ref``), installs the pinned upstream stack into it,
   and runs stage 2 inside it. The venv is created with ``--system-site-packages`` so
   that it reuses the interpreter's torch / torchvision / numpy / Pillow: PyPI's Linux
   torchvision wheels link against CUDA torch and do not load next to a CPU-only torch
   wheel, and the model maths does not depend on the torch version. Everything the
   upstream code is version-sensitive to is pinned *inside* the venv and shadows the
   project's copies:

       image-reward==1.5 (--no-deps)   transformers==4.30.2   tokenizers==0.13.3
       timm==0.6.13                    fairscale==0.4.13      huggingface-hub<1

2. ``--inner`` (inside the venv): imports the upstream modules *without* the package's
   ``__init__`` (which pulls in ReFL/diffusers/datasets/openai-clip, none of which the
   reward model uses), builds upstream ``ImageReward`` with a SMALL configuration:

   - vision: upstream ``BLIP.vit.VisionTransformer`` (img 224, patch 16, width 48,
     depth 2, 4 heads) instead of ViT-L (``create_vit`` is swapped for this one call);
   - text: upstream ``BLIP.med.BertModel`` from a small ``med_config.json`` (hidden 32,
     2 layers, 4 heads, vocab = the small ``vocab.txt`` + [DEC] + [ENC]);
   - head: upstream ``MLP`` with input 32 instead of 768 (same 1024-128-64-16-1 layout);
   - tokenizer: upstream ``init_tokenizer`` with ``BertTokenizer.from_pretrained`` pointed
     at the fixture's ``vocab.txt`` instead of the hub's bert-base-uncased;

   then overwrites every parameter with seeded random values (all of them, biases and
   LayerNorm affine included, scaled so activations stay O(1) and scores spread), saves
   the full upstream ``state_dict()`` (including ``blip.vision_proj``/``text_proj`` and the
   ``position_ids`` buffer, as the official ``ImageReward.pt`` has them), six uint8 PNG
   images (four 224x224, so upstream's Resize(224)+CenterCrop(224) is the identity, and
   two of other sizes that exercise the resize), six prompts (mixed case, punctuation,
   accents, unknown characters, one longer than 35 tokens), the upstream tokenizer's
   ``input_ids`` / ``attention_mask`` and the scores of the official per-image API
   ``ImageReward.score(prompt, PIL.Image)``.

Output (``--out``, default ``tests/fixtures/image_reward``): ``ImageReward.pt``,
``med_config.json``, ``vision_config.json``, ``vocab.txt``, ``img*.png``,
``reference.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "image_reward"
PINS = [
    "transformers==4.30.2",
    "tokenizers==0.13.3",
    "timm==0.6.13",
    "huggingface-hub<1",
]
SEED = 1234

# ---------------------------------------------------------------- small configuration
VISION_CONFIG = {"img_size": 224, "patch_size": 16, "embed_dim": 48, "depth": 2, "num_heads": 4}
MED_CONFIG = {  # BLIP's med_config.json keys, shrunk
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 32,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 40,
    "model_type": "bert",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": None,  # filled in: len(vocab.txt) + 2 ([DEC], [ENC])
    "encoder_width": 48,
    "add_cross_attention": True,
}
WORDS = (
    "a an the of on in at and with to is are two three very small large big red blue green yellow "
    "circle circles square squares triangle photo painting portrait cat cats dog dogs woman man hat "
    "sitting standing table night city sunset mountains background birds flying above below left "
    "right side street detailed lait cafe au"
).split()
PROMPTS = [
    "a photo of a red circle",
    "Two BLUE squares, left of a green triangle!",
    "a painting of a cat sitting on a table at night",
    "a very detailed portrait of a woman with a large hat standing in a city at sunset, with "
    "mountains in the background, small birds flying above, and a dog sitting on the right side "
    "of the street",
    "Café au lait -- quokka zebra (3 dogs & 2 cats)",
    "\u4e2d red square \U0001F600 over the Mountains",
]
# (height, width) of the six images; the first four are 224x224 (resize is the identity)
IMAGE_SIZES = [(224, 224), (224, 224), (224, 224), (224, 224), (256, 320), (300, 200)]


def build_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    punct = list(".,!?'-()&:;\"")
    digits = [str(i) for i in range(10)]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = ["##" + c for c in letters] + ["##s", "##ing", "##ed", "##er", "##ly", "##ka", "##bra"]
    out: list[str] = []
    for tok in specials + punct + digits + letters + sorted(set(WORDS)) + pieces:
        if tok not in out:
            out.append(tok)
    return out


# ---------------------------------------------------------------- stage 1: the venv
def make_env(env: Path, python: str) -> Path:
    py = env / "bin" / "python"
    if not py.exists():
        print(f"creating venv {env} (system site packages: torch, torchvision, numpy, Pillow)", flush=True)
        subprocess.run([python, "-m", "venv", "--system-site-packages", str(env)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--no-deps", "image-reward==1.5"], check=True)
    subprocess.run(pip + PINS, check=True)
    # fairscale ships an sdist that builds against the installed torch
    subprocess.run(pip + ["--no-build-isolation", "fairscale==0.4.13"], check=True)
    return py


# ---------------------------------------------------------------- stage 2: upstream model
def _import_upstream():
    """Import upstream ImageReward modules without running the package __init__ files."""
    import importlib.util
    import types

    spec = importlib.util.find_spec("ImageReward")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the image-reward package is not installed in this environment")
    root = Path(list(spec.submodule_search_locations)[0])
    for name, path in (("ImageReward", root), ("ImageReward.models", root / "models")):
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod
    import ImageReward.ImageReward as ir_mod  # noqa: E402
    import ImageReward.models.BLIP.blip as blip_mod
    import ImageReward.models.BLIP.blip_pretrain as pretrain_mod
    import ImageReward.models.BLIP.vit as vit_mod

    return ir_mod, blip_mod, pretrain_mod, vit_mod, root


def _randomise(model, seed: int) -> None:
    """Seeded random values for every parameter: linear/conv weights ~ N(0, 1/fan_in),
    biases ~ N(0, 0.1^2), LayerNorm weight ~ 1 + N(0, 0.1^2), embeddings / cls / pos ~ N(0, 0.5^2)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                v = 0.1 * torch.randn(p.shape, generator=g)
            elif "LayerNorm" in name or ".norm" in name or name.startswith("blip.visual_encoder.norm"):
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif p.ndim >= 2 and "embeddings" not in name and "pos_embed" not in name and "cls_token" not in name:
                fan_in = p[0].numel()
                v = torch.randn(p.shape, generator=g) / fan_in**0.5
            else:
                v = 0.5 * torch.randn(p.shape, generator=g)
            p.copy_(v)


def inner(out: Path) -> None:
    import importlib.metadata as md

    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab()
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    med = dict(MED_CONFIG, vocab_size=len(vocab) + 2)
    (out / "med_config.json").write_text(json.dumps(med, indent=2) + "\n")
    (out / "vision_config.json").write_text(json.dumps(VISION_CONFIG, indent=2) + "\n")

    ir_mod, blip_mod, pretrain_mod, vit_mod, root = _import_upstream()

    # upstream init_tokenizer, with bert-base-uncased replaced by the small local vocab
    real_bert_tokenizer = blip_mod.BertTokenizer

    class _LocalBertTokenizer(real_bert_tokenizer):
        @classmethod
        def from_pretrained(cls, name, *a, **kw):
            assert name == "bert-base-uncased", name
            return real_bert_tokenizer(vocab_file=str(out / "vocab.txt"), do_lower_case=True)

    blip_mod.BertTokenizer = _LocalBertTokenizer

    # upstream VisionTransformer, small (create_vit hard-codes ViT-L for vit='large')
    def small_vit(vit, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        v = vit_mod.VisionTransformer(
            img_size=VISION_CONFIG["img_size"], patch_size=VISION_CONFIG["patch_size"],
            embed_dim=VISION_CONFIG["embed_dim"], depth=VISION_CONFIG["depth"],
            num_heads=VISION_CONFIG["num_heads"], use_grad_checkpointing=use_grad_checkpointing,
            ckpt_layer=ckpt_layer, drop_path_rate=0.1,
        )
        return v, VISION_CONFIG["embed_dim"]

    pretrain_mod.create_vit = small_vit

    torch.manual_seed(SEED)
    model = ir_mod.ImageReward(med_config=str(out / "med_config.json"), device="cpu")
    model.mlp = ir_mod.MLP(med["hidden_size"])  # upstream hard-codes MLP(768)
    _randomise(model, SEED)
    model.eval()
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save(sd, out / "ImageReward.pt")

    rng = np.random.default_rng(SEED)
    files = []
    for i, (h, w) in enumerate(IMAGE_SIZES):
        # smooth colour fields plus a few sharp rectangles (compress well, still informative)
        low = rng.random((3, h // 16 + 2, w // 16 + 2), dtype=np.float32)
        t = torch.nn.functional.interpolate(torch.from_numpy(low)[None], size=(h, w), mode="bicubic",
                                            align_corners=False)[0].clamp(0, 1)
        arr = (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        for _ in range(3):
            y0, x0 = rng.integers(0, h - 40), rng.integers(0, w - 40)
            arr[y0:y0 + rng.integers(8, 40), x0:x0 + rng.integers(8, 40)] = rng.integers(0, 256, 3, dtype=np.uint8)
        name = f"img{i}.png"
        Image.fromarray(arr).save(out / name, optimize=True)
        files.append(name)

    tok = model.blip.tokenizer
    ids, masks, scores = [], [], []
    with torch.no_grad():
        for prompt, name in zip(PROMPTS, files):
            enc = tok(prompt, padding="max_length", truncation=True, max_length=35)
            ids.append(list(enc["input_ids"]))
            masks.append(list(enc["attention_mask"]))
            scores.append(float(model.score(prompt, Image.open(out / name))))

    def ver(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    ref = {
        "what": "upstream THUDM/ImageReward (image-reward 1.5) with a small random configuration; "
                "scores from ImageReward.score(prompt, PIL image), image i with prompt i",
        "seed": SEED,
        "prompts": PROMPTS,
        "images": files,
        "image_sizes_hw": IMAGE_SIZES,
        "input_ids": ids,
        "attention_mask": masks,
        "scores": scores,
        "upstream_state_dict_keys": len(sd),
        "versions": {
            "python": sys.version.split()[0],
            **{p: ver(p) for p in ("image-reward", "transformers", "tokenizers", "timm", "fairscale",
                                    "huggingface-hub", "torch", "torchvision", "numpy", "Pillow")},
        },
        "upstream_package_dir": str(root),
    }
    (out / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"wrote {out} ({size / 1e6:.2f} MB); scores {np.round(scores, 4).tolist()}")
    print(json.dumps(ref["versions"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="/tmp/ir-ref", help="venv for the upstream stack (created if missing)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that creates the venv")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--skip-install", action="store_true", help="reuse the venv as it is")
    args = ap.parse_args()
    if args.inner:
        inner(Path(args.out))
        return
    env = Path(args.env)
    py = env / "bin" / "python" if args.skip_install else make_env(env, args.python)
    environ = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONNOUSERSITE="1")
    environ.pop("PYTHONPATH", None)
    subprocess.run([str(py), str(Path(__file__).resolve()), "--inner", "--out", str(Path(args.out).resolve())],
                   check=True, env=environ, cwd="/")


if __name__ == "__main__":
    main()
