"""From the page's raw widget values to one checked `SearchRequest` (tts_diffusion/request.py).

Everything a visitor sends goes through `parse_request` before any model work: the
prompt, the searcher and verifier names (registered ones only), the per-request limits of
the server (`DemoLimits`), the widget values turned into the searcher's declared options,
and the verifier options that are safe to take from a page; then the request's own
`check()`, as every front door runs it. Every string a request carries is a prompt, a value
from a fixed list, or refused (`page_params`): a free string that is not a prompt could name
a file, so it is never a widget, and a model folder is one the server fixed at start-up
(`ServerModels`). Bad input raises `TTSInputError` with one line to show; a refused value is
not repeated back (it may be a probe of the server's disk).

This module does not import gradio: the app (`app.py`) and the tests call it directly.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import TTSInputError
from ..params import Param, ParamSpec
from ..request import SearchRequest
from ..searchers import available_searchers, searcher_params
from ..verifiers import available_verifiers, verifier_params
from .server_models import ServerModels

#: largest seed the page offers (numpy / torch seeds are 64 bit; 2**31 - 1 stays exact in JS)
MAX_SEED = 2**31 - 1

#: verifier options only the server decides (placement, memory), never the page
SERVER_ONLY_OPTIONS = frozenset({"device", "dtype", "chunk_size", "batch_size"})
#: words that mark an option as naming something on disk or on the hub
_PATH_WORDS = ("path", "file", "dir", "checkpoint", "weights", "model", "pretrained", "cache", "url")

#: the request's feature switches the page shows as toggles (T-GATE with its defaults, Alfie RGBA)
TOGGLES = {"tgate": "T-GATE (cache cross-attention after the gate step: faster)",
           "rgba": "RGBA (transparent background, Alfie)",
           "reward_guidance": "Reward guidance (TFG, by the verifier's gradient: clip, image_reward, aesthetic)"}


@dataclass(frozen=True)
class DemoLimits:
    """Per-request and server limits, chosen when the server starts and shown in the page.

    max_budget: NFE one request may spend; max_steps: denoising steps per sample;
    max_image_size: pixels per side; max_queue: requests waiting at once (more are
    refused); concurrency: requests that run at the same time."""

    max_budget: int = 2000
    max_steps: int = 100
    max_image_size: int = 1024
    max_queue: int = 16
    concurrency: int = 1

    def __post_init__(self) -> None:
        for name in ("max_budget", "max_steps", "max_image_size", "max_queue", "concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise TTSInputError(f"the demo limit {name} ({flag}) must be a positive integer, got {value!r}")

    def describe(self) -> str:
        """One line for the page."""
        return (f"Limits on this server: budget up to {self.max_budget} NFE per request, up to {self.max_steps} "
                f"steps, images up to {self.max_image_size} px a side, {self.max_queue} requests in the queue, "
                f"{self.concurrency} running at a time.")


# ------------------------------------------------------------------ parameter widgets
def is_page_safe(param: Param) -> bool:
    """Whether a verifier option may be set from the page: a number, a flag, a list of
    numbers or a fixed choice, and not a server concern (device, dtype, paths)."""
    if param.name in SERVER_ONLY_OPTIONS or any(w in param.name.lower() for w in _PATH_WORDS):
        return False
    if param.choices is not None:
        return True
    return param.type in (bool, int, float) or (param.type is tuple and param.item_type in (int, float))


def is_prompt(param: Param) -> bool:
    """A free-text option that is a prompt (fkc's `prompt_2`): text for the text encoder."""
    return param.type is str and param.choices is None and "prompt" in param.name


def page_params(kind: str, name: str, models: ServerModels | None = None) -> list[Param]:
    """The parameters the page shows widgets for (and the only ones a request can set):
    a searcher's spec without free strings other than prompts, its model options as the
    fixed choices of `models` (`ServerModels.page_param`); a verifier's page-safe options
    (`is_page_safe`)."""
    if kind == "searcher":
        models = models or ServerModels()
        out = [models.page_param(p) for p in searcher_params(name)]
        return [p for p in out if p is not None and (p.type is not str or p.choices is not None or is_prompt(p))]
    if kind == "verifier":
        return [p for p in verifier_params(name) if is_page_safe(p)]
    raise ValueError(f"kind must be 'searcher' or 'verifier', got {kind!r}")


def widget_value(param: Param, raw: Any, owner: str) -> Any:
    """A widget's raw value to a validated parameter value.

    Empty (None, "", AUTO) means the default: None for a derived parameter (default None),
    else the declared default. Numbers from number boxes come as floats or ints; text
    (tuples, prompts, derived numbers, a nullable flag's dropdown) goes through
    `Param.parse`. A refused value is not repeated in the message, only what is allowed."""
    if raw is None or (isinstance(raw, str) and raw.strip() in ("", AUTO)):
        return param.validate(param.default, owner)
    try:
        return param.parse(raw, owner) if isinstance(raw, str) else param.validate(raw, owner)
    except TTSInputError:
        raise TTSInputError(f"{owner} option {param.name} is not valid: expected {param.allowed()}") from None


#: how messages name the request's fields on the page (its boxes and toggles)
PAGE_NAMES = {"num_inference_steps": '"Steps"', "budget": '"Budget (NFE)"', "height": '"Height"', "width": '"Width"',
              "max_batch": "the batch size", "rgba": 'the "RGBA" toggle', "tgate": 'the "T-GATE" toggle',
              "reward_guidance": 'the "Reward guidance" toggle', "background_prompt": "a background prompt", "subject": "a subject"}

#: the dropdown entry that means "leave it to the default / derive it"
AUTO = "(auto)"


def options_from_widgets(spec: ParamSpec | list[Param], raw: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Validated options for the parameters whose widget value differs from the default (the
    request's check fills in the declared defaults for the rest)."""
    out: dict[str, Any] = {}
    for p in spec:
        if p.name not in raw:
            continue
        value = widget_value(p, raw[p.name], owner)
        if value != p.default:
            out[p.name] = value
    return out


# --------------------------------------------------------------------- the request
def _blank(value: Any) -> bool:
    """An empty box: nothing sent, or only white space."""
    return value is None or (isinstance(value, str) and not value.strip())


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or _blank(value):
        raise TTSInputError(f"{what} is empty: enter a whole number")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise TTSInputError(f"{what} must be a whole number, got {value!r}") from None
    if not f.is_integer():
        raise TTSInputError(f"{what} must be a whole number, got {value!r}")
    return int(f)


def _optional_int(value: Any, what: str) -> int | None:
    if _blank(value):
        return None
    return _int(value, what)


def _check_range(value: int | None, what: str, low: int, high: int, hint: str) -> None:
    if value is not None and not low <= value <= high:
        raise TTSInputError(f"{what} of {value} is outside [{low}, {high}]; {hint}")


def parse_request(tts: Any, raw: Mapping[str, Any], limits: DemoLimits,
                  rng: random.Random | None = None, models: ServerModels | None = None) -> SearchRequest:
    """The checked request the page's values describe (keys: prompt, negative_prompt,
    searcher, verifier, members, budget, seed, randomize_seed, steps, guidance, height and
    width (0 or empty: the model's), the `TOGGLES`, and `searcher_options` /
    `verifier_options`: {name: {param: raw}}), within the registries and `limits`; model
    folders come from `models`, never from the page. Raises TTSInputError before any model
    work."""
    prompt = (raw.get("prompt") or "").strip()
    if not prompt:
        raise TTSInputError("the prompt is empty: type what the image should show")
    negative = (raw.get("negative_prompt") or "").strip() or None

    searcher = raw.get("searcher") or ""
    if searcher not in available_searchers():
        raise TTSInputError(f"unknown searcher; choose one of {', '.join(available_searchers())}")
    verifier = raw.get("verifier") or ""
    if verifier not in available_verifiers():
        raise TTSInputError(f"unknown verifier; choose one of {', '.join(available_verifiers())}")

    budget = _int(raw.get("budget"), "the budget (NFE)")
    if budget < 1:
        raise TTSInputError(f"the budget must be a positive number of NFE, got {budget}")
    if budget > limits.max_budget:
        raise TTSInputError(f"a budget of {budget} NFE is over this server's limit of {limits.max_budget} NFE "
                            f"per request; lower the budget")
    steps = _optional_int(raw.get("steps"), "steps")
    _check_range(steps, "steps", 1, limits.max_steps, f"this server allows 1 to {limits.max_steps} steps")
    height = _optional_int(raw.get("height"), "the height") or None  # 0: the model's own
    width = _optional_int(raw.get("width"), "the width") or None
    for value, what in ((height, "the height"), (width, "the width")):
        _check_range(value, what, 8, limits.max_image_size,
                     f"this server makes images of 8 to {limits.max_image_size} px a side")
    guidance = raw.get("guidance")
    if not _blank(guidance):
        try:
            guidance = float(guidance)
        except (TypeError, ValueError):
            raise TTSInputError(f"the guidance scale must be a number, got {guidance!r}") from None
        if not 0.0 <= guidance <= 100.0:
            raise TTSInputError(f"the guidance scale {guidance} is outside [0, 100]")
    else:
        guidance = None

    if raw.get("randomize_seed"):
        seed = (rng or random.SystemRandom()).randint(0, MAX_SEED)
    else:
        seed = _int(raw.get("seed"), "the seed")
        if not 0 <= seed <= MAX_SEED:
            raise TTSInputError(f"the seed must be in [0, {MAX_SEED}], got {seed}")

    s_raw = (raw.get("searcher_options") or {}).get(searcher, {})
    models = models or ServerModels()
    searcher_options = models.apply(options_from_widgets(page_params("searcher", searcher, models), s_raw,
                                                         f"searcher {searcher!r}"))
    v_raw = (raw.get("verifier_options") or {}).get(verifier, {})
    verifier_options = options_from_widgets(page_params("verifier", verifier), v_raw, f"verifier {verifier!r}")
    if verifier == "ensemble":
        verifier_options.update(ensemble_options(tts, raw.get("members")))

    request = SearchRequest(prompt, searcher=searcher, searcher_options=searcher_options, verifier=verifier,
                            verifier_options=verifier_options, budget=budget, seed=seed, num_inference_steps=steps,
                            guidance_scale=guidance, height=height, width=width, negative_prompt=negative,
                            tgate=bool(raw.get("tgate")), rgba=bool(raw.get("rgba")),
                            reward_guidance={} if raw.get("reward_guidance") else None)  # TFG's defaults
    return request.check(embedded_model=bool(getattr(tts, "is_default_model", False)), names=PAGE_NAMES)


def ensemble_members(tts: Any) -> list[str]:
    """Verifiers an ensemble may combine (every registered one but the ensemble itself)."""
    return [v for v in available_verifiers() if v != "ensemble"]


def ensemble_options(tts: Any, members: Any) -> dict[str, Any]:
    """`members=` for the ensemble verifier from the page's multiselect; the server adds
    the weights paths it chose at start-up (the embedded model's domain CLIP), never the page."""
    chosen = list(members or [])
    if len(chosen) < 1:
        raise TTSInputError("the ensemble has no members: pick at least one verifier to combine")
    if any(m not in ensemble_members(tts) for m in chosen):
        raise TTSInputError(f"unknown ensemble member; choose from {', '.join(ensemble_members(tts))}")
    out: dict[str, Any] = {"members": ",".join(chosen)}
    if "clip" in chosen and getattr(tts, "is_default_model", False):
        from ..paths import domain_clip_path

        out["clip.model"] = str(domain_clip_path())
    return out
