"""Deterministic steps taken by the pipeline's own scheduler, with its history per particle.

`pipe(...)` samples with whatever scheduler the pipeline carries (SD 1.5: PNDM, SDXL:
Euler, PixArt-Sigma: multistep DPM-Solver++, ...). So that `TTSPipeline(pipe)` without
search *is* the pipeline, and a winner's seed reproduces with `pipe(generator=...)`, the
process's ODE step (eta = 0) is the scheduler's own `step(model_output, t, sample)`:

- `SchedulerGrid` (one per process, immutable): a configured copy of the scheduler
  (`type(s).from_config(s.config)` + `set_timesteps` with the pipeline's arguments), the
  grid it visits (one grid point per model call, so PNDM's repeated first timestep and
  Heun's second evaluation are grid points of their own), and the factor between the
  process's latents and the scheduler's sample.
- `SchedulerHistory` (one per search call, registered on `proc.call` as per-particle state):
  a working copy of the scheduler whose history (multistep `model_outputs`, PNDM `ets` /
  `cur_sample`, UniPC `last_sample`, Heun's first-order `sample` / `prev_derivative`) has
  one row per particle. `proc.select(idx)` indexes those rows, `proc.reset_particles(n)`
  clears them.

Coordinates. The process keeps every family's latents on its interpolant x = a x0 + s eps
(VP: a^2 + s^2 = 1; flow: a + s = 1), so searchers, `renoise` and the SDE steps in
families.py see one convention. Sigma-space schedulers (Euler, Euler ancestral, Heun) step
x_ve = x0 + sigma eps = x / a and give the model `scale_model_input(x_ve) = x`; the stepper
multiplies by 1/a before the step and by a' after it. Everything else steps x itself.

Restarts. The history is valid only for the particles and grid point it was built on. A
step at grid point i with history from elsewhere (after `renoise`, a stochastic step, a
different number of rows, or a fresh population) restarts the scheduler at i with empty
history, which makes every supported solver take its first-order step there (DPM-Solver++
and UniPC: lower order warm-up with no corrector; PNDM: its first-order transfer; Heun: an
Euler step). A restart on a corrector point (a second model call at the same time: PNDM's
grid point 1, Heun's odd points) has nothing to correct: x stays, and the next grid point
restarts in turn.

Ancestral schedulers (Euler ancestral) are stochastic in the pipeline too: their step
draws its noise from one generator per particle, seeded as the pipeline's `generator`
would be (the stream continues after the initial latents), so best-of-n winners still
reproduce with `pipe(generator=torch.Generator().manual_seed(seed))`.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .families import Family, flow_family, vp_family

#: schedulers the family's own ODE step reproduces exactly (no history to keep)
NATIVE = ("DDIMScheduler", "FlowMatchEulerDiscreteScheduler")
#: schedulers stepped through their own `step`, with per-particle history
STEPPED = ("PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
           "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "UniPCMultistepScheduler")
#: schedulers whose sample is x0 + sigma eps (the model sees it scaled by 1/sqrt(1 + sigma^2))
SIGMA_SPACE = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler")
#: schedulers whose step draws noise (given one generator per particle)
ANCESTRAL = ("EulerAncestralDiscreteScheduler",)
#: scheduler attributes holding one row per particle (tensors or lists of tensors)
HISTORY = ("model_outputs", "ets", "cur_sample", "last_sample", "prev_derivative", "sample")


def is_flow_scheduler(scheduler: Any) -> bool:
    """Flow-matching schedulers: the FlowMatch* family, and DDPM-family solvers configured
    for flow models (DPMSolverMultistepScheduler with prediction_type "flow_prediction" /
    use_flow_sigmas, as Sana and the embedded shapes model use)."""
    cfg = scheduler.config
    return (type(scheduler).__name__.startswith("FlowMatch") or cfg.get("prediction_type") == "flow_prediction"
            or bool(cfg.get("use_flow_sigmas", False)))


def unsupported_reason(scheduler: Any) -> str | None:
    """Why the process cannot step like this scheduler (None: it can)."""
    name = type(scheduler).__name__
    cfg = scheduler.config
    if name in NATIVE:
        if name == "FlowMatchEulerDiscreteScheduler" and cfg.get("stochastic_sampling", False):
            return "stochastic_sampling=True"
        return None
    if name not in STEPPED:
        return "no step-by-step equivalent"
    if name == "PNDMScheduler" and not cfg.get("skip_prk_steps", False):
        return "skip_prk_steps=False (Runge-Kutta warm-up)"
    if str(cfg.get("algorithm_type", "")).startswith("sde"):
        return f"algorithm_type={cfg['algorithm_type']!r} (stochastic)"
    if name == "EulerDiscreteScheduler" and float(getattr(scheduler, "s_churn", 0.0) or 0.0) > 0:
        return "s_churn > 0"
    return None


@dataclass
class SchedulerGrid:
    """The pipeline's scheduler, configured for one process (never stepped itself)."""

    template: Any
    #: [n + 1] float64: the scheduler's sample at grid point i is `scale[i] * x`
    scale: torch.Tensor
    #: grid points whose step stays at the same noise level (a corrector's model call)
    corrector: tuple[bool, ...]
    #: initial latents are `noise_scale * randn` (the pipeline's init_noise_sigma, in our coordinates)
    noise_scale: float

    @property
    def name(self) -> str:
        return type(self.template).__name__

    @property
    def ancestral(self) -> bool:
        return self.name in ANCESTRAL

    def fresh(self, i: int) -> Any:
        """A working copy positioned at grid point i with empty history."""
        sch = copy.deepcopy(self.template)
        sch.is_scale_input_called = True  # the process gives the model x = scale_model_input(x_ve) itself
        if hasattr(sch, "_step_index"):
            sch._step_index = i
        if self.name == "PNDMScheduler":
            sch.counter, sch.ets, sch.cur_sample = i, [], None
        return sch


