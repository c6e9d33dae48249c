"""The embedded "shapes" world: coloured shapes on a plain background with GenEval's prompt
categories and, in grammar v2, harder ones. `world` holds the vocabulary and data types,
`grammar` the categories, canonical prompts and the scene sampler (`layout` places the
objects), `phrasing` maps natural phrasings to canonical prompts, `renderer` draws scenes
(batched torch, anti-aliased), `oracle` checks any image against its prompt exactly.

Names load on first use (PEP 562): the grammar and the prompt check need numpy only, so the
CLI refuses a prompt outside the world before importing torch."""
from __future__ import annotations

from .._lazy import lazy_attributes

_LAZY = {
    **{n: ".grammar" for n in ("BACKGROUND", "CATEGORIES", "COLORS", "GRAMMARS", "SHAPES", "VOCABULARY", "Obj",
                               "ObjectSpec", "Scene", "Spec", "model_grammar", "sample_scenes")},
    **{n: ".oracle" for n in ("OracleResult", "check", "check_batch")},
    "render": ".renderer",
    **{n: ".phrasing" for n in ("canonical_prompt", "parse_prompt")},
}
__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
