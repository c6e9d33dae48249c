"""The embedded "shapes" world: coloured shapes on a plain background with GenEval's prompt
categories. `grammar` samples scenes and parses prompts, `phrasing` maps natural phrasings to
the canonical prompts, `renderer` draws them (batched torch, anti-aliased), `oracle` checks
any image against its prompt exactly.

Names load on first use (PEP 562): the grammar and the prompt check need numpy only, so the
CLI refuses a prompt outside the world before importing torch."""
from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY = {
    **{n: ".grammar" for n in ("BACKGROUND", "CATEGORIES", "COLORS", "SHAPES", "VOCABULARY", "Obj", "ObjectSpec",
                               "Scene", "Spec", "parse_prompt", "sample_scenes")},
    **{n: ".oracle" for n in ("OracleResult", "check", "check_batch")},
    "render": ".renderer",
    "canonical_prompt": ".phrasing",
}
__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