def build(scheduler: Any, adapter: Any, num_steps: int, diffusion: str = "ddim"
          ) -> tuple[Family, torch.Tensor, SchedulerGrid | None]:
    """The process's grid for the pipeline's scheduler at `num_steps` (the pipeline's
    `num_inference_steps`): (family, model timesteps, stepping or None).

    One grid point per model call: `len(model timesteps)` is the NFE of one sample (n for
    most schedulers, n + 1 for PNDM, 2n - 1 for Heun, as `pipe(...)` spends). Stepping is
    None where the family's own ODE step is the scheduler (DDIM, flow-matching Euler) and
    for schedulers the process cannot reproduce, which get one warning and the family's
    step (DDIM on the scheduler's alpha_bar table, or Euler on its flow sigmas)."""
    reason = unsupported_reason(scheduler)
    flow = is_flow_scheduler(scheduler)
    name = type(scheduler).__name__
    if reason is not None:
        instead = "Euler steps on its flow sigmas" if flow else "DDIM on its noise schedule"
        warnings.warn(f"{name} ({reason}) cannot be reproduced step by step: the process samples with {instead}, "
                      f"so its images differ from pipe(...) with the same latents", stacklevel=3)
    if flow and (reason is not None or name in NATIVE):
        sch = type(scheduler).from_config(scheduler.config)
        sch.set_timesteps(num_steps, device="cpu", **adapter.timestep_kwargs(sch, num_steps))
        return flow_family(sch.sigmas, sch.timesteps, diffusion), sch.timesteps.clone(), None
    if reason is not None or name == "DDIMScheduler":
        return (*_ddim_grid(scheduler, num_steps), None)

    sch = type(scheduler).from_config(scheduler.config)
    sch.set_timesteps(num_steps, device="cpu", **adapter.timestep_kwargs(sch, num_steps))
    ts = sch.timesteps.clone()
    if name == "PNDMScheduler":
        family = _pndm_family(sch)
    else:
        sig = sch.sigmas.double().cpu()
        if sig.numel() != ts.numel() + 1:
            raise RuntimeError(f"{name}: expected one sigma per timestep plus the end, got {sig.numel()} for {ts.numel()}")
        if flow:
            family = flow_family(sig, ts, diffusion)
        else:
            a = 1 / torch.sqrt(1 + sig * sig)
            family = Family(ts.double(), a[:-1], (sig * a)[:-1], a[1:], (sig * a)[1:], kind="vp",
                            prediction_type=sch.config.prediction_type)
    n = family.num_steps
    pts = [(float(family.a_from[i]), float(family.s_from[i])) for i in range(n)] + [(family.a(n), family.s(n))]
    if name in SIGMA_SPACE:
        scale = torch.tensor([1.0 / a for a, _ in pts], dtype=torch.float64)
    else:
        scale = torch.ones(n + 1, dtype=torch.float64)
    corrector = tuple(bool(family.a_from[i] == family.a_to[i] and family.s_from[i] == family.s_to[i]) for i in range(n))
    noise_scale = float(sch.init_noise_sigma) / float(scale[0])
    if abs(noise_scale - 1.0) < 1e-6:
        noise_scale = 1.0
    return family, ts, SchedulerGrid(sch, scale, corrector, noise_scale)


