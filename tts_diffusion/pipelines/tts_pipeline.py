"""TTSPipeline: a diffusers pipeline plus a searcher and a verifier.

    from tts_diffusion import TTSPipeline
    tts = TTSPipeline.from_pretrained()                 # the embedded shapes model
    result = tts("a photo of a red circle", searcher="best_of_n", verifier="oracle",
                 budget=160, seed=0)
    result.image.save("best.png")

`TTSPipeline(existing_diffusers_pipe)` wraps a pipeline you already built.
"""
from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import torch

from ..core.budget import Budget
from ..core.process import DenoisingProcess
from ..core.result import SearchResult
from ..core.state import Progress
from ..core.tgate import TGate
from ..errors import TTSInputError
from ..paths import default_model_path, domain_clip_path
from ..searchers import load_searcher, run_defaults
from ..verifiers import Verifier, load_verifier

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: optional file next to a model's model_index.json with the defaults it was tuned for
DEFAULTS_FILE = "tts_defaults.json"


def load_diffusers_pipeline(id_or_path: str | os.PathLike | None, **kwargs) -> Any:
    """`DiffusionPipeline.from_pretrained` with one clear error for a missing path or an
    unreachable hub id (raised as TTSInputError)."""
    from diffusers import DiffusionPipeline

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
            return DiffusionPipeline.from_pretrained(str(path), **kwargs)
        except Exception as e:  # noqa: BLE001 - report any loading failure on one line
            raise TTSInputError(f"could not load the pipeline in {src}: {_one_line(e)}") from e
    if not _HUB_ID.match(src) or src.startswith((".", "~")):
        raise TTSInputError(f"model path {src!r} does not exist")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return DiffusionPipeline.from_pretrained(src, **({"local_files_only": True} if offline else {}), **kwargs)
    except Exception as e:  # noqa: BLE001
        where = "offline (HF_HUB_OFFLINE is set) and it is not in the local cache" if offline else "from the hub"
        raise TTSInputError(f"could not load model {src!r} {where}: {_one_line(e)}") from e


