"""diffusers' cache hooks under search: `transformer.enable_cache(config)` with
FirstBlockCache, TaylorSeer, MagCache or Pyramid Attention Broadcast (diffusers/hooks/).

Each of these hooks keeps state between denoiser calls (the previous step's residuals, a
Taylor expansion of the features, a step counter) for the batch it saw last, keyed by the
name of the `cache_context` the pipeline opens around the model call. That state is one
trajectory per batch: it belongs to the rows of that batch and to the steps they went
through in order. Under search:

- each chunk of particle rows the process forwards (`max_batch` rows, CFG doubled inside)
  runs in its own cache context, so a candidate shares cache state only with the candidates
  of its own chunk, as the images of one `pipe(num_images_per_prompt=k)` call share it (a
  cache decides skipping for the whole batch; `max_batch=1` makes every candidate the
  plain pipeline's `pipe(generator=seed)`);
- a fresh population (`proc.reset_particles`, i.e. new noise: every best_of_n round,
  every zero_order round) drops the call's cache state, so nothing leaks from one candidate
  to the next, nor from one call to the next;
- a chunk's state is dropped after its last step, leaving the model as a diffusers pipeline
  call leaves it (`maybe_free_model_hooks` resets the hooks at the end of every call);
- PAB (and FasterCache) keep one state for the whole model, not one per cache context: their
  state is reset with every population, and a population must go through the model in one
  batch (`max_batch` >= the candidates of a round; refused with one line otherwise); one such
  search at a time per model;
- a cache cannot follow a resampled population (SMC, FK steering, RBF, search over paths,
  reflection): its state has no particle rows to reorder, and a jump back to a noisier step
  desynchronises its step counters. Those searchers are refused before any model work
  (`check_search`), and the feature also refuses at run time a `select` that reorders rows
  or a denoiser call that is not the next step of its rows (custom searchers).

Refused with one line: FasterCache (experimental in diffusers; its own FluxPipeline fails
with it in diffusers 0.42), a MagCache calibrated for another number of steps, and a cache
together with T-GATE or rgba (both change what the model computes per step).

PAB's and FasterCache's `current_timestep_callback` read `pipe.current_timestep`; the
feature sets it around each model call as the pipelines do.

`TTSPipeline` checks (`check_search`) and plugs the feature in (`enable_diffusers_cache`) for
every call; a `DenoisingProcess` used directly needs `enable_diffusers_cache(proc.for_call())`
(without a cache context diffusers' hooks raise "No cache context is set").
"""
from __future__ import annotations

import contextlib
import itertools
import weakref
from typing import Any, Iterator

import torch

from ..errors import TTSInputError

ENTRY = "diffusers_cache"
_IDS = itertools.count()


def stateful_hooks(model: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, Any]]:
    """(module, hook) for every stateful diffusers hook installed on `model` and its children."""
    for module in model.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is None:
            continue
        for hook in registry.hooks.values():
            if getattr(hook, "_is_stateful", False):
                yield module, hook


def _managers(hook: Any) -> list[Any]:
    from diffusers.hooks.hooks import StateManager

    return [attr for attr in vars(hook).values() if isinstance(attr, StateManager)]


def state_managers(model: torch.nn.Module) -> Iterator[Any]:
    """The `StateManager`s (state per cache context) of the stateful hooks on `model`."""
    for _, hook in stateful_hooks(model):
        yield from _managers(hook)


def unkeyed_hooks(model: torch.nn.Module) -> list[tuple[torch.nn.Module, Any]]:
    """Stateful hooks that keep one state for the model, not one per cache context (PAB and
    FasterCache in diffusers 0.42): every batch the model sees shares it."""
    return [(m, h) for m, h in stateful_hooks(model) if not _managers(h)]


def cache_name(model: torch.nn.Module) -> str | None:
    """The cache technique on `model` (its config's class name, e.g. "FirstBlockCacheConfig"),
    "stateful diffusers hooks" for stateful hooks applied without `enable_cache`, else None."""
    config = getattr(model, "_cache_config", None)
    if config is not None:
        return type(config).__name__
    return "stateful diffusers hooks" if next(stateful_hooks(model), None) is not None else None


def _drop_states(model: torch.nn.Module, prefix: str) -> None:
    """Forget the hook state of every cache context whose name starts with `prefix`."""
    for manager in state_managers(model):
        for name in [n for n in manager._state_cache if n.startswith(prefix)]:
            del manager._state_cache[name]


