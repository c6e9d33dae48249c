#!/usr/bin/env python
"""Train the domain CLIP of the shapes world (a small open_clip model), and measure how well
its score separates oracle-correct from incorrect images of the default model.

    python scripts/train_shapes_clip.py --out tts_diffusion/assets/shapes-clip                  # ~2.5 min, one H100
    python scripts/train_shapes_clip.py --out tts_diffusion/assets/shapes-clip --auc-only \\
        --model tts_diffusion/assets/shapes-model                                                # ROC-AUC only
    python scripts/train_shapes_clip.py --out /tmp/c --smoke --device cpu          # test the script

Training: contrastive (Radford et al. 2021, InfoNCE in both directions) on renderer images and
their prompts, with one hard negative per image: its own prompt perturbed so that it is false
for the scene (`shapes.mismatch.mismatched_prompt`: another shape, colour, count or relation,
or the objects or colours swapped). Prompts
repeat within a batch (the grammar has a few hundred), so the image->text softmax runs over the
batch's distinct prompts and their negatives, and text->image treats every image of a prompt as
a positive. Images are perturbed (blur, colour jitter, noise; `shapes.perturb`) so the model
also scores the softer images of a generator. The standard open_clip BPE tokenizer
(`open_clip.get_tokenizer("local-dir:<out>")`, context 32) is used, so nothing else ships.

Saved in open_clip's hub layout, which `open_clip.create_model_and_transforms("local-dir:<out>")`
and `tts_diffusion.verifiers.clip.CLIPVerifier(model="<out>")` load offline:
``open_clip_config.json`` ({"model_cfg", "preprocess_cfg"}) + ``open_clip_model.safetensors``
(float16; open_clip casts it to the model's dtype on load), plus ``clip_report.json``.

ROC-AUC (--model, after training or with --auc-only): the default model generates one image per
prompt of the eval split (the same seeds as its own evaluation), the oracle labels them, and the
AUC of the CLIP cosine for correct vs incorrect is reported overall and per category; with
--samples-per-prompt K > 1 also the within-prompt AUC (the ranking a best-of-N search needs) and
the accuracy of best-of-K picked by CLIP vs the first sample.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

from tts_diffusion.paths import domain_clip_path, eval_prompts_path  # noqa: E402
from tts_diffusion.shapes.grammar import CATEGORIES  # noqa: E402
from tts_diffusion.shapes.mismatch import mismatched_prompt  # noqa: E402
from tts_diffusion.shapes.perturb import perturb  # noqa: E402
from tts_diffusion.shapes.training import (  # noqa: E402
    autocast, device_name, generate, load_eval_prompts, lr_at, render_pool, scene_pool,
)

T0 = time.time()
#: The v2 CLIP: images at the v2 model's size (144 px) in an 8x8 grid of 18-px patches, the
#: v1 widths (the v1 CLIP: 64 px, patch 8).
MODEL_CFG = {
    "embed_dim": 128,
    "quick_gelu": False,
    "vision_cfg": {"image_size": 144, "patch_size": 18, "width": 192, "layers": 6, "head_width": 32, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4, "mlp_ratio": 4.0},
}
#: categories whose scenes get --extra-weight more shares of the pool (spatial relations are the hard part)
SPATIAL = ("position", "between", "inside")


def log(msg: str) -> None:
    print(f"[clip {time.time() - T0:7.1f}s] {msg}", flush=True)


# ----------------------------------------------------------------------------- model
def build_clip(cfg: dict = MODEL_CFG):
    from open_clip.model import CLIP

    return CLIP(embed_dim=cfg["embed_dim"], vision_cfg=dict(cfg["vision_cfg"]), text_cfg=dict(cfg["text_cfg"]),
                quick_gelu=cfg["quick_gelu"])


def tokenizer(context_length: int):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def normalize(images01: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images01 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def save_clip(model, out: Path, mean: list[float], std: list[float], report: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    cfg = {
        "model_cfg": MODEL_CFG,
        "preprocess_cfg": {"image_size": MODEL_CFG["vision_cfg"]["image_size"], "mean": mean, "std": std,
                           "interpolation": "bicubic", "resize_mode": "shortest"},
    }
    (out / "open_clip_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    sd = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, str(out / "open_clip_model.safetensors"))
    os.chmod(out / "open_clip_model.safetensors", 0o644)
    (out / "clip_report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_clip_card(out, report)


def load_clip(out: Path, device: torch.device):
    """Through open_clip's own local-dir loader: what users get."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}", device=device)
    tok = open_clip.get_tokenizer(f"local-dir:{out}")
    cfg = json.loads((out / "open_clip_config.json").read_text())["preprocess_cfg"]
    return model.eval(), tok, torch.tensor(cfg["mean"], device=device), torch.tensor(cfg["std"], device=device)


