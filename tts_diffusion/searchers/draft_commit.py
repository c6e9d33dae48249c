"""Draft-then-commit (CachedSearch, arXiv 2607.23159, `cachedsearch/api.py: cached_search`;
Flash-BoN), with top-k commits.

    draw N seeds
    drafts:  make each seed's sample cheaply, score it           (verifier, charged)
    commit:  for the top k drafts by score: the same seed at full compute, scored again
    return the best committed sample (a committed sample is bit-identical to a plain
           sample of its seed: best-of-N's output whenever both pick the same seed)

Draft kinds (`draft`):
- steps: the seed sampled on a grid of `draft_steps` (the pipeline's own scheduler asked for
  that many steps; the same initial noise, so the seed indexes the same sample).
  NFE N * draft_steps + k * num_steps.
- preview: the first `draft_steps` steps of the full grid; the Tweedie estimate x0 there is
  decoded by the process's preview decoder (the full VAE where it has none) and scored. The
  committed drafts continue from their prefix (proc.select keeps the scheduler history and
  model state with them): the deterministic sampler makes that exactly the full sample.
  NFE N * draft_steps + k * (num_steps - draft_steps).
- tgate: T-GATE with its gate at `draft_gate` for the drafts, off (the call's own setting)
  for the commits. NFE N * num_steps + k * num_steps; T-GATE's saving shows in model_rows
  and seconds.
- cache: diffusers' cache hooks, `denoiser.enable_cache(config)` with `cache_config`, for the
  drafts only (disabled for the commits). Each draft runs alone (batch 1) after
  `_reset_stateful_cache()`, inside `cache_context("draft")`: FirstBlockCache and MagCache
  decide per forward for the whole batch, so a draft batched with others would depend on
  its batch-mates. NFE: a cached step counts what the model ran, the share of its
  transformer blocks that were computed (counted by a hook under the cache's hooks; a block
  the cache skips never reaches it): the process charges each step in full before the
  forward, and the uncomputed share is credited back after the drafts (floored to whole NFE).
  Refused with one line for a denoiser without diffusers' CacheMixin, and together with
  T-GATE (two caches of the same attention).

The result's candidates are the committed samples (info: their draft score and rank);
settings["drafts"] lists every draft (seed, draft score, committed or not), and
settings["seconds"] the seconds of the draft and commit phases (verifier included)."""
from __future__ import annotations

import ast
import contextlib
import copy
import time
from typing import Any, Iterator

import torch

from ..core.budget import Budget
from ..core.process import Conditioning, DenoisingProcess, make_family
from ..errors import TTSInputError
from ..records.result import SearchResult
from ..verifiers.base import Verifier
from .common import SearchLog, stopped, unspent
from .draft_commit_spec import DEFAULT_CACHE, DRAFT_COMMIT, commit_cost, draft_steps
from .registry import register_searcher


def coarse_process(proc: DenoisingProcess, steps: int) -> DenoisingProcess:
    """The same model on the grid the pipeline's scheduler makes for `steps` steps; shares the
    call (budget, timings, per-particle state)."""
    scheduler = getattr(proc.adapter.pipe, "scheduler", None)
    if scheduler is None:
        raise TTSInputError("draft=steps needs the pipeline's scheduler to build the coarser grid; use draft=preview")
    family, ts, stepping = make_family(scheduler, proc.adapter, steps)
    other = copy.copy(proc)
    other.family, other.model_timesteps, other.stepping, other.num_inference_steps = family, ts, stepping, steps
    return other


