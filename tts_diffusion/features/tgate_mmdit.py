"""T-GATE for MM-DiT models (SD3, SD3.5, FLUX): the joint text stream cached at the gate.

MM-DiT has no cross-attention to cache: text enters every block's *joint* attention through
a text stream of its own (AdaLN `norm1_context`, `add_k_proj` / `add_v_proj`, `to_add_out`,
`ff_context`). The analogue of T-GATE's cross-attention cache (issue 11; REFERENCES 1.6),
with g the gate step and the schedule of `TGate.plan` (its cross-attention column):

    s <  g-1   the block runs its own forward (the installed attention processor)
    s == g-1   the block runs its own forward; then its text-stream keys and values, after
               projection and norm (and, FLUX, RoPE at the text positions), are cached per
               particle, as (uncond + cond) / 2 with CFG (as T-GATE averages its CA outputs)
    s >= g     the block computes the image stream only: image q / k / v, attention of the
               image queries over [cached text k / v ; image k / v] in the order the processor
               concatenates them, image MLP; the text stream is not updated (the block's
               `encoder_hidden_states` pass through; context norm / projections / MLP skipped).
               CFG is dropped by the process exactly as for UNets (core/process.py).

SD3.5's second attention (`attn2`, image-only) and everything image-side still run through
the installed processors; after the gate the joint attention itself is computed here
(`dispatch_attention_fn`, with the processor's attention backend), since no processor can
be asked to attend image queries to keys it did not project. Self-attention reuse
(`sp_interval`, `fi_interval`, `warm_up`) is a UNet / cross-attention-DiT feature and does
not apply: joint attention is both self- and text-attention.

Blocks are found structurally, not by class name:

    dual    `norm1`, `norm1_context`, `norm2`, `ff` and an `attn` with `add_k_proj`: a
            two-stream joint block (SD3 `JointTransformerBlock`, incl. the `context_pre_only`
            last block and SD3.5's `attn2`; FLUX `FluxTransformerBlock`)
    single  `norm`, `proj_mlp`, `act_mlp`, `proj_out` and an `attn`, called with
            `encoder_hidden_states`: a one-stream block that runs text and image tokens as
            one sequence [text ; image] (FLUX `FluxSingleTransformerBlock`)

Under torch.compile: the hooks read only the frame of the denoiser call (features/tgate.py:
the phase's mode, the cached text k / v of the rows in flight, an out-dict the gate fills;
the process reads and writes the per-particle store around the call), so a gated search
compiles three graphs per batch shape (before the gate, the ungated graph; the gate; after
it) and no step or cache read breaks them. What the hooks need from the block's signature
is read at install, outside the graph.

Concatenation order: blocks that take rotary embeddings (`image_rotary_emb`, FLUX) put the
text first, as their processor and rotary table (txt_ids, then img_ids) do; SD3's joint
processor puts the image first. Key order does not change unmasked attention, but the
rotary table's rows do: text keys are rotated with its text rows, image q / k with the rest.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch

from ..errors import TTSInputError

HOOK = "tts_diffusion_tgate_mmdit"
DUAL, SINGLE = "dual", "single"


# ------------------------------------------------------------------- finding the blocks
def _takes(module: torch.nn.Module, *names: str) -> bool:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return all(n in params for n in names)


def block_kind(module: torch.nn.Module) -> str | None:
    """DUAL, SINGLE or None (not an MM-DiT block), from the module's parts."""
    attn = getattr(module, "attn", None)
    if attn is None or not _takes(module, "hidden_states", "encoder_hidden_states", "temb"):
        return None
    if (getattr(attn, "add_k_proj", None) is not None and getattr(attn, "add_v_proj", None) is not None
            and all(getattr(module, p, None) is not None for p in ("norm1", "norm1_context", "norm2", "ff"))):
        return DUAL
    if getattr(attn, "add_k_proj", None) is None and all(
            getattr(module, p, None) is not None for p in ("norm", "proj_mlp", "act_mlp", "proj_out")):
        return SINGLE
    return None


def joint_blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, str]]:
    """(name, block, kind) of every MM-DiT block of `model`."""
    return [(n, m, k) for n, m in model.named_modules() if (k := block_kind(m)) is not None]


def check_blocks(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, str]]:
    """The joint blocks, or one clear error when `model` has a joint text stream this module
    cannot rewrite (an unknown block layout, an IP-Adapter processor)."""
    blocks = joint_blocks(model)
    covered = {id(b.attn) for _, b, _ in blocks}
    name = type(model).__name__
    stray = [n for n, m in model.named_modules() if getattr(m, "add_k_proj", None) is not None and id(m) not in covered]
    if stray or not blocks:
        raise TTSInputError(f"T-GATE does not know the joint text-stream block layout of {name} (attention"
                            f" {stray[0] if stray else '?'} is not in an SD3- or FLUX-style block); run without --tgate")
    for n, b, _ in blocks:
        if hasattr(getattr(b.attn, "processor", None), "to_k_ip"):
            raise TTSInputError(f"T-GATE on {name} computes the joint attention itself after the gate and would"
                                f" drop the IP-Adapter processor of {n}.attn; unload the IP-Adapter or run without --tgate")
    return blocks


