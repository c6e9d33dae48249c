"""The embedded "shapes" world: coloured shapes on a plain background with GenEval's prompt
categories. `grammar` samples scenes and parses prompts, `renderer` draws them (batched
torch, anti-aliased), `oracle` checks any image against its prompt exactly."""
from .grammar import (
    BACKGROUND,
    CATEGORIES,
    COLORS,
    SHAPES,
    VOCABULARY,
    Obj,
    ObjectSpec,
    Scene,
    Spec,
    parse_prompt,
    sample_scenes,
)
from .oracle import OracleResult, check, check_batch
from .renderer import render

__all__ = [
    "BACKGROUND",
    "CATEGORIES",
    "COLORS",
    "SHAPES",
    "VOCABULARY",
    "Obj",
    "OracleResult",
    "ObjectSpec",
    "Scene",
    "Spec",
    "check",
    "check_batch",
    "parse_prompt",
    "render",
    "sample_scenes",
]
