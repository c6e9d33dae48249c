"""The fast path on one GPU: best-of-N at SD-1.5 size, eager / eager + T-GATE / compiled
(denoiser and VAE decoder under torch.compile) / compiled + T-GATE, in one run, with compile
times, what dynamo compiled for each variant, and the FLOP floor of the search.

Setting (issue 13): SD-1.5 architecture (random weights, real sizes), best-of-32, 512x512,
25 DDIM steps, CFG 7.5, CLIP ViT-L/14-architecture verifier (random weights), fp16.

    python scripts/bench_compile.py --out docs/bench_compile.json          # one H100: ~3 min
    python scripts/bench_compile.py --modes default,max-autotune-no-cudagraphs --out ...   # slow autotuning
    python scripts/bench_compile.py --smoke --out /tmp/bench_compile.json  # CPU, tiny models, aot_eager

Per variant: the first search (which compiles every shape it meets), the median of
`--repeats` later searches, compile time = first - median, how far the candidate scores and
8-bit images are from the eager ones (T-GATE rows: from eager + T-GATE; images compared by
candidate, for the candidates both runs kept), and from
torch._dynamo.utils.counters what dynamo did: graphs compiled in the first search
(`graphs_first`; with T-GATE one per phase and batch shape, features/tgate.py), graphs compiled
in the later identical searches (`recompiles`, 0 when the guards hold), graph breaks, and
functions dynamo gave up on at the recompile limit (`recompile_limit_hits`). Each compile
mode gets a freshly built pipeline (same seed, same weights). The FLOP floor counts one UNet
row, one VAE decode and one verifier image with torch's FlopCounterMode and divides the
search's total by `--peak-tflops` (H100 SXM dense fp16: 989).
"""
from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from tts_diffusion.bench.timing import sync  # noqa: E402
from tts_diffusion.pipelines.compile import use_channels_last  # noqa: E402
from tts_diffusion.testing.sd15 import add_best_of_n_args, build_sd15  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse"


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


