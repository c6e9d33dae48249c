"""Attention capture for Alfie's matte: processors that wrap the installed ones.

Alfie (Quattrini et al. 2024, sec. 3.2) builds its alpha matte from the cross- and
self-attention maps of every transformer layer and head, for the conditional foreground
row only, summed over the steps with timestep t > 20 (1000-scale) and averaged over layers
and heads:

    C[p, l] = 1/|layers| sum_{t > 20} sum_layers mean_heads softmax(q_p . k_l / sqrt(d))   (cross)
    S[q, p] = 1/|layers| sum_{t > 20} sum_layers mean_heads softmax(q_q . k_p / sqrt(d))   (self)

`CaptureProcessor` wraps and delegates to whatever processor a module already has (SDPA,
xformers, LoRA, IP-Adapter keep working; nothing monkeypatches `forward`). It is installed
once on the shared model and stays inert unless the call running in this context
(`core.state.current_call()`) carries an `AttentionCapture` under `options["attention_capture"]`
and the step in flight is in its window. Then it recomputes the attention probabilities of
the conditional rows only (one extra q/k projection and softmax for those rows) in fp32, one
head at a time, and adds the head mean into the per-particle accumulators
(`AttentionMaps`, a `CallState` entry, so `proc.select` carries them with the particles).

Memory (N image tokens, L text tokens, K particles): the accumulators hold K (N L + N^2)
fp32 values; the transient is one head's [rows, N, N] fp32 score matrix. Alfie's own code
keeps every layer's and head's self map (layers x heads x N^2). At PixArt-Sigma-XL 512 px
(latent 64x64, patch 2: N = 32 x 32 = 1024; L = 300; 28 layers x 16 heads) that is
1024^2 x 4 B = 4 MiB of self map and 1.2 MiB of cross map per particle here, against
28 x 16 x 1024^2 x 4 B = 1.75 GiB there. At 1024 px (N = 4096) S is 64 MiB per particle.

Time window: `t` is the model's own timestep (the value the transformer is given). Flow
models in diffusers are given t = 1000 sigma, so t > 20 is sigma > 0.02.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import TTSInputError
from .state import current_call

#: key of the capture request in `CallState.options`
CAPTURE_KEY = "attention_capture"
#: key of the per-particle accumulators in `CallState.entries`
MAPS_KEY = "alfie_attention_maps"


class AttentionMaps:
    """Per-particle accumulators: cross [K, N, L] and self [K, N, N] sums (fp32).

    A `ParticleEntry`: `select(idx)` moves rows with the particles, `reset(n)` restarts."""

    def __init__(self) -> None:
        self.cross: torch.Tensor | None = None
        self.self_: torch.Tensor | None = None
        self.num_particles = 0
        #: number of (step, layer) visits added per kind, for the layer mean
        self.visits = {"cross": 0, "self": 0}

    def reset(self, num_particles: int) -> None:
        self.cross = self.self_ = None
        self.num_particles = int(num_particles)
        self.visits = {"cross": 0, "self": 0}

    def select(self, idx: torch.Tensor) -> None:
        if self.cross is not None:
            self.cross = self.cross[idx.to(self.cross.device)]
        if self.self_ is not None:
            self.self_ = self.self_[idx.to(self.self_.device)]
        self.num_particles = int(idx.numel())

    def add(self, kind: str, rows: slice, probs: torch.Tensor, fresh: bool = False) -> None:
        """Add a head-mean probability map [r, N, M] to particle rows `rows`; `fresh`: these
        rows start a new trajectory (grid point 0), so their earlier sums are dropped first.

        Rows past the ones held (a searcher that grew its population without
        `proc.reset_particles`) are added as zero rows rather than failing."""
        name = "cross" if kind == "cross" else "self_"
        buf = getattr(self, name)
        if buf is not None and buf.shape[1:] != probs.shape[1:]:
            raise RuntimeError(f"attention maps changed shape mid-call: {tuple(buf.shape[1:])} -> {tuple(probs.shape[1:])}")
        need = max(self.num_particles, rows.stop)
        if buf is None or buf.shape[0] < need:
            grown = torch.zeros((need, *probs.shape[1:]), dtype=torch.float32, device=probs.device)
            if buf is not None:
                grown[: buf.shape[0]] = buf
            buf = grown
            setattr(self, name, buf)
        self.num_particles = need
        if fresh:
            buf[rows] = 0
        buf[rows] += probs

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.cross, self.self_) if t is not None)


@dataclass
class AttentionCapture:
    """What a call asks the processors for: the grid steps to capture (the t > 20 window)
    and the number of layers of each kind (for the mean over layers). `enabled` is turned
    off while the call forwards rows that are not the foreground (Alfie's background)."""

    steps: frozenset[int]
    maps: AttentionMaps
    num_layers: dict[str, int] = field(default_factory=dict)
    enabled: bool = True
    #: layer visits seen per kind during the call (a check that the processors ran)
    seen: dict[str, int] = field(default_factory=lambda: {"cross": 0, "self": 0})

    def active(self, step: int | None) -> bool:
        return self.enabled and step is not None and step in self.steps

    def cross_map(self, k: int) -> torch.Tensor:
        """C for particle k: [N, L], summed over window steps, mean over layers and heads."""
        if self.maps.cross is None:
            raise RuntimeError("no cross-attention maps were captured in this call")
        return self.maps.cross[k] / max(1, self.num_layers.get("cross", 1))

    def self_map(self, k: int) -> torch.Tensor:
        """S for particle k: [N, N] (row q: where query q attends), same reductions."""
        if self.maps.self_ is None:
            raise RuntimeError("no self-attention maps were captured in this call")
        return self.maps.self_[k] / max(1, self.num_layers.get("self", 1))


def attention_probs(attn: Any, hidden_states: torch.Tensor, context: torch.Tensor,
                    attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Head-mean softmax(q k^T * scale + mask) in fp32 for a batch of rows: [B, N, M].

    Mirrors the q/k path of diffusers' `AttnProcessor2_0` (norm_cross, norm_q / norm_k,
    the additive mask from `prepare_attention_mask`); one head at a time to bound memory."""
    b, n, _ = hidden_states.shape
    m = context.shape[1]
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    q = attn.to_q(hidden_states)
    if attn.is_cross_attention and attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    k = attn.to_k(context)
    h = attn.heads
    d = k.shape[-1] // h
    q = q.view(b, n, h, d).transpose(1, 2)
    k = k.view(b, m, h, d).transpose(1, 2)
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    bias = None
    if attention_mask is not None:
        bias = attn.prepare_attention_mask(attention_mask, m, b).view(b, h, -1, m).float()
    out = torch.zeros((b, n, m), dtype=torch.float32, device=q.device)
    for j in range(h):
        s = torch.einsum("bnd,bmd->bnm", q[:, j].float(), k[:, j].float()) * float(attn.scale)
        if bias is not None:
            s = s + bias[:, j]
        out += s.softmax(dim=-1)
    return out / h


class CaptureProcessor:
    """Wraps an attention processor: delegates the attention itself to `inner` and, when the
    current call asks for it, adds the conditional rows' attention maps to its accumulators."""

    def __init__(self, inner: Any, kind: str, first: bool = False):
        self.inner = inner
        self.kind = kind  # "self" or "cross"
        self.first = first  # the first layer of its kind in the forward pass

    def __getattr__(self, name: str) -> Any:  # expose the wrapped processor's attributes
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        call = current_call()
        cap = None if call is None else call.options.get(CAPTURE_KEY)
        if cap is not None and call.rows is not None and cap.active(call.step):
            r = call.rows.stop - call.rows.start
            # the process lays a chunk out as [uncond rows; cond rows] with CFG, [cond rows] without:
            # the conditional rows are the last r either way
            hs = hidden_states[-r:]
            ctx = hs if encoder_hidden_states is None else encoder_hidden_states[-r:]
            mask = None
            if attention_mask is not None and self.kind == "cross":
                mask = attention_mask[-r:]
            with torch.no_grad():
                cap.maps.add(self.kind, call.rows, attention_probs(attn, hs, ctx, mask),
                             fresh=self.first and call.step == 0)
            cap.seen[self.kind] += 1
        return out


def capture_layers(denoiser: torch.nn.Module) -> dict[str, list[tuple[str, Any]]]:
    """The attention modules Alfie reads, by kind, for a supported denoiser.

    Supported: DiTs whose blocks self-attend over one image-token grid and cross-attend to
    the text (PixArtTransformer2DModel: PixArt-alpha / -Sigma and the embedded shapes model).
    UNets mix grids of several resolutions in one map average and MM-DiTs (SD3, FLUX) have
    joint attention with no separate cross map: one clear error for those."""
    name = type(denoiser).__name__
    if not name.startswith("PixArt"):
        raise TTSInputError(
            f"rgba=True needs a PixArt-Sigma-layout transformer (cross-attention DiT on one token grid);"
            f" this pipeline's denoiser is {name}")
    kinds: dict[str, list[tuple[str, Any]]] = {"self": [], "cross": []}
    for block_name, block in denoiser.named_modules():
        for attr, kind in (("attn1", "self"), ("attn2", "cross")):
            mod = getattr(block, attr, None)
            if mod is not None and hasattr(mod, "set_processor") and block_name.startswith("transformer_blocks"):
                kinds[kind].append((f"{block_name}.{attr}", mod))
    if not kinds["self"] or not kinds["cross"]:
        raise TTSInputError(f"rgba=True: {name} has no self- and cross-attention layers to read maps from")
    return kinds


#: attribute names under which wrapping processors keep the processor they delegate to
_WRAPPED_ATTRS = ("inner", "processor", "wrapped", "base_processor")


def has_capture(processor: Any) -> bool:
    """True if `processor` is a `CaptureProcessor` or wraps one (another hook's wrapper, e.g.
    T-GATE's, installed on top of ours), so installing again would count maps twice."""
    seen = 0
    while processor is not None and seen < 16:
        if isinstance(processor, CaptureProcessor):
            return True
        nxt = None
        for name in _WRAPPED_ATTRS:
            nxt = vars(processor).get(name) if hasattr(processor, "__dict__") else None
            if nxt is not None:
                break
        processor, seen = nxt, seen + 1
    return False


def install_capture(denoiser: torch.nn.Module) -> dict[str, int]:
    """Wrap every self/cross attention processor of `denoiser` once (idempotent: a module
    whose processor is, or wraps, a `CaptureProcessor` is left alone; one whose processor was
    replaced since is wrapped again). Returns the number of layers per kind."""
    kinds = capture_layers(denoiser)
    for kind, mods in kinds.items():
        for j, (_, mod) in enumerate(mods):
            if not has_capture(mod.processor):
                mod.set_processor(CaptureProcessor(mod.processor, kind, first=j == 0))
    return {k: len(v) for k, v in kinds.items()}


def capture_window(model_timesteps: torch.Tensor, threshold: float = 20.0) -> frozenset[int]:
    """Grid steps whose model timestep exceeds `threshold` (Alfie: t > 20 on 0..999)."""
    return frozenset(i for i, t in enumerate(model_timesteps.tolist()) if float(t) > threshold)