@torch.no_grad()
def clip_scores(model, tok, mean, std, images01: torch.Tensor, prompts: list[str], batch: int = 1024) -> torch.Tensor:
    """Cosine of image and prompt embeddings, [N] float32 (images [N, 3, S, S] in [0, 1])."""
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch):
        x = normalize(images01[i : i + batch].to(dev).float(), mean, std)
        t = tok(prompts[i : i + batch]).to(dev)
        with autocast(dev):
            a = F.normalize(model.encode_image(x).float(), dim=-1)
            b = F.normalize(model.encode_text(t).float(), dim=-1)
        out.append((a * b).sum(-1).float().cpu())
    return torch.cat(out)


def write_clip_card(out: Path, report: dict) -> None:
    """README.md of the CLIP folder, from its clip_report.json."""
    cfg = json.loads((out / "open_clip_config.json").read_text())
    v, t = cfg["model_cfg"]["vision_cfg"], cfg["model_cfg"]["text_cfg"]
    weights = out / "open_clip_model.safetensors"
    lines = [
        "# shapes-clip: a domain CLIP for the shapes world", "",
        "A small open_clip model trained contrastively on renders of the shapes world and their prompts,",
        "with hard negatives; a cheap, imperfect verifier (the exact one is `tts_diffusion.shapes.oracle`).", "",
        "## Load", "", "```python",
        "import open_clip",
        "model, _, preprocess = open_clip.create_model_and_transforms(\"local-dir:tts_diffusion/assets/shapes-clip\")",
        "tokenizer = open_clip.get_tokenizer(\"local-dir:tts_diffusion/assets/shapes-clip\")   # standard BPE, context 32",
        "# or: tts_diffusion.verifiers.clip.CLIPVerifier(model=str(tts_diffusion.paths.domain_clip_path())) (the default \"clip\" verifier)",
        "```", "",
        f"Images are {v['image_size']}x{v['image_size']}, normalised with the render statistics in `open_clip_config.json`",
        f"(mean {cfg['preprocess_cfg']['mean']}, std {cfg['preprocess_cfg']['std']}). The weights are stored in float16",
        f"({weights.stat().st_size / 2**20:.1f} MiB; open_clip casts them to the model's dtype on load).", "",
        "## Architecture", "",
        f"ViT image tower: {v['image_size']} px, patch {v['patch_size']}, width {v['width']}, {v['layers']} layers, "
        f"head width {v['head_width']}; text transformer: context {t['context_length']}, vocabulary {t['vocab_size']} "
        f"(open_clip's BPE), width {t['width']}, {t['heads']} heads, {t['layers']} layers; embedding "
        f"{cfg['model_cfg']['embed_dim']}; {report.get('parameters', 0):,} parameters (most in the 49,408-row token "
        "embedding, of which the grammar uses a few dozen rows).", "",
    ]
    if "steps" in report:
        lines += [
            "## Training", "",
            f"`{report['command']}` (seed {report['seed']}) on {report['device']}: {report['steps']} steps x "
            f"{report['batch']} in {report['train_seconds']:.0f} s ({report['total_seconds']:.0f} s with data), "
            f"{report['pool']:,} rendered scenes ({report['distinct_prompts']} distinct prompts; {', '.join(SPATIAL)} "
            f"scenes weighted x{1 + report['hparams']['extra_weight']}), images perturbed (blur, colour jitter, noise), "
            "one hard negative per scene from `shapes.mismatch.mismatched_prompt`.", "",
            "Held-out renders, how often the true prompt outscores its hard negative:", "",
            "| images | overall | " + " | ".join(report["heldout_true_vs_hard_negative"]["clean"]["per_category"]) + " |",
            "| --- | --- | " + " | ".join("---" for _ in report["heldout_true_vs_hard_negative"]["clean"]["per_category"]) + " |",
        ]
        for name, r in report["heldout_true_vs_hard_negative"].items():
            lines.append(f"| {name} | {r['overall']:.3f} | " + " | ".join(f"{x:.3f}" for x in r["per_category"].values()) + " |")
        r = report["heldout_true_vs_hard_negative"]["clean"]["per_alteration"]
        lines += ["", "By alteration (clean): " + ", ".join(f"{k} {x:.3f}" for k, x in r.items())
                  + ". Spatial relations are the weak spot (a flipped relation or swapped objects keep the same words).", ""]
    g = report.get("generated_images_auc")
    if g:
        f = g["one_sample_per_prompt"]
        fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        lines += [
            "## Does the score separate oracle-correct from incorrect generated images?", "",
            f"Images of the default model ({g['model']}) for the {g['n_prompts']} prompts of `{Path(g['source']).name}`, "
            f"seeds as in its own evaluation (seed {g['seed']} + i), labelled by the oracle; ROC-AUC of the CLIP cosine.", "",
            "| | overall | " + " | ".join(f["per_category"]) + " |",
            "| --- | --- | " + " | ".join("---" for _ in f["per_category"]) + " |",
            f"| ROC-AUC | {fmt(f['auc'])} | " + " | ".join(fmt(x["auc"]) for x in f["per_category"].values()) + " |",
            f"| oracle accuracy | {f['oracle_accuracy']:.3f} | "
            + " | ".join(f"{x['oracle_accuracy']:.3f}" for x in f["per_category"].values()) + " |", "",
            "The overall AUC partly reflects that categories differ in both accuracy and typical score; the",
            "within-prompt numbers below are what a search sees (it ranks samples of one prompt).",
        ]
        k = g.get("k_samples_per_prompt")
        if k:
            lines += [
                "",
                f"With {k['k']} samples per prompt: within-prompt ROC-AUC {fmt(k['within_prompt_auc'])} over "
                f"{k['within_prompt_pairs']} (correct, incorrect) pairs; accuracy of the first sample "
                f"{k['accuracy_first_sample']:.3f}, of the best of {k['k']} by CLIP {k['accuracy_best_of_k_by_clip']:.3f}, "
                f"of the best of {k['k']} by the oracle {k['accuracy_oracle_best_of_k']:.3f}. Best of {k['k']} by CLIP per "
                "category: " + ", ".join(f"{c} {x:.3f}" for c, x in k["per_category_best_of_k_by_clip"].items()) + ".",
            ]
        lines.append("")
    lines += ["`clip_report.json` holds these numbers.", ""]
    (out / "README.md").write_text("\n".join(lines))


