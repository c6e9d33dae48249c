"""Reflection loops (ReflectionFlow, Zhuo et al. 2025): critics that say what is wrong with
an image, refiners that rewrite the prompt toward it, and the claim parser both share.
The `reflect` searcher (searchers/reflect.py) runs the loop."""
from .claims import Claim, ParsedPrompt, parse_claims
from .critics import CRITICS, Critic, DecomposedCritic, FeedbackCritic, make_critic, text_scores
from .critique import ClaimResult, Critique
from .refiners import REFINERS, Refiner, RuleRefiner, make_refiner

__all__ = ["CRITICS", "REFINERS", "Claim", "ClaimResult", "Critic", "Critique", "DecomposedCritic", "FeedbackCritic",
           "ParsedPrompt", "Refiner", "RuleRefiner", "make_critic", "make_refiner", "parse_claims", "text_scores"]