def _dtype_kwarg() -> str:
    """diffusers >= 0.36 takes `dtype=` and deprecates `torch_dtype=`."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return (msg[0] if msg else type(e).__name__)[:300]


class TTSPipeline:
    """A diffusers pipeline with test-time search. Follows diffusers habits: `.to(device)`,
    `torch_dtype`, generators or seeds."""

    def __init__(self, pipe: Any, verifier: str | Verifier | None = None, defaults: dict | None = None):
        self.pipe = pipe
        self.defaults = self._call_defaults(pipe)
        self.defaults.update(defaults or {})
        self._verifiers: dict[str, Verifier] = {}
        self.verifier = verifier
        self._device: torch.device | None = None
        self._procs: dict[tuple, DenoisingProcess] = {}
        #: True for the embedded shapes model: its "clip" is the domain CLIP in assets/
        self.is_default_model = False

    @classmethod
    def from_pretrained(cls, id_or_path: str | os.PathLike | None = None, *, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, verifier: str | Verifier | None = None,
                        **kwargs) -> "TTSPipeline":
        """Load a diffusers pipeline (local folder or hub id; None = the embedded default)."""
        if torch_dtype is not None:
            kwargs[_dtype_kwarg()] = torch_dtype
        pipe = load_diffusers_pipeline(id_or_path, **kwargs)
        folder = Path(str(id_or_path)) if id_or_path is not None else default_model_path()
        defaults = {}
        if (folder / DEFAULTS_FILE).exists():
            defaults = json.loads((folder / DEFAULTS_FILE).read_text())
        tts = cls(pipe, verifier=verifier, defaults=defaults)
        tts.is_default_model = id_or_path is None or folder.resolve() == default_model_path().resolve()
        if device is not None:
            tts.to(device)
        return tts

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
        self._device = torch.device(device)
        self.pipe.to(self._device)
        for v in self._verifiers.values():
            v.to(self._device)
        return self

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device

    def set_progress_bar_config(self, **kwargs) -> None:
        self.pipe.set_progress_bar_config(**kwargs)

    # ----------------------------------------------------------------------
    def get_verifier(self, verifier: str | Verifier | None, **options) -> Verifier:
        verifier = verifier if verifier is not None else (self.verifier or "clip")
        if isinstance(verifier, Verifier):
            return verifier
        if verifier == "clip" and options.get("model") is None and options.get("checkpoint") is None:
            # the domain CLIP for the embedded model, OpenAI's ViT-L/14 for everything else
            if self.is_default_model:
                options = {**options, "model": str(domain_clip_path())}
            else:
                options = {"pretrained": "openai", **options, "model": "ViT-L-14"}
        key = f"{verifier}:{sorted(options.items())}"
        if key not in self._verifiers:
            v = load_verifier(verifier, **options)
            self._verifiers[key] = v.to(self.device)
        return self._verifiers[key]

    def process(self, num_inference_steps: int | None = None, guidance_scale: float | None = None, *,
                height: int | None = None, width: int | None = None, max_batch: int = 16,
                **kwargs) -> DenoisingProcess:
        """The DenoisingProcess for these settings (cached)."""
        steps = int(num_inference_steps or self.defaults.get("num_inference_steps", 25))
        gs = guidance_scale if guidance_scale is not None else self.defaults.get("guidance_scale")
        height = height or self.defaults.get("height")
        width = width or self.defaults.get("width")
        if "max_sequence_length" in self.defaults:
            kwargs.setdefault("max_sequence_length", self.defaults["max_sequence_length"])
        key = (steps, gs, height, width, max_batch, tuple(sorted(kwargs.items())))
        if key not in self._procs:
            self._procs = {key: DenoisingProcess.from_pipeline(self.pipe, steps, gs, height=height, width=width,
                                                               max_batch=max_batch, **kwargs)}
        return self._procs[key]

    def __call__(self, prompt: str, *, searcher: str = "best_of_n", verifier: str | Verifier | None = None,
                 budget: int | None = None, seed: int | None = 0, generator: torch.Generator | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 height: int | None = None, width: int | None = None, negative_prompt: str | None = None,
                 max_batch: int = 16, progress: bool = True, verifier_options: dict | None = None,
                 process_options: dict | None = None, progress_callback: Callable[[Progress], None] | None = None,
                 tgate: "TGate | int | dict | None" = None, **searcher_kwargs) -> SearchResult:
        """Search for the image that scores best on `verifier`.

        budget: NFE (denoiser evaluations per row; one sample costs `num_inference_steps`);
            default: the searcher's own (rbf, svdd, code: 500 at 10 steps, the RBF paper's
            setting), else 4 samples' worth.
        seed / generator: the search is deterministic for a given seed.
        progress_callback: called with a `Progress` (NFE spent, budget, best so far) after
            every denoiser call and every scored round, from the calling thread.
        tgate: T-GATE caching (speed): a gate step (e.g. 10) or `TGate(gate_step=10,
            sp_interval=5, fi_interval=1, warm_up=2)`; from the gate on, CFG is dropped and
            cross-attention is cached. A gate at or past the last step never gates.
        searcher_kwargs: the searcher's own hyper-parameters (e.g. `n`, `round_size`)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise TTSInputError("the prompt is empty: pass a non-empty text prompt")
        tgate = TGate.parse(tgate)  # bad settings fail before anything is loaded
        search = load_searcher(searcher)
        ver = self.get_verifier(verifier, **(verifier_options or {}))
        ver.check_prompt(prompt)  # before any compute is spent
        defaults = run_defaults(search)
        if num_inference_steps is None:
            num_inference_steps = defaults.get("num_inference_steps")
        # a per-call view: budget, timings and per-particle state belong to this call only
        proc = self.process(num_inference_steps, guidance_scale, height=height, width=width,
                            max_batch=max_batch, **(process_options or {})).for_call()
        proc.enable_tgate(tgate)
        if budget is None:
            budget = defaults.get("budget", 4 * proc.num_steps)
        nfe = int(budget)
        if nfe < proc.num_steps:
            raise TTSInputError(
                f"budget of {nfe} NFE is below one full sample ({proc.num_steps} NFE at {proc.num_steps} steps);"
                f" raise the budget to at least {proc.num_steps}"
            )
        if generator is None:
            generator = torch.Generator().manual_seed(int(seed if seed is not None else torch.seed()))
        bar = None
        b = Budget(nfe)
        proc.call.on_progress = progress_callback
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=nfe, desc=f"{getattr(search, 'searcher_name', 'search')}", unit="NFE", leave=False)

        def on_charge(n: int) -> None:
            if bar is not None:
                bar.update(n)
            proc.call.report(b.nfe, b.max_nfe)

        b.on_charge = on_charge
        try:
            result = search(proc, ver, prompt, b, generator, negative_prompt=negative_prompt, **searcher_kwargs)
        finally:
            if bar is not None:
                bar.close()
        result.settings.update({"budget": nfe, "seed": seed, "negative_prompt": negative_prompt})
        return result
