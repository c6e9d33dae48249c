"""Model folders the server fixes at start-up for searcher options that name one.

The `reflect` searcher takes `critic_model=` and `refiner_model=` (local transformers
folders). On the page and in its API they are never free text: the server is started with
`tts-diffusion demo --critic-model DIR --refiner-model DIR`, each folder is checked then,
and the page offers it as a fixed choice under its folder name. Without a folder the
option is not offered at all, and neither is the choice that needs it (`critic=vlm`,
`refiner=lm`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..params import Param


class ModelOption(NamedTuple):
    """A searcher option that names a model folder, and the choice that uses it."""

    option: str  # e.g. critic_model
    chooser: str  # the option whose value selects the model, e.g. critic
    value: str  # that value, e.g. vlm
    flag: str  # the `tts-diffusion demo` flag that fixes the folder
    what: str  # in words, for messages


MODEL_OPTIONS: tuple[ModelOption, ...] = (
    ModelOption("critic_model", "critic", "vlm", "--critic-model", "critic (vision-language model)"),
    ModelOption("refiner_model", "refiner", "lm", "--refiner-model", "refiner (language model)"),
)
_BY_OPTION = {m.option: m for m in MODEL_OPTIONS}
_BY_CHOOSER = {m.chooser: m for m in MODEL_OPTIONS}


@dataclass(frozen=True)
class ServerModels:
    """The folders given at start-up (None: not offered). Checked when made: a folder that is
    not a transformers model folder is a `TTSInputError` before the server starts."""

    critic_model: Path | None = None
    refiner_model: Path | None = None

    def __post_init__(self) -> None:
        from ..reflection.local_models import model_folder

        for m in MODEL_OPTIONS:
            path = getattr(self, m.option)
            if path is not None:
                object.__setattr__(self, m.option, model_folder(str(path), m.flag, f"the demo's {m.what}").resolve())

    def folder(self, option: str) -> Path | None:
        return getattr(self, option) if option in _BY_OPTION else None

    def label(self, option: str) -> str | None:
        """What the page shows for the folder: its name, never the path."""
        folder = self.folder(option)
        return None if folder is None else folder.name

    def page_param(self, p: Param) -> Param | None:
        """The page's version of a searcher parameter, or None when the page must not show it:
        a model option becomes a fixed choice of the server's folder (absent without one); a
        choice that needs a missing model is dropped from the choices."""
        if p.name in _BY_OPTION:
            label = self.label(p.name)
            if label is None:
                return None
            m = _BY_OPTION[p.name]
            return Param(p.name, str, label, f"the {m.what} this server was started with ({m.flag})",
                         choices=(label,))
        m = _BY_CHOOSER.get(p.name)
        if m is not None and p.choices is not None and self.folder(m.option) is None:
            choices = tuple(c for c in p.choices if c != m.value)
            help_ = f"{p.help} ({m.value} needs a server started with {m.flag})"
            return Param(p.name, p.type, p.default, help_, choices=choices, nullable=p.nullable)
        return p

    def apply(self, options: dict[str, Any]) -> dict[str, Any]:
        """Searcher options with the server's folder added wherever its choice is picked
        (e.g. critic=vlm adds critic_model=<the server's folder>)."""
        out = {k: v for k, v in options.items() if k not in _BY_OPTION}
        for m in MODEL_OPTIONS:
            folder = self.folder(m.option)
            if out.get(m.chooser) == m.value and folder is not None:
                out[m.option] = str(folder)
        return out
