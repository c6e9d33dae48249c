"""Alfie RGBA generation (Quattrini et al. 2024) as a per-call layer under any searcher.

`TTSPipeline(..., rgba=True)` calls `prepare_rgba`, which sets up three things on the
call's own process view (nothing leaks into other calls):

1. **Centring.** Two trajectories share one initial noise: the background and the
   foreground. After every step Alfie sets x = x_bg (1 - M) + x_fg M, M = 1 on the central
   window (border h/8, w/8 of the latent) and 0 on the border. Both branches take the same
   (blended) latent as input at every step, and every step of `core/families.py` (ODE or
   stochastic, DDPM or flow, with the same step noise) is per-element affine in the
   prediction (out, x0, eps) with x fixed, so blending the two *predictions* with M is
   exactly blending the two stepped latents. `Centring` does that as the process's
   prediction hook (`CallState.prediction_hook`, read by `DenoisingProcess.denoise`):
   every searcher gets it unchanged, the Tweedie estimates x0 it scores are the blended
   ones, and no per-particle background latent has to follow `proc.select`.
   Backgrounds:
   - `ModelBackground`: the model's own prediction for `background_prompt` ("A white
     background" by default): one more row per particle per step, which the budget counts.
   - `CanvasBackground` (the embedded shapes model, whose vocabulary has no words for a
     background but whose background is a known flat colour): the point-mass denoiser of the
     encoded blank canvas z, x0 = z, eps = (x - a_i z) / s_i. On the border, where x is on the
     background trajectory, the step lands exactly on the forward process
     x_bg(i+1) = a_{i+1} z + s_{i+1} eps of the shared noise: no model cost.
2. **Attention capture** (`features/attention_capture.py`) for the conditional foreground rows,
   summed over the steps with t > 20, into per-particle accumulators.
3. **Scoring on composites.** The verifier is wrapped (`RGBAVerifier`): each image is matted
   (`matte.contrast_matte`: the prompt's attention against the centring border's) from its particle's maps and composited on a plain background before the
   wrapped verifier sees it; the mattes are visible to the `alpha` verifier
   (`verifiers/alpha.py`), and the best image's matte becomes `SearchResult.alpha`. The
   composite takes the edge colours decontaminated (`matte.foreground_colours`: the canvas's
   share of each edge pixel's mix replaced by the subject's colour), as the RGBA shows them;
   they become `SearchResult.foreground`, the colour channels of `SearchResult.rgba`.

T-GATE (cross-attention caching) replaces cross-attention by a cache after its gate step,
so no maps would exist for those steps: the combination is refused with one error.
"""
from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..core.process import Conditioning, DenoisingProcess, Prediction
from ..core.state import active_call
from ..errors import TTSInputError
from ..features.attention_capture import (CAPTURE_KEY, MAPS_KEY, AttentionCapture, AttentionMaps, capture_layers,
                                          capture_window, install_capture)
from ..features.tgate_spec import ENTRY as TGATE
from ..records.result import SearchResult, to_uint8
from ..verifiers.alpha import scoring_alphas
from ..verifiers.base import Verifier, check_inputs
from .matte import border_tokens, contrast_matte, foreground_colours
from .subject import preprocess_text, subject_words, token_spans

#: Alfie's background prompt
DEFAULT_BACKGROUND_PROMPT = "A white background"
_INSTALL_LOCK = threading.Lock()


# ------------------------------------------------------------------------ centring
def centre_mask(height: int, width: int) -> torch.Tensor:
    """M [h, w]: 1 on the central window (border h//8 and w//8), 0 on the border."""
    m = torch.zeros(height, width)
    bh, bw = height // 8, width // 8
    m[bh : height - bh, bw : width - bw] = 1.0
    return m


