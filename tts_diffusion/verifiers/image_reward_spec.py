"""image_reward's declaration (torch-free; the verifier is in image_reward.py)."""
from __future__ import annotations

from ..params import Param
from .declaration import VerifierEntry
from .vocabulary import placement_params

IMAGE_REWARD = VerifierEntry.declare(
    "image_reward", "ImageReward human-preference reward (BLIP ViT-L + BERT), THUDM v1.0 weights",
    params=[
        Param("checkpoint", str, None, "ImageReward.pt (default: looked up in model_dir / the Hugging Face cache)"),
        Param("med_config", str, None, "BERT med_config.json (default: next to the checkpoint, else built in)"),
        Param("vocab", str, None, "bert-base-uncased vocab.txt (default: next to the checkpoint / in the cache)"),
        Param("model_dir", str, None, "folder holding ImageReward.pt, med_config.json and vocab.txt"),
        Param("vision_config", str, None, "vision tower config json (default: inferred from the checkpoint)"),
        *placement_params(64),
        Param("random_weights", bool, False, "random weights of the real architecture (benchmarks, tests)"),
        Param("seed", int, 0, "seed of random_weights", low=0),
        Param("token_cache_size", int, 4096, "tokenised prompts kept in memory", low=0),
    ], differentiable=True)
