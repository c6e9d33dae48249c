"""Attention capture for Alfie's matte: processors that wrap the installed ones.

Alfie (Quattrini et al. 2024, sec. 3.2) builds its alpha matte from the cross- and
self-attention maps of every transformer layer and head, for the conditional foreground
row only, summed over the steps with timestep t > 20 (1000-scale) and averaged over layers
and heads:

    C[p, l] = 1/|layers| sum_{t > 20} sum_layers mean_heads softmax(q_p . k_l / sqrt(d))   (cross)
    S[q, p] = 1/|layers| sum_{t > 20} sum_layers mean_heads softmax(q_q . k_p / sqrt(d))   (self)

`CaptureProcessor` wraps and delegates to whatever processor a module already has (SDPA,
xformers, LoRA, IP-Adapter keep working; nothing monkeypatches `forward`). It is installed
once on the shared model and stays inert unless a capturing denoiser call is in flight in
this thread: a per-thread slot (core/thread_slot.py) holds that call's `CaptureFrame`.

Under torch.compile (issue #13): everything that depends on the step, the rows in flight or
the per-particle store is decided OUTSIDE the denoiser, as T-GATE does (features/tgate.py).
Around each denoiser call the process opens `AttentionCapture.frame(step, rows, ...)`: a
step in the window with capture enabled gets a frame (the number of conditional rows, the
chunk bound and the matmul precision: constants of the call) and an empty out-dict; any other
call (steps with t <= 20, Alfie's background rows) gets none. The processor reads only the
frame and adds each layer's head-mean map into the frame's per-kind sum [rows, N, M]; after
the call the sums are added into the per-particle accumulators (`AttentionMaps.rows_view`)
and the layer visits are counted. So dynamo guards on "capture on / off" and the batch shape
only: the denoiser compiles one graph per (capture on / off, batch shape), and a second
search compiles none. The frame's sums are one [rows, N, M] transient per kind for the
chunk in flight (the accumulator rows of that chunk again).

When a frame is set:

- eagerly, the q and k projections are taken from the wrapped processor's own `attn.to_q` /
  `attn.to_k` calls (forward hooks registered for that one call, matched by input identity,
  removed after); a processor that projects differently (fused qkv, group norm, IP-Adapter's
  split context), or a compiled model (hooks cannot be registered inside a traced region),
  gets them recomputed for the conditional rows;
- the conditional rows' scores are computed for all heads at once with one batched matmul
  (`baddbmm`, scale and additive mask folded in) and one softmax, in fp32: q and k are
  upcast exactly from the model dtype (fp16/bf16 values are fp32 values), or, on CUDA with a
  half-precision model, multiplied in the model dtype with fp32 accumulation and fp32 output
  (`out_dtype=float32`: the same products, only the summation order of the tensor cores
  differs; `AttentionCapture.matmul_in_model_dtype`);
- heads (then rows) are chunked only when one chunk's transient, scores plus softmax
  (2 x rows x heads x N x M x 4 B), would exceed `AttentionCapture.chunk_bytes` (256 MiB on
  a GPU, where the old per-head loop was bound by kernel launches; 8 MiB on the CPU, where
  one large batch falls out of cache and is slower than cache-sized chunks);
- the head sum, scaled by 1/heads, is added into the frame's sum for this kind; the
  per-particle accumulators it is merged into (`AttentionMaps`, a `CallState` entry, so
  `proc.select` carries them with the particles) are never touched inside the model.

Memory (N image tokens, L text tokens, K particles): the accumulators hold K (N L + N^2)
fp32 values; the transient is at most `chunk_bytes` (plus the upcast q/k of the rows) and the
frame's sums for the rows in flight, r (N L + N^2) fp32 values for a chunk of r rows. At
PixArt-Sigma-XL 512 px (latent 64x64, patch 2: N = 32 x 32 = 1024; L = 300; 28 layers x 16
heads) that is 1024^2 x 4 B = 4 MiB of self map and 1.2 MiB of cross map per particle, and a
self-attention chunk of 2 x 16 heads x 1024^2 x 4 B = 128 MiB per row, so 2 rows per chunk
under the 256 MiB bound; Alfie's own code keeps every layer's and head's self map,
28 x 16 x 1024^2 x 4 B = 1.75 GiB. At 1024 px (N = 4096) S is 64 MiB per particle and a
chunk is 2 heads of one row (128 MiB).

Time window: `t` is the model's own timestep (the value the transformer is given). Flow
models in diffusers are given t = 1000 sigma, so t > 20 is sigma > 0.02.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from ..errors import TTSInputError
from ..core.thread_slot import ThreadSlot

#: the capture's name among a call's features (`CallState.features`)
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

    def rows_view(self, kind: str, rows: slice, shape: tuple[int, int], device: torch.device,
                  fresh: bool = False) -> torch.Tensor:
        """The accumulator rows `rows` of `kind` ([r, N, M] fp32 view, allocated or grown on
        first use) to add into; `fresh`: these rows start a new trajectory (grid point 0), so
        their earlier sums are dropped first.

        Rows past the ones held (a searcher that grew its population without
        `proc.reset_particles`) are added as zero rows rather than failing."""
        name = "cross" if kind == "cross" else "self_"
        buf = getattr(self, name)
        shape = tuple(shape)
        if buf is not None and tuple(buf.shape[1:]) != shape:
            raise RuntimeError(f"attention maps changed shape mid-call: {tuple(buf.shape[1:])} -> {shape}")
        need = max(self.num_particles, rows.stop)
        if buf is None or buf.shape[0] < need:
            grown = torch.zeros((need, *shape), dtype=torch.float32, device=device)
            if buf is not None:
                grown[: buf.shape[0]] = buf
            buf = grown
            setattr(self, name, buf)
        self.num_particles = need
        view = buf[rows]
        if fresh:
            view.zero_()
        return view

    def add(self, kind: str, rows: slice, probs: torch.Tensor, fresh: bool = False) -> None:
        """Add a head-mean probability map [r, N, M] to particle rows `rows` (see `rows_view`)."""
        self.rows_view(kind, rows, probs.shape[1:], probs.device, fresh).add_(probs)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.cross, self.self_) if t is not None)


@dataclass
class AttentionCapture:
    """What a call asks the processors for (a `ModelFeature` of the call): the grid steps to
    capture (the t > 20 window) and the number of layers of each kind (for the mean over
    layers). `enabled` is turned off while the call forwards rows that are not the
    foreground (Alfie's background)."""

    name, label = CAPTURE_KEY, "Alfie's attention capture"

    steps: frozenset[int]
    maps: AttentionMaps
    num_layers: dict[str, int] = field(default_factory=dict)
    enabled: bool = True
    #: layer visits seen per kind during the call (a check that the processors ran)
    seen: dict[str, int] = field(default_factory=lambda: {"cross": 0, "self": 0})
    #: bound on one chunk's transient (scores + softmax, fp32); heads, then rows, are chunked above
    #: it. None: `default_chunk_bytes(device)` (256 MiB on GPUs, 8 MiB on the CPU)
    chunk_bytes: int | None = None
    #: CUDA + fp16/bf16 model: q k^T from the model-dtype q, k with fp32 accumulation and output
    matmul_in_model_dtype: bool = True
    #: layer visits whose q/k were taken from the wrapped processor's projections (the rest recomputed)
    tapped: int = 0

    def active(self, step: int | None) -> bool:
        return self.enabled and step is not None and step in self.steps

    # --- ModelFeature: capture never drops CFG, records nothing itself (Alfie's RGBARun
    # does) and belongs to its call only
    def keeps_cfg(self, step: int) -> bool:
        return True

    def settings(self) -> dict[str, Any]:
        return {}

    def for_call(self) -> None:
        return None

    @contextlib.contextmanager
    def frame(self, step: int, rows: slice, k: int, device: torch.device,
              dtype: torch.dtype) -> Iterator["CaptureFrame | None"]:
        """The frame of one denoiser call on particle rows `rows` at step `step` (a model in
        `dtype` on `device`): the processors of this thread see it while the block runs; on a
        normal exit the maps they summed are added to those rows' accumulators (a trajectory's
        first step, 0, restarts them). Outside the window, or with capture disabled, there is
        no frame and the processors only delegate."""
        frame = None
        if self.active(step):
            half = self.matmul_in_model_dtype and half_matmul_ok(torch.device(device), dtype)
            frame = CaptureFrame(rows.stop - rows.start, self.chunk_bytes, half)
        with _FRAME.use(frame):
            yield frame
        if frame is None:
            return
        for kind, acc in frame.out.items():
            self.maps.add(kind, rows, acc, fresh=step == 0)
        for kind, n in frame.seen.items():
            self.seen[kind] += n
        self.tapped += frame.tapped

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


@dataclass
class CaptureFrame:
    """What the capture processors read during one capturing denoiser call: the number of
    conditional rows (the last `rows` of the model batch), the chunk bound and whether q k^T
    is taken in the model dtype (constants of the call, decided outside the model), and what
    they hand back: the head-mean maps summed over the layers of each kind ("cross", "self":
    [rows, N, M] fp32) and the layer visits (filled during the call; merged after it)."""

    rows: int
    chunk_bytes: int | None
    half: bool
    out: dict[str, torch.Tensor] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=lambda: {"cross": 0, "self": 0})
    tapped: int = 0


