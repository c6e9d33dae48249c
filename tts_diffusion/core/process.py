"""DenoisingProcess: a diffusers pipeline seen as a sampler.

Every searcher talks to this object, never to a pipeline:

    proc = DenoisingProcess.from_pipeline(pipe, num_steps=25, guidance_scale=7.5)
    cond = proc.encode(prompt)                 # once per prompt
    x    = proc.sample_noise(n, generator)     # x at grid point 0 (pure noise)
    pred = proc.denoise(x, i, cond)            # 1 NFE per row; CFG batched inside
    x    = proc.step(x, i, pred)               # ODE step (eta=0) or stochastic (eta>0)
    x    = proc.renoise(x, i, j, generator)    # back to a noisier grid point j <= i
    img  = proc.decode(pred.x0)                # float [B,3,H,W] in [0,1], on the device

Grid points run i = 0 (noise) .. n (clean); `step` takes i to i+1. Particles are the
batch dimension; `denoise` splits it into chunks of `max_batch` rows, so results do not
depend on memory settings. With eta = 0 the process reproduces the pipeline's own
`__call__` for the same initial latents: ODE steps are the pipeline's own scheduler's
steps (core/schedulers.py; see tests/test_faithfulness.py), stochastic steps the family's
SDE (core/families.py).
"""
from __future__ import annotations

import contextlib
import copy
import functools
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from ..errors import TTSInputError
from .adapters import Embeds, ModelAdapter, adapter_for, cat_rows, encode_lock, expand_rows
from .budget import Budget
from .preview import load_preview_decoder
from . import schedulers
from .families import Family
from .schedulers import SchedulerGrid, is_flow_scheduler  # noqa: F401  (re-exported)
from .state import CallState, active_call, select_rows
from .timing import Timings


@dataclass
class Conditioning:
    """Encoded prompt (and negative prompt when CFG is on), batch 1, broadcast at call time."""

    prompt: str
    negative_prompt: str | None
    cond: Embeds
    uncond: Embeds | None


@dataclass
class Prediction:
    """What one denoiser evaluation at grid point i tells about x.

    `out` is the guided model output in the family's parameterisation (eps, v or flow
    velocity); `cond_out` / `uncond_out` are the two halves before guidance (None without
    CFG); `x0` is the Tweedie estimate E[x0 | x_i] and `eps` the matching noise."""

    i: int
    out: torch.Tensor
    x0: torch.Tensor
    eps: torch.Tensor
    cond_out: torch.Tensor | None = None
    uncond_out: torch.Tensor | None = None

    def index(self, idx: torch.Tensor | slice) -> "Prediction":
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return Prediction(self.i, self.out[idx], self.x0[idx], self.eps[idx], pick(self.cond_out), pick(self.uncond_out))


class _OnDevice:
    """`model_timesteps[i].to(device)` on indexing (a process that is not a call view)."""

    def __init__(self, timesteps: torch.Tensor, device: torch.device):
        self.timesteps, self.device = timesteps, device

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.timesteps[i].to(self.device)


def make_family(scheduler: Any, adapter: ModelAdapter, num_steps: int, diffusion: str = "ddim"
                ) -> tuple[Family, torch.Tensor, SchedulerGrid | None]:
    """The grid for the pipeline's `num_inference_steps = num_steps`, the timesteps the model
    is given at each grid point, and how the pipeline's scheduler steps on it (None: the
    family's own ODE step, which is DDIM and flow-matching Euler). See core/schedulers.py:
    a copy of the pipeline's scheduler is asked for its grid with the arguments the
    pipeline passes (shift, dynamic shift mu); a scheduler the process cannot reproduce
    gets one warning and DDIM on its noise schedule (Euler on flow sigmas)."""
    return schedulers.build(scheduler, adapter, num_steps, diffusion)


