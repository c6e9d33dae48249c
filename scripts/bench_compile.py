"""The fast path on one GPU: best-of-N at SD-1.5 size under every way of running the denoiser
we have (plain diffusers, toolkit eager, whole-UNet torch.compile, regional compile of the
repeated blocks, each with and without CUDA graphs and T-GATE), in one run, with compile
times, what dynamo compiled for each variant, whether the picks equal eager's, the FLOP floor
of the search, and (`--profile-eager`) where an eager search's time goes against plain
diffusers' (issue 32).

Setting (issue 13): SD-1.5 architecture (random weights, real sizes), best-of-32, 512x512,
25 DDIM steps, CFG 7.5, CLIP ViT-L/14-architecture verifier (random weights), fp16.

    python scripts/bench_compile.py --time-limit 450 --repeats 2 --profile-eager --out docs/bench_compile.json  # H100
    python scripts/bench_compile.py --variants eager+tgate,regional+tgate --repeats 2 --out ...
    python scripts/bench_compile.py --smoke --out /tmp/bench_compile.json   # CPU, tiny models, aot_eager

Variants (`--variants`, comma-separated, run in the order given; `--list-variants` prints them):

    plain               plain diffusers: pipe(num_images_per_prompt=N) + the verifier on its images
    eager               the toolkit's best-of-N, eager (`eager-cl`: UNet and VAE in channels_last)
    compiled            denoiser and VAE decoder under torch.compile (TTSPipeline.compile; channels_last)
    regional            regional compilation: unet.compile_repeated_blocks(fullgraph=True) (diffusers:
                        every BasicTransformerBlock compiled once, shared by all blocks of the same
                        shapes), the VAE decoder as `--regional-vae` says
    regional-res        regional + every ResnetBlock2D / Downsample2D / Upsample2D of the UNet, the same way
    regional-dyn        regional with dynamic=True: one graph per block width and T-GATE phase, batch and
                        sequence length symbolic (fewer graphs, less specialised kernels)
    <family>-ro         the same with mode="reduce-overhead" (CUDA graphs; one per T-GATE phase and batch
                        shape for `compiled-ro`, one per block call for `regional-ro`)
    <variant>+tgate     with T-GATE (gate step `--tgate`); after its ungated sibling when both are asked
                        for, it shares the sibling's pipeline (and compiled graphs)

Each compiled family gets a freshly built pipeline (same seed, same weights) and a reset dynamo.
Per variant: the first search (which compiles every shape it meets), the median of `--repeats`
later searches, compile time = first - median (for a +tgate variant after its sibling, also the
family's total: the first gated search on a fresh pipeline pays both), how far the candidate
scores and 8-bit images are from eager's (T-GATE rows: from eager + T-GATE; images compared by
candidate, for the candidates both runs kept) and whether the winner is the same, and from
torch._dynamo.utils.counters what dynamo did: graphs compiled in the first search
(`graphs_first`), graphs compiled in the later identical searches (`recompiles`, 0 when the
guards hold), graph breaks, and functions dynamo gave up on at the recompile limit
(`recompile_limit_hits`). The FLOP floor counts one UNet row, one VAE decode and one verifier
image with torch's FlopCounterMode and divides the search's total by `--peak-tflops` (H100
SXM dense fp16: 989).

`--time-limit S`: the whole run ends within about S seconds: a variant is not started when
less than its expected time is left, and one still running at the limit is stopped (SIGALRM);
the rest are skipped, the table printed and the JSON (rewritten after every variant) written.
A variant that fails (e.g. CUDA graphs refusing a pattern) records its error and the run goes on.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import os
import signal
import statistics
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from tts_diffusion.bench.timing import sync  # noqa: E402
from tts_diffusion.pipelines.compile import use_channels_last  # noqa: E402
from tts_diffusion.testing.sd15 import add_best_of_n_args, build_sd15  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse"
FAMILIES = ("plain", "eager", "eager-cl", "compiled", "compiled-ro", "regional", "regional-ro", "regional-res",
            "regional-res-ro", "regional-dyn", "regional-dyn-ro")
#: the order puts the questions of issue 32 first (a gated first search <= 45 s, a gated search <= 2 s), so that
#: a --time-limit cuts what matters least; compiled (+tgate) were measured before (2.745 s, first search 133 s)
DEFAULT_VARIANTS = ("plain,eager,eager+tgate,regional+tgate,regional-ro+tgate,compiled-ro+tgate,regional,"
                    "regional-res+tgate,compiled+tgate,compiled,compiled-ro,regional-ro,regional-res,regional-dyn+tgate")
#: UNet modules compiled one by one besides the transformer blocks (`regional-res`)
RES_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")


class TimeLimit(BaseException):
    """The run reached --time-limit (a BaseException, like KeyboardInterrupt, so that library
    code catching Exception lets it through)."""


def parse_variant(v: str) -> tuple[str, bool]:
    """'regional-ro+tgate' -> ('regional-ro', True)."""
    fam, _, rest = v.partition("+")
    if fam not in FAMILIES or rest not in ("", "tgate") or (fam == "plain" and rest):
        raise ValueError(v)
    return fam, rest == "tgate"


def flop_floor(pipe, verifier, args, device, dtype) -> dict:
    """TFLOP of the search: N * steps UNet rows (x2 with CFG), N VAE decodes, N verifier images."""
    from torch.utils.flop_counter import FlopCounterMode

    lat = torch.randn(1, 4, args.size // 8, args.size // 8, device=device, dtype=dtype)
    emb = torch.randn(1, 77, pipe.text_encoder.config.hidden_size, device=device, dtype=dtype)
    t = torch.tensor([500], device=device)
    out = {}
    with torch.no_grad():
        for name, fn in (("unet_row", lambda: pipe.unet(lat, t, encoder_hidden_states=emb)),
                         ("vae_decode", lambda: pipe.vae.decode(lat)),
                         ("verifier_image", lambda: verifier(torch.rand(1, 3, args.size, args.size, device=device),
                                                             [PROMPT]))):
            with FlopCounterMode(display=False) as fc:
                fn()
            out[name] = fc.get_total_flops() / 1e12
    rows = args.n * args.steps * (2 if args.guidance > 1 else 1)
    total = rows * out["unet_row"] + args.n * (out["vae_decode"] + out["verifier_image"])
    out.update(total_tflop=total, peak_tflops=args.peak_tflops, floor_s=total / args.peak_tflops)
    return out


def dynamo_counts() -> dict[str, int]:
    """What dynamo has done so far in this process (torch._dynamo.utils.counters)."""
    limit = sum(n for group in ("unimplemented", "graph_break") for reason, n in counters[group].items()
                if "recompile limit" in reason.lower() or "cache_size_limit" in reason.lower())
    return {"graphs": counters["stats"]["unique_graphs"], "frames": counters["frames"]["total"],
            "graph_breaks": sum(counters["graph_break"].values()), "recompile_limit_hits": limit}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def step_profile(tts, search, device, steps: int, tgate: int | None) -> dict:
    """One more search with the device synchronised around every denoiser call: seconds per
    sampling step, and their mean per T-GATE phase (which bounds what gating can save: the
    whole search adds the decode and the scoring, which T-GATE does not touch)."""
    from tts_diffusion import TGate

    den = tts.pipe.unet
    calls: list[tuple[int, float]] = []
    t0 = [0.0]

    def pre(module, args, kwargs):
        sync(device)
        t0[0] = time.perf_counter()

    def post(module, args, kwargs, out):
        sync(device)
        calls.append((int(args[0].shape[0]), time.perf_counter() - t0[0]))

    handles = [den.register_forward_pre_hook(pre, with_kwargs=True),
               den.register_forward_hook(post, with_kwargs=True)]
    try:
        search()
    finally:
        for h in handles:
            h.remove()
    per_step = [0.0] * steps
    per_call = max(1, len(calls) // steps)
    for i, (_, sec) in enumerate(calls):
        per_step[min(i // per_call, steps - 1)] += sec
    plan = TGate(gate_step=tgate) if tgate else None
    phases: dict[str, list[float]] = {}
    for s, sec in enumerate(per_step):
        label = "ungated" if plan is None or not plan.active(steps) else (
            "before gate, self-attention reused" if s < plan.gate_step - 1 and plan.plan(s)[1] == "reuse" else
            "before gate, self-attention computed" if s < plan.gate_step - 1 else
            "gate step" if s == plan.gate_step - 1 else "after gate (no CFG, cross-attention cached)")
        phases.setdefault(label, []).append(sec)
    return {"rows_per_call": sorted({b for b, _ in calls}), "calls": len(calls), "per_step_s": per_step,
            "denoise_s": sum(per_step),
            "phases": {k: {"steps": len(v), "mean_s": statistics.mean(v), "total_s": sum(v)} for k, v in phases.items()}}


# ------------------------------------------------------------------ profile of one eager search
@contextlib.contextmanager
def split_timer(pipe, verifier, device):
    """Device-synchronised seconds of every text-encoder call, denoiser call, VAE decode and
    verifier score during the block (the rest of the wall time is everything else: noise,
    scheduler steps, CFG arithmetic, bookkeeping, moving images)."""
    acc = {"text_encoder": 0.0, "denoiser": 0.0, "decode": 0.0, "verifier": 0.0}
    counts = dict.fromkeys(acc, 0)
    handles, t0 = [], {}

    def hooks(module, name):
        def pre(m, a, k):
            sync(device)
            t0[name] = time.perf_counter()

        def post(m, a, k, out):
            sync(device)
            acc[name] += time.perf_counter() - t0[name]
            counts[name] += 1
        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(module.register_forward_hook(post, with_kwargs=True))

    def wrap(obj, attr, name):
        fn = getattr(obj, attr)

        def timed(*a, **k):
            sync(device)
            s = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sync(device)
                acc[name] += time.perf_counter() - s
                counts[name] += 1
        setattr(obj, attr, timed)
        return lambda: obj.__dict__.pop(attr, None)

    hooks(pipe.text_encoder, "text_encoder")
    hooks(pipe.unet, "denoiser")
    undo = [wrap(pipe.vae, "decode", "decode"), wrap(verifier, "score", "verifier")]
    out = {"seconds": acc, "calls": counts}
    sync(device)
    start = time.perf_counter()
    try:
        yield out
    finally:
        sync(device)
        out["total_s"] = time.perf_counter() - start
        out["other_s"] = out["total_s"] - sum(acc.values())
        for h in handles:
            h.remove()
        for u in undo:
            u()


def profile_eager(pipe, tts, verifier, args, device) -> dict:
    """Plain diffusers and the toolkit's eager search under `split_timer`, one after the other
    (each run once unprofiled first, so both are warm), and a torch.profiler table of the
    toolkit's search (the ops and Python functions with the most CPU time)."""
    out = {}
    for name, fn in (("plain", lambda: plain_search(pipe, verifier, args, device)),
                     ("eager", lambda: toolkit_search(tts, verifier, args, {}))):
        fn()
        with split_timer(pipe, verifier, device) as prof:
            fn()
        out[name] = prof
    p, e = out["plain"], out["eager"]
    print(f"\neager split (device-synchronised around each model call; {args.n} images)\n"
          f"{'part':<14} {'plain s':>9} {'eager s':>9} {'eager - plain':>14} {'calls plain/eager':>18}")
    for part in list(p["seconds"]) + ["other", "total"]:
        a = p["seconds"].get(part, p.get(part + "_s"))
        b = e["seconds"].get(part, e.get(part + "_s"))
        calls = f"{p['calls'][part]}/{e['calls'][part]}" if part in p["calls"] else ""
        print(f"{part:<14} {a:9.3f} {b:9.3f} {b - a:+14.3f} {calls:>18}")
    try:  # the split above is kept even where the profiler cannot run (no CUPTI)
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            toolkit_search(tts, verifier, args, {})
            sync(device)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        print("\ntorch.profiler, one eager search, by self CPU time:\n" + table)
        out["profiler_top"] = table
        if args.profile_trace:
            prof.export_chrome_trace(args.profile_trace)
            print(f"wrote {args.profile_trace}")
    except Exception as e:  # noqa: BLE001
        out["profiler_error"] = f"{type(e).__name__}: {e}"
        print(f"torch.profiler failed: {out['profiler_error']}", flush=True)
    return out


