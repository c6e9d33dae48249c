"""The embedded "shapes" world: coloured shapes on a plain background with GenEval's prompt
categories. `grammar` samples scenes and parses prompts, `phrasing` maps natural phrasings to
the canonical prompts, `renderer` draws them (batched torch, anti-aliased), `oracle` checks
any image against its prompt exactly.

Names load on first use (PEP 562): the grammar and the prompt check need numpy only, so the
CLI refuses a prompt outside the world before importing torch."""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    **{n: ".grammar" for n in ("BACKGROUND", "CATEGORIES", "COLORS", "SHAPES", "VOCABULARY", "Obj", "ObjectSpec",
                               "Scene", "Spec", "parse_prompt", "sample_scenes")},
    **{n: ".oracle" for n in ("OracleResult", "check", "check_batch")},
    "render": ".renderer",
    "canonical_prompt": ".phrasing",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
