"""Scale-out of `tts-diffusion bench` over processes: the same sweep on 1, 2 and 4 GPUs of
one host (one process per GPU, `accelerate launch --multi_gpu`), its throughput (searches
per second, model loading excluded) and whether the records equal the one-process run's
(wall-clock fields aside).

    python scripts/bench_scaleout.py --processes 1,2,4 --out docs/bench_scaleout      # GPU host
    python scripts/bench_scaleout.py --device cpu --smoke --out /tmp/scaleout         # CPU check

Each process count writes <out>/n<N>.jsonl (resumed if a run was cut off; remove it to time
a fresh run) and <out>/n<N>.summary.json; the table and <out>.json cover every count run so
far, so the counts may be run in separate calls (e.g. --processes 1, then --processes 2,4).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tts_diffusion.bench import canonical, read_records


def sweep_args(args) -> list[str]:
    a = ["--methods", args.methods, "--budgets", args.budgets, "--steps", str(args.steps),
         "--max-batch", str(args.max_batch), *sum((["-o", o] for o in args.option), []),
         *shlex.split(args.bench_args)]
    if args.num_prompts:
        a += ["--num-prompts", str(args.num_prompts)]
    for flag, value in (("--verifier", args.verifier), ("--judge", args.judge)):
        if value:
            a += [flag, value]
    return a


def launch(n: int, args, out: Path) -> float:
    """Run the sweep on n processes; returns the command's wall seconds."""
    bench = ["-m", "tts_diffusion.cli", "bench", *sweep_args(args), "--out", str(out)]
    if args.device == "cpu":  # gloo between CPU processes, torchrun-style
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
               str(29500 + n), *bench, "--device", "cpu"]
    elif n == 1:
        cmd = [sys.executable, *bench]
    else:
        cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", *bench]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", default="1,2,4", help="process counts to run (one GPU each)")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--methods", default="best_of_n,smc")
    ap.add_argument("--budgets", default="1,2,4,8,16")
    ap.add_argument("--num-prompts", type=int, default=None, help="default: the whole 600-prompt eval split")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-batch", type=int, default=128)
    ap.add_argument("--verifier", default=None, help="what guides the searches (default: the bench's, the oracle)")
    ap.add_argument("--judge", default=None, help="what judges the returned images (default: as --verifier)")
    ap.add_argument("-o", "--option", action="append", default=[], help="METHOD.KEY=VALUE, passed to the sweep")
    ap.add_argument("--bench-args", default="", help="more `bench` options, e.g. --bench-args='--pin-cores --threads 2'")
    ap.add_argument("--smoke", action="store_true", help="6 prompts, 2 steps, budgets 1,2, 1 and 2 processes")
    ap.add_argument("--out", default="docs/bench_scaleout")
    args = ap.parse_args()
    if args.smoke:
        args.num_prompts, args.steps, args.budgets = 6, 2, "1,2"
        args.processes = "1,2" if args.processes == "1,2,4" else args.processes
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    for n in [int(x) for x in args.processes.split(",") if x.strip()]:
        wall = launch(n, args, folder / f"n{n}.jsonl")
        s = json.loads((folder / f"n{n}.summary.json").read_text())
        s["command_wall_seconds"] = wall
        (folder / f"n{n}.summary.json").write_text(json.dumps(s, indent=2))

    rows, base = [], None
    ref = folder / "n1.jsonl"
    ref_records = canonical(read_records(ref)) if ref.exists() else None
    counts = {int(f.name[1:].split(".")[0]): f for f in folder.glob("n*.summary.json")
              if f.name[1:].split(".")[0].isdigit()}  # n<N>.summary.json only
    for n, f in sorted(counts.items()):
        s = json.loads(f.read_text())
        sps = s["searches_per_second"]
        base = base or (sps if n == 1 else None)
        same = None if ref_records is None else canonical(read_records(folder / f"n{n}.jsonl")) == ref_records
        rows.append({"processes": n, "device": s["device"], "new_records": s["new_records"],
                     "run_seconds": s["run_seconds"], "command_wall_seconds": s.get("command_wall_seconds"),
                     "searches_per_second": sps, "speedup": sps / base if base else None,
                     "records_equal_to_1_process": same})
    print(f"{'processes':>9} {'run s':>8} {'wall s':>8} {'searches/s':>11} {'speed-up':>9}  records = 1-process")
    for r in rows:
        print(f"{r['processes']:>9} {r['run_seconds']:>8.1f} {r['command_wall_seconds'] or 0:>8.1f} "
              f"{r['searches_per_second']:>11.3f} {r['speedup'] or float('nan'):>9.2f}  "
              f"{r['records_equal_to_1_process']}")
    Path(f"{args.out}.json").write_text(json.dumps({"sweep": sweep_args(args), "rows": rows}, indent=2))
    print(f"wrote {args.out}.json")


if __name__ == "__main__":
    main()
