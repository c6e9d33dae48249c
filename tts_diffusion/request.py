"""SearchRequest: every argument of one search that does not depend on the model, checked once.

Every front door builds one and nothing else: `TTSPipeline.__call__` from its keywords, the
CLI's `generate` from its flags, `replay` from a sidecar, the demo from the page, `bench` for
each of its searches; `TTSPipeline.run(request)` runs it. `check()` validates the whole
request before any model work (bad input: `TTSInputError`, one line saying what is wrong and
what to do) and returns it with every default filled in: the searcher's and the verifier's
declared options (searchers/*_spec.py, verifiers/*_spec.py), the verifier by the default
rule (`default_verifier_name`), T-GATE's settings. The sidecar's `run` is the request a
search ran, serialised (`to_dict`); `from_dict` rebuilds the identical request, which is
what `tts-diffusion replay` runs.

Arguments of the call itself rather than of the search (a torch.Generator, callbacks, the
output format, `num_images_per_prompt`) are `TTSPipeline.run`'s. This module imports no
torch: the CLI checks a request before the model loads.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import TTSInputError
from .pipelines import checks
from .searchers import searcher_entry
from .verifiers import verifier_entry

#: how the Python API names the fields in messages
PYTHON_NAMES = {"num_inference_steps": "num_inference_steps", "budget": "budget", "height": "height",
                "width": "width", "max_batch": "max_batch", "rgba": "rgba=True", "tgate": "tgate",
                "reward_guidance": "reward_guidance", "background_prompt": "background_prompt", "subject": "subject"}
#: how the CLI names them (its flags)
CLI_NAMES = {"num_inference_steps": "--steps", "budget": "--budget", "height": "--height", "width": "--width",
             "max_batch": "--max-batch", "rgba": "--rgba", "tgate": "--tgate",
             "reward_guidance": "--reward-guidance", "background_prompt": "--background-prompt", "subject": "--subject"}
#: steps allowed before a model says how many timesteps it was trained on
TRAINED_TIMESTEPS = 1000


def default_verifier_name(embedded_model: bool) -> str:
    """The verifier a request that names none gets, from every front door: the exact oracle
    for the embedded shapes model, CLIP for any other model."""
    return "oracle" if embedded_model else "clip"


@dataclass(frozen=True)
class SearchRequest:
    """One search (or one per prompt, for a list of prompts), as `TTSPipeline.__call__`'s
    keywords name its parts (see its docstring for each)."""

    prompt: str | list[str]
    searcher: Any = "best_of_n"  # a registered name, or a search function
    searcher_options: Mapping[str, Any] = field(default_factory=dict)
    verifier: Any = None  # a registered name, a Verifier, a callable, or None: the default rule
    verifier_options: Mapping[str, Any] = field(default_factory=dict)
    budget: int | None = None
    seed: int | None = 0
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None
    max_batch: int = 16
    process_options: Mapping[str, Any] = field(default_factory=dict)
    tgate: Any = None  # a TGate, a gate step, a dict of its fields, True (its defaults) or None
    rgba: bool = False
    background_prompt: str | None = None
    subject: str | None = None
    #: TFG reward guidance (features/guidance_spec.py): a verifier name, a dict of its options,
    #: a RewardGuidance, or None (off)
    reward_guidance: Any = None

    # ------------------------------------------------------------------ the check
    def check(self, *, embedded_model: bool = False, default_verifier: Any = None, max_steps: int | None = None,
              names: Mapping[str, str] | None = None) -> "SearchRequest":
        """The request validated, with every default filled in (see the module docstring).

        embedded_model: the request is for the embedded shapes model (its prompts must map to
            the canonical ones it was trained on; its default verifier is the oracle).
        default_verifier: the verifier when the request names none (a pipeline's own);
            None: `default_verifier_name`.
        max_steps: the timesteps the model was trained on (None: TRAINED_TIMESTEPS, before a
            model is loaded). names: how messages name the fields (the CLI: its flags).
        Idempotent: checking a checked request returns an equal one."""
        name = {**PYTHON_NAMES, **(names or {})}
        prompts = checks.check_prompts(self.prompt)
        if self.negative_prompt is not None:
            checks.check_text(self.negative_prompt, "negative prompt", allow_empty=True)
        why = (" (the models are trained on 1000 timesteps)" if max_steps is None
               else " (the number of timesteps the model was trained on)")
        checks.check_positive_int(self.num_inference_steps, name["num_inference_steps"],
                                  high=max_steps or TRAINED_TIMESTEPS, why_high=why)
        checks.check_positive_int(self.height, name["height"])
        checks.check_positive_int(self.width, name["width"])
        guidance = checks.check_guidance(self.guidance_scale)
        seed = checks.check_seed(self.seed)
        checks.check_positive_int(self.max_batch, name["max_batch"], optional=False)
        checks.check_positive_int(self.budget, name["budget"])
        for what in ("verifier_options", "process_options", "searcher_options"):
            value = getattr(self, what)
            if value is not None and not isinstance(value, Mapping):
                raise TTSInputError(f"{what} must be a dict of keyword options, got {type(value).__name__}")
        if embedded_model:  # the embedded model knows only the canonical prompts it was trained on
            self.model_prompts(embedded_model)
        tgate = self._checked_tgate(name)
        if not self.rgba and (self.background_prompt is not None or self.subject is not None):
            raise TTSInputError(f"{name['background_prompt']} and {name['subject']} go with {name['rgba']}: pass"
                                f" {name['rgba']} or leave them out")
        entry = searcher_entry(self.searcher)
        if self.rgba and entry.name == "reflect":
            raise TTSInputError(f"{name['rgba']} does not work with the reflect searcher yet (its SDEdit children"
                                " start mid-trajectory, so their attention maps are incomplete); use another searcher")
        given = dict(self.searcher_options or {})
        searcher_options = entry.options(given) if list(entry.params) else given
        for key, text in searcher_options.items():  # a searcher's own prompts (fkc's prompt_2) too
            if text is not None and (key.startswith("prompt") or key.endswith("_prompt")):
                checks.check_text(text, f"{entry.name} option {key}", allow_empty=True)
                if embedded_model and text.strip():
                    from .shapes.grammar import model_grammar
                    from .shapes.phrasing import canonical_prompt

                    try:
                        canonical_prompt(text, model_grammar())
                    except TTSInputError as e:
                        raise TTSInputError(f"{entry.name} option {key}: {e}") from None
        if not isinstance(self.rgba, bool):
            raise TTSInputError(f"{name['rgba'].split('=')[0]} must be True or False, got {self.rgba!r}")
        verifier = self.verifier
        if verifier is None:
            verifier = default_verifier if default_verifier is not None else default_verifier_name(embedded_model)
        reward_guidance = self._checked_guidance(name, verifier)
        follows_gradient = entry.follows_gradient(searcher_options) or (entry.name == "driftlite"
                                                     and searcher_options.get("target") != "anneal")
        if self.rgba and follows_gradient:
            raise TTSInputError(f"{name['rgba']} does not work with the {entry.name} searcher yet (it follows the"
                                " verifier's gradient, and the RGBA compositing verifier has none); use another"
                                " searcher" + (" or driftlite's target=anneal" if entry.name == "driftlite" else ""))
        if entry.name == "driftlite":  # its reward's gradient and its targets, before model work
            if searcher_options.get("target") == "product":
                raise TTSInputError("driftlite does not sample products of experts (future work in the DriftLite paper,"
                                    " Sec. 5); use target tilt, anneal or both, or the fkc searcher with mode=product")
            if searcher_options.get("target") != "anneal" and isinstance(verifier, str):
                from .verifiers.registry import check_differentiable

                check_differentiable(verifier)
        verifier_options = dict(self.verifier_options or {})
        if isinstance(verifier, str):
            verifier_options = verifier_entry(verifier).options(verifier_options)
            if entry.follows_gradient(searcher_options):  # e.g. noise_opt: one line naming the differentiable verifiers
                from .verifiers.registry import check_differentiable

                check_differentiable(verifier)
        elif verifier_options:
            raise TTSInputError(f"verifier options {sorted(verifier_options)} apply to a registered verifier name only")
        return dataclasses.replace(
            self, prompt=prompts[0] if isinstance(self.prompt, str) else prompts, searcher_options=searcher_options,
            verifier=verifier, verifier_options=verifier_options, seed=seed, guidance_scale=guidance,
            process_options=dict(self.process_options or {}), tgate=tgate, rgba=bool(self.rgba),
            reward_guidance=reward_guidance)

    def _checked_guidance(self, name: Mapping[str, str], verifier: Any) -> Any:
        """The RewardGuidance, its verifier (default: the search's) declared differentiable."""
        if self.reward_guidance is None or self.reward_guidance is False:
            return None
        from .features.guidance_spec import RewardGuidance
        from .verifiers.registry import check_differentiable

        guide = RewardGuidance.parse(self.reward_guidance)
        if self.rgba:
            raise TTSInputError(f"{name['rgba']} cannot be combined with {name['reward_guidance']} yet; turn one off")
        who = guide.verifier if guide.verifier is not None else verifier
        if isinstance(who, str):
            check_differentiable(who)
        return guide

    def _checked_tgate(self, name: Mapping[str, str]) -> Any:
        if self.tgate is None or self.tgate is False:
            return None
        from .features.tgate_spec import TGate

        tgate = TGate.parse(self.tgate)
        if self.rgba:
            raise TTSInputError(f"{name['rgba']} cannot be combined with {name['tgate']}: after the gate step"
                                " cross-attention is cached and Alfie's attention maps would miss those steps;"
                                " turn one of them off")
        return tgate

    # ---------------------------------------------------------------- the prompts
    @property
    def prompts(self) -> list[str]:
        """The prompts as given (one search each)."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def model_prompts(self, embedded_model: bool) -> list[str]:
        """The prompts the model is given: for the embedded shapes model the canonical prompt
        each one maps to (a prompt outside its world is refused, with the closest one that
        works, in the grammar the shipped model speaks: v1 refuses v2-only prompts), for any
        other model the prompts as given."""
        if not embedded_model:
            return self.prompts
        from .shapes.grammar import model_grammar
        from .shapes.phrasing import canonical_prompt

        grammar = model_grammar()
        return [canonical_prompt(p, grammar) for p in self.prompts]

    def for_prompt(self, prompt: str) -> "SearchRequest":
        """The request of one of its prompts' searches."""
        return dataclasses.replace(self, prompt=prompt)

    # ------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the sidecar's `run`. A searcher or verifier passed as a Python object is
        recorded as None (it cannot be rebuilt from JSON); T-GATE by its settings."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        searcher, verifier = self.searcher, self.verifier
        out["searcher"] = searcher if isinstance(searcher, str) else getattr(searcher, "searcher_name", None)
        out["verifier"] = verifier if isinstance(verifier, str) else None
        out["tgate"] = None if self.tgate is None else dataclasses.asdict(self.tgate)
        guide = self.reward_guidance
        out["reward_guidance"] = dataclasses.asdict(guide) if dataclasses.is_dataclass(guide) else guide
        for key in ("searcher_options", "verifier_options", "process_options"):
            out[key] = {k: list(v) if isinstance(v, tuple) else v for k, v in (out[key] or {}).items()}
        return out

    @classmethod
    def from_dict(cls, run: Mapping[str, Any]) -> "SearchRequest":
        """The request `to_dict` wrote (a sidecar's `run`); unknown or missing fields are refused."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(run) - fields)
        if unknown:
            raise TTSInputError(f"the recorded run has fields {unknown} that a search request does not have")
        if "prompt" not in run:
            raise TTSInputError("the recorded run has no prompt")
        return cls(**dict(run))
