"""Accuracy-against-NFE sweeps (`tts-diffusion bench`): methods x budgets x a prompt set x
seeds, guided by a verifier and judged by another (the exact oracle on the shapes world),
written as JSON Lines that a rerun resumes, sharded over processes by accelerate."""
from .prompts import SHAPES_EVAL, balanced_subset, eval_prompts, load_prompt_set
from .readout import PASS, fit_to_budget, judge_score, picked
from .records import canonical, read_records
from .summary import format_table, per_method, summarize
from .sweep import PREFIX_CONSISTENT, SweepConfig, run_cell, run_sweep

__all__ = ["PASS", "PREFIX_CONSISTENT", "SHAPES_EVAL", "SweepConfig", "balanced_subset", "canonical", "eval_prompts",
           "fit_to_budget", "format_table", "judge_score", "load_prompt_set", "per_method", "picked", "read_records",
           "run_cell", "run_sweep", "summarize"]