def _ddim_grid(scheduler: Any, num_steps: int) -> tuple[Family, torch.Tensor]:
    """DDIM on the scheduler's alpha_bar table and timestep spacing (DDIM's own grid)."""
    from diffusers import DDIMScheduler

    sch = DDIMScheduler.from_config(scheduler.config)
    sch.set_timesteps(num_steps)
    ts = [int(t) for t in sch.timesteps]
    ratio = sch.config.num_train_timesteps // num_steps
    fam = vp_family(sch.alphas_cumprod, ts, [t - ratio for t in ts], float(sch.final_alpha_cumprod),
                    sch.config.prediction_type)
    return fam, sch.timesteps.clone()


def _pndm_family(sch: Any) -> Family:
    """PNDM (PLMS, skip_prk_steps) visits timesteps t0, t1, t1, t2, ...: call 0 predicts
    x at t0 - r, call 1 (at t1) corrects that same step, the others go from t to t - r
    (r = train steps / inference steps; below 0: the final alpha_bar)."""
    ts = [int(t) for t in sch.timesteps]
    r = sch.config.num_train_timesteps // sch.num_inference_steps
    prev = [ts[1] if k == 1 else t - r for k, t in enumerate(ts)]
    return vp_family(sch.alphas_cumprod, ts, prev, float(sch.final_alpha_cumprod), sch.config.prediction_type)


