"""TTSPipeline: a diffusers pipeline plus a searcher and a verifier.

    from tts_diffusion import TTSPipeline
    tts = TTSPipeline.from_pretrained()                 # the embedded shapes model
    result = tts("a photo of a red circle", searcher="best_of_n", verifier="oracle",
                 budget=160, seed=0)
    result.image.save("best.png")

`TTSPipeline(existing_diffusers_pipe)` wraps a pipeline you already built.

diffusers habits: a list of prompts runs one search per prompt; `num_images_per_prompt=k`
returns the k best candidates; `output_type` "pil" / "pt" / "np"; `return_dict=False`
returns a tuple `(images,)`; `callback_on_step_end(pipe, step, timestep, callback_kwargs)`;
one generator, one per prompt, or a seed. One `TTSPipeline` may be called from several
threads at once: every call has its own budget, timings and per-particle state, and the
caches are locked.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.budget import Budget
from ..core.process import DenoisingProcess
from ..core.state import Progress
from ..errors import SearchInterrupted, TTSInputError
from ..features.diffusers_cache import check_search, enable_diffusers_cache
from ..features.tgate import active_tgate, enable_tgate
from ..features.tgate_spec import TGate
from ..paths import default_model_path, domain_clip_path, is_default_model
from ..records.result import SearchResult, SearchResults, image_problem
from ..request import SearchRequest, default_verifier_name
from ..searchers import load_searcher, min_budget, run_defaults
from ..searchers.registry import searcher_entry
from ..verifiers import Verifier, load_verifier
from . import checks
from .compile import check_compile, compile_pipeline, use_channels_last

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: optional file next to a model's model_index.json with the defaults it was tuned for
DEFAULTS_FILE = "tts_defaults.json"


def load_diffusers_pipeline(id_or_path: str | os.PathLike | None, **kwargs) -> Any:
    """`DiffusionPipeline.from_pretrained` with one clear error for a missing path or an
    unreachable hub id (raised as TTSInputError)."""
    if id_or_path is None:
        id_or_path = default_model_path()
        if not (Path(id_or_path) / "model_index.json").exists():
            raise TTSInputError(f"the embedded default model is missing at {id_or_path}; pass a model path or hub id")
    src = str(id_or_path)
    path = Path(src).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists():
            raise TTSInputError(f"{src} is not a diffusers pipeline folder (no model_index.json in it)")
        try:
            direct = _load_direct(path, kwargs)
            return direct if direct is not None else _from_pretrained(str(path), **kwargs)
        except Exception as e:  # noqa: BLE001 - report any loading failure on one line
            raise TTSInputError(f"could not load the pipeline in {src}: {_one_line(e)}") from e
    if not _HUB_ID.match(src) or src.startswith((".", "~")):
        raise TTSInputError(f"model path {src!r} does not exist")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return _from_pretrained(src, **({"local_files_only": True} if offline else {}), **kwargs)
    except Exception as e:  # noqa: BLE001
        where = "offline (HF_HUB_OFFLINE is set) and it is not in the local cache" if offline else "from the hub"
        raise TTSInputError(f"could not load model {src!r} {where}: {_one_line(e)}") from e


def _from_pretrained(src: str, **kwargs) -> Any:
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(src, **kwargs)


def _load_direct(path: Path, kwargs: dict) -> Any | None:
    """`direct_load.load_direct` when only a dtype is asked for and the folder's classes are
    known (the embedded model's), light in a process that does not compile; else None."""
    from .._startup import is_light
    from .direct_load import load_direct

    name = _dtype_kwarg()
    if set(kwargs) - {name}:
        return None
    return load_direct(path, name, kwargs.get(name), light=is_light())


def _dtype_kwarg() -> str:
    """diffusers >= 0.36 takes `dtype=` and deprecates `torch_dtype=`."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return (msg[0] if msg else type(e).__name__)[:300]


class TTSPipeline:
    """A diffusers pipeline with test-time search. Follows diffusers habits: `.to(device)`,
    `torch_dtype`, generators or seeds, `num_images_per_prompt`, `output_type`,
    `return_dict`, `callback_on_step_end`, `set_progress_bar_config`. Thread-safe."""

    #: processes kept for reuse (one per distinct steps / guidance / size / batch setting)
    PROCESS_CACHE_SIZE = 4

    def __init__(self, pipe: Any, verifier: str | Verifier | None = None, defaults: dict | None = None,
                 compile: bool | str = False):
        """compile: True (or a torch.compile mode, see `pipelines/compile.py`) runs the
        denoiser and the VAE decoder under torch.compile, compiled once per shape."""
        self.compile_mode = check_compile(compile)
        self.pipe = pipe
        self.defaults = self._call_defaults(pipe)
        self.defaults.update(defaults or {})
        self._verifiers: dict[str, Verifier] = {}
        self.verifier = verifier
        self._device: torch.device | None = None
        self._procs: OrderedDict[tuple, DenoisingProcess] = OrderedDict()
        self._lock = threading.RLock()  # guards the process and verifier caches and .to()
        self._progress_bar_config: dict[str, Any] = {}
        #: True for the embedded shapes model: its default verifier is the exact oracle and
        #: its "clip" the domain CLIP shipped with the package
        self.is_default_model = False
        #: where the model came from, for sidecars: None for the embedded model, else an
        #: absolute local path or a hub id (set by from_pretrained)
        self.model_source: str | None = None
        if self.compile_mode is not None:
            self.compile(self.compile_mode)

    def compile(self, mode: bool | str = True, backend: str | Callable = "inductor") -> "TTSPipeline":
        """Run the denoiser and the VAE decoder under torch.compile from now on (in place;
        channels_last for a UNet on CUDA). Each new shape compiles on first use."""
        mode = check_compile(mode)
        if mode is not None:
            with self._lock:
                compile_pipeline(self.pipe, mode, channels_last=None, backend=backend)
                self.compile_mode = mode
        return self

    @classmethod
    def from_pretrained(cls, id_or_path: str | os.PathLike | None = None, *, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, verifier: str | Verifier | None = None,
                        compile: bool | str = False, **kwargs) -> "TTSPipeline":
        """Load a diffusers pipeline (local folder or hub id; None = the embedded default)."""
        check_compile(compile)
        if torch_dtype is not None:
            kwargs[_dtype_kwarg()] = torch_dtype
        pipe = load_diffusers_pipeline(id_or_path, **kwargs)
        folder = Path(str(id_or_path)) if id_or_path is not None else default_model_path()
        defaults = {}
        if (folder / DEFAULTS_FILE).exists():
            defaults = json.loads((folder / DEFAULTS_FILE).read_text())
        tts = cls(pipe, verifier=verifier, defaults=defaults)
        tts.is_default_model = is_default_model(id_or_path)
        if not tts.is_default_model:  # an absolute path when local, so a sidecar replays from anywhere
            local = Path(str(id_or_path)).expanduser()
            tts.model_source = str(local.resolve()) if local.exists() else str(id_or_path)
        if device is not None:
            tts.to(device)
        return tts.compile(compile) if compile else tts

    @staticmethod
    def _call_defaults(pipe: Any) -> dict:
        """num_inference_steps / guidance_scale defaults of the pipeline's own __call__."""
        out = {}
        try:
            params = inspect.signature(pipe.__call__).parameters
        except (TypeError, ValueError):
            return out
        for k in ("num_inference_steps", "guidance_scale"):
            if k in params and params[k].default is not inspect.Parameter.empty and params[k].default is not None:
                out[k] = params[k].default
        return out

    def to(self, device: str | torch.device) -> "TTSPipeline":
        offload = checks.offloading(self.pipe)
        if offload is not None and not str(device).startswith("cpu"):
            raise TTSInputError(f"the pipeline has {offload} on: it moves each model to {device} itself; wrap it"
                                " without calling .to() (TTSPipeline(pipe) searches on its execution device)")
        device = checks.check_device(device)
        with self._lock:
            self._device = device
            self.pipe.to(self._device)
            if self.compile_mode is not None:
                use_channels_last(self.pipe)
            for v in self._verifiers.values():
                v.to(self._device)
        return self

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    def set_progress_bar_config(self, **kwargs) -> None:
        """As in diffusers; also applies to the search's own NFE bar (`disable=True` silences it)."""
        self._progress_bar_config.update(kwargs)
        self.pipe.set_progress_bar_config(**kwargs)

    # ----------------------------------------------------------------------
    @property
    def default_verifier(self) -> str:
        """The verifier used when none is named, the same from Python and the CLI: the exact
        oracle for the embedded shapes model, CLIP otherwise."""
        if self.verifier is not None:
            return self.verifier if isinstance(self.verifier, str) else self.verifier.name
        return default_verifier_name(self.is_default_model)

    def resolve_verifier(self, verifier: str | Verifier | Callable | None, **options
                         ) -> tuple[str | Verifier | Callable, dict]:
        """The verifier name (or object / callable) and the options `get_verifier` builds it
        from (options left at None are the verifier's to derive, and left out)."""
        if verifier is None:
            verifier = self.verifier if self.verifier is not None else self.default_verifier
        options = {k: v for k, v in options.items() if v is not None}
        if verifier == "clip" and options.get("model") is None and options.get("checkpoint") is None:
            # the domain CLIP for the embedded model, OpenAI's ViT-L/14 for everything else
            if self.is_default_model:
                options = {**options, "model": str(domain_clip_path())}
            else:
                options = {"pretrained": "openai", **options, "model": "ViT-L-14"}
        return verifier, options

    def get_verifier(self, verifier: str | Verifier | Callable | None, **options) -> Verifier:
        verifier, options = self.resolve_verifier(verifier, **options)
        if isinstance(verifier, Verifier):
            return verifier
        if not isinstance(verifier, str):  # a plain callable f(images, prompts) -> scores
            return load_verifier(verifier, **options).to(self.device)
        key = f"{verifier}:{sorted(options.items())}"
        with self._lock:
            if key not in self._verifiers:
                v = load_verifier(verifier, **options)
                self._verifiers[key] = v.to(self.device)
            return self._verifiers[key]

    def process(self, num_inference_steps: int | None = None, guidance_scale: float | None = None, *,
                height: int | None = None, width: int | None = None, max_batch: int = 16,
                **kwargs) -> DenoisingProcess:
        """The DenoisingProcess for these settings (cached; shared by calls, so take a
        per-call view with `.for_call()` before searching)."""
        steps = int(num_inference_steps if num_inference_steps is not None
                    else self.defaults.get("num_inference_steps", 25))
        gs = guidance_scale if guidance_scale is not None else self.defaults.get("guidance_scale")
        height = height if height is not None else self.defaults.get("height")
        width = width if width is not None else self.defaults.get("width")
        if "max_sequence_length" in self.defaults:
            kwargs.setdefault("max_sequence_length", self.defaults["max_sequence_length"])
        key = (steps, gs, height, width, max_batch, tuple(sorted(kwargs.items())))
        with self._lock:
            proc = self._procs.get(key)
            if proc is None:
                proc = DenoisingProcess.from_pipeline(self.pipe, steps, gs, height=height, width=width,
                                                      max_batch=max_batch, **kwargs)
                self._procs[key] = proc
                while len(self._procs) > self.PROCESS_CACHE_SIZE:
                    self._procs.popitem(last=False)
            self._procs.move_to_end(key)
            return proc

    def __call__(self, prompt: str | list[str], *, searcher: str = "best_of_n", verifier: str | Verifier | None = None,
                 budget: int | None = None, seed: int | None = 0,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 height: int | None = None, width: int | None = None, negative_prompt: str | None = None,
                 num_images_per_prompt: int | None = None, output_type: str = "pil", return_dict: bool = True,
                 callback_on_step_end: Callable[..., Any] | None = None,
                 max_batch: int = 16, progress: bool = True, verifier_options: dict | None = None,
                 process_options: dict | None = None, progress_callback: Callable[[Progress], None] | None = None,
                 rgba: bool = False, background_prompt: str | None = None, subject: str | None = None,
                 tgate: "TGate | int | dict | bool | None" = None, reward_guidance: Any = None,
                 budget_pool: int | None = None,
                 **searcher_options) -> SearchResult | SearchResults | tuple:
        """Search for the image that scores best on `verifier`: builds the `SearchRequest`
        these keywords describe and runs it (`run`).

        prompt: a prompt, or a list of prompts (one search each; returns `SearchResults`,
            a list of `SearchResult` whose `.images` concatenates them prompt by prompt).
        budget: NFE per prompt (denoiser evaluations per row; one sample costs
            `num_inference_steps`); default: the searcher's own (rbf, svdd, code: 500 at 10
            steps, the RBF paper's setting), else 4 samples' worth.
        seed / generator: the search is deterministic for a given seed. With a seed, every
            prompt's search starts from a generator seeded with it (a prompt gives the same
            result alone or in a list; seed=None draws one, recorded in `settings["seed"]`);
            `generator` may be one torch.Generator (shared by the
            prompts in turn) or a list with one per prompt.
        num_images_per_prompt: `result.images` holds the k best candidates (default: all
            kept candidates, best first); the budget must pay for k full samples.
        output_type: "pil" (list of PIL images), "pt" (float tensor [k,3,H,W] in [0,1]) or
            "np" (float array [k,H,W,3] in [0,1]); candidates are kept as 8-bit images.
        return_dict: False returns a tuple `(images,)`, as diffusers does.
        callback_on_step_end: called as `callback_on_step_end(pipe, step, timestep,
            callback_kwargs)` after every denoiser call of the search (`pipe` is this
            TTSPipeline, `step` the grid point, `timestep` the model timestep, and
            callback_kwargs {"nfe", "max_nfe", "best_score"}); its return value is ignored
            (a search owns its latents).
        progress_callback: called with a `Progress` (NFE spent, budget, best so far) after
            every denoiser call and every scored round, from the calling thread.
        rgba: Alfie RGBA generation (pipelines/alfie.py): centred subject, alpha matte from
            attention, `result.alpha` / `result.rgba`, `result.save` writes an RGBA PNG; the
            verifier scores the subject composited on a plain background. PixArt-layout models.
        background_prompt: rgba's background trajectory (default "A white background"; the
            embedded model: its exact blank canvas at no model cost unless this is given).
        subject: rgba's subject word(s) in the prompt (default: found by a built-in rule).
        tgate: T-GATE caching (speed): a gate step (e.g. 10), True (the defaults) or
            `TGate(gate_step=10, sp_interval=5, fi_interval=1, warm_up=2)`; from the gate on,
            CFG is dropped and cross-attention is cached (MM-DiT models, SD3 / FLUX: each joint
            block's text-stream keys / values, and the text stream stops). A gate at or past
            the last step never gates. Not with rgba, nor with fkc's cfg / product modes.
        reward_guidance: TFG reward guidance of every sampling step (features/guidance_spec.py):
            a differentiable verifier's name ("clip", "image_reward", "aesthetic"), or a dict
            of its options (verifier, preset: tfg | dps | freedom | ugd | mpgd | lgd, rho, mu,
            iterations, gamma, samples, n_recur, schedules). With smc the guided steps are
            proposals whose weights are corrected (the target stays p exp(lambda r)).
        budget_pool: NFE shared by a list of prompts instead of `budget` per prompt: with
            `stop_score`, prompts that reach it early leave their unspent NFE to the others
            (pipelines/budget_pool.py states the allocation rule; each result's
            `settings["pool"]` records its allotments).
        searcher_options: the searcher's own options (see `tts-diffusion list --searcher NAME`).

        Every argument is checked before any model work; bad input raises TTSInputError."""
        request = SearchRequest(
            prompt, searcher=searcher, searcher_options=searcher_options, verifier=verifier,
            verifier_options=verifier_options, budget=budget, seed=seed, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, height=height, width=width, negative_prompt=negative_prompt,
            max_batch=max_batch, process_options=process_options, tgate=tgate, rgba=rgba,
            reward_guidance=reward_guidance,
            background_prompt=background_prompt, subject=subject)
        return self.run(request, generator=generator, num_images_per_prompt=num_images_per_prompt,
                        output_type=output_type, return_dict=return_dict, callback_on_step_end=callback_on_step_end,
                        progress=progress, progress_callback=progress_callback, budget_pool=budget_pool)

    def run(self, request: SearchRequest, *, generator: torch.Generator | list[torch.Generator] | None = None,
            num_images_per_prompt: int | None = None, output_type: str = "pil", return_dict: bool = True,
            callback_on_step_end: Callable[..., Any] | None = None, progress: bool = True,
            progress_callback: Callable[[Progress], None] | None = None,
            budget_pool: int | None = None) -> SearchResult | SearchResults | tuple:
        """Run `request` (checked first, `SearchRequest.check`); the keywords are `__call__`'s.
        Each result's `provenance["run"]` is the request its search ran, serialised, with the
        model's defaults it took (steps, guidance, size, budget, seed) filled in."""
        # 1. check the request and the call's own arguments before any model work
        request = request.check(embedded_model=self.is_default_model, default_verifier=self.verifier,
                                max_steps=self.pipe.scheduler.config.get("num_train_timesteps"))
        prompts = request.model_prompts(self.is_default_model)
        generators = checks.check_generators(generator, len(prompts))
        checks.check_output_type(output_type)
        for flag, value in (("progress", progress), ("return_dict", return_dict)):
            if not isinstance(value, bool):  # flags are booleans, not truthy values
                raise TTSInputError(f"{flag} must be True or False, got {value!r}")
        for name, fn in (("callback_on_step_end", callback_on_step_end), ("progress_callback", progress_callback)):
            if fn is not None and not callable(fn):
                raise TTSInputError(f"{name} must be callable, got {type(fn).__name__}")
        search = load_searcher(request.searcher)
        ver = self.get_verifier(request.verifier, **request.verifier_options)
        if not request.rgba and any(getattr(m, "name", None) == "alpha" for m in ver.modules()):
            raise TTSInputError("the alpha verifier scores RGBA mattes: use it with rgba=True (--rgba)")
        for p in prompts:
            ver.check_prompt(p)  # before any compute is spent
        defaults = run_defaults(search)
        steps = request.num_inference_steps
        if steps is None:
            steps = defaults.get("num_inference_steps")

        # 2. the process for these settings (cached) and the budget it allows
        base = self.process(steps, request.guidance_scale, height=request.height, width=request.width,
                            max_batch=request.max_batch, **request.process_options)
        checks.check_dtype_on_device(base.dtype, base.device)
        checks.check_size_fits(self.pipe, base.height, base.width, base.device)
        # rgba with a model background: every particle-step costs one more denoiser row
        rows = 1 if not request.rgba or (self.is_default_model and request.background_prompt is None) else 2
        nfe = int(request.budget if request.budget is not None
                  else defaults.get("budget", 4 * base.num_steps) * rows)
        pool = None
        if budget_pool is not None:  # a shared budget: checked here, allotted per prompt below
            from .budget_pool import BudgetPool

            minimum = min_budget(search, base.num_steps, **request.searcher_options) * rows
            nfe = max(minimum, BudgetPool.check(budget_pool, len(prompts), minimum, request.budget) // len(prompts))
            pool = BudgetPool(budget_pool, len(prompts))
        if nfe < base.num_steps:
            raise TTSInputError(
                f"budget of {nfe} NFE is below one full sample ({base.num_steps} NFE at"
                f" {base.num_inference_steps} steps);"
                f" raise the budget to at least {base.num_steps}"
            )
        checks.check_budget_fits(nfe, base.num_steps)
        k = checks.check_num_images(num_images_per_prompt, nfe, base.num_steps)
        options = dict(request.searcher_options)
        if k is not None and options.get("keep_images", k) < k:
            options["keep_images"] = k
        seed = request.seed
        if seed is None and generator is None:  # a fresh seed, drawn once and recorded
            seed = torch.seed() % (checks.MAX_SEED + 1)
        # the request as it runs: the model's defaults filled in (what a sidecar replays)
        ran = dataclasses.replace(request, searcher_options=options, budget=nfe,
                                  seed=seed if generator is None else None,
                                  num_inference_steps=base.num_inference_steps, guidance_scale=base.guidance_scale,
                                  height=base.height, width=base.width)

        # 3. one search per prompt, each with its own per-call view of the process
        show_bar = progress and not self._progress_bar_config.get("disable", False)
        # every prompt's per-call view is set up (rgba: validated) before any model work
        calls = [self._prepare(base.for_call(), p, ver, ran, nfe) for p in prompts]
        results = []
        vname, vopts = self.resolve_verifier(request.verifier, **request.verifier_options)
        gens = []
        for i, ((proc, call_ver, rgba_run), p, given, gen) in enumerate(zip(calls, prompts, request.prompts, generators)):
            if gen is None:
                gen = torch.Generator().manual_seed(seed)
            gens.append(gen)
            share = nfe if pool is None else pool.take(i, len(prompts) - i)
            try:
                result = self._search(proc, search, call_ver, p, share, gen, request.negative_prompt, options,
                                      show_bar, progress_callback, callback_on_step_end,
                                      rows=rgba_run.rows_per_step if rgba_run else 1)
            except SearchInterrupted as stop:  # the best so far, recorded like a finished search's
                if stop.result is not None:
                    self._finish(stop.result, rgba_run, ran, request, given, share, k, output_type, vname, vopts,
                                 generator)
                raise
            if pool is not None:
                pool.give_back(i, share, result.nfe)
            self._finish(result, rgba_run, ran, request, given, share, k, output_type, vname, vopts, generator)
            results.append(result)
        if pool is not None:
            self._second_pass(pool, results, base, prompts, ver, ran, gens, search, request, options,
                              min_budget(search, base.num_steps, **request.searcher_options))

        # 4. outputs, as diffusers returns them
        out: SearchResult | SearchResults = results[0] if isinstance(request.prompt, str) else SearchResults(results)
        return out if return_dict else (out.images,)

    def _finish(self, result: SearchResult, rgba_run: Any, ran: SearchRequest, request: SearchRequest, given: str,
                nfe: int, k: int | None, output_type: str, vname: Any, vopts: dict, generator: Any) -> None:
        """A search's result completed: rgba's matte, the settings, and the provenance a sidecar
        replays (an interrupted result gets the same, so its sidecar reruns the full search)."""
        if rgba_run is not None:
            try:
                rgba_run.finish(result)
            except RuntimeError:
                if not result.interrupted:
                    raise
                result.settings["rgba_note"] = "interrupted before the best image's matte was kept: RGB only"
        result.settings.update({"budget": nfe, "seed": ran.seed, "negative_prompt": request.negative_prompt,
                                "prompt_given": given})
        result.num_images, result.output_type = k, output_type
        result.provenance = {
            "model_source": self.model_source,
            "verifier": {"name": vname if isinstance(vname, str) else getattr(vname, "name", type(vname).__name__),
                         "options": vopts},
            "run": dataclasses.replace(ran, budget=nfe).for_prompt(given).to_dict(),  # `tts-diffusion replay` reruns it
        }
        if generator is not None:
            result.provenance["note"] = "a generator was passed instead of a seed: the sidecar cannot replay the noise"
        problem = image_problem(result)
        if problem is not None:  # never silent (the CLI refuses to present it)
            import warnings

            warnings.warn(problem, RuntimeWarning, stacklevel=4)

    def _second_pass(self, pool: Any, results: list[SearchResult], base: DenoisingProcess, prompts: list[str],
                     ver: Verifier, ran: SearchRequest, gens: list[torch.Generator], search: Any,
                     request: SearchRequest, options: dict, minimum: int) -> None:
        """budget_pool's pass 2 (pipelines/budget_pool.py): what is left, split over the prompts
        below stop_score, in prompt order; each keeps the better of its two results."""
        failing = [i for i, r in enumerate(results) if not r.settings.get("stopped_early", False)]
        for n, i in enumerate(failing):
            share = pool.take(i, len(failing) - n)
            if share < minimum:
                pool.give_back(i, share, 0)
                continue
            proc, call_ver, rgba_run = self._prepare(base.for_call(), prompts[i], ver, ran, share)
            again = self._search(proc, search, call_ver, prompts[i], share, gens[i], request.negative_prompt, options,
                                 False, None, None, rows=rgba_run.rows_per_step if rgba_run else 1)
            if rgba_run is not None:
                rgba_run.finish(again)
            pool.give_back(i, share, again.nfe)
            first = results[i]
            if again.best_score > first.best_score:
                again.settings = {**first.settings, **again.settings}
                again.num_images, again.output_type, again.provenance = first.num_images, first.output_type, \
                    first.provenance
                again.nfe += first.nfe
                results[i] = again
            else:
                first.nfe += again.nfe
        for i, r in enumerate(results):
            r.settings["pool"] = pool.record(i)

    def _prepare(self, proc: DenoisingProcess, prompt: str, ver: Verifier, request: SearchRequest,
                 nfe: int) -> tuple[DenoisingProcess, Verifier, Any]:
        """One prompt's per-call process view and verifier: T-GATE's caches registered on it;
        with rgba, Alfie's set-up (centring hook, attention capture, compositing verifier),
        validated here."""
        enable_tgate(proc, request.tgate)
        entry = searcher_entry(request.searcher)  # diffusers' cache hooks: refused here or followed per chunk
        check_search(proc.adapter.denoiser, searcher=entry.name, fresh_trajectories=entry.fresh_trajectories,
                     num_steps=proc.num_steps, tgate=active_tgate(proc) is not None, rgba=request.rgba,
                     reward_guidance=request.reward_guidance is not None)
        enable_diffusers_cache(proc)
        if request.reward_guidance is not None:  # TFG: every proc.step becomes the guided step
            from ..features.guidance import enable_reward_guidance

            guide = request.reward_guidance
            if guide.verifier is None or guide.verifier == request.verifier:
                gver = ver
            else:
                gver = self.get_verifier(guide.verifier)
            enable_reward_guidance(proc, gver, guide, proc.encode(prompt, request.negative_prompt))
        if not request.rgba:
            return proc, ver, None
        from ..shapes.grammar import BACKGROUND
        from .alfie import prepare_rgba

        run = prepare_rgba(proc, prompt, ver, background_prompt=request.background_prompt, subject=request.subject,
                           negative_prompt=request.negative_prompt,
                           options={**request.process_options, **request.searcher_options},
                           canvas_color=BACKGROUND if self.is_default_model else None)
        run.check_budget(nfe, proc.num_steps)
        return proc, run.verifier, run

    def _search(self, proc: DenoisingProcess, search: Any, ver: Verifier, prompt: str, nfe: int,
                generator: torch.Generator, negative_prompt: str | None, hyper: dict, show_bar: bool,
                progress_callback: Callable[[Progress], None] | None,
                callback_on_step_end: Callable[..., Any] | None, rows: int = 1) -> SearchResult:
        """One search on a per-call process view: its own budget, bar and callbacks. rows:
        denoiser rows per particle-step (rgba with a model background: 2); the searcher plans
        in particle-steps, the bar and callbacks count rows."""
        b = Budget(nfe // rows)
        proc.call.on_progress = progress_callback
        bar = None
        if show_bar:
            from tqdm.auto import tqdm

            cfg = {k: v for k, v in self._progress_bar_config.items() if k not in ("total", "disable")}
            bar = tqdm(**{"desc": getattr(search, "searcher_name", "search"), "unit": "NFE", "leave": False, **cfg},
                       total=nfe)
        charged = [0]  # denoiser calls charged so far; the previous one has ended when the next starts

        def step_ended(nfe_then: int) -> None:
            i = proc.call.step
            if callback_on_step_end is None or i is None:
                return
            best = proc.call.best
            callback_on_step_end(self, i, proc.model_timesteps[i],
                                 {"nfe": nfe_then * rows, "max_nfe": b.max_nfe * rows,
                                  "best_score": None if best is None else best.score})

        def on_charge(n: int) -> None:
            if charged[0]:
                step_ended(b.nfe - n)
            charged[0] += 1
            if bar is not None:
                bar.update(n * rows)
            proc.call.report(b.nfe * rows, b.max_nfe * rows)

        b.on_charge = on_charge
        t0 = time.perf_counter()
        try:
            result = search(proc, ver, prompt, b, generator, negative_prompt=negative_prompt, **hyper)
            if charged[0]:
                step_ended(b.nfe)
        except KeyboardInterrupt as stop:
            if bar is not None:
                bar.close()
                bar = None
            if isinstance(stop, SearchInterrupted):
                raise
            raise SearchInterrupted(best_so_far(proc, ver, prompt, b, time.perf_counter() - t0)) from None
        finally:
            if bar is not None:
                bar.close()
        return result



def best_so_far(proc: DenoisingProcess, verifier: Any, prompt: str, budget: Budget,
                seconds: float) -> SearchResult | None:
    """An interrupted search's result: its best finished candidate, or the best Tweedie
    estimate x0 of the rows of its latest finished denoiser call where that scores higher
    (every searcher denoises its population step by step, so this loses at most the call in
    flight). None when neither exists. The estimates are decoded and scored once, outside the
    budget; the candidate's info says which step it came from."""
    import math

    from ..records.result import Candidate, to_uint8

    best = proc.call.best
    latest = proc.call.latest_x0
    if latest is not None:
        step, x0 = latest
        try:
            images = proc.decode(x0)
            raw = verifier(images.to(verifier.device), [prompt] * images.shape[0])
            scores = torch.as_tensor(raw.detach().cpu() if isinstance(raw, torch.Tensor) else raw).float()
            scores = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -math.inf))
            j = int(torch.argmax(scores))
            if best is None or float(scores[j]) > best.score:
                best = Candidate(score=float(scores[j]), nfe=budget.nfe, image=to_uint8(images[j]),
                                 info={"tweedie_estimate": {"step": int(step), "of_steps": int(proc.num_steps)}})
        except (RuntimeError, ValueError, TypeError, IndexError):
            pass  # the finished candidates stand
    if best is None or best.image is None:
        return None
    return SearchResult(prompt=prompt, best=best, candidates=[best], trace=[], nfe=budget.nfe,
                        verifier_calls=budget.verifier_calls, timings={"total": round(seconds, 6)},
                        settings={**proc.settings(), "verifier": getattr(verifier, "name", type(verifier).__name__)},
                        interrupted=True, model_rows=budget.model_rows)