#: the frame of the capturing denoiser call in flight in this thread (None: processors only
#: delegate); a ThreadSlot, not a ContextVar, so that dynamo traces the read without a graph break
_FRAME: ThreadSlot[CaptureFrame] = ThreadSlot("tts_capture_frame")


class ProjectionTap:
    """Records `attn.to_q(hidden_states)` and `attn.to_k(context)` as the wrapped processor
    computes them, for one processor call: forward hooks (PyTorch's own API; nothing is
    patched) registered on entry and removed on exit. A call is recorded only if its input is
    the very tensor object given (so another thread's forward through the same shared layer,
    or a processor that normalises or splits its input first, records nothing); `q` / `k` are
    None unless exactly one matching call was seen."""

    def __init__(self, attn: Any, hidden_states: torch.Tensor, context: torch.Tensor):
        self.attn, self.targets = attn, {"q": hidden_states, "k": context}
        self.seen: dict[str, list[torch.Tensor]] = {"q": [], "k": []}
        self.handles: list[Any] = []

    def _hook(self, which: str):
        def hook(module: Any, args: tuple, output: Any) -> None:
            if args and args[0] is self.targets[which] and isinstance(output, torch.Tensor):
                self.seen[which].append(output)
        return hook

    def __enter__(self) -> "ProjectionTap":
        for which, name in (("q", "to_q"), ("k", "to_k")):
            mod = getattr(self.attn, name, None)
            if isinstance(mod, torch.nn.Module):
                self.handles.append(mod.register_forward_hook(self._hook(which)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def get(self, which: str) -> torch.Tensor | None:
        got = self.seen[which]
        t = self.targets[which]
        if len(got) == 1 and got[0].dim() == 3 and got[0].shape[:2] == t.shape[:2]:
            return got[0]
        return None


def project_qk(attn: Any, hidden_states: torch.Tensor, context: torch.Tensor, q: torch.Tensor | None = None,
               k: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head q [B, H, N, d] and k [B, H, M, d] in the model dtype, mirroring the q/k path of
    diffusers' `AttnProcessor2_0` (group_norm, norm_cross, norm_q / norm_k); `q` / `k`: the
    projections `attn.to_q` / `attn.to_k` already gave for these rows (else computed here)."""
    b, n, _ = hidden_states.shape
    m = context.shape[1]
    if q is None:
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q = attn.to_q(hidden_states)
    if k is None:
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
    return q, k


def _scores(q: torch.Tensor, kt: torch.Tensor, bias: torch.Tensor | None, scale: float, half: bool) -> torch.Tensor:
    """fp32 bias + scale q k^T for q [B, N, d], kt [B, d, M] (fp32, or half with `half`: fp32
    accumulation and output, CUDA only). On CUDA one fused `baddbmm`; on the CPU `bmm` then
    scale and bias in place (CPU `baddbmm` copies the broadcast bias first and is slower)."""
    if half:
        if bias is None:
            return torch.baddbmm(torch.zeros((), dtype=torch.float32, device=q.device), q, kt,
                                 out_dtype=torch.float32, beta=0.0, alpha=scale)
        return torch.baddbmm(bias, q, kt, out_dtype=torch.float32, alpha=scale)
    if q.device.type == "cuda":
        if bias is None:
            return torch.baddbmm(torch.zeros((), dtype=q.dtype, device=q.device), q, kt, beta=0.0, alpha=scale)
        return torch.baddbmm(bias, q, kt, alpha=scale)
    s = torch.bmm(q, kt).mul_(scale)
    return s if bias is None else s.add_(bias)


_HALF_OK: dict[tuple[str, torch.dtype], bool] = {}


def half_matmul_ok(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether q k^T can be taken in `dtype` with fp32 output on `device` (CUDA, fp16 / bf16,
    a torch with `baddbmm(..., out_dtype=)`): checked once per (device, dtype) against the
    upcast product on a small random case; any error or mismatch keeps the fp32 path."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return False
    key = (str(device), dtype)
    if key not in _HALF_OK:
        try:
            g = torch.Generator(device="cpu").manual_seed(0)
            q = torch.randn(2, 64, 72, generator=g).to(device, dtype)
            kt = torch.randn(2, 72, 40, generator=g).to(device, dtype)
            bias = torch.randn(2, 1, 40, generator=g).to(device)
            ok = True
            for bb in (bias, None):  # both forms the capture uses
                want = _scores(q.float(), kt.float(), bb, 0.125, False)
                got = _scores(q, kt, bb, 0.125, True)
                ok &= got.dtype == torch.float32 and bool(torch.allclose(got, want, atol=1e-4, rtol=1e-4))
            _HALF_OK[key] = ok
        except (RuntimeError, TypeError, NotImplementedError):
            _HALF_OK[key] = False
    return _HALF_OK[key]


def default_chunk_bytes(device: torch.device) -> int:
    """256 MiB on an accelerator (fewer, larger kernels: the per-head loop was launch-bound);
    8 MiB on the CPU, where a chunk that stays in cache is faster than one large batch."""
    return 8 * 2**20 if device.type == "cpu" else 256 * 2**20


def chunking(rows: int, heads: int, n: int, m: int, chunk_bytes: int) -> tuple[int, int]:
    """(rows, heads) per chunk so that one chunk's scores + softmax, 2 x rows x heads x n x m
    fp32 values, stay within `chunk_bytes` (at least one head of one row)."""
    per = 2 * n * m * 4
    hc = max(1, min(heads, chunk_bytes // per))
    rc = max(1, min(rows, chunk_bytes // (per * hc))) if hc == heads else 1
    return rc, hc


def accumulate_probs(q: torch.Tensor, k: torch.Tensor, scale: float, bias: torch.Tensor | None, out: torch.Tensor,
                     chunk_bytes: int | None = None, model_dtype_matmul: bool = True) -> None:
    """out [B, N, M] += mean_heads softmax(scale q k^T + bias), all heads at once (chunked by
    `chunking`), in fp32. q [B, H, N, d], k [B, H, M, d]; bias: additive mask [B, H, 1 or N, M].
    model_dtype_matmul: q k^T in q's fp16 / bf16 with fp32 output where `half_matmul_ok`."""
    add_probs(q, k, scale, bias, out, chunk_bytes, model_dtype_matmul and half_matmul_ok(q.device, q.dtype))


def add_probs(q: torch.Tensor, k: torch.Tensor, scale: float, bias: torch.Tensor | None, out: torch.Tensor,
              chunk_bytes: int | None, half: bool) -> None:
    """`accumulate_probs` with the matmul precision already decided (`half`: q k^T in the half
    model dtype with fp32 output, only where `half_matmul_ok` said so): nothing here reads a
    global or checks the device, so dynamo traces it inside a compiled model."""
    b, h, n, d = q.shape
    m = k.shape[2]
    half = half and q.dtype in (torch.float16, torch.bfloat16)
    if not half:
        q, k = q.float(), k.float()
    rc, hc = chunking(b, h, n, m, default_chunk_bytes(q.device) if chunk_bytes is None else chunk_bytes)
    for r0 in range(0, b, rc):
        r1 = min(b, r0 + rc)
        for h0 in range(0, h, hc):
            h1 = min(h, h0 + hc)
            bb = None if bias is None else bias[r0:r1, h0:h1].reshape(-1, bias.shape[-2], m)
            kt = k[r0:r1, h0:h1].reshape(-1, m, d).transpose(-1, -2)
            s = _scores(q[r0:r1, h0:h1].reshape(-1, n, d), kt, bb, scale, half)
            p = s.softmax(dim=-1)
            del s
            out[r0:r1].add_(p.view(r1 - r0, h1 - h0, n, m).sum(dim=1), alpha=1.0 / h)


def mask_bias(attn: Any, attention_mask: torch.Tensor | None, rows: int, m: int) -> torch.Tensor | None:
    """The additive mask as `attn.prepare_attention_mask` makes it, [B, H, 1 or N, M] fp32."""
    if attention_mask is None:
        return None
    return attn.prepare_attention_mask(attention_mask, m, rows).view(rows, attn.heads, -1, m).float()


def attention_probs(attn: Any, hidden_states: torch.Tensor, context: torch.Tensor,
                    attention_mask: torch.Tensor | None, chunk_bytes: int | None = None,
                    model_dtype_matmul: bool = True) -> torch.Tensor:
    """Head-mean softmax(q k^T * scale + mask) in fp32 for a batch of rows: [B, N, M]."""
    q, k = project_qk(attn, hidden_states, context)
    b, _, n, _ = q.shape
    m = k.shape[2]
    out = torch.zeros((b, n, m), dtype=torch.float32, device=q.device)
    accumulate_probs(q, k, float(attn.scale), mask_bias(attn, attention_mask, b, m), out, chunk_bytes,
                     model_dtype_matmul)
    return out


class CaptureProcessor:
    """Wraps an attention processor: delegates the attention itself to `inner` and, when a
    capturing denoiser call is in flight in this thread (its `CaptureFrame`), adds the
    conditional rows' head-mean attention map to the frame's sum for this kind."""

    def __init__(self, inner: Any, kind: str):
        self.inner = inner
        self.kind = kind  # "self" or "cross"

    def __getattr__(self, name: str) -> Any:  # expose the wrapped processor's attributes
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any) -> torch.Tensor:
        # traced by dynamo under torch.compile: read only the frame (no step, rows or store
        # here), so the graph depends on "capture on / off" and the batch shape, nothing else
        frame = _FRAME.get()
        if frame is None:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        tq = tk = None
        if torch.compiler.is_compiling():  # no hooks inside a traced region: q, k are recomputed
            out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        else:
            with ProjectionTap(attn, hidden_states, context) as tap:
                out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
            tq, tk = tap.get("q"), tap.get("k")
        # the process lays a chunk out as [uncond rows; cond rows] with CFG, [cond rows] without:
        # the conditional rows are the last r either way
        r = frame.rows
        with torch.no_grad():
            q, k = project_qk(attn, hidden_states[-r:], context[-r:], None if tq is None else tq[-r:],
                              None if tk is None else tk[-r:])
            mask = attention_mask[-r:] if attention_mask is not None and self.kind == "cross" else None
            n, m = q.shape[2], k.shape[2]
            acc = frame.out.get(self.kind)
            if acc is None:
                acc = torch.zeros((r, n, m), dtype=torch.float32, device=q.device)
                frame.out[self.kind] = acc
            add_probs(q, k, float(attn.scale), mask_bias(attn, mask, r, m), acc, frame.chunk_bytes, frame.half)
        frame.seen[self.kind] += 1
        frame.tapped += int(tq is not None and tk is not None)
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
        for _, mod in mods:
            if not has_capture(mod.processor):
                mod.set_processor(CaptureProcessor(mod.processor, kind))
    return {k: len(v) for k, v in kinds.items()}


def capture_window(model_timesteps: torch.Tensor, threshold: float = 20.0) -> frozenset[int]:
    """Grid steps whose model timestep exceeds `threshold` (Alfie: t > 20 on 0..999)."""
    return frozenset(i for i, t in enumerate(model_timesteps.tolist()) if float(t) > threshold)