def run_variant(name, tts, verifier, args, device, call_kw) -> dict:
    def search():
        return tts(PROMPT, verifier=verifier, budget=args.n * args.steps, seed=0, num_inference_steps=args.steps,
                   guidance_scale=args.guidance, height=args.size, width=args.size, max_batch=args.max_batch,
                   progress=False, **call_kw)

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
    print(f"{name:<44} first {first:8.2f} s   median {med:7.3f} s   compile ~{max(first - med, 0):7.1f} s   "
          f"graphs {dynamo['graphs_first']}, recompiles {dynamo['recompiles']}, breaks {dynamo['graph_breaks']}, "
          f"limit hits {dynamo['recompile_limit_hits']}", flush=True)
    profile = None
    if args.step_profile and tts.compile_mode is None:  # hooks on a compiled UNet would break its graph
        profile = step_profile(tts, search, device, args.steps, call_kw.get("tgate"))
        print("  step profile: " + ", ".join(f"{k} {v['steps']} x {v['mean_s'] * 1e3:.1f} ms"
                                            for k, v in profile["phases"].items()), flush=True)
    return {"variant": name, "first_s": first, "times_s": times, "median_s": med, "compile_s": max(first - med, 0.0),
            "dynamo": dynamo, "step_profile": profile, "phases": res.timings, "scores": [c.score for c in res.candidates],
            # kept images by candidate index: which candidates keep one follows the scores, and random-weight
            # CLIP scores lie within 1e-4 of each other, so two runs may keep different (equally valid) sets
            "images": {i: c.image for i, c in enumerate(res.candidates) if c.image is not None}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_best_of_n_args(ap)
    ap.add_argument("--modes", default="default", help="torch.compile modes to time, comma-separated (max-autotune"
                                                     " modes autotune for many minutes at SD-1.5 size)")
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: CPU smoke)")
    ap.add_argument("--tgate", type=int, default=10, help="T-GATE gate step (0: skip)")
    ap.add_argument("--eager-layouts", default="contiguous,channels_last",
                    help="memory layouts of the eager rows, comma-separated (channels_last: UNet and VAE weights in"
                         " torch.channels_last, as the compiled rows use on CUDA)")
    ap.add_argument("--step-profile", action=argparse.BooleanOptionalAction, default=True,
                    help="one more search per eager variant, synchronised around every denoiser call: seconds per"
                         " step and per T-GATE phase")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense fp16 peak of the GPU (H100 SXM: 989)")
    ap.add_argument("--smoke", action="store_true", help="quick CPU check: tiny models, aot_eager, 64 px, best-of-2,"
                                                         " 4 steps, gate step 2, one repeat")
    ap.add_argument("--out", default="docs/bench_compile.json")
    args = ap.parse_args()
    layouts = [x for x in args.eager_layouts.split(",") if x]
    if set(layouts) - {"contiguous", "channels_last"}:
        ap.error(f"--eager-layouts: unknown layout in {args.eager_layouts!r} (contiguous, channels_last)")
    if args.smoke:
        args.device, args.tiny, args.backend, args.size, args.n, args.steps = "cpu", True, "aot_eager", 64, 2, 4
        args.tgate, args.repeats, args.max_batch = 2, 1, 2

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
          f"max_batch {args.max_batch}, {str(dtype)[6:]}, {dev_name}, torch {torch.__version__}")

    pipe = build_sd15(device, dtype, args.tiny)
    floor = flop_floor(pipe, verifier, args, device, dtype)
    print(f"FLOP floor: {floor['total_tflop']:.0f} TFLOP / {args.peak_tflops:.0f} TFLOP/s = {floor['floor_s']:.2f} s "
          f"(UNet row {floor['unet_row']:.3f}, VAE decode {floor['vae_decode']:.3f}, "
          f"verifier {floor['verifier_image']:.3f} TFLOP)")
    rows = []
    for layout in layouts:
        if layout == "channels_last":
            use_channels_last(pipe, True)
        else:
            for m in (pipe.unet, pipe.vae):
                m.to(memory_format=torch.contiguous_format)
        tag = "" if layout == "contiguous" else ", channels_last"
        rows.append(run_variant(f"eager{tag}", TTSPipeline(pipe), verifier, args, device, {}))
        if has_tgate and args.tgate:
            rows.append(run_variant(f"eager{tag} + T-GATE (gate step {args.tgate})", TTSPipeline(pipe), verifier,
                                    args, device, {"tgate": args.tgate}))
    for mode in [m for m in args.modes.split(",") if m]:
        if mode != "default" or rows:  # a fresh pipeline for every compile mode
            del pipe
            gc.collect()
            torch.cuda.empty_cache() if device.type == "cuda" else None
            torch._dynamo.reset()
            pipe = build_sd15(device, dtype, args.tiny)
        tts = TTSPipeline(pipe).compile(mode, backend=args.backend)
        rows.append(run_variant(f"compiled ({mode})", tts, verifier, args, device, {}))
        if has_tgate and args.tgate:
            rows.append(run_variant(f"compiled ({mode}) + T-GATE (gate step {args.tgate})", tts, verifier, args,
                                    device, {"tgate": args.tgate}))

    eager = rows[0]
    print(f"\n{'variant':<44} {'median s':>9} {'vs eager':>9} {'compile s':>10} {'vs floor':>9} {'max |score diff|':>17}"
          f" {'max 8-bit diff':>15} {'graphs':>7} {'recompiles':>11} {'breaks':>7}")
    for r in rows:
        same_ref = eager if "T-GATE" not in r["variant"] else next(
            (x for x in rows if x["variant"].startswith("eager") and "T-GATE" in x["variant"]), eager)
        r["max_score_diff"] = max(abs(a - b) for a, b in zip(r["scores"], same_ref["scores"]))
        both = sorted(set(r["images"]) & set(same_ref["images"]))
        r["images_compared"] = len(both)
        r["max_image_diff_levels"] = max((int((r["images"][i].int() - same_ref["images"][i].int()).abs().max())
                                          for i in both), default=None)
        r["speedup_vs_eager"] = eager["median_s"] / r["median_s"]
        if "T-GATE" in r["variant"]:  # against the same variant without T-GATE (the row before it)
            ungated = rows[rows.index(r) - 1]
            r["tgate_speedup"] = ungated["median_s"] / r["median_s"]
            r["tgate_denoise_speedup"] = ungated["phases"]["denoise"] / r["phases"]["denoise"]
        print(f"{r['variant']:<44} {r['median_s']:9.3f} {r['speedup_vs_eager']:8.2f}x {r['compile_s']:10.1f} "
              f"{r['median_s'] / floor['floor_s']:8.2f}x {r['max_score_diff']:17.2e} {r['max_image_diff_levels']!s:>15}"
              f" {r['dynamo']['graphs_first']:7d} {r['dynamo']['recompiles']:11d} {r['dynamo']['graph_breaks']:7d}")
    print("(score / image differences: against eager, or against eager + T-GATE for T-GATE rows; images of the"
          " candidates both runs kept)")
    for r in rows:
        if "tgate_speedup" in r:
            print(f"T-GATE against the same variant without it, {r['variant']}: whole search "
                  f"{r['tgate_speedup']:.3f}x, denoising {r['tgate_denoise_speedup']:.3f}x")
    for r in rows:
        del r["images"]
    out = {"device": dev_name, "dtype": str(dtype), "torch": torch.__version__, "n": args.n, "steps": args.steps,
           "size": args.size, "guidance": args.guidance, "max_batch": args.max_batch, "backend": args.backend,
           "tgate_available": has_tgate, "flop_floor": floor, "rows": rows,
           # graphs a compiled gated search needs per batch shape (the CFG batch halves after the gate)
           "tgate_phases": len(TGate(gate_step=args.tgate).phases(args.steps)) if has_tgate and args.tgate else None}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
