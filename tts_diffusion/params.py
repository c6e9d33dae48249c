"""Parameter specs: how searchers, verifiers and process options describe their knobs.

Each component declares its parameters once, beside its code, in a module that imports
without torch (`searchers/smc_spec.py`, `verifiers/clip_spec.py`, ...):

    SMC = SearcherEntry.declare("smc", "...", params=[
        Param("num_particles", int, None, "particles K (default: as many as the budget pays for)", low=1),
        Param("reward_scale", float, 10.0, "lambda: tilt strength of exp(lambda r)", low=0.0),
        Param("potential", str, "max", "potential kind", choices=("difference", "max", "sum", "immediate")),
    ])

From the spec the CLI parses `-o KEY=VALUE` strings to the declared type and range,
`SearchRequest.check` validates keyword arguments and fills in the defaults before any
model work, `tts-diffusion list --searcher NAME [--json]` prints them, the demo builds one
widget per parameter, and the searcher receives them (its signature repeats no default).
This module imports nothing heavy (no torch), so `--help` and `list` stay fast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .errors import TTSInputError

#: upper bounds of every numeric option whose declaration gives none (README: "Options"):
#: integers fit a 64-bit integer, numbers stay within +-1e6 (larger ones overflow exp() and
#: float16, turning weights and images into NaN)
INT_CEILING = 2**63 - 1
FLOAT_CEILING = 1e6

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               tuple: "a list like A,B"}


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: name, type, default, one-line help and its allowed values.

    type: int, float, bool, str, or tuple (a list of `item_type`, written A,B on the CLI).
    default None means "derived at run time" (the help says from what); `nullable` allows
    passing None explicitly. low / high bound numbers (inclusive unless *_open);
    choices restrict strings (or numbers)."""

    name: str
    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: Sequence[Any] | None = None
    nullable: bool = False
    item_type: type = int
    length: int | None = None  # for tuples: exact length

    # ------------------------------------------------------------- description
    def allowed(self) -> str:
        """What values are allowed, in words (for errors, `list` and the demo)."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.type is tuple:
            n = f"{self.length} " if self.length else ""
            return f"a list of {n}{_TYPE_NAMES[self.item_type].replace('an ', '').replace('a ', '')}s like 1,2"
        what = _TYPE_NAMES[self.type]
        if self.low is not None and self.high is not None:
            lo = "(" if self.low_open else "["
            hi = ")" if self.high_open else "]"
            return f"{what} in {lo}{_fmt(self.low)}, {_fmt(self.high)}{hi}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {_fmt(self.low)}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {_fmt(self.high)}"
        return what

    def describe(self) -> dict[str, Any]:
        """JSON-able description (`list` and `list --json` print it): default None is derived at
        run time; a tuple's items are `item_type`, `length` of them when fixed."""
        out = {"name": self.name, "type": self.type.__name__, "default": _jsonable(self.default),
               "help": self.help, "low": self.low, "high": self.high, "choices": list(self.choices or []) or None,
               "nullable": self.nullable or self.default is None, "allowed": self.allowed()}
        if self.type is tuple:
            out.update(item_type=self.item_type.__name__, length=self.length)
        return out

    # -------------------------------------------------------------- parsing
    def parse(self, raw: str, owner: str = "") -> Any:
        """A CLI string to a validated value (raises TTSInputError naming key, value and what is allowed)."""
        text = raw.strip()
        if text.lower() in ("none", "null") and (self.nullable or self.default is None):
            return None
        try:
            if self.type is bool:
                low = text.lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                value: Any = low in ("true", "1", "yes")
            elif self.type is int:
                value = int(text, 10)
            elif self.type is float:
                value = float(text)
            elif self.type is tuple:
                parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
                value = tuple(self.item_type(p.strip()) for p in parts)
            else:
                value = text
        except ValueError:
            raise self._error(raw, owner) from None
        return self.validate(value, owner)

    def validate(self, value: Any, owner: str = "") -> Any:
        """A Python value checked against the spec (ints accepted for floats; bools are not numbers)."""
        if value is None:
            if self.nullable or self.default is None:
                return None
            raise self._error(value, owner)
        t = self.type
        if t is bool:
            if not isinstance(value, bool):
                raise self._error(value, owner)
        elif t is int:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise self._error(value, owner)
        elif t is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._error(value, owner)
            value = float(value)
            if not math.isfinite(value):
                raise self._error(value, owner)
        elif t is tuple:
            if not isinstance(value, (list, tuple)):
                raise self._error(value, owner)
            try:
                value = tuple(self.item_type(v) for v in value)
            except (TypeError, ValueError):
                raise self._error(value, owner) from None
            if self.length is not None and len(value) != self.length:
                raise self._error(value, owner)
        elif t is str:
            if not isinstance(value, str):
                raise self._error(value, owner)
        if self.choices is not None and value not in self.choices:
            raise self._error(value, owner)
        if t in (int, float):
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                raise self._error(value, owner)
            if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
                raise self._error(value, owner)
            ceiling = INT_CEILING if t is int else FLOAT_CEILING
            if self.high is None and abs(value) > ceiling:
                who = f"{owner} option" if owner else "option"
                limit = "2**63 - 1" if t is int else f"{FLOAT_CEILING:g}"
                raise TTSInputError(f"{who} {self.name}={value!r} is too large: expected {self.allowed()}, at most"
                                    f" {limit} in size")
        return value

    def _error(self, value: Any, owner: str) -> TTSInputError:
        who = f"{owner} option" if owner else "option"
        return TTSInputError(f"{who} {self.name}={value!r} is not valid: expected {self.allowed()}")


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


@dataclass
class ParamSpec:
    """The parameters of one component (a searcher, a verifier, T-GATE, ...)."""

    owner: str  # e.g. "searcher 'smc'" — used in error messages
    params: list[Param] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.owner}: duplicate parameter names in {names}")

    def __iter__(self):
        return iter(self.params)

    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def get(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise TTSInputError(f"{self.owner} has no option {name!r}; valid: {', '.join(self.names()) or '(none)'}")

    def parse(self, pairs: Iterable[str]) -> dict[str, Any]:
        """CLI `KEY=VALUE` strings to a validated dict."""
        out: dict[str, Any] = {}
        for pair in pairs:
            if "=" not in pair:
                raise TTSInputError(f"{self.owner} option {pair!r} must look like KEY=VALUE")
            key, raw = (s.strip() for s in pair.split("=", 1))
            out[key] = self.get(key).parse(raw, self.owner)
        return out

    def validate(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Python keyword arguments checked against the spec (unknown keys list the valid ones)."""
        return {k: self.get(k).validate(v, self.owner) for k, v in kwargs.items()}

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def fill(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Every parameter: the validated `kwargs`, the declared defaults for the rest (in
        declaration order; None where the default is derived at run time)."""
        given = self.validate(kwargs)
        return {p.name: given.get(p.name, p.default) for p in self.params}

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.params]
