"""Options more than one verifier declares, declared once (torch-free)."""
from __future__ import annotations

from ..params import Param

#: dtype names the verifiers' `dtype` option takes (their Python values may also be torch.dtype)
DTYPES = ("fp16", "bf16", "fp32", "float16", "bfloat16", "float32", "half", "float")


def placement_params(chunk_size: int = 64) -> list[Param]:
    """device, dtype and chunk_size, declared the same way for every verifier with weights."""
    return [
        Param("device", str, None, "device to run on, e.g. cpu, cuda, cuda:1 (default: cpu; the pipeline moves it)"),
        Param("dtype", str, None, "weights' dtype (default: fp16 on CUDA, fp32 elsewhere)", choices=DTYPES),
        Param("chunk_size", int, chunk_size, "images per forward pass", low=1),
    ]
