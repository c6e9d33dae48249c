"""What `tts-diffusion replay` checks in a sidecar before it uses any of it: every field it
reads, by type, so a hand-edited, truncated or foreign file gives one line naming the bad
field and what was expected (TTSInputError), never a traceback. Torch-free.

The search itself (`run`) is then rebuilt as a `SearchRequest` and checked like any other
request (unknown option keys, ranges), also before the model loads."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import TTSInputError

#: dtypes a sidecar's settings may name
DTYPES = ("float32", "float16", "bfloat16")

_NONE = type(None)
#: the run's fields: the types each may hold (bool is never an int here); required ones marked
RUN_FIELDS: dict[str, tuple[tuple[type, ...], str, bool]] = {
    "prompt": ((str, list), "a non-empty string", True),
    "searcher": ((str,), "a searcher name (a string)", True),
    "searcher_options": ((dict,), "an object of searcher options", False),
    "verifier": ((str,), "a verifier name (a string)", True),
    "verifier_options": ((dict,), "an object of verifier options", False),
    "budget": ((int,), "an integer NFE budget >= 1", True),
    "seed": ((int, _NONE), "an integer seed", False),
    "num_inference_steps": ((int, _NONE), "an integer >= 1 or null", False),
    "guidance_scale": ((int, float, _NONE), "a number or null", False),
    "height": ((int, _NONE), "an integer or null", False),
    "width": ((int, _NONE), "an integer or null", False),
    "negative_prompt": ((str, _NONE), "a string or null", False),
    "max_batch": ((int,), "an integer >= 1", False),
    "process_options": ((dict,), "an object", False),
    "tgate": ((dict, _NONE), "an object of T-GATE settings or null", False),
    "rgba": ((bool,), "true or false", False),
    "reward_guidance": ((dict, str, _NONE), "an object of reward-guidance settings, a verifier name or null", False),
    "background_prompt": ((str, _NONE), "a string or null", False),
    "subject": ((str, _NONE), "a string or null", False),
}


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", _NONE: "null"}.get(type(v), type(v).__name__)


def _expect(ok: bool, where: str, want: str, got: Any, source: str) -> None:
    if not ok:
        shown = repr(got) if isinstance(got, (int, float, str, bool)) and len(repr(got)) < 40 else _type_name(got)
        raise TTSInputError(f"{source}: {where} must be {want}, got {shown}")


def _is(v: Any, types: tuple[type, ...]) -> bool:
    if isinstance(v, bool) and bool not in types:
        return False
    return isinstance(v, types)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON object in `path` (UTF-8, a byte-order mark allowed); one-line errors for an
    unreadable file, another encoding, and text that is not a JSON object."""
    import json

    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise TTSInputError(f"cannot read {source}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TTSInputError(f"{source} is not UTF-8 text (byte {e.start}); sidecars are UTF-8 JSON: pass the .json"
                            " written next to an image") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise TTSInputError(f"{source} is not JSON ({e.msg} at line {e.lineno}); pass the .json written next to an"
                            " image") from None
    except RecursionError:
        raise TTSInputError(f"{source} is nested too deeply to be a sidecar") from None
    if not isinstance(record, dict):
        raise TTSInputError(f"{source} holds {_type_name(record)}, not a sidecar (a JSON object with a 'run' section)")
    return record


def check_sidecar(record: Mapping[str, Any], source: str, reads_versions: tuple[int, ...],
                  version_now: int) -> None:
    """Every field `replay` reads, checked by type (see the module docstring)."""
    run = record.get("run")
    if run is None:
        raise TTSInputError(f"{source} has no 'run' section: it was not written by `tts-diffusion generate` "
                            f"(sidecar_version {version_now} or later)")
    _expect(isinstance(run, dict), "run", "an object", run, source)
    version = record.get("sidecar_version")
    if version not in reads_versions or isinstance(version, bool):
        raise TTSInputError(f"{source} has sidecar_version {version!r}; this tts-diffusion reads"
                            f" {', '.join(map(str, reads_versions))}")
    extra = {"dtype", "device"} if version == 1 else set()
    unknown = sorted(set(run) - set(RUN_FIELDS) - extra)
    if unknown:
        raise TTSInputError(f"{source}: run has unknown field(s) {', '.join(unknown)}; expected only "
                            f"{', '.join(RUN_FIELDS)}")
    for key, (types, want, required) in RUN_FIELDS.items():
        if key not in run:
            if required:
                raise TTSInputError(f"{source}: run.{key} is missing; expected {want}")
            continue
        _expect(_is(run[key], types), f"run.{key}", want, run[key], source)
    prompt = run["prompt"]
    if isinstance(prompt, list):
        _expect(bool(prompt) and all(isinstance(p, str) for p in prompt), "run.prompt",
                "a non-empty string or a list of strings", prompt, source)
    for key in ("searcher_options", "verifier_options", "process_options"):
        for k in run.get(key) or {}:
            _expect(isinstance(k, str), f"run.{key}", "an object with string keys", k, source)
    for section in ("model", "settings", "versions", "best"):
        if record.get(section) is not None:
            _expect(isinstance(record[section], dict), section, "an object", record[section], source)
    model = record.get("model") or {}
    for key in ("source", "sha256"):
        if model.get(key) is not None:
            _expect(isinstance(model[key], str), f"model.{key}", "a string or null", model[key], source)
    ran_on = run if version == 1 else (record.get("settings") or {})
    where = "run" if version == 1 else "settings"
    if ran_on.get("device") is not None:
        _expect(isinstance(ran_on["device"], str), f"{where}.device", "a device name such as cpu or cuda",
                ran_on["device"], source)
    if ran_on.get("dtype") is not None:
        _expect(ran_on["dtype"] in DTYPES, f"{where}.dtype", "one of " + ", ".join(DTYPES), ran_on["dtype"], source)