class DenoisingProcess:
    """A pipeline as a sampler over a fixed grid of `num_steps` time points."""

    def __init__(self, adapter: ModelAdapter, family: Family, model_timesteps: torch.Tensor, *,
                 guidance_scale: float, cfg_scale: float, max_batch: int = 16, decode_batch: int | None = None,
                 stepping: SchedulerGrid | None = None, preview_decoder: torch.nn.Module | None = None):
        self.adapter = adapter
        #: small decoder for intermediate rewards (core/preview.py); None: the full VAE
        self.preview_decoder = preview_decoder
        self.family = family
        self.model_timesteps = model_timesteps
        #: the pipeline's scheduler for ODE steps (None: the family's own ODE step)
        self.stepping = stepping
        self.guidance_scale = guidance_scale
        self.cfg_scale = cfg_scale
        self.do_cfg = adapter.do_cfg(cfg_scale)
        self.max_batch = max(1, int(max_batch))
        self.decode_batch = max(1, int(decode_batch or self.max_batch))
        self.budget: Budget | None = None
        self.timings = Timings(self.device)
        self.call = CallState()
        #: the pipeline's `num_inference_steps` this grid was built for (num_steps counts
        #: model calls: PNDM and Heun visit more grid points than inference steps)
        self.num_inference_steps = family.num_steps

    # ------------------------------------------------------------ construction
    @classmethod
    def from_pipeline(cls, pipe: Any, num_steps: int = 25, guidance_scale: float | None = None, *,
                      height: int | None = None, width: int | None = None, true_cfg_scale: float = 1.0,
                      max_sequence_length: int | None = None, diffusion: str = "ddim",
                      max_batch: int = 16, decode_batch: int | None = None,
                      preview_decoder: Any = None) -> "DenoisingProcess":
        """Wrap a diffusers pipeline.

        guidance_scale: classifier-free guidance weight w (pred = uncond + w (cond - uncond));
            for guidance-distilled FLUX models it is the guidance embedding instead, and
            `true_cfg_scale` > 1 turns on real CFG with a negative prompt.
        diffusion: flow models' SDE diffusion schedule for stochastic steps (families.py).
        max_batch: rows per denoiser call (CFG doubles the model batch).
        preview_decoder: a TAESD-format folder (diffusers AutoencoderTiny) or VAE-like module
            that decodes intermediate latents for rewards (`decode(..., preview=True)`)."""
        if int(num_steps) < 1:
            raise TTSInputError(f"num_steps must be at least 1, got {num_steps}")
        adapter = adapter_for(pipe)(pipe, height, width, max_sequence_length)
        if guidance_scale is None:
            guidance_scale = 3.5 if adapter.distilled_guidance else 7.5
        family, ts, stepping = make_family(pipe.scheduler, adapter, int(num_steps), diffusion)
        if adapter.distilled_guidance:
            adapter.guidance = float(guidance_scale)
            cfg_scale = float(true_cfg_scale)
        else:
            cfg_scale = float(guidance_scale)
        preview = None if preview_decoder is None else load_preview_decoder(preview_decoder, adapter.vae)
        proc = cls(adapter, family, ts, guidance_scale=float(guidance_scale), cfg_scale=cfg_scale,
                   max_batch=max_batch, decode_batch=decode_batch, stepping=stepping, preview_decoder=preview)
        proc.num_inference_steps = int(num_steps)
        return proc

    # ----------------------------------------------------------- description
    @property
    def num_steps(self) -> int:
        return self.family.num_steps

    @property
    def device(self) -> torch.device:
        pinned = self.__dict__.get("_pinned")  # a call view: read once (`for_call`)
        return pinned[0] if pinned is not None else self.adapter.device

    @property
    def dtype(self) -> torch.dtype:
        pinned = self.__dict__.get("_pinned")
        return pinned[1] if pinned is not None else self.adapter.dtype

    @property
    def height(self) -> int:
        return self.adapter.height

    @property
    def width(self) -> int:
        return self.adapter.width

    def for_call(self) -> "DenoisingProcess":
        """A view of this process for one search call: same model, grid and settings; its own
        budget, timings and per-particle state. `TTSPipeline` takes one per call, so a cached
        process can serve many threads at once."""
        other = copy.copy(self)
        # the pipeline's execution device and the denoiser's dtype, read once for the call: diffusers
        # finds them by walking every module (offload hooks, parameters), milliseconds a read, and the
        # process reads them every step; a pipeline does not move during a search
        other._pinned = (self.adapter.device, self.adapter.dtype)
        other._step_inputs = None
        other.budget = None
        other.timings = Timings(other.device)
        other.call = CallState()
        for feature in self.call.features.values():  # e.g. T-GATE enabled on a cached process
            renewed = feature.for_call()  # fresh per-particle state for the new call
            if renewed is not None:
                other.call.add_feature(renewed)
        return other

    # --------------------------------------------------------------- budget
    @contextlib.contextmanager
    def metered(self, budget: Budget) -> Iterator[Budget]:
        """Charge every denoiser row to `budget` inside the block."""
        previous, self.budget = self.budget, budget
        try:
            yield budget
        finally:
            self.budget = previous

    # -------------------------------------------------------------- prompts
    @torch.no_grad()
    def encode(self, prompt: str, negative_prompt: str | None = None) -> Conditioning:
        if not isinstance(prompt, str) or not prompt.strip():
            raise TTSInputError("the prompt is empty: pass a non-empty text prompt")
        with self.timings.phase("encode"), encode_lock(self.adapter.pipe):  # tokenizers are not thread-safe
            cond, uncond = self.adapter.encode(prompt, negative_prompt, self.do_cfg)
        return Conditioning(prompt, negative_prompt, cond, uncond)

    # ---------------------------------------------------------------- noise
    def seeds(self, n: int, generator: torch.Generator | None) -> list[int]:
        """n candidate seeds drawn from `generator` (each reproduces one candidate)."""
        return [int(s) for s in torch.randint(0, 2**62, (n,), generator=generator)]

    def noise_from_seeds(self, seeds: Sequence[int]) -> torch.Tensor:
        """Initial noise for each seed, drawn exactly as the pipeline draws it for
        `generator=torch.Generator().manual_seed(seed)` (CPU generator), so any candidate can
        be reproduced with the plain pipeline. A new draw is a new population: per-particle
        call state restarts for these rows."""
        self.reset_particles(len(seeds))
        shape = self.adapter.latent_shape(1)
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        rows = [torch.randn(shape, generator=g, dtype=self.dtype) for g in gens]
        noise = torch.cat(rows).to(self.device) if rows else torch.zeros((0, *shape[1:]), device=self.device, dtype=self.dtype)
        if self.stepping is not None:
            if self.stepping.noise_scale != 1.0:  # the scheduler's init_noise_sigma, in the family's coordinates
                noise = noise * self.stepping.noise_scale
            if self.stepping.ancestral:  # the pipeline's generator goes on to draw the step noise
                schedulers.history(self.call, self.stepping).generators = gens
        return self.adapter.pack(noise)

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x at grid point 0 for n particles."""
        return self.noise_from_seeds(self.seeds(n, generator))

    def randn_like(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Step noise; drawn on the generator's device (CPU by default), then moved."""
        gdev = generator.device if generator is not None else torch.device("cpu")
        return torch.randn(x.shape, generator=generator, device=gdev, dtype=torch.float32).to(x.device, x.dtype)

    # -------------------------------------------------------------- denoise
    @torch.no_grad()
    def denoise(self, x: torch.Tensor, i: int, cond: Conditioning) -> Prediction:
        """One denoiser evaluation per row of x at grid point i (charged to the budget)."""
        if not 0 <= i < self.num_steps:
            raise IndexError(f"grid point {i} has no denoiser step (0 <= i < {self.num_steps})")
        n = x.shape[0]
        # a feature may drop CFG (T-GATE after its gate: the model sees the null text only)
        cfg = self.do_cfg and all(f.keeps_cfg(i) for f in self.call.features.values())
        if self.budget is not None:
            self.budget.charge_nfe(n)
            self.budget.charge_model_rows(n * (2 if cfg else 1))
        outs, conds, unconds = [], [], []
        with self.timings.phase("denoise"), active_call(self.call):
            self.call.step = i
            for s in range(0, n, self.max_batch):
                xc = x[s : s + self.max_batch]
                self.call.rows = slice(s, s + xc.shape[0])
                o, c, u = self._guided(xc, i, cond, cfg)
                outs.append(o)
                conds.append(c)
                unconds.append(u)
            self.call.rows = None
            out = torch.cat(outs)
            x0, eps = self.family.to_x0_eps(x, out, i)
        cond_out = torch.cat(conds) if cfg else None
        uncond_out = torch.cat(unconds) if cfg else None
        pred = Prediction(i, out, x0, eps, cond_out, uncond_out)
        # a per-call prediction hook (e.g. Alfie's centring, pipelines/alfie.py) may rewrite it
        hook = self.call.prediction_hook
        pred = pred if hook is None else hook(self, x, i, cond, pred)
        self.call.latest_x0 = (i, pred.x0)  # an interrupted search scores these on the way out
        return pred

    def denoise_with_grad(self, x: torch.Tensor, i: int, cond: Conditioning) -> Prediction:
        """`denoise` keeping the autograd graph from x (and the model's inputs) to the
        prediction, for gradients through the denoiser (noise optimisation); charged to the
        budget like `denoise` (1 NFE a row; the caller charges the backward, core/budget.py)."""
        with torch.enable_grad():
            return DenoisingProcess.denoise.__wrapped__(self, x, i, cond)

    def _guided(self, x: torch.Tensor, i: int, cond: Conditioning, cfg: bool):
        """The model output for the rows `self.call.rows` (x), guided when cfg. The hooks of
        the call's features (core/state.py `ModelFeature`: T-GATE, Alfie's attention capture)
        see this call's frame, opened here, outside the model (so a compiled model guards on
        per-phase constants only); their work is merged into the per-particle store after
        the call."""
        rows = self.call.rows
        with contextlib.ExitStack() as frames:
            if rows is not None:
                for feature in self.call.features.values():
                    frames.enter_context(feature.frame(i, rows, 2 if cfg else 1, self.device, self.dtype))
            return self._guided_forward(x, i, cond, cfg)

    def _guided_forward(self, x: torch.Tensor, i: int, cond: Conditioning, cfg: bool):
        rows = x.shape[0]
        timesteps, embeds = self._step_inputs_for(cond, rows, cfg)
        t = timesteps[i].expand(rows * (2 if cfg else 1))  # timesteps[i]: a 0-d tensor of its own
        if not cfg:
            # after a T-GATE gate the model sees the negative / null conditioning (the
            # reference's `prompt_embeds = negative_prompt_embeds`, SDXL's negative pooled
            # embeds and time ids), unguided
            return self.adapter.forward(x, t, embeds), None, None
        both = self.adapter.forward(torch.cat([x, x]), t, embeds)
        uncond, c = both.chunk(2)
        return uncond + self.cfg_scale * (c - uncond), c, uncond

    def _step_inputs_for(self, cond: Conditioning, rows: int, cfg: bool) -> tuple[list[torch.Tensor], Any]:
        """The grid's model timesteps on the device and the text conditioning for `rows` rows
        (CFG: uncond rows then cond rows). A call view (`for_call`) builds them once per
        conditioning, grid and (rows, cfg) and every later step reuses them (a plain process
        builds them per step): a host-to-device copy per step synchronises the host with the
        GPU, and the CFG embeddings are the same concatenation every step."""
        if cfg and cond.uncond is None:
            raise ValueError("this Conditioning was encoded without CFG; encode it with the same process")
        cache = self.__dict__.get("_step_inputs", False)
        if cache is False:
            return _OnDevice(self.model_timesteps, self.device), self._step_embeds(cond, rows, cfg)
        if cache is None or cache["cond"] is not cond or cache["grid"] is not self.model_timesteps:
            # one 0-d tensor per step, each its own storage (what `model_timesteps[i].to(device)`
            # gave: a compiled denoiser sees the same input layout every step)
            on_device = self.model_timesteps.to(self.device)
            cache = self._step_inputs = {"cond": cond, "grid": self.model_timesteps,
                                         "t": [on_device[k].clone() for k in range(on_device.shape[0])]}
        if (rows, cfg) not in cache:
            cache[(rows, cfg)] = self._step_embeds(cond, rows, cfg)
        return cache["t"], cache[(rows, cfg)]

    def _step_embeds(self, cond: Conditioning, rows: int, cfg: bool) -> Any:
        if cfg:
            return cat_rows(expand_rows(cond.uncond, rows), expand_rows(cond.cond, rows))
        return expand_rows(cond.uncond if self.do_cfg else cond.cond, rows)

    # ------------------------------------------------------------------ steps
    def step(self, x: torch.Tensor, i: int, pred: Prediction, eta: float = 0.0,
             noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """x at grid point i -> i+1.

        eta = 0: the pipeline's own scheduler step (DPM-Solver++, UniPC, PNDM, Euler, Heun,
        ...; its history per particle, core/schedulers.py), or the family's ODE step where
        that is the scheduler (DDIM, flow-matching Euler). An ancestral scheduler (Euler
        ancestral) draws its noise from each particle's seed stream, as `pipe` does.
        eta > 0: the family's stochastic step (families.py); the scheduler's history then
        restarts at the next ODE step. With reward guidance on for the call
        (features/guidance.py) the step is the guided one."""
        hook = self.call.step_hook
        if hook is not None:
            return hook(self, x, i, pred, eta, noise, generator)
        return self._step(x, i, pred, eta, noise, generator)

    def _step(self, x: torch.Tensor, i: int, pred: Prediction, eta: float = 0.0,
              noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """The sampler's own step (what `step` does without a step hook)."""
        if eta == 0.0 and self.stepping is not None:
            return schedulers.history(self.call, self.stepping).step(x, i, pred.out, generator)
        self._invalidate_history()
        mean, std = self.family.transition(x, i, pred.out, pred.x0, pred.eps, eta)
        if std == 0.0:
            return mean
        if noise is None:
            noise = self.randn_like(x, generator)
        return mean + std * noise

    def nfe_per_step(self) -> int:
        """NFE one particle-step costs in this call: 1, or the reward guidance's (recurrence,
        variance guidance; features/guidance_spec.py)."""
        hook = self.call.step_hook
        return int(hook.nfe_per_step()) if hook is not None and hasattr(hook, "nfe_per_step") else 1

    def renoise(self, x: torch.Tensor, i: int, j: int, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """Jump from grid point i back to the noisier grid point j <= i (forward process).
        The scheduler's history restarts at j (first-order step, core/schedulers.py)."""
        self._invalidate_history()
        if noise is None:
            noise = self.randn_like(x, generator)
        return self.family.renoise(x, i, j, noise).to(x.dtype)

    def _invalidate_history(self) -> None:
        entry = self.call.get("scheduler")
        if isinstance(entry, schedulers.SchedulerHistory):
            entry.invalidate()

    def sample(self, x: torch.Tensor, cond: Conditioning, start: int = 0, end: int | None = None,
               eta: float = 0.0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Prediction | None]:
        """Run grid points start..end (default: to the clean end). Returns x at `end` and the
        last prediction. With eta = 0 from the first grid point this is `pipe(latents=x)`."""
        end = self.num_steps if end is None else end
        pred = None
        for i in range(start, end):
            pred = self.denoise(x, i, cond)
            x = self.step(x, i, pred, eta=eta, generator=generator)
        return x, pred

    # ----------------------------------------------------------------- decode
    @torch.no_grad()
    def decode(self, latents: torch.Tensor, preview: bool = False) -> torch.Tensor:
        """Latents (e.g. pred.x0 or x at the clean end) -> float images [B,3,H,W] in [0,1].
        preview=True: by the preview decoder where the process has one (intermediate
        rewards; its images may be smaller than the full decode's)."""
        vae = self.preview_decoder if preview else None
        if vae is not None and next(vae.parameters()).device != latents.device:
            vae.to(latents.device)
        decode = self.adapter.decode if vae is None else functools.partial(self.adapter.decode, vae=vae)
        with self.timings.phase("preview" if vae is not None else "decode"):
            return torch.cat([decode(latents[s : s + self.decode_batch])
                              for s in range(0, latents.shape[0], self.decode_batch)])

    def with_grid(self, family: Family, model_timesteps: torch.Tensor) -> "DenoisingProcess":
        """The same model on another grid (e.g. `family.vp_regrid()`); shares the adapter,
        timings and per-particle call state (meter it with `metered` like this one)."""
        other = copy.copy(self)
        other.family, other.model_timesteps = family, model_timesteps
        other.stepping = None  # the pipeline's scheduler does not visit this grid: the family's ODE step
        return other

    # ---------------------------------------------------------------- features
    def require_cfg_halves(self, what: str) -> None:
        """For methods that read `Prediction.cond_out` / `uncond_out` at every step: one clear
        error when a feature of this call drops CFG at some step (T-GATE after its gate)."""
        for feature in self.call.features.values():
            dropped = [i for i in range(self.num_steps) if not feature.keeps_cfg(i)]
            if dropped:
                raise TTSInputError(f"{what} needs both classifier-free guidance halves at every step, which"
                                    f" {feature.label} drops from step {dropped[0]} on; run it without {feature.name}")

    # ----------------------------------------------------------- particle state
    def select(self, idx: torch.Tensor | Sequence[int], *items: Any) -> Any:
        """Select / duplicate / drop particles: `x, pred, log_w = proc.select(idx, x, pred, log_w)`.

        Indexes every item by the parent rows `idx` and moves every per-particle state
        registered on this call (core/state.py) the same way. Returns the items (one item:
        itself, several: a tuple)."""
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        self.call.select(idx.cpu())
        out = tuple(select_rows(item, idx) for item in items)
        return out[0] if len(out) == 1 else out

    def reset_particles(self, num_particles: int) -> None:
        """A fresh population of `num_particles` (new noise): per-particle state restarts."""
        self.call.reset(int(num_particles))

    def settings(self) -> dict:
        return {
            "pipeline": type(self.adapter.pipe).__name__,
            "family": self.family.kind,
            "prediction_type": self.family.prediction_type,
            "num_steps": self.num_steps,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "cfg": self.do_cfg,
            "height": self.height,
            "width": self.width,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            **{k: v for feature in self.call.features.values() for k, v in feature.settings().items()},
            **(self.call.step_hook.settings() if hasattr(self.call.step_hook, "settings") else {}),
        }
