"""Wall time of one search on the CPU against torch's thread count (the `--threads` default).

    python scripts/bench_threads.py --threads 1,2,0 --budget 160 --out docs/threads_cpu.json
    python scripts/bench_threads.py --smoke            # seconds: one 20-NFE search per setting

0 in --threads means torch's own default (every physical core). The searches are
interleaved (1, 2, default, 1, 2, default, ...) so a change of load on a shared machine hits
every setting alike; the table reports the fastest and median repeat of each. The load
average is recorded, since the point is what happens on a busy box.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2,0", help="comma-separated thread counts; 0 = torch's default")
    p.add_argument("--budget", type=int, default=160, help="NFE per search (the embedded model: 20 per sample)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--prompt", default="two red circles")
    p.add_argument("--device", default="cpu", help="only cpu is meaningful for threads")
    p.add_argument("--out", default=None, help="JSON path for the results")
    p.add_argument("--smoke", action="store_true", help="20 NFE, one repeat")
    args = p.parse_args(argv)
    try:
        counts = [int(s) for s in args.threads.split(",") if s.strip()]
    except ValueError:
        p.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if not counts or min(counts) < 0 or args.budget < 20 or args.repeats < 1:
        p.error("--threads needs integers >= 0, --budget >= 20 (one sample) and --repeats >= 1")
    if args.smoke:
        args.budget, args.repeats = 20, 1

    import torch

    from tts_diffusion import TTSPipeline

    torch_default = torch.get_num_threads()
    counts = list(dict.fromkeys(c or torch_default for c in counts))
    tts = TTSPipeline.from_pretrained(device=args.device)
    tts.set_progress_bar_config(disable=True)
    tts(args.prompt, verifier="oracle", budget=20, progress=False)  # warm-up
    times: dict[int, list[float]] = {c: [] for c in counts}
    load_before = os.getloadavg()
    for _ in range(args.repeats):
        for c in counts:
            torch.set_num_threads(c)
            t = time.perf_counter()
            tts(args.prompt, verifier="oracle", budget=args.budget, progress=False)
            times[c].append(time.perf_counter() - t)
    load_after = os.getloadavg()
    rows = [{"threads": c, "torch_default": c == torch_default, "min_s": min(v), "median_s": statistics.median(v),
             "all_s": v} for c, v in times.items()]
    print(f"{args.budget} NFE, {args.repeats} repeats, cores {os.cpu_count()}, load {load_before[0]:.1f} -> {load_after[0]:.1f}")
    print(f"{'threads':>8} {'min s':>8} {'median s':>9}")
    for r in rows:
        print(f"{r['threads']:>8} {r['min_s']:>8.2f} {r['median_s']:>9.2f}{'  (torch default)' if r['torch_default'] else ''}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "command": " ".join(["python", *sys.argv]), "budget": args.budget, "repeats": args.repeats,
            "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
            "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
