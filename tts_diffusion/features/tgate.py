"""T-GATE: cross-attention caching with classifier-free guidance dropped after a gate step.

Liu et al., "Faster Diffusion via Temporal Attention Decomposition" (TMLR 2025, arXiv
2404.02747; reference package `tgate` 1.0.0, `tgate_utils.tgate_scheduler` and the loops in
`tgate/SD.py`, `SDXL.py`, `PixArt_Sigma.py`). With s the step index and g the gate step:

    s <  g-1   semantics planning: CFG batch; cross-attention (CA) computed; TGATE-V2
               self-attention (SA) computed for s < warm_up, cached at s == warm_up and
               whenever s % sp_interval == 0, reused from that cache otherwise
    s == g-1   gate: CA and SA computed on the CFG batch and cached as (uncond + cond) / 2
    s >= g     fidelity improving: CFG dropped (the model sees only the null / negative
               conditioning, SDXL's pooled text and time ids included: `Conditioning.uncond`),
               CA returns its cache, SA recomputed (and cached) when s % fi_interval == 0,
               reused otherwise

A gate at or past the last step means "never gate": nothing is hooked, cached or dropped,
and the process is bit-identical to the ungated one.

MM-DiT models (SD3, SD3.5, FLUX) have no cross-attention; `model_kind` tells them apart and
features/tgate_mmdit.py gates them through their joint text stream instead (each block's text
keys / values cached at the gate, image stream only after it; same plan, same caches, same
CFG drop). The self-attention columns of the plan do not apply there.

How it is hooked: a diffusers `ModelHook` (diffusers.hooks.HookRegistry, the mechanism of
diffusers' own PyramidAttentionBroadcast) on every attention module of the denoiser. Its
`new_forward` delegates to the module's own forward, which runs whatever processor is
installed (SDPA, xformers, LoRA, IP-Adapter), and only short-circuits it to return a cached
output. Whether a call is cross-attention is read from the call itself (it is passed
`encoder_hidden_states`), as the reference does. The hooks are installed once on the shared
model and are inert unless a gated call's denoiser forward is in flight in this thread (a
per-thread slot, core/thread_slot.py, holds its `Frame`, below), so one pipeline serves gated and ungated calls
from many threads.

Caches are per particle: a `TGateState` (a `CallState` entry) holds, for every attention
module, a tensor [num_particles, k, ...] (k = 2 for the CFG halves, 1 after averaging or
without CFG) and a validity mask; `proc.select(idx)` indexes them and a new draw of noise
resets them.

Under torch.compile: everything that depends on the step, the rows in flight or the cache
dictionaries is decided OUTSIDE the denoiser. Around each denoiser call the process opens
`TGateState.frame(step, rows, k)`, which builds a `Frame`: the two modes of this step
(constant strings, one per phase), the cached outputs these rows reuse, already in the
model's batch layout, and an empty dict the hooks fill with the outputs to cache; on exit
the state writes those into the per-particle store (averaging the CFG halves at the gate).
The hook itself only compares the frame's modes, looks its key up in `reuse` and stores
into `out`, so dynamo traces it without a graph break and guards on the phase only: a
search compiles one graph per (phase, batch shape), and a second search compiles none.
The cross-attention hooks find their own module's cached output and hand back their output
through a per-thread cell on their attention module (`CELL`, filled from the frame before the
call and read back after it), not through the frame's dictionaries: a lookup by the module's
name would make every attention module a different graph, and under regional compilation
(`compile_repeated_blocks`: the transformer blocks compiled once and shared) the blocks then
recompile one by one; through the cell they share one graph per phase and shape. The hooks
do not read the modes either: whether a module reuses is whether its cell holds a cached
output, and the frame keeps the handed-back outputs only where the step caches, so a step
that computes and one that caches share a graph (`TGate.model_phases`: at most five graphs
per batch shape, four with the default gate).
The MM-DiT block hooks read the same frame (their text k / v under the cross-attention
mode; an MM-DiT state leaves the self-attention mode at COMPUTE, so it has three phases:
before the gate with no frame, the ungated graph; the gate; after it).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import torch

from ..core.thread_slot import _PerThread
from ..errors import TTSInputError
from .tgate_frame import _FRAME, Frame
from .tgate_spec import CACHE, COMPUTE, CROSS, ENTRY, MMDIT, REUSE, TGate

#: name of the diffusers hook
HOOK = "tts_diffusion_tgate"
#: attribute of a hooked attention module: a per-thread cell whose value, during a gated
#: denoiser call, is {"ca" | "sa": cached output or None, "out_ca" | "out_sa": output to cache}
CELL = "_tts_tgate_cell"
#: attribute of a hooked denoiser: its hooked attention modules by name
MODULES = "_tts_tgate_modules"


class TGateState:
    """T-GATE on one call (a `ModelFeature` of its `CallState`, and a per-particle entry): the
    settings and, per attention module, the cached outputs of every particle,
    [num_particles, k, ...], with a validity mask. `active` False (a gate at or past the last
    step): it only records its settings; nothing is gated, cached or dropped."""

    name, label = ENTRY, "T-GATE"

    def __init__(self, config: TGate, kind: str = CROSS, active: bool = True,
                 modules: dict[str, torch.nn.Module] | None = None):
        self.config = config
        #: the hooked attention modules by name (CROSS): their cells carry this call's caches
        self.modules = modules
        #: CROSS or MMDIT (`model_kind`): an MM-DiT's frames carry the cross-attention
        #: column only (its hooks cache text k / v through it), so its phases are three
        self.kind = kind
        self.active = active
        self.num_particles: int | None = None
        self.store: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    # --- ModelFeature ---------------------------------------------------------
    def keeps_cfg(self, step: int) -> bool:
        """From the gate step on, CFG is dropped (the model sees the null text only)."""
        return not (self.active and step >= self.config.gate_step)

    def settings(self) -> dict[str, Any]:
        return {"tgate": self.config.describe()}

    def for_call(self) -> "TGateState":
        return TGateState(self.config, self.kind, self.active, self.modules)

    # --- ParticleEntry --------------------------------------------------------
    def reset(self, num_particles: int) -> None:
        self.store.clear()
        self.num_particles = int(num_particles)

    def select(self, idx: torch.Tensor) -> None:
        for key, (t, valid) in list(self.store.items()):
            rows = idx.to(t.device)
            if idx.numel() and int(idx.max()) >= t.shape[0]:
                # rows beyond what was cached have never been written: keep them invalid
                t, valid = _grow(t, valid, int(idx.max()) + 1)
                rows = idx.to(t.device)
            self.store[key] = (t[rows], valid[idx])
        self.num_particles = int(idx.numel())

    # --- one denoiser call ------------------------------------------------------------
    @contextlib.contextmanager
    def frame(self, step: int, rows: slice, k: int, device: torch.device | None = None,
              dtype: torch.dtype | None = None) -> Iterator["Frame | None"]:
        """The frame of one denoiser call on particle rows `rows` at step `step`, the model
        batch being k * (rows.stop - rows.start) (k = 2 with CFG): the hooks of this
        thread see it while the block runs; on a normal exit the outputs they marked for
        caching are written to the store. A step that computes everything (the warm-up)
        gets no frame: the model runs exactly as ungated (one compiled graph for both), and
        so does every step of an inactive gate."""
        if not self.active:
            yield None
            return
        ca, sa, average = self.config.plan(step)
        if self.kind == MMDIT:
            sa = COMPUTE  # joint attention has no separate self-attention to cache
        frame = None
        if (ca, sa) != (COMPUTE, COMPUTE):
            batch = k * (rows.stop - rows.start)
            reuse = {}
            for key in self.store:
                if (sa if key[1] == "sa" else ca) == REUSE:  # "ca", MM-DiT's "text_k" / "text_v"
                    cached = self.read(key, rows, batch)
                    if cached is not None:
                        reuse[key] = cached
            frame = Frame(ca, sa, reuse)
        cells = self._fill_cells(frame)
        try:
            with _FRAME.use(frame):
                yield frame
        finally:
            for name, cell in cells:
                for kind, mode in (("ca", ca), ("sa", sa)):
                    if mode == CACHE and cell.value["out_" + kind] is not None:
                        frame.out[(name, kind)] = cell.value["out_" + kind]
                cell.value = None
        for key, out in (frame.out.items() if frame is not None else ()):
            self.write(key, rows, out, average)

    def _fill_cells(self, frame: "Frame | None") -> list[tuple[str, Any]]:
        """Hand each hooked attention module, in this thread, its cached outputs for the call."""
        if frame is None or not self.modules:
            return []
        cells = []
        for name, m in self.modules.items():
            cell = m.__dict__.get(CELL)
            if cell is not None:
                cell.value = {"ca": frame.reuse.get((name, "ca")), "sa": frame.reuse.get((name, "sa")),
                              "out_ca": None, "out_sa": None}
                cells.append((name, cell))
        return cells

    # --- cache I/O for the rows in flight -------------------------------------------
    def write(self, key: tuple[str, str], rows: slice, out: torch.Tensor, average: bool) -> None:
        b = rows.stop - rows.start
        k = out.shape[0] // b
        v = out.reshape(k, b, *out.shape[1:]).transpose(0, 1)  # [B, k, ...]
        if average and k == 2:
            v = ((v[:, 0] + v[:, 1]) / 2).unsqueeze(1)  # the reference's (uncond + text) / 2
        n = max(self.num_particles or 0, rows.stop)
        t, valid = self.store.get(key, (None, None))
        if t is None or t.shape[1:] != v.shape[1:] or t.dtype != v.dtype or t.device != v.device:
            t = torch.zeros((n, *v.shape[1:]), dtype=v.dtype, device=v.device)
            valid = torch.zeros(n, dtype=torch.bool)
        elif t.shape[0] < n:
            t, valid = _grow(t, valid, n)
        t[rows] = v
        valid[rows] = True
        self.store[key] = (t, valid)

    def read(self, key: tuple[str, str], rows: slice, batch: int) -> torch.Tensor | None:
        """The cached output for the rows in flight in the model's batch layout, or None when
        these rows have no cache of that batch size (the reference then computes)."""
        if key not in self.store:
            return None
        t, valid = self.store[key]
        b = rows.stop - rows.start
        if rows.stop > t.shape[0] or not bool(valid[rows].all()) or t.shape[1] * b != batch:
            return None
        v = t[rows]
        return v.transpose(0, 1).reshape(batch, *v.shape[2:])


def _grow(t: torch.Tensor, valid: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    t2 = torch.zeros((n, *t.shape[1:]), dtype=t.dtype, device=t.device)
    v2 = torch.zeros(n, dtype=torch.bool)
    t2[: t.shape[0]] = t
    v2[: valid.shape[0]] = valid
    return t2, v2


# ------------------------------------------------------------------------ the hook
def _hook_class():
    from diffusers.hooks import ModelHook

    class TGateHook(ModelHook):
        """Delegates to the attention module's own forward (its installed processor); returns
        the cached output when the frame of the denoiser call in flight says so."""

        def __init__(self, name: str):
            super().__init__()
            self.name = name

        def new_forward(self, module: torch.nn.Module, *args, **kwargs):
            # traced by dynamo under torch.compile: read only the frame's modes and this module's
            # cell (no step, rows, store or module name here), so the graph depends on the
            # phase and nothing else, and repeated blocks share it
            forward = self.fn_ref.original_forward
            frame = _FRAME.get()
            if frame is None:
                return forward(*args, **kwargs)
            ehs = args[1] if len(args) > 1 else kwargs.get("encoder_hidden_states")
            cross = ehs is not None
            kind = "ca" if cross else "sa"
            slot = getattr(module, CELL, None)
            cell = slot.value if slot is not None else None
            if cell is not None:
                # no mode is read here: the frame put a cached output in the cell where this step
                # reuses one, and keeps the output handed back only where the step caches, so a
                # step that computes and one that caches run the same graph
                cached = cell[kind]
                if cached is not None:
                    return cached
                out = forward(*args, **kwargs)  # computed (also a REUSE step's rows without a cache)
                cell["out_" + kind] = out
                return out
            mode = frame.ca if cross else frame.sa
            key = (self.name, kind)  # a state without the module map: the frame's dictionaries
            if mode == REUSE:
                cached = frame.reuse.get(key)
                if cached is not None:
                    return cached
                return forward(*args, **kwargs)  # no cache for these rows: the reference computes
            out = forward(*args, **kwargs)
            if mode == CACHE:
                frame.out[key] = out
            return out

    return TGateHook


_INSTALL_LOCK = threading.Lock()


class _Cell(_PerThread):
    """A hooked attention module's per-thread cell (`CELL`); a copied model gets an empty one."""

    def __deepcopy__(self, memo: dict) -> "_Cell":
        return _Cell()

    def __reduce__(self):
        return (_Cell, ())