def blend(bg: torch.Tensor | None, fg: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor | None:
    """bg (1 - M) + fg M."""
    if fg is None:
        return None
    return bg * (1 - mask) + fg * mask


def blend_predictions(bg: Prediction, fg: Prediction, mask: torch.Tensor) -> Prediction:
    """The prediction whose step is x_bg(i+1) (1 - M) + x_fg(i+1) M (see the module docstring)."""
    m = mask.to(fg.out.device, fg.out.dtype)
    pick = lambda t, alt: alt if t is None else t  # noqa: E731
    return Prediction(fg.i, blend(bg.out, fg.out, m), blend(bg.x0, fg.x0, m), blend(bg.eps, fg.eps, m),
                      blend(pick(bg.cond_out, bg.out), fg.cond_out, m), blend(pick(bg.uncond_out, bg.out), fg.uncond_out, m))


@dataclass
class ModelBackground:
    """The model's prediction for the background prompt, one row per particle per step."""

    cond: Conditioning
    rows_per_step: int = 1

    def predict(self, proc: DenoisingProcess, x: torch.Tensor, i: int) -> Prediction:
        cap = proc.call.features.get(CAPTURE_KEY)
        outs, conds, unconds = [], [], []
        was = cap.enabled if cap is not None else None
        if cap is not None:
            cap.enabled = False  # only the foreground rows make the matte
        cfg = proc.do_cfg  # rgba refuses T-GATE, so CFG is never dropped here
        if proc.budget is not None:  # the background rows are model cost too (NFE: rows_per_step)
            proc.budget.charge_model_rows(x.shape[0] * (2 if cfg else 1))
        try:
            with proc.timings.phase("denoise"), active_call(proc.call):
                for s in range(0, x.shape[0], proc.max_batch):
                    xc = x[s : s + proc.max_batch]
                    proc.call.rows = slice(s, s + xc.shape[0])
                    o, c, u = proc._guided(xc, i, self.cond, cfg)
                    outs.append(o)
                    conds.append(c)
                    unconds.append(u)
                proc.call.rows = None
        finally:
            if cap is not None:
                cap.enabled = was
        out = torch.cat(outs)
        x0, eps = proc.family.to_x0_eps(x, out, i)
        cond_out = torch.cat(conds) if proc.do_cfg else None
        uncond_out = torch.cat(unconds) if proc.do_cfg else None
        return Prediction(i, out, x0, eps, cond_out, uncond_out)


@dataclass
class CanvasBackground:
    """A known clean background latent z [1, ...]: the denoiser of the point mass at z."""

    latent: torch.Tensor
    rows_per_step: int = 0

    def predict(self, proc: DenoisingProcess, x: torch.Tensor, i: int) -> Prediction:
        fam = proc.family
        a, s = float(fam.a_from[i]), float(fam.s_from[i])
        z = self.latent.to(x.device, torch.float32)
        x0 = z.expand_as(x)
        eps = (x.float() - a * z) / s
        out = fam.from_x0_eps(x0, eps, i)
        return Prediction(i, out.to(x.dtype), x0.to(x.dtype), eps.to(x.dtype), None, None)


@dataclass
class Centring:
    """Prediction hook: the foreground prediction blended with the background's by M."""

    mask: torch.Tensor  # [h, w] in the latent layout
    background: ModelBackground | CanvasBackground

    def __call__(self, proc: DenoisingProcess, x: torch.Tensor, i: int, cond: Conditioning,
                 pred: Prediction) -> Prediction:
        return blend_predictions(self.background.predict(proc, x, i), pred, self.mask)


@torch.no_grad()
def encode_canvas(proc: DenoisingProcess, color: Sequence[float]) -> torch.Tensor:
    """The latent [1, C, h, w] of a blank canvas of `color` (RGB in [0, 1]) at the process's
    size, the inverse of the adapter's decode (scaling / shift / latents mean and std)."""
    vae = proc.adapter.vae
    img = torch.tensor(list(color), dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, proc.height, proc.width)
    z = vae.encode((2 * img - 1).to(proc.device, vae.dtype)).latent_dist.mode().float()
    cfg = vae.config
    mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
    if mean is not None and std is not None:
        c = z.shape[1]
        z = (z - torch.tensor(mean).view(1, c, 1, 1).to(z)) * cfg.scaling_factor / torch.tensor(std).view(1, c, 1, 1).to(z)
    else:
        z = (z - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor
    return proc.adapter.pack(z.to(proc.dtype))


# ------------------------------------------------------------------------ scoring
def _key(image_u8: torch.Tensor) -> str:
    return hashlib.sha1(image_u8.contiguous().numpy().tobytes()).hexdigest()


class RGBAVerifier(Verifier):
    """Scores each candidate as its matted subject composited on a plain background.

    Row k of a scored batch is particle k of the call (every searcher scores its current
    population, or a fresh population it just sampled). Keeps the mattes of the best-scoring
    images (by image content) so the winner's alpha can be attached to the result."""

    def __init__(self, inner: Verifier, run: "RGBARun", keep: int = 64):
        super().__init__()
        self.inner = inner
        self.run = run
        self.keep = int(keep)
        self.name = getattr(inner, "name", "verifier")
        self._mattes: dict[str, tuple[float, np.ndarray, dict]] = {}

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def check_prompt(self, prompt: str) -> None:
        self.inner.check_prompt(prompt)

    def mattes(self, images: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
        """Alpha [B, H, W] float in [0, 1] for float images [B, 3, H, W] (particle rows).

        Every candidate needs its own matte (its score is that of its composite), so the
        GrabCuts (the bulk of the time: OpenCV releases the GIL) run in a thread pool of
        min(B, torch.get_num_threads()) workers; each matte is a deterministic function of its
        image and maps (`matte.grabcut` seeds OpenCV's RNG), so the result does not depend on
        the number of workers."""
        cap = self.run.capture
        b = images.shape[0]
        held = cap.maps.num_particles
        if b > held:
            raise RuntimeError(f"rgba: a batch of {b} images was scored while the call holds maps for {held} rows")
        # row k is particle k when the searcher moves particles with proc.select / reset_particles;
        # a searcher that keeps rows by hand (rbf's children) gets the maps of the rows it denoised
        self.run.exact_rows &= b == held
        u8 = to_uint8(images)
        nl, ns = max(1, cap.num_layers.get("cross", 1)), max(1, cap.num_layers.get("self", 1))
        if cap.maps.cross is None or cap.maps.self_ is None:
            raise RuntimeError("no attention maps were captured in this call")
        cross, self_ = cap.maps.cross[:b].cpu() / nl, cap.maps.self_[:b].cpu() / ns  # one transfer each

        def one(k: int) -> tuple[np.ndarray, dict]:
            return contrast_matte(u8[k].permute(1, 2, 0).numpy(), cross[k], self_[k], self.run.grid, self.run.border,
                                  self.run.columns)

        workers = max(1, min(b, torch.get_num_threads()))
        if workers > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="alfie-matte") as pool:
                done = list(pool.map(one, range(b)))
        else:
            done = [one(k) for k in range(b)]
        return torch.stack([torch.from_numpy(a) for a, _ in done]), [info for _, info in done]

    @torch.no_grad()
    def forward(self, images: torch.Tensor, prompts: Sequence[str] | str) -> torch.Tensor:
        images, prompts = check_inputs(images, prompts)
        alphas, infos = self.mattes(images)
        a = alphas.to(images.device, images.dtype).unsqueeze(1)
        bg = torch.tensor(self.run.composite_color, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        composite = cutout_colours(images, alphas) * a + bg * (1 - a)  # what the RGBA shows
        with scoring_alphas(alphas):
            scores = self.inner(composite, prompts).float()
        u8 = to_uint8(images)
        for k in range(images.shape[0]):
            self._remember(_key(u8[k]), float(scores[k]), alphas[k].numpy(), infos[k])
        return scores

    def _remember(self, key: str, score: float, alpha: np.ndarray, info: dict) -> None:
        self._mattes[key] = (score, alpha, info)
        if len(self._mattes) > self.keep:
            worst = min(self._mattes, key=lambda k: self._mattes[k][0])
            del self._mattes[worst]

    def matte_of(self, image_u8: torch.Tensor) -> tuple[np.ndarray, dict] | None:
        hit = self._mattes.get(_key(image_u8))
        return None if hit is None else (hit[1], hit[2])


def cutout_colours(images: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """The colour channels the RGBA shows, [B, 3, H, W] like `images` (float in [0, 1]): each
    image with its edge colours decontaminated against its matte (`matte.foreground_colours`)."""
    x = images.detach().float().permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([foreground_colours(x[k], alphas[k].numpy()) for k in range(x.shape[0])])
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.device, images.dtype)


# ------------------------------------------------------------------------ set-up
@dataclass
class RGBARun:
    """Everything one rgba call set up (see `prepare_rgba`)."""

    words: list[str]
    spans: list[list[int]]
    grid: tuple[int, int]
    capture: AttentionCapture
    centring: Centring
    composite_color: tuple[float, float, float]
    background: str
    #: bool [N]: the image tokens on the centring border (the matte's "nothing" reference)
    border: torch.Tensor = field(default=None, repr=False)
    #: the text-token columns the matte reads (an explicit `subject=`); None: the whole prompt
    columns: list[int] | None = None
    k: float = 0.5
    verifier: RGBAVerifier | None = field(default=None, repr=False)
    #: False when some scored batch was not the call's particle population (see RGBAVerifier)
    exact_rows: bool = True

    @property
    def rows_per_step(self) -> int:
        """Denoiser rows per particle per step: 1 + the background's."""
        return 1 + self.centring.background.rows_per_step

    def check_budget(self, nfe: int, num_steps: int) -> None:
        need = self.rows_per_step * num_steps
        if nfe < need:
            raise TTSInputError(
                f"budget of {nfe} NFE is below one rgba sample ({need} NFE: {num_steps} steps x {self.rows_per_step}"
                f" rows, the background prompt's row included); raise the budget to at least {need}")

    def settings(self) -> dict[str, Any]:
        return {"rgba": True, "matte_rows_exact": self.exact_rows, "subject": self.words, "subject_tokens": self.spans, "background": self.background,
                "token_grid": list(self.grid), "nfe_rows_per_step": self.rows_per_step,
                "capture_steps": sorted(self.capture.steps), "captured_layer_calls": dict(self.capture.seen)}

    def finish(self, result: SearchResult) -> SearchResult:
        """Attach the best image's alpha; report NFE in denoiser rows (the budget the searcher
        saw counts particle-steps, each `rows_per_step` rows)."""
        r = self.rows_per_step
        if r != 1:
            result.nfe *= r
            for p in result.trace:
                p.nfe *= r
            for c in result.candidates:
                c.nfe *= r
        hit = self.verifier.matte_of(result.best.image) if self.verifier is not None else None
        if hit is None:
            raise RuntimeError("rgba: the best image's matte was not kept (it was never scored as a composite)")
        alpha, info = hit
        result.alpha = torch.from_numpy(np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8))
        result.foreground = torch.from_numpy(foreground_colours(np.asarray(result.image), alpha))
        result.settings.update(self.settings())
        result.settings.update(info)
        return result


def refuse_tgate(proc: DenoisingProcess, options: dict[str, Any]) -> None:
    """rgba with T-GATE: after the gate step cross-attention is a cached tensor, so the maps
    of those steps would not exist (and the cache would be shared by fg and bg rows)."""
    if TGATE in proc.call.features or options.get("tgate") not in (None, False):
        raise TTSInputError("rgba=True cannot be combined with T-GATE: after the gate step cross-attention is cached"
                            " and Alfie's attention maps would miss those steps; turn one of them off")


def prepare_rgba(proc: DenoisingProcess, prompt: str, verifier: Verifier, *, background_prompt: str | None = None,
                 subject: str | Sequence[str] | None = None, negative_prompt: str | None = None,
                 canvas_color: Sequence[float] | None = None, options: dict[str, Any] | None = None,
                 k: float = 0.5) -> RGBARun:
    """Set up an rgba call on the per-call process `proc` (validation first, before any
    model work): subject tokens, attention capture, centring, and the compositing verifier.

    canvas_color: the known background colour of the model's world (the embedded shapes
        model): centring then follows the forward process of the encoded blank canvas at no
        model cost, unless `background_prompt` is given. Otherwise the background is the
        model's own trajectory for `background_prompt` (default "A white background")."""
    pipe = proc.adapter.pipe
    layers = capture_layers(proc.adapter.denoiser)  # one clear error for unsupported models
    refuse_tgate(proc, options or {})
    if background_prompt is not None and not str(background_prompt).strip():
        raise TTSInputError("background_prompt is empty: pass a text such as \"A white background\" or leave it unset")
    words = subject_words(prompt, subject)
    max_len = proc.adapter.max_sequence_length or 300  # PixArt's encode_prompt default
    spans = token_spans(pipe.tokenizer, preprocess_text(prompt), words, max_length=max_len)
    window = capture_window(proc.model_timesteps)
    if not window:
        raise TTSInputError("rgba=True needs at least one step with model timestep t > 20 to read attention maps;"
                            " use more steps")
    p = int(proc.adapter.denoiser.config.patch_size)
    lat_h, lat_w = proc.height // proc.adapter.vae_scale_factor, proc.width // proc.adapter.vae_scale_factor
    grid = (lat_h // p, lat_w // p)

    with _INSTALL_LOCK:
        install_capture(proc.adapter.denoiser)
    maps = AttentionMaps()
    proc.call.register(MAPS_KEY, maps)
    capture = AttentionCapture(window, maps, {kk: len(v) for kk, v in layers.items()})
    proc.call.add_feature(capture)

    if background_prompt is None and canvas_color is not None:
        background: ModelBackground | CanvasBackground = CanvasBackground(encode_canvas(proc, canvas_color))
        described = f"canvas {tuple(round(float(c), 3) for c in canvas_color)}"
        composite = tuple(float(c) for c in canvas_color)
    else:
        text = DEFAULT_BACKGROUND_PROMPT if background_prompt is None else str(background_prompt)
        background = ModelBackground(proc.encode(text, negative_prompt))
        described = f"prompt {text!r}"
        composite = (1.0, 1.0, 1.0)
    centring = Centring(centre_mask(lat_h, lat_w).to(proc.device), background)
    proc.call.prediction_hook = centring
    border = border_tokens(grid, (lat_h, lat_w), p)
    if not bool(border.any()):
        raise TTSInputError(f"rgba=True needs image tokens on the centring border (an eighth of each side); the"
                            f" {grid[0]}x{grid[1]} token grid of a {proc.height}x{proc.width} image has none: use a larger image")
    columns = sorted({j for span in spans for j in span}) if subject is not None else None
    run = RGBARun(words, spans, grid, capture, centring, composite, described, border, columns, k)
    run.verifier = RGBAVerifier(verifier, run)
    return run
