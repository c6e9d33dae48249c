"""What T-GATE's hooks read during one denoiser call: the `Frame` of the call in flight in
this thread (features/tgate.py builds it outside the model; the cross-attention hooks there
and the MM-DiT block hooks in tgate_mmdit.py read it)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.thread_slot import ThreadSlot


@dataclass
class Frame:
    """What the hooks read during one denoiser call: the cross- and self-attention modes of
    the step (COMPUTE, CACHE or REUSE; constant per phase, so dynamo guards on them cheaply),
    the cached outputs to return, by (module name, "ca" | "sa"; MM-DiT blocks: (block name,
    "text_k" | "text_v"), read with the cross-attention mode), in the model's batch layout
    (only for REUSE modes and rows with a valid cache), and the outputs the hooks hand back to
    be cached (filled during the call)."""

    ca: str
    sa: str
    reuse: dict[tuple[str, str], torch.Tensor]
    out: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)


#: the frame of the denoiser call in flight in this thread (None: hooks are inert); a
#: ThreadSlot, not a ContextVar, so that dynamo traces the hooks' read without a graph break
_FRAME: ThreadSlot[Frame] = ThreadSlot("tts_tgate_frame")