# ----------------------------------------------------------------------------- metrics
def _finite(x: float):
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties 1/2
    (Mann-Whitney U with average ranks)."""
    labels = labels.astype(bool)
    npos, nneg = labels.sum(), (~labels).sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=float)
    s = scores[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return float((ranks[labels].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def within_prompt_auc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """Pairwise AUC over (correct, incorrect) pairs of the same prompt, pooled over prompts."""
    wins, pairs = 0.0, 0
    for g in np.unique(groups):
        m = groups == g
        pos, neg = scores[m & labels], scores[m & ~labels]
        if len(pos) and len(neg):
            d = pos[:, None] - neg[None, :]
            wins += (d > 0).sum() + 0.5 * (d == 0).sum()
            pairs += d.size
    return (float(wins / pairs) if pairs else float("nan")), int(pairs)


# ----------------------------------------------------------------------------- training
def train(args, device: torch.device) -> dict:
    t = time.time()
    cats = tuple(CATEGORIES) + SPATIAL * args.extra_weight
    scenes = scene_pool(args.pool, args.seed, args.workers, stream=7, categories=cats)
    log(f"sampled {len(scenes):,} scenes in {time.time() - t:.1f}s")
    images = render_pool(scenes, MODEL_CFG["vision_cfg"]["image_size"], device)
    rng = np.random.default_rng(args.seed)
    prompts = [s.prompt for s in scenes]
    cats = [s.category for s in scenes]
    # one hard negative per scene: its prompt altered so that the scene does not satisfy it
    negs = [mismatched_prompt(s, rng) for s in scenes]
    uniq = sorted(set(prompts))
    vocab = sorted(set(uniq) | {n for n, _ in negs})
    where = {p: i for i, p in enumerate(vocab)}
    tok = tokenizer(MODEL_CFG["text_cfg"]["context_length"])
    text_tokens = tok(vocab).to(device)  # [V, L]
    pidx = torch.tensor([where[p] for p in prompts], device=device)
    nidx = torch.tensor([where[n] for n, _ in negs], device=device)
    # dataset normalisation (per channel, over the pool)
    sample = images[: min(len(images), 20_000)].float() / 255.0
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3))
    mean_l, std_l = [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]
    log(f"{len(uniq)} prompts, {len(vocab)} texts with negatives; mean {mean_l} std {std_l} ({time.time() - t:.1f}s)")

    torch.manual_seed(args.seed)
    model = build_clip().to(device).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-6, fused=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    n = len(images) - args.holdout
    B = args.batch
    start, step = time.time(), 0
    while True:
        frac = step / args.steps if args.steps else (time.time() - start) / args.seconds
        if frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(args.lr, step, args.warmup, frac)
        idx = torch.randint(0, n, (B,), device=device, generator=gen)
        x = perturb(images[idx].float() / 255.0, gen, noise=args.aug_noise, blur=args.aug_blur, jitter=args.aug_jitter)
        x = normalize(x, mean, std)
        pos, neg = pidx[idx], nidx[idx]
        texts, inv = torch.unique(torch.cat([pos, neg]), return_inverse=True)
        tgt = inv[:B]  # column of each image's own prompt
        with autocast(device):
            img = F.normalize(model.encode_image(x).float(), dim=-1)
            txt = F.normalize(model.encode_text(text_tokens[texts]).float(), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100.0)
        logits = scale * img @ txt.T  # [B, U]
        loss_i = F.cross_entropy(logits, tgt)
        # text -> image: each prompt present in the batch against all images, every image of it positive
        present = torch.unique(tgt)
        pos_mask = (tgt[None, :] == present[:, None]).float()  # [P, B]
        lt = logits.T[present]  # [P, B]
        loss_t = -(pos_mask * F.log_softmax(lt, dim=1)).sum(1).div(pos_mask.sum(1)).mean()
        loss = 0.5 * (loss_i + loss_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0:
            acc = (logits.argmax(1) == tgt).float().mean().item()
            log(f"step {step} loss {loss.item():.3f} (i2t {loss_i.item():.3f} t2i {loss_t.item():.3f}) "
                f"batch acc {acc:.3f} scale {scale.item():.1f}")
        step += 1
    secs = time.time() - start
    model.eval()

    # held-out renders: true prompt vs a hard negative, per category
    hold = torch.arange(n, len(images), device=device)
    hp = [prompts[i] for i in range(n, len(images))]
    hn = [negs[i][0] for i in range(n, len(images))]
    kinds = np.array([str(negs[i][1]) for i in range(n, len(images))])
    hc = np.array(cats[n:])
    x = images[hold].float() / 255.0
    res = {}
    for name, imgs in (("clean", x), ("perturbed", perturb(x, gen, noise=args.aug_noise, blur=args.aug_blur,
                                                            jitter=args.aug_jitter))):
        sp = clip_scores(model, tok, mean, std, imgs, hp)
        sn = clip_scores(model, tok, mean, std, imgs, hn)
        win = (sp > sn).numpy()
        res[name] = {"overall": round(float(win.mean()), 4),
                     "per_category": {c: round(float(win[hc == c].mean()), 4) for c in CATEGORIES if (hc == c).any()},
                     "per_alteration": {str(k): round(float(win[kinds == k].mean()), 4) for k in sorted(set(kinds))}}
    log(f"trained {step} steps x {B} in {secs:.0f}s; held-out renders, true prompt > hard negative: {res}")
    report = {
        "command": "python scripts/train_shapes_clip.py " + " ".join(sys.argv[1:]),
        "seed": args.seed, "device": device_name(device), "steps": step, "batch": B, "train_seconds": round(secs, 1),
        "total_seconds": round(time.time() - T0, 1), "pool": len(images), "distinct_prompts": len(uniq),
        "parameters": sum(p.numel() for p in model.parameters()),
        "hparams": {k: getattr(args, k) for k in ("lr", "wd", "warmup", "aug_noise", "aug_blur", "aug_jitter",
                                                 "extra_weight")},
        "heldout_true_vs_hard_negative": res,
    }
    save_clip(model, Path(args.out), mean_l, std_l, report)
    log(f"saved to {args.out}")
    return report


# ----------------------------------------------------------------------------- ROC-AUC
def auc_on_generated(args, device: torch.device) -> dict:
    """Generate K images per eval prompt with the default model once, label them with the
    oracle, and score them with the CLIP in --out (and each of --also-score)."""
    from tts_diffusion.shapes import model as M
    from tts_diffusion.shapes.oracle import check_batch

    pipe = M.load_pipeline(args.model, device=device)
    prompts, cats, source = load_eval_prompts(Path(args.eval_prompts), args.smoke, args.eval_seed)
    K = args.samples_per_prompt
    # sample k of prompt i uses seed eval_seed + k * N + i; k = 0 matches the model's own evaluation
    N = len(prompts)
    t = time.time()
    images, labels = [], []
    for k in range(K):
        im = generate(pipe, prompts, seed=args.eval_seed + k * N, batch=args.eval_batch)
        labels.append(np.array([r.correct for r in check_batch(im.float().cpu(), prompts)]))
        images.append(im)
    lab = np.stack(labels)  # [K, N]
    log(f"generated and labelled {K} x {N} images in {time.time() - t:.1f}s; oracle accuracy {lab.mean():.3f}")
    c = np.array(cats)
    results = {}
    for d in [args.out] + list(args.also_score):
        clip, tok, mean, std = load_clip(Path(d), device)
        sc = np.stack([clip_scores(clip, tok, mean, std, im, prompts).numpy() for im in images])
        first = {"auc": _finite(roc_auc(sc[0], lab[0])), "oracle_accuracy": round(float(lab[0].mean()), 4),
                 "per_category": {}}
        for cat in CATEGORIES:
            m = c == cat
            if m.any():
                first["per_category"][cat] = {"auc": _finite(roc_auc(sc[0][m], lab[0][m])),
                                              "oracle_accuracy": round(float(lab[0][m].mean()), 4)}
        result = {"model": str(args.model), "source": source, "n_prompts": N, "seed": args.eval_seed,
                  "one_sample_per_prompt": first}
        if K > 1:
            groups = np.tile(np.arange(N), (K, 1))
            wauc, pairs = within_prompt_auc(sc.ravel(), lab.ravel().astype(bool), groups.ravel())
            pick = sc.argmax(0)
            bon = lab[pick, np.arange(N)]
            result["k_samples_per_prompt"] = {
                "k": K, "pooled_auc": _finite(roc_auc(sc.ravel(), lab.ravel())),
                "within_prompt_auc": _finite(wauc), "within_prompt_pairs": pairs,
                "accuracy_first_sample": round(float(lab[0].mean()), 4),
                "accuracy_best_of_k_by_clip": round(float(bon.mean()), 4),
                "accuracy_oracle_best_of_k": round(float(lab.max(0).mean()), 4),
                "per_category_best_of_k_by_clip": {cat: round(float(bon[c == cat].mean()), 4) for cat in CATEGORIES
                                                   if (c == cat).any()},
            }
        log(f"ROC-AUC of {d}: " + json.dumps(result))
        f = Path(d) / "clip_report.json"
        report = json.loads(f.read_text()) if f.is_file() else {}
        report["generated_images_auc"] = result
        f.write_text(json.dumps(report, indent=2) + "\n")
        if (Path(d) / "open_clip_config.json").is_file() and (Path(d) / "open_clip_model.safetensors").is_file():
            write_clip_card(Path(d), report)
        results[str(d)] = result
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(domain_clip_path()))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=130.0, help="wall-clock training time")
    p.add_argument("--steps", type=int, default=0, help="fixed steps instead of --seconds")
    p.add_argument("--pool", type=int, default=200_000)
    p.add_argument("--holdout", type=int, default=3000)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--extra-weight", type=int, default=1,
                   help=f"scenes of {', '.join(SPATIAL)} get 1 + this many shares of the pool (relations are the hard part)")
    p.add_argument("--aug-noise", type=float, default=0.05)
    p.add_argument("--aug-blur", type=float, default=1.2)
    p.add_argument("--aug-jitter", type=float, default=0.06)
    p.add_argument("--model", default=None, help="pipeline folder for the ROC-AUC on generated images")
    p.add_argument("--auc-only", action="store_true")
    p.add_argument("--also-score", nargs="*", default=[], help="more CLIP folders to measure on the same images")
    p.add_argument("--samples-per-prompt", type=int, default=4)
    p.add_argument("--eval-prompts", default=str(eval_prompts_path()))
    p.add_argument("--eval-seed", type=int, default=1234, help="as train_shapes_model.py's --eval-seed")
    p.add_argument("--eval-batch", type=int, default=512)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    if a.smoke:
        a.pool, a.holdout, a.steps, a.batch, a.warmup, a.samples_per_prompt = 400, 40, 3, 16, 1, 2
        a.workers = min(a.workers, 2)
    return a


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    summary = {}
    if not args.auc_only:
        summary["train"] = train(args, device)
    if args.model:
        summary["auc"] = auc_on_generated(args, device)
    print("CLIP_SUMMARY " + json.dumps({k: v for k, v in summary.get("train", {}).items()
                                        if k in ("steps", "train_seconds", "heldout_true_vs_hard_negative")}
                                       | ({"auc": summary["auc"]} if "auc" in summary else {})), flush=True)


if __name__ == "__main__":
    main()