class SchedulerHistory:
    """Per-call, per-particle state of the pipeline's scheduler (a `ParticleEntry`)."""

    def __init__(self, grid: SchedulerGrid):
        self.grid = grid
        self.sch: Any = None
        #: grid point the history is ready to step from (None: restart at the next step)
        self.at: int | None = None
        self.rows: int | None = None
        #: ancestral schedulers: one generator per particle (None where a row has none)
        self.generators: list[torch.Generator | None] | None = None

    # ------------------------------------------------------------ particle entry
    def select(self, idx: torch.Tensor) -> None:
        idx = idx.reshape(-1).long()
        if self.rows is not None and idx.numel() and int(idx.max()) >= self.rows:
            self.at = None  # the selection is over rows this history does not hold: restart
        if self.sch is not None and self.at is not None:
            for name in HISTORY:
                value = getattr(self.sch, name, None)
                if isinstance(value, torch.Tensor) and value.ndim > 0:
                    setattr(self.sch, name, value[idx.to(value.device)])
                elif isinstance(value, list):
                    setattr(self.sch, name, [v[idx.to(v.device)] if isinstance(v, torch.Tensor) and v.ndim > 0 else v
                                             for v in value])
        if self.generators is not None:
            self.generators = _fork_generators(self.generators, idx.tolist())
        self.rows = int(idx.numel())

    def reset(self, num_particles: int) -> None:
        self.sch, self.at, self.rows, self.generators = None, None, int(num_particles), None

    def invalidate(self) -> None:
        """The latents moved without the scheduler (renoise, stochastic step): restart next."""
        self.at = None

    # ------------------------------------------------------------------ step
    def step(self, x: torch.Tensor, i: int, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x at grid point i -> i + 1 with the scheduler's own update."""
        g = self.grid
        n = x.shape[0]
        restart = self.sch is None or self.at != i or self.rows != n
        if restart:
            self.sch, self.rows = g.fresh(i), n
            if i > 0 and g.corrector[i]:
                self.at = None  # nothing to correct: x stays, and the next point restarts
                return x
        t = g.template.timesteps[i]
        k_in, k_out = float(g.scale[i]), float(g.scale[i + 1])
        sample = x if k_in == 1.0 else x * k_in
        if restart and i > 0 and g.name == "PNDMScheduler":
            y = self._pndm_first_order(sample, i, out)
        else:
            kwargs = {}
            if g.ancestral:
                kwargs["generator"] = self._row_generators(n, generator)
            y = self.sch.step(out, t, sample, return_dict=False, **kwargs)[0]
        self.at = i + 1
        return (y if k_out == 1.0 else y / k_out).to(x.dtype)

    def _pndm_first_order(self, sample: torch.Tensor, i: int, out: torch.Tensor) -> torch.Tensor:
        """PNDM restarted mid-way: its first-order transfer t -> t - r, then PLMS warm-up."""
        sch = self.sch
        t = int(self.grid.template.timesteps[i])
        r = sch.config.num_train_timesteps // sch.num_inference_steps
        y = sch._get_prev_sample(sample, t, t - r, out)
        sch.ets, sch.counter = [out], max(2, i + 1)
        return y

    def _row_generators(self, n: int, generator: torch.Generator | None) -> list[torch.Generator]:
        gens = self.generators if self.generators is not None and len(self.generators) == n else [None] * n
        out = []
        for gen in gens:
            if gen is None:  # a row not drawn from a seed: a stream forked from the call's generator
                seed = int(torch.randint(0, 2**62, (1,), generator=generator))
                gen = torch.Generator().manual_seed(seed)
            out.append(gen)
        self.generators = out
        return out


def _fork_generators(gens: Sequence[torch.Generator | None], idx: Sequence[int]) -> list[torch.Generator | None]:
    """Generators after a selection: a particle's first copy continues its stream; further
    copies get streams seeded from it (so duplicates do not draw the same noise)."""
    seen: dict[int, int] = {}
    out: list[torch.Generator | None] = []
    for j in idx:
        parent = gens[j]
        copies = seen.get(j, 0)
        seen[j] = copies + 1
        if parent is None:
            out.append(None)
            continue
        clone = torch.Generator(device=parent.device)
        clone.set_state(parent.get_state())
        if copies:
            seed = int(torch.randint(0, 2**62, (1,), generator=clone)) + copies
            clone = torch.Generator(device=parent.device).manual_seed(seed % 2**63)
        out.append(clone)
    return out


def history(call: Any, grid: SchedulerGrid) -> SchedulerHistory:
    """The call's scheduler history for `grid` (registered on first use)."""
    entry = call.get("scheduler")
    if not isinstance(entry, SchedulerHistory) or entry.grid is not grid:
        entry = call.register("scheduler", SchedulerHistory(grid))
    return entry


__all__ = ["SchedulerGrid", "SchedulerHistory", "build", "history", "is_flow_scheduler", "unsupported_reason",
           "NATIVE", "STEPPED"]
