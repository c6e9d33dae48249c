"""Many prompts in one run (`tts-diffusion generate A B C`, `--prompts FILE`): the prompt list,
its per-prompt settings and the stable output names. Imports neither torch nor numpy.

A prompts FILE is either
- text: one prompt a line; blank lines and lines starting with `#` are skipped, or
- JSON Lines (the first line that is not blank or a comment starts with `{`): one object a
  line with "prompt" and, optionally, the generate flags it overrides for that prompt, spelled
  as the flags are: "seed", "budget", "steps", "guidance", "negative_prompt", "height",
  "width", "searcher" and "options" (a list of "KEY=VALUE" strings, as `-o`; added after the
  command line's `-o`, or in their place when the line names another searcher).

Prompt k (k = 1, 2, ... in the order given: the command line's, then the file's) is written
to `<out-dir>/<k, 3 digits>-<slug>.png` and its sidecar next to it (`001-two-red-circles.png`,
`001-two-red-circles.json`), so a rerun of the same command finds the same names.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TTSInputError

#: JSON Lines keys besides "prompt" and the type each must have
LINE_KEYS: dict[str, tuple[type, ...]] = {
    "seed": (int,), "budget": (int,), "steps": (int,), "guidance": (int, float), "negative_prompt": (str,),
    "height": (int,), "width": (int,), "searcher": (str,), "options": (list,),
}
#: the longest slug in an output name
SLUG_CHARS = 48


@dataclass
class PromptItem:
    """One prompt of the list: where it came from (for messages) and the flags it overrides."""

    prompt: str
    where: str
    overrides: dict[str, Any] = field(default_factory=dict)


def slug(prompt: str) -> str:
    """`Two red circles!` -> `two-red-circles`: lower-case letters and digits joined by `-`,
    at most SLUG_CHARS characters (`prompt` if nothing is left)."""
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    out = ""
    for w in words:
        if len(out) + len(w) + (1 if out else 0) > SLUG_CHARS:
            break
        out = f"{out}-{w}" if out else w
    return out or (words[0][:SLUG_CHARS] if words else "prompt")


def output_stem(index: int, prompt: str) -> str:
    """The file stem of prompt number `index` (1-based): `003-two-red-circles`."""
    return f"{index:03d}-{slug(prompt)}"


def _check_line(obj: Any, where: str) -> PromptItem:
    if not isinstance(obj, dict):
        raise TTSInputError(f"{where}: a JSON Lines prompt must be an object with a \"prompt\", got {obj!r}"[:300])
    if not isinstance(obj.get("prompt"), str):
        raise TTSInputError(f"{where}: needs \"prompt\" as a string")
    unknown = sorted(set(obj) - set(LINE_KEYS) - {"prompt"})
    if unknown:
        raise TTSInputError(f"{where}: unknown key {unknown[0]!r}; a line may set prompt, {', '.join(LINE_KEYS)}")
    for key, kinds in LINE_KEYS.items():
        if key in obj and obj[key] is not None:
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, kinds):
                kind = {int: "an integer", list: "a list of \"KEY=VALUE\" strings", str: "a string"}.get(kinds[0], "a number")
                raise TTSInputError(f"{where}: {key!r} must be {kind}, got {json.dumps(value)}"[:300])
            if key == "options" and not all(isinstance(v, str) for v in value):
                raise TTSInputError(f"{where}: 'options' must be a list of \"KEY=VALUE\" strings, like -o")
    return PromptItem(obj["prompt"], where, {k: v for k, v in obj.items() if k != "prompt" and v is not None})


def read_prompts_file(path: str | Path) -> list[PromptItem]:
    """The prompts in `path` (text or JSON Lines, see the module doc); a bad line raises
    TTSInputError naming its line number."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TTSInputError(f"--prompts {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise TTSInputError(f"--prompts {path} holds no prompt (one a line, or JSON Lines with \"prompt\")")
    items = []
    jsonl = lines[0][1].startswith("{")
    for n, line in lines:
        where = f"{path} line {n}"
        if not jsonl:
            items.append(PromptItem(line, where))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TTSInputError(f"{where}: not JSON ({e.msg}); in a JSON Lines file every line is one object") from None
        items.append(_check_line(obj, where))
    return items