# ------------------------------------------------------------------------------ the searches
def toolkit_search(tts, verifier, args, call_kw):
    return tts(PROMPT, verifier=verifier, budget=args.n * args.steps, seed=0, num_inference_steps=args.steps,
               guidance_scale=args.guidance, height=args.size, width=args.size, max_batch=args.max_batch,
               progress=False, **call_kw)


class PlainResult:
    def __init__(self, scores: torch.Tensor):
        self.scores = [float(s) for s in scores]
        self.timings = {}
        self.candidates = []


def plain_search(pipe, verifier, args, device):
    """Plain diffusers at equal work: all N images in one call (num_images_per_prompt), then
    the verifier on them."""
    gens = [torch.Generator().manual_seed(s) for s in range(args.n)]  # CPU generators, as the toolkit draws
    with torch.no_grad():
        images = pipe(PROMPT, num_images_per_prompt=args.n, num_inference_steps=args.steps,
                      guidance_scale=args.guidance, height=args.size, width=args.size, generator=gens,
                      output_type="pt").images
        scores = verifier(images, [PROMPT] * args.n)
    return PlainResult(scores)


def fresh_compile_cache() -> str:
    """Point inductor (and Triton) at a new, empty cache directory and drop inductor's in-memory
    caches, so the next family compiles cold and not from kernels an earlier family left (the
    compile worker processes may still hold Triton binaries in memory)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="bench_compile_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = d
    os.environ["TRITON_CACHE_DIR"] = os.path.join(d, "triton")
    try:
        from torch._inductor.utils import clear_caches

        clear_caches()
    except Exception:  # noqa: BLE001 -- older torch: the new directory alone
        pass
    return d


def setup_family(fam: str, pipe, args, device):
    """A TTSPipeline over `pipe` for a family (the pipeline prepared in place)."""
    from tts_diffusion import TTSPipeline
    from tts_diffusion.pipelines.compile import RECOMPILE_LIMIT, _install_inert_hooks

    if fam in ("plain", "eager"):
        for m in (pipe.unet, pipe.vae):
            m.to(memory_format=torch.contiguous_format)
        return TTSPipeline(pipe)
    if fam == "eager-cl":
        use_channels_last(pipe, True)
        return TTSPipeline(pipe)
    ro = fam.endswith("-ro")
    if ro and args.backend != "inductor":
        print(f"  ({fam}: mode reduce-overhead needs the inductor backend; {args.backend} traces without CUDA"
              " graphs here)", flush=True)
    mode = "reduce-overhead" if ro and args.backend == "inductor" else "default"
    if fam.startswith("compiled"):
        return TTSPipeline(pipe).compile(mode, backend=args.backend)
    # regional: the repeated blocks compiled one by one (each distinct block shape once, shared)
    use_channels_last(pipe, args.regional_channels_last)
    _install_inert_hooks(pipe.unet)  # T-GATE's / Alfie's hooks go in before tracing (pipelines/compile.py)
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, limit, max(getattr(config, limit), RECOMPILE_LIMIT))
    kw = {"fullgraph": True, "dynamic": args.regional_dynamic or fam.startswith("regional-dyn"),
          "backend": args.backend,
          **({} if mode == "default" else {"mode": mode})}
    pipe.unet.compile_repeated_blocks(**kw)
    n_blocks = sum(type(m).__name__ in pipe.unet._repeated_blocks for m in pipe.unet.modules())
    if fam.startswith("regional-res"):
        for m in pipe.unet.modules():
            if type(m).__name__ in RES_BLOCKS:
                m.compile(**kw)
                n_blocks += 1
    if args.regional_vae == "whole":
        pipe.vae.decoder.compile(**{k: v for k, v in kw.items() if k not in ("fullgraph", "dynamic")}, dynamic=False)
    elif args.regional_vae == "blocks":
        for m in pipe.vae.decoder.modules():
            if type(m).__name__ in RES_BLOCKS:
                m.compile(**kw)
    print(f"  ({fam}: {n_blocks} UNet blocks compiled one by one, mode {mode}, VAE decoder {args.regional_vae})",
          flush=True)
    return TTSPipeline(pipe)


def run_variant(name, fam, tts, pipe, verifier, args, device, call_kw, compiled: bool) -> dict:
    if fam == "plain":
        def search():
            return plain_search(pipe, verifier, args, device)
    else:
        def search():
            return toolkit_search(tts, verifier, args, call_kw)

    c0 = dynamo_counts()
    sync(device)
    t0 = time.perf_counter()
    search()
    sync(device)
    first = time.perf_counter() - t0
    c1 = dynamo_counts()
    times, res = [], None
    for _ in range(args.repeats):
        sync(device)
        t0 = time.perf_counter()
        res = search()
        sync(device)
        times.append(time.perf_counter() - t0)
    c2 = dynamo_counts()
    med = statistics.median(times)
    first_d, later_d = _delta(c1, c0), _delta(c2, c1)
    dynamo = {"graphs_first": first_d["graphs"], "frames_first": first_d["frames"],
              "recompiles": later_d["graphs"], "graph_breaks": first_d["graph_breaks"] + later_d["graph_breaks"],
              "recompile_limit_hits": first_d["recompile_limit_hits"] + later_d["recompile_limit_hits"]}
    print(f"{name:<24} first {first:8.2f} s   median {med:7.3f} s   compile ~{max(first - med, 0):7.1f} s   "
          f"graphs {dynamo['graphs_first']}, recompiles {dynamo['recompiles']}, breaks {dynamo['graph_breaks']}, "
          f"limit hits {dynamo['recompile_limit_hits']}", flush=True)
    profile = None
    if args.step_profile and not compiled and fam != "plain":  # hooks on a compiled UNet would break its graph
        profile = step_profile(tts, search, device, args.steps, call_kw.get("tgate"))
        print("  step profile: " + ", ".join(f"{k} {v['steps']} x {v['mean_s'] * 1e3:.1f} ms"
                                            for k, v in profile["phases"].items()), flush=True)
    scores = res.scores if fam == "plain" else [c.score for c in res.candidates]
    return {"variant": name, "family": fam, "tgate": bool(call_kw.get("tgate")), "first_s": first, "times_s": times,
            "median_s": med, "compile_s": max(first - med, 0.0) if compiled else 0.0,
            "dynamo": dynamo, "step_profile": profile, "phases": res.timings, "scores": scores,
            # kept images by candidate index: which candidates keep one follows the scores, and random-weight
            # CLIP scores lie within 1e-4 of each other, so two runs may keep different (equally valid) sets
            "images": {i: c.image for i, c in enumerate(res.candidates) if c.image is not None}}


def compare(rows: list[dict]) -> None:
    """Picks against eager (T-GATE rows: against eager + T-GATE); plain diffusers draws other noise."""
    refs = {g: next((r for r in rows if r["family"] == "eager" and r["tgate"] == g and "error" not in r), None)
            for g in (False, True)}
    for r in rows:
        if "error" in r or r["family"] == "plain":
            continue
        ref = refs[r["tgate"]]
        if ref is None:
            continue
        r["compared_to"] = ref["variant"]
        r["max_score_diff"] = max(abs(a - b) for a, b in zip(r["scores"], ref["scores"]))
        r["same_winner"] = max(range(len(r["scores"])), key=r["scores"].__getitem__) == \
            max(range(len(ref["scores"])), key=ref["scores"].__getitem__)
        both = sorted(set(r["images"]) & set(ref["images"]))
        r["images_compared"] = len(both)
        r["max_image_diff_levels"] = max((int((r["images"][i].int() - ref["images"][i].int()).abs().max())
                                          for i in both), default=None)


def table(rows: list[dict], floor: dict) -> None:
    ok = [r for r in rows if "error" not in r]
    base = next((r for r in ok if r["family"] == "eager" and not r["tgate"]), ok[0] if ok else None)
    plain = next((r for r in ok if r["family"] == "plain"), None)
    for r in ok:
        r["speedup_vs_eager"] = base["median_s"] / r["median_s"]
        if plain is not None:
            r["vs_plain"] = r["median_s"] / plain["median_s"] - 1
        if r["tgate"]:
            sib = next((x for x in ok if x["family"] == r["family"] and not x["tgate"]), None)
            if sib is not None:
                r["tgate_speedup"] = sib["median_s"] / r["median_s"]
                if r["phases"].get("denoise") and sib["phases"].get("denoise"):
                    r["tgate_denoise_speedup"] = sib["phases"]["denoise"] / r["phases"]["denoise"]
                if sib.get("compile_s") and rows.index(sib) < rows.index(r):
                    r["family_compile_s"] = sib["compile_s"] + r["compile_s"]
            if r["family"] not in ("plain", "eager", "eager-cl") and "family_compile_s" not in r:
                r["family_compile_s"] = r["compile_s"]  # the first search of a fresh pipeline compiled everything
    print(f"\n{'variant':<24} {'median s':>9} {'vs eager':>9} {'vs plain':>9} {'first s':>8} {'compile s':>10}"
          f" {'fam. comp.':>10} {'vs floor':>9} {'same win':>9} {'|score d|':>10} {'8-bit d':>8} {'graphs':>7}"
          f" {'recomp':>7} {'breaks':>7} {'limit':>6}")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<24} {r['error']}")
            continue
        d = r["dynamo"]
        vp = f"{r['vs_plain'] * 100:+8.1f}%" if "vs_plain" in r else f"{'-':>9}"
        fc = f"{r['family_compile_s']:10.1f}" if "family_compile_s" in r else f"{'-':>10}"
        sd = f"{r['max_score_diff']:10.2e}" if "max_score_diff" in r else f"{'-':>10}"
        print(f"{r['variant']:<24} {r['median_s']:9.3f} {r['speedup_vs_eager']:8.2f}x {vp} {r['first_s']:8.1f}"
              f" {r['compile_s']:10.1f} {fc} {r['median_s'] / floor['floor_s']:8.2f}x"
              f" {str(r.get('same_winner', '-')):>9} {sd} {str(r.get('max_image_diff_levels', '-')):>8}"
              f" {d['graphs_first']:7d} {d['recompiles']:7d} {d['graph_breaks']:7d} {d['recompile_limit_hits']:6d}")
    print("(picks: against eager, or eager+tgate for T-GATE rows; 8-bit d over the candidates both runs kept;"
          " fam. comp.: ungated sibling's compile + this row's, what a first gated search on a fresh pipeline pays;"
          " graphs: compiled in the first search, recomp: in the later ones)")
    for r in ok:
        if "tgate_speedup" in r:
            extra = f", denoising {r['tgate_denoise_speedup']:.3f}x" if "tgate_denoise_speedup" in r else ""
            print(f"T-GATE against the same variant without it, {r['variant']}: whole search "
                  f"{r['tgate_speedup']:.3f}x{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_best_of_n_args(ap)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS,
                    help="comma-separated, run in this order: plain, eager, eager-cl, compiled, regional, regional-res,"
                         " a compiled family with -ro (CUDA graphs), any but plain with +tgate (see above)")
    ap.add_argument("--list-variants", action="store_true", help="print the variant names and exit")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="seconds: end the whole run within about this (skip the remaining variants, stop a running"
                         " one at the limit, still print the table and write the JSON); 0: no limit")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: CPU smoke)")
    ap.add_argument("--tgate", type=int, default=10, help="T-GATE gate step for the +tgate variants")
    ap.add_argument("--regional-vae", choices=("whole", "blocks", "eager"), default="whole",
                    help="regional variants: the VAE decoder compiled whole (as `compiled` does), by its resnet"
                         " blocks, or left eager")
    ap.add_argument("--regional-dynamic", action="store_true",
                    help="regional variants: dynamic=True (one graph for the block shapes that differ only in batch"
                         " or sequence length; kernels less specialised) instead of static shapes")
    ap.add_argument("--fresh-cache", action=argparse.BooleanOptionalAction, default=True,
                    help="each compiled family compiles into a new inductor / Triton cache directory (cold compile"
                         " times, as a first run on a machine pays; --no-fresh-cache: reuse what is on disk)")
    ap.add_argument("--min-compile-left", type=float, default=60.0,
                    help="with --time-limit: do not start a compiled family's first variant with fewer seconds left")
    ap.add_argument("--regional-channels-last", action="store_true",
                    help="regional variants: UNet and VAE in channels_last (the eager parts run slower in it)")
    ap.add_argument("--step-profile", action=argparse.BooleanOptionalAction, default=True,
                    help="one more search per eager variant, synchronised around every denoiser call: seconds per"
                         " step and per T-GATE phase")
    ap.add_argument("--profile-eager", action="store_true",
                    help="after the variants: plain diffusers and one eager search split (device-synchronised) into"
                         " text encoding, denoising, decode, verifier and everything else, and a torch.profiler table")
    ap.add_argument("--profile-trace", default=None, help="with --profile-eager: write a Chrome trace here")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense fp16 peak of the GPU (H100 SXM: 989)")
    ap.add_argument("--smoke", action="store_true", help="quick CPU check: tiny models, aot_eager, 64 px, best-of-2,"
                                                         " 4 steps, gate step 2, one repeat")
    ap.add_argument("--out", default="docs/bench_compile.json")
    args = ap.parse_args()
    if args.list_variants:
        print(__doc__[__doc__.index("Variants"):__doc__.index("Each compiled family")])
        return
    try:
        variants = [(v, *parse_variant(v)) for v in args.variants.split(",") if v]
    except ValueError as e:
        ap.error(f"--variants: unknown variant {e} (see --list-variants)")
    if args.smoke:
        args.device, args.tiny, args.backend, args.size, args.n, args.steps = "cpu", True, "aot_eager", 64, 2, 4
        args.tgate, args.repeats, args.max_batch = 2, 1, 2
    deadline = time.monotonic() + args.time_limit if args.time_limit > 0 else None
    guarded = [False]  # the alarm interrupts a variant, never the setup, the table or the JSON

    def on_alarm(signum, frame):
        if guarded[0]:
            guarded[0] = False
            raise TimeLimit(f"time limit of {args.time_limit:.0f} s reached")

    if deadline is not None:
        signal.signal(signal.SIGALRM, on_alarm)

    from tts_diffusion import TGate, TTSPipeline
    from tts_diffusion.verifiers import CLIPVerifier

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # tiny models on a shared CPU: one thread is faster and steadier
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    verifier = CLIPVerifier(model="RN50" if args.tiny else "ViT-L-14", pretrained=None, device=device)
    has_tgate = "tgate" in inspect.signature(TTSPipeline.__call__).parameters
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"best-of-{args.n}, {args.size}x{args.size}, {args.steps} steps, CFG {args.guidance}, "
          f"max_batch {args.max_batch}, {str(dtype)[6:]}, {dev_name}, torch {torch.__version__}, "
          f"variants {','.join(v for v, _, _ in variants)}", flush=True)

    pipe = build_sd15(device, dtype, args.tiny)
    floor = flop_floor(pipe, verifier, args, device, dtype)
    print(f"FLOP floor: {floor['total_tflop']:.0f} TFLOP / {args.peak_tflops:.0f} TFLOP/s = {floor['floor_s']:.2f} s "
          f"(UNet row {floor['unet_row']:.3f}, VAE decode {floor['vae_decode']:.3f}, "
          f"verifier {floor['verifier_image']:.3f} TFLOP)", flush=True)
    out = {"device": dev_name, "dtype": str(dtype), "torch": torch.__version__, "n": args.n, "steps": args.steps,
           "size": args.size, "guidance": args.guidance, "max_batch": args.max_batch, "backend": args.backend,
           "tgate_gate_step": args.tgate, "regional_vae": args.regional_vae, "time_limit_s": args.time_limit,
           "regional_dynamic": args.regional_dynamic, "regional_channels_last": args.regional_channels_last,
           "fresh_cache": args.fresh_cache, "repeats": args.repeats,
           "variants_asked": [v for v, _, _ in variants], "tgate_available": has_tgate, "flop_floor": floor,
           # graphs a compiled gated search needs per batch shape (the CFG batch halves after the gate)
           "tgate_phases": len(TGate(gate_step=args.tgate).phases(args.steps)) if has_tgate else None,
           "tgate_graphs_per_shape": len(TGate(gate_step=args.tgate).model_phases(args.steps)) if has_tgate else None}
    rows: list[dict] = []

    def write(final: bool = False) -> None:
        out["rows"] = [{k: v for k, v in r.items() if k != "images"} for r in rows]
        out["complete"] = final
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2, default=str))

    start = time.monotonic()
    fam_now, tts, expected = None, None, {}
    eager_family = ("plain", "eager", "eager-cl")
    stopped = None
    if deadline is not None:
        if deadline - time.monotonic() <= 0:
            stopped = f"time limit of {args.time_limit:.0f} s reached before the first variant"
        else:
            signal.setitimer(signal.ITIMER_REAL, deadline - time.monotonic())
    pipe_state = [None]  # None: never searched with; "eager": by eager families only; "compiled"

    def pipe_for(fam: str):
        """The pipeline for a family: eager families share one (layouts switched in place), each
        compiled family gets a freshly built one (and dynamo starts over)."""
        nonlocal pipe, tts
        if pipe_state[0] == "compiled" or (fam not in eager_family and pipe_state[0] is not None):
            tts = None
            torch._dynamo.reset()
            with contextlib.suppress(Exception):  # CUDA graph pools of a -ro family
                from torch._inductor.cudagraph_trees import reset_cudagraph_trees

                reset_cudagraph_trees()
            pipe = None
            gc.collect()
            torch.cuda.empty_cache() if device.type == "cuda" else None
            pipe = build_sd15(device, dtype, args.tiny)
            pipe_state[0] = None
        if fam not in eager_family and args.fresh_cache:
            fresh_compile_cache()
        pipe_state[0] = "eager" if fam in eager_family else "compiled"
        return pipe
    for i, (name, fam, gated) in enumerate(variants):
        if stopped:
            rows.append({"variant": name, "family": fam, "tgate": gated, "error": f"skipped ({stopped})"})
            continue
        if gated and not has_tgate:
            rows.append({"variant": name, "family": fam, "tgate": gated, "error": "skipped (no T-GATE here)"})
            continue
        if deadline is not None:
            left = deadline - time.monotonic()
            need = expected.get((fam, gated), 0.0 if fam in eager_family or args.smoke else args.min_compile_left)
            if left < need:
                rows.append({"variant": name, "family": fam, "tgate": gated,
                             "error": f"skipped ({left:.0f} s left, about {need:.0f} s needed)"})
                print(f"{name:<24} skipped: {left:.0f} s left, about {need:.0f} s needed", flush=True)
                continue
        try:
            guarded[0] = True
            t_var = time.monotonic()
            if fam != fam_now:
                fam_now = None  # a failed setup leaves no usable family
                tts = setup_family(fam, pipe_for(fam), args, device)
                fam_now = fam
            compiled = fam not in eager_family
            row = run_variant(name, fam, tts, pipe, verifier, args, device,
                              {"tgate": args.tgate} if gated else {}, compiled)
            guarded[0] = False
            rows.append(row)
            if args.profile_eager and fam == "eager" and not gated and "profile_eager" not in out:
                guarded[0] = True  # right after the eager row, on its pipeline: it matters most, and costs little
                try:
                    out["profile_eager"] = profile_eager(pipe, tts, verifier, args, device)
                except Exception as e:  # noqa: BLE001 -- the profile failing must not cost the eager row
                    out["profile_eager"] = {"error": f"{type(e).__name__}: {e}"}
                    traceback.print_exc(limit=6)
                guarded[0] = False
            took = time.monotonic() - t_var
            # what a later variant of this kind should need: the searches, without compiling again
            per = row["median_s"] * (args.repeats + 2)
            for g in (False, True):
                expected.setdefault((fam, g), took if g == gated else per)
            if fam in eager_family:
                for f in ("eager", "eager-cl", "plain"):
                    for g in (False, True):
                        expected.setdefault((f, g), per)
        except TimeLimit as e:
            stopped = str(e)
            rows.append({"variant": name, "family": fam, "tgate": gated, "error": f"stopped ({stopped})"})
            print(f"{name:<24} stopped: {stopped}", flush=True)
        except Exception as e:  # noqa: BLE001 -- one variant failing (e.g. CUDA graphs) must not end the run
            cause = e
            while cause is not None and not isinstance(cause, TimeLimit):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:  # the time limit, wrapped by library code
                stopped = str(cause)
                rows.append({"variant": name, "family": fam, "tgate": gated, "error": f"stopped ({stopped})"})
                print(f"{name:<24} stopped: {stopped}", flush=True)
                guarded[0] = False
                write()
                continue
            msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            rows.append({"variant": name, "family": fam, "tgate": gated, "error": f"{type(e).__name__}: {msg}"})
            print(f"{name:<24} FAILED: {type(e).__name__}: {msg}", flush=True)
            traceback.print_exc(limit=6)
            fam_now = None  # rebuild before the next variant
        guarded[0] = False
        write()
    if args.profile_eager and not stopped and "profile_eager" not in out:
        try:
            guarded[0] = True
            p = pipe_for("eager")
            out["profile_eager"] = profile_eager(p, setup_family("eager", p, args, device), verifier, args, device)
            guarded[0] = False
        except TimeLimit as e:
            stopped = str(e)
            print(f"profile-eager stopped: {stopped}", flush=True)
        except Exception as e:  # noqa: BLE001
            out["profile_eager"] = {"error": f"{type(e).__name__}: {e}"}
            traceback.print_exc(limit=6)
    guarded[0] = False
    if deadline is not None:
        signal.setitimer(signal.ITIMER_REAL, 0)
    out["stopped"] = stopped
    out["wall_s"] = time.monotonic() - start
    compare(rows)
    table(rows, floor)
    write(final=True)
    print(f"wrote {args.out} ({out['wall_s']:.0f} s{'; ' + stopped if stopped else ''})", flush=True)
    if stopped:  # a compile stopped mid-way may leave worker threads or pools behind: do not wait for them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