def parse_cache_config(text: str | None) -> Any:
    """'NAME:key=value,...' -> diffusers.hooks.<NAME>Config(key=value, ...) (values as Python
    literals); one line naming what is wrong otherwise."""
    import diffusers.hooks as hooks

    text = text or DEFAULT_CACHE
    name, _, rest = text.partition(":")
    cls = getattr(hooks, name.strip() if name.strip().endswith("Config") else name.strip() + "Config", None)
    known = sorted(n[:-6] for n in dir(hooks) if n.endswith("CacheConfig"))
    if cls is None:
        raise TTSInputError(f"cache_config {text!r}: no diffusers.hooks config {name.strip()!r}; known: {', '.join(known)}")
    kwargs = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise TTSInputError(f"cache_config {text!r}: {part!r} must look like key=value")
        try:
            kwargs[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = value.strip()
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TTSInputError(f"cache_config {text!r}: {e}") from None


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks (the entries of the model's ModuleLists, as diffusers' cache hooks find them)."""
    return [b for _, child in model.named_children() if isinstance(child, torch.nn.ModuleList) for b in child]


@contextlib.contextmanager
def cached_denoiser(proc: DenoisingProcess, config: Any) -> Iterator[list[int]]:
    """`enable_cache(config)` on the denoiser inside the block; yields [blocks computed, blocks
    in the model] counted over the block's forwards (a counting hook sits under the cache's
    hooks on every block, so a block the cache skips is not counted)."""
    from diffusers.hooks import HookRegistry, ModelHook

    model = proc.adapter.denoiser
    count = [0, len(_blocks(model))]

    class _Count(ModelHook):
        def new_forward(self, module, *args, **kwargs):
            count[0] += 1
            return self.fn_ref.original_forward(*args, **kwargs)

    blocks = _blocks(model)
    for b in blocks:
        HookRegistry.check_if_exists_or_initialize(b).register_hook(_Count(), "tts_block_count")
    try:
        model.enable_cache(config)
        try:
            yield count
        finally:
            model.disable_cache()
    finally:
        for b in blocks:
            HookRegistry.check_if_exists_or_initialize(b).remove_hook("tts_block_count", recurse=False)


def check_cache_support(proc: DenoisingProcess) -> None:
    model = proc.adapter.denoiser
    if not hasattr(model, "enable_cache"):
        raise TTSInputError(f"draft=cache: the denoiser {type(model).__name__} has no diffusers cache support"
                            " (CacheMixin.enable_cache); use draft=steps, preview or tgate")
    if proc.call.features:
        raise TTSInputError(f"draft=cache cannot be combined with {', '.join(proc.call.features)}: both cache the"
                            " denoiser's attention; turn one of them off")
    if getattr(model, "is_cache_enabled", False):
        raise TTSInputError("draft=cache: the denoiser already has a cache enabled; disable it first")


@register_searcher(DRAFT_COMMIT)
def draft_commit(proc: DenoisingProcess, verifier: Verifier, prompt: str, budget: Budget,
                 generator: torch.Generator | None, *, negative_prompt: str | None, **o: Any) -> SearchResult:
    """Options `o`: DRAFT_COMMIT in draft_commit_spec.py (`tts-diffusion list --searcher draft_commit`)."""
    n_steps, kind, k = proc.num_steps, o["draft"], o["top_k"]
    d_steps, c_cost = draft_steps(n_steps, o), commit_cost(n_steps, o)
    affordable = (budget.remaining_nfe - k * c_cost) // d_steps
    n = affordable if o["num_samples"] is None else o["num_samples"]
    if n < k or n > affordable:
        need = max(n, k) * d_steps + k * c_cost
        raise TTSInputError(f"draft_commit with {max(n, k)} drafts of {d_steps} NFE and {k} commit(s) of {c_cost} NFE"
                            f" needs {need} NFE; the budget has {budget.remaining_nfe}")
    # everything that can refuse the request does so before any model work
    config = None
    if kind == "cache":
        check_cache_support(proc)
        config = parse_cache_config(o["cache_config"])
    drafting = coarse_process(proc, d_steps) if kind == "steps" else proc
    cond = proc.encode(prompt, negative_prompt)
    log = SearchLog(proc, verifier, prompt, budget, o["keep_images"])
    seeds = proc.seeds(n, generator)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    settings: dict[str, Any] = {"num_samples": n, "draft_steps": d_steps}
    with proc.metered(budget), drafting.metered(budget):
        # 1  drafts, scored
        x = None
        if kind == "cache":
            x, computed = _cache_drafts(proc, cond, seeds, config, budget)
            settings["draft_blocks_computed"] = computed
            draft_scores = log.verify(proc.decode(x))
        elif kind == "preview":
            x, pred = proc.sample(proc.noise_from_seeds(seeds), cond, 0, d_steps)
            draft_scores = log.score_intermediate(pred.x0) if pred is not None else log.verify(proc.decode(x))
        else:
            with _draft_tgate(proc, o["draft_gate"] or max(1, n_steps // 2), kind == "tgate"):
                xd, _ = drafting.sample(drafting.noise_from_seeds(seeds), cond)
                draft_scores = log.verify(drafting.decode(xd))
        seconds["draft"] = time.perf_counter() - t0
        # 2  commit the top k: the same seed at full compute (preview: the prefix continued)
        order = torch.argsort(draft_scores, descending=True, stable=True).tolist()
        top = order[:k]
        committed = []
        t1 = time.perf_counter()
        # with stop_score one at a time, in draft order, until one reaches it
        batches = [[j] for j in top] if o["stop_score"] is not None else [top]
        waiting = proc.select(torch.tensor(top), x) if kind == "preview" else None  # prefixes, in draft order
        for batch in batches:
            if kind == "preview":  # continue the prefixes at the front; the rest wait behind them
                xc, _ = proc.sample(waiting[: len(batch)], cond, d_steps)
                rest = torch.arange(len(batch), waiting.shape[0])
                if len(rest):
                    waiting = proc.select(rest, waiting)
            else:
                xc, _ = proc.sample(proc.noise_from_seeds([seeds[j] for j in batch]), cond)
            info = [{"phase": "commit", "draft_rank": order.index(j), "draft_score": float(draft_scores[j])}
                    for j in batch]
            log.score_latents(xc, [seeds[j] for j in batch], info)
            committed += batch
            if stopped(log, o["stop_score"]):
                break
        seconds["commit"] = time.perf_counter() - t1
    settings["drafts"] = [{"seed": seeds[j], "draft_score": float(draft_scores[j]), "committed": j in committed}
                          for j in range(n)]
    settings["seconds"] = {k_: round(v, 6) for k_, v in seconds.items()}
    return log.result({**settings, **unspent(budget, o["stop_score"], log)})


@contextlib.contextmanager
def _draft_tgate(proc: DenoisingProcess, gate: int, on: bool) -> Iterator[None]:
    """T-GATE at `gate` for the drafts (on), the call's own setting restored after."""
    if not on:
        yield
        return
    from ..features.tgate import enable_tgate
    from ..features.tgate_spec import ENTRY, TGate

    before = proc.call.features.get(ENTRY)
    enable_tgate(proc, TGate(gate_step=gate))
    try:
        yield
    finally:
        proc.call.remove_feature(ENTRY)
        if before is not None:
            proc.call.add_feature(before)


def _cache_drafts(proc: DenoisingProcess, cond: Conditioning, seeds: list[int], config: Any,
                  budget: Budget) -> tuple[torch.Tensor, float]:
    """Each draft alone under the cache (state reset first); the NFE the cache skipped is
    credited back. Returns the drafts and the share of blocks computed."""
    model = proc.adapter.denoiser
    outs = []
    nfe0 = budget.nfe
    with cached_denoiser(proc, config) as count:
        for s in seeds:
            model._reset_stateful_cache()
            with model.cache_context("draft"):
                xs, _ = proc.sample(proc.noise_from_seeds([s]), cond)
            outs.append(xs)
        model._reset_stateful_cache()
    charged = budget.nfe - nfe0
    forwards = charged  # one forward of every block per NFE (batch 1; CFG rides in the same forward)
    share = count[0] / max(1, forwards * count[1])
    budget.credit(int(charged - share * charged))
    return torch.cat(outs), round(share, 6)