# ------------------------------------------------------------------- the block rewrite
def _text_first(block: torch.nn.Module, kind: str) -> bool:
    """Whether the block's processor puts the text tokens first. Read from the block's
    signature: the hooks ask once, at install, since dynamo may not see the hooked forward's
    real signature (an `inspect` call inside the compiled model rotated FLUX's text keys with
    the image rows of the rotary table)."""
    return kind == SINGLE or _takes(block, "image_rotary_emb")


def _rope_rows(rope: Any, rows: slice) -> Any:
    if rope is None:
        return None
    return tuple(t[rows] for t in rope) if isinstance(rope, (tuple, list)) else rope[rows]


def _rotate(x: torch.Tensor, rope: Any) -> torch.Tensor:
    from diffusers.models.embeddings import apply_rotary_emb

    return x if rope is None else apply_rotary_emb(x, rope, sequence_dim=1)


def _heads(attn: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, L, H*D] -> [B, L, H, D] (the processors' layout before attention)."""
    return x.unflatten(-1, (attn.heads, -1))


def _norm(norm: torch.nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return x if norm is None else norm(x)


def text_kv(block: torch.nn.Module, kind: str, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
            temb: torch.Tensor, image_rotary_emb: Any = None,
            text_first: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's text-stream key and value [B, L_text, H, D] as its processor computes them
    for these inputs (after projection, q/k norm and, FLUX, RoPE at the text positions).
    text_first: `_text_first(block, kind)` (None: read it now)."""
    attn, n_txt = block.attn, encoder_hidden_states.shape[1]
    if kind == DUAL:
        if getattr(block, "context_pre_only", False):
            normed = block.norm1_context(encoder_hidden_states, temb)
        else:
            normed = block.norm1_context(encoder_hidden_states, emb=temb)[0]
        k = _norm(getattr(attn, "norm_added_k", None), _heads(attn, attn.add_k_proj(normed)))
        v = _heads(attn, attn.add_v_proj(normed))
    else:  # the text rows of the one-stream sequence: LayerNorm and AdaLN act per token
        normed = block.norm(encoder_hidden_states, emb=temb)[0]
        k = _norm(getattr(attn, "norm_k", None), _heads(attn, attn.to_k(normed)))
        v = _heads(attn, attn.to_v(normed))
    if _text_first(block, kind) if text_first is None else text_first:
        k = _rotate(k, _rope_rows(image_rotary_emb, slice(0, n_txt)))
    else:
        k = _rotate(k, _rope_rows(image_rotary_emb, slice(hidden_states.shape[1], None)))
    return k, v


def _attend(attn: torch.nn.Module, x: torch.Tensor, text_k: torch.Tensor, text_v: torch.Tensor, text_first: bool,
            rope: Any) -> torch.Tensor:
    """Joint attention for the image queries only: softmax(q [k_text ; k_img]^T) [v_text ; v_img]."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    q = _rotate(_norm(getattr(attn, "norm_q", None), _heads(attn, attn.to_q(x))), rope)
    k = _rotate(_norm(getattr(attn, "norm_k", None), _heads(attn, attn.to_k(x))), rope)
    v = _heads(attn, attn.to_v(x))
    k = torch.cat([text_k, k] if text_first else [k, text_k], dim=1)
    v = torch.cat([text_v, v] if text_first else [v, text_v], dim=1)
    out = dispatch_attention_fn(q, k.to(q.dtype), v.to(q.dtype),
                                backend=getattr(attn.processor, "_attention_backend", None))
    return out.flatten(2, 3).to(q.dtype)


def _ff(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if getattr(block, "_chunk_size", None) is not None:
        from diffusers.models.attention import _chunked_feed_forward

        return _chunked_feed_forward(block.ff, x, block._chunk_dim, block._chunk_size)
    return block.ff(x)


def image_only(block: torch.nn.Module, kind: str, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
               temb: torch.Tensor, text_k: torch.Tensor, text_v: torch.Tensor, image_rotary_emb: Any = None,
               joint_attention_kwargs: dict | None = None,
               text_first: bool | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The block's (encoder_hidden_states, hidden_states) after the gate: the image stream
    attends to the cached text k / v; the text stream passes through (None after SD3's
    `context_pre_only` last block, as its own forward returns). text_first: as `text_kv`."""
    attn, hs = block.attn, hidden_states
    text_first = _text_first(block, kind) if text_first is None else text_first
    n_txt = encoder_hidden_states.shape[1]
    rope = _rope_rows(image_rotary_emb, slice(n_txt, None) if text_first else slice(0, hs.shape[1]))
    if kind == SINGLE:
        normed, gate = block.norm(hs, emb=temb)
        mlp = block.act_mlp(block.proj_mlp(normed))
        out = torch.cat([_attend(attn, normed, text_k, text_v, True, rope), mlp], dim=2)
        hs = hs + gate.unsqueeze(1) * block.proj_out(out)
        if hs.dtype == torch.float16:
            hs = hs.clip(-65504, 65504)
        return encoder_hidden_states, hs
    dual_attention = getattr(block, "use_dual_attention", False)
    normed, gate_msa, shift_mlp, scale_mlp, gate_mlp, *second = block.norm1(hs, emb=temb)
    out = _attend(attn, normed, text_k, text_v, text_first, rope)
    out = attn.to_out[1](attn.to_out[0](out))
    hs = hs + gate_msa.unsqueeze(1) * out
    if dual_attention:  # SD3.5: an image-only attention, through its installed processor
        normed2, gate_msa2 = second
        hs = hs + gate_msa2.unsqueeze(1) * block.attn2(hidden_states=normed2, **(joint_attention_kwargs or {}))
    normed = block.norm2(hs) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    hs = hs + gate_mlp.unsqueeze(1) * _ff(block, normed)
    return (None if getattr(block, "context_pre_only", False) else encoder_hidden_states), hs


# ------------------------------------------------------------------------------ the hook
def _hook_class():
    from diffusers.hooks import ModelHook

    from .tgate_frame import _FRAME
    from .tgate_spec import CACHE, REUSE

    class MMDiTTGateHook(ModelHook):
        """Delegates to the block's own forward up to the gate (handing its text k / v to
        the frame to cache at it); after it, runs `image_only` with the cached text k / v
        the frame holds for the rows in flight.

        Traced by dynamo under torch.compile: it reads only the frame of the denoiser call
        (features/tgate.py: built outside the model, one mode per phase, the reused tensors, an
        out-dict), never the step, the rows or the store, so the graph depends on the phase
        alone and nothing here breaks it."""

        def __init__(self, name: str, kind: str, block: torch.nn.Module):
            super().__init__()
            self.name, self.kind = name, kind
            self.key_k, self.key_v = (name, "text_k"), (name, "text_v")
            # the block's layout and forward parameters, read once here: `inspect` inside the
            # compiled model does not see through the hooked forward
            self.text_first = _text_first(block, kind)
            params = list(inspect.signature(block.forward).parameters.values())
            self._names = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
            self._defaults = {p.name: p.default for p in params if p.default is not p.empty}

        def _inputs(self, args, kwargs) -> dict[str, Any]:
            a = dict(self._defaults)
            a.update(zip(self._names, args))
            a.update(kwargs)
            return a

        def new_forward(self, module: torch.nn.Module, *args, **kwargs):
            forward = self.fn_ref.original_forward
            frame = _FRAME.get()
            if frame is None or frame.ca not in (CACHE, REUSE):
                return forward(*args, **kwargs)
            a = self._inputs(args, kwargs)
            hs, ehs, temb = a["hidden_states"], a["encoder_hidden_states"], a["temb"]
            rope, jak = a.get("image_rotary_emb"), a.get("joint_attention_kwargs")
            if frame.ca == REUSE:
                k, v = frame.reuse.get(self.key_k), frame.reuse.get(self.key_v)
                if k is not None and v is not None:
                    return image_only(module, self.kind, hs, ehs, temb, k, v, rope, jak, self.text_first)
                return forward(*args, **kwargs)  # rows that never passed the gate: as the reference
            out = forward(*args, **kwargs)
            k, v = text_kv(module, self.kind, hs, ehs, temb, rope, self.text_first)
            frame.out[self.key_k] = k  # written to the per-particle store after the call
            frame.out[self.key_v] = v
            return out

    return MMDiTTGateHook


def install(model: torch.nn.Module, lock) -> int:
    """Install the (inert) hook on every joint block of `model`, once; returns their number."""
    from diffusers.hooks import HookRegistry

    hook_cls = _hook_class()
    blocks = joint_blocks(model)
    with lock:
        for name, block, kind in blocks:
            registry = HookRegistry.check_if_exists_or_initialize(block)
            if registry.get_hook(HOOK) is None:
                registry.register_hook(hook_cls(name, kind, block), HOOK)
    return len(blocks)


def uninstall(model: torch.nn.Module, lock) -> None:
    with lock:
        for _, block, _ in joint_blocks(model):
            registry = getattr(block, "_diffusers_hook", None)
            if registry is not None and registry.get_hook(HOOK) is not None:
                registry.remove_hook(HOOK, recurse=False)