def attention_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Attention modules found structurally: anything with an attention `processor` and an
    `is_cross_attention` flag (diffusers' Attention and its descendants)."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "processor") and hasattr(m, "is_cross_attention")]


def enable_tgate(proc: Any, tgate: "TGate | int | dict | bool | None") -> "TGate | None":
    """Turn T-GATE on for the call view `proc` (`DenoisingProcess.for_call()`); None turns it off.

    Checks the model has cross-attention or a joint text stream (one clear TTSInputError
    otherwise), installs the inert hooks on the shared model once, and plugs a `TGateState`
    into the call. A gate at or past the last step gates nothing: the process stays
    bit-identical to the ungated one (its settings still record the gate)."""
    config = TGate.parse(tgate)
    proc.call.remove_feature(ENTRY)
    if config is None:
        return None
    kind = model_kind(proc.adapter.denoiser)  # one clear error for a model it cannot gate
    active = config.active(proc.num_steps)
    modules = None
    if active:
        install(proc.adapter.denoiser)
        modules = proc.adapter.denoiser.__dict__.get(MODULES) if kind == CROSS else None
    proc.call.add_feature(TGateState(config, kind, active, modules))
    return config


def active_tgate(proc: Any) -> "TGate | None":
    """The T-GATE settings of `proc`'s call when its gate falls inside the run, else None."""
    state = proc.call.features.get(ENTRY)
    return state.config if isinstance(state, TGateState) and state.active else None


def model_kind(model: torch.nn.Module) -> str:
    """CROSS (a denoiser with cross-attention: the hooks above) or MMDIT (a joint text stream:
    features/tgate_mmdit.py); one clear error for a model T-GATE cannot gate (before any model work)."""
    from . import tgate_mmdit

    mods = attention_modules(model)
    if any(bool(m.is_cross_attention) for _, m in mods):
        return CROSS
    if tgate_mmdit.joint_blocks(model) or any(getattr(m, "add_k_proj", None) is not None for m in model.modules()):
        tgate_mmdit.check_blocks(model)  # an unknown layout or an IP-Adapter: one clear error
        return MMDIT
    name = type(model).__name__
    raise TTSInputError(f"T-GATE needs a denoiser with cross-attention or a joint text stream (MM-DiT) and {name}"
                        " has neither; run without --tgate")


def install(model: torch.nn.Module) -> int:
    """Install the (inert) T-GATE hooks on `model`, once: on every attention module of a
    cross-attention model, on every joint block of an MM-DiT. Returns the number hooked."""
    from diffusers.hooks import HookRegistry

    if model_kind(model) == MMDIT:
        from . import tgate_mmdit

        return tgate_mmdit.install(model, _INSTALL_LOCK)
    hook_cls = _hook_class()
    mods = attention_modules(model)
    with _INSTALL_LOCK:
        for name, m in mods:
            registry = HookRegistry.check_if_exists_or_initialize(m)
            if registry.get_hook(HOOK) is None:
                registry.register_hook(hook_cls(name), HOOK)
            if CELL not in m.__dict__:
                m.__dict__[CELL] = _Cell()
        model.__dict__[MODULES] = dict(mods)
    return len(mods)


def uninstall(model: torch.nn.Module) -> None:
    """Remove the hooks (they are inert without a gated call; this is for tidiness)."""
    from . import tgate_mmdit

    tgate_mmdit.uninstall(model, _INSTALL_LOCK)
    with _INSTALL_LOCK:
        for _, m in attention_modules(model):
            registry = getattr(m, "_diffusers_hook", None)
            if registry is not None and registry.get_hook(HOOK) is not None:
                registry.remove_hook(HOOK, recurse=False)
            m.__dict__.pop(CELL, None)
        model.__dict__.pop(MODULES, None)