class DiffusersCache:
    """The per-call feature (core/state.py `ModelFeature` and `ParticleEntry`) that runs each
    chunk of rows in its own cache context and drops the state with every new population."""

    name = ENTRY

    def __init__(self, pipe: Any, model: torch.nn.Module, model_timesteps: torch.Tensor, num_steps: int,
                 max_batch: int):
        self.pipe, self.model = pipe, model
        self.model_timesteps, self.num_steps, self.max_batch = model_timesteps, num_steps, max_batch
        self.unkeyed = unkeyed_hooks(model)
        self.cache = cache_name(model) or "none"
        self.label = f"diffusers' cache ({self.cache})"
        self.prefix = f"tts-{next(_IDS)}:"
        self.last_step: dict[tuple[int, int], int] = {}  # (row start, stop) -> last grid point run
        self.num_particles: int | None = None
        weakref.finalize(self, _drop_states, model, self.prefix)  # the states go with the call

    # ModelFeature
    def keeps_cfg(self, step: int) -> bool:
        return True

    @contextlib.contextmanager
    def frame(self, step: int, rows: slice, k: int, device: torch.device, dtype: torch.dtype):
        key = (rows.start, rows.stop)
        last = self.last_step.get(key)
        if step != (0 if last is None else last + 1):
            raise TTSInputError(
                f"{self.label} follows each batch of candidates from the first step to the last in order, and this"
                f" search runs step {step} on rows {rows.start}-{rows.stop - 1} after "
                f"{'none' if last is None else f'step {last}'}; search with best_of_n or zero_order, or turn the"
                " cache off (transformer.disable_cache())")
        t = self.model_timesteps[step]
        previous = getattr(self.pipe, "_current_timestep", None)
        self.pipe._current_timestep = t  # PAB's / FasterCache's current_timestep_callback
        context = f"{self.prefix}{rows.start}-{rows.stop};"  # ";": no context name is a prefix of another
        try:
            with self.model.cache_context(context, step_index=step, num_inference_steps=self.num_steps, timestep=t):
                yield
        finally:
            self.pipe._current_timestep = previous
        self.last_step[key] = step
        if step == self.num_steps - 1:  # these rows are clean: leave the model as diffusers leaves it
            _drop_states(self.model, context)
            self._reset_unkeyed()

    def _reset_unkeyed(self) -> None:
        for module, hook in self.unkeyed:
            hook.reset_state(module)

    def settings(self) -> dict[str, Any]:
        return {"diffusers_cache": self.cache}

    def for_call(self) -> "DiffusersCache":
        return DiffusersCache(self.pipe, self.model, self.model_timesteps, self.num_steps, self.max_batch)

    # ParticleEntry
    def select(self, idx: torch.Tensor) -> None:
        n = self.num_particles
        if n is not None and idx.numel() == n and torch.equal(idx, torch.arange(n)):
            return
        raise TTSInputError(f"{self.label} cannot follow resampled particles (its state is one trajectory per batch);"
                            " search with best_of_n or zero_order, or turn the cache off (transformer.disable_cache())")

    def reset(self, num_particles: int) -> None:
        """A fresh population: every cache context of this call starts again."""
        self.num_particles = int(num_particles)
        if self.unkeyed and self.num_particles > self.max_batch:
            raise TTSInputError(
                f"{self.label} keeps one state for the whole model, not one per batch, so a population of"
                f" {self.num_particles} candidates must go through the model in one batch: raise max_batch to"
                f" {self.num_particles} or lower round_size / num_children to {self.max_batch}")
        self.last_step.clear()
        _drop_states(self.model, self.prefix)
        self._reset_unkeyed()


def check_search(model: torch.nn.Module, *, searcher: str, fresh_trajectories: bool, num_steps: int,
                 tgate: bool, rgba: bool, reward_guidance: bool = False) -> None:
    """One clear TTSInputError, before any model work, for a cache on `model` that this search
    cannot run with (module docstring)."""
    name = cache_name(model)
    if name is None:
        return
    off = "or turn the cache off (transformer.disable_cache())"
    if name == "FasterCacheConfig":
        raise TTSInputError("diffusers' FasterCache is not supported under search (experimental in diffusers; its own"
                            f" FluxPipeline fails with it in diffusers 0.42): use FirstBlockCache, TaylorSeer, MagCache"
                            f" or PAB, {off}")
    config = getattr(model, "_cache_config", None)
    if name == "MagCacheConfig" and int(config.num_inference_steps) != int(num_steps):
        raise TTSInputError(f"MagCacheConfig(num_inference_steps={config.num_inference_steps}) counts steps of a"
                            f" {config.num_inference_steps}-step run and this search runs {num_steps}: enable it with"
                            f" num_inference_steps={num_steps}, {off}")
    if tgate or rgba:
        what = "T-GATE" if tgate else "rgba (Alfie's attention capture)"
        raise TTSInputError(f"{what} and diffusers' cache ({name}) both change what the model computes at each step;"
                            f" use one of them: run without {'--tgate' if tgate else '--rgba'}, {off}")
    if reward_guidance:
        raise TTSInputError(f"reward guidance runs the model more than once per step (its gradient and recurrence),"
                            f" which diffusers' cache ({name}) would count as later steps: run without"
                            f" --reward-guidance, {off}")
    if not fresh_trajectories:
        raise TTSInputError(f"searcher {searcher!r} resamples or revisits particles, which diffusers' cache ({name})"
                            f" cannot follow (its state is one trajectory per batch); search with best_of_n or"
                            f" zero_order, {off}")


def enable_diffusers_cache(proc: Any) -> DiffusersCache | None:
    """Plug the feature into the call view `proc` when its denoiser carries a diffusers cache
    (else remove it). `TTSPipeline` does this for every call after `check_search`."""
    proc.call.remove_feature(ENTRY)
    model = proc.adapter.denoiser
    if cache_name(model) is None:
        return None
    return proc.call.add_feature(DiffusersCache(proc.adapter.pipe, model, proc.model_timesteps, proc.num_steps,
                                                proc.max_batch))
