"""Throughput of the shapes oracle: images checked per second, new (batched torch, CPU and
CUDA) against the old one (per-image scipy, CPU; grammar v1 only) on the same images.

Image sets (seeded; `--sets` picks):

* v1-64:   grammar v1 scenes rendered at 64 px, perturbed (blur <= 1 px, noise <= 0.05, jitter <= 0.06)
* v1-128:  the same scenes at 128 px
* v2-128:  grammar v2 scenes (all eleven categories) at 128 px, perturbed
* blurry-128: grammar v2 scenes at 128 px blurred by up to 8 px and noisier (std <= 0.15),
           like the Tweedie estimates a particle search scores early in sampling
* file:    `--images PATH` (a .pt dict with "images" [N, 3, H, W] and "prompts", e.g.
           `scripts/oracle_generated.py generate`)

For each set and device it times `check_batch` in chunks of `--batch` (after one warm-up
chunk), and prints images/s, the verdicts' agreement with the old oracle where it ran, and
the accuracy on the set's own prompts. The old oracle is the package before grammar v2,
extracted from git into a folder and run in a subprocess on the same images:

    git archive 00f1da2 tts_diffusion | tar -x -C /tmp/old_oracle
    python scripts/bench_oracle.py --old /tmp/old_oracle --devices cpu cuda --threads 1 --out docs/bench_oracle.json

CPU timings are wall clock and process CPU time with `--threads` torch threads; the load
average of the machine is recorded with them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tts_diffusion.shapes import GRAMMARS, render, sample_scenes
from tts_diffusion.shapes.oracle import check_batch
from tts_diffusion.shapes.perturb import perturb

SETS = ("v1-64", "v1-128", "v2-128", "blurry-128")

_OLD_RUNNER = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
from tts_diffusion.shapes import oracle
assert not hasattr(oracle, "between_angle"), "the old oracle folder holds the new oracle"
from tts_diffusion.shapes.oracle import check_batch
d = torch.load(sys.argv[1], weights_only=False)
imgs, prompts, batch = d["images"], d["prompts"], int(sys.argv[4])
check_batch(imgs[:batch], prompts[:batch])  # warm-up
t, c = time.perf_counter(), time.process_time()
out = []
for i in range(0, len(prompts), batch):
    out += [r.correct for r in check_batch(imgs[i:i + batch], prompts[i:i + batch])]
json.dump({"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c, "correct": out},
          open(sys.argv[2], "w"))
"""


def make_set(name: str, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Images [n, 3, H, W] and prompts of a named set."""
    grammar = "v1" if name.startswith("v1") else "v2"
    size = int(name.split("-")[1])
    scenes = sample_scenes(n, seed=seed, categories=GRAMMARS[grammar])
    gen = torch.Generator().manual_seed(seed)
    strength = dict(blur=4.0, noise=0.15, jitter=0.06) if name.startswith("blurry") else {}
    return perturb(render(scenes, size=size), gen, **strength), [s.prompt for s in scenes]


def time_new(images: torch.Tensor, prompts: list[str], device: str, batch: int) -> dict:
    """Seconds (wall, and process CPU on the CPU) to check every image, after a warm-up chunk."""
    dev = torch.device(device)
    imgs = images.to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    check_batch(imgs[:batch], prompts[:batch])
    sync()
    t, c = time.perf_counter(), time.process_time()
    correct = []
    for i in range(0, len(prompts), batch):
        correct += [r.correct for r in check_batch(imgs[i : i + batch], prompts[i : i + batch])]
    sync()
    return {"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c, "correct": correct}


def time_old(old: Path, images: torch.Tensor, prompts: list[str], threads: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "set.pt", Path(tmp) / "old.json"
        torch.save({"images": images, "prompts": prompts}, data)
        env = dict(os.environ, PYTHONPATH=str(old), OMP_NUM_THREADS=str(threads))
        # run from the old folder: `python -c` puts the working directory first on sys.path
        subprocess.run([sys.executable, "-c", _OLD_RUNNER, str(data), str(out), str(threads), str(batch)], env=env,
                       cwd=str(old), check=True)
        return json.loads(out.read_text())


def device_label(device: str, threads: int) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {threads} thread(s)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--images", type=Path, default=None, help="also time this .pt file (images, prompts)")
    ap.add_argument("--n", type=int, default=1024, help="images per generated set")
    ap.add_argument("--n-cpu", type=int, default=256, help="images per set on the CPU (old and new)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--devices", nargs="+", default=["cpu"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    ap.add_argument("--old", type=Path, default=None, help="folder holding the package before grammar v2 (module doc)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    sets: dict[str, tuple[torch.Tensor, list[str]]] = {name: make_set(name, args.n, args.seed) for name in args.sets}
    if args.images is not None:
        d = torch.load(args.images, weights_only=False)
        sets["file"] = (d["images"].float(), list(d["prompts"]))
    rows = []
    for name, (images, prompts) in sets.items():
        for device in args.devices:
            n = len(prompts) if device.startswith("cuda") else min(len(prompts), args.n_cpu)
            new = time_new(images[:n], prompts[:n], device, args.batch)
            row = {"set": name, "size": images.shape[-1], "n": n, "device": device_label(device, args.threads),
                   "oracle": "new", "images_per_s": n / new["seconds"], "seconds": new["seconds"],
                   "cpu_seconds": new["cpu_seconds"] if not device.startswith("cuda") else None,
                   "accuracy": float(np.mean(new["correct"])), "load_average": os.getloadavg()[0]}
            rows.append(row)
            print(f"{name:11s} {images.shape[-1]:4d} px  n={n:5d}  {row['device']:34s} new {row['images_per_s']:8.1f} img/s"
                  f"  accuracy {row['accuracy']:.3f}", flush=True)
            if args.old is not None and device == "cpu" and not name.startswith(("v2", "blurry")):
                old = time_old(args.old, images[:n], prompts[:n], args.threads, args.batch)
                agree = float(np.mean([a == b for a, b in zip(old["correct"], new["correct"])]))
                rows.append({"set": name, "size": images.shape[-1], "n": n, "device": row["device"], "oracle": "old",
                             "images_per_s": n / old["seconds"], "seconds": old["seconds"],
                             "cpu_seconds": old["cpu_seconds"], "accuracy": float(np.mean(old["correct"])),
                             "agreement_with_new": agree, "load_average": os.getloadavg()[0]})
                print(f"{'':11s} {'':4s}     {'':7s}  {row['device']:34s} old {n / old['seconds']:8.1f} img/s"
                      f"  accuracy {np.mean(old['correct']):.3f}  verdicts agree {agree:.3f}"
                      f"  speed-up {old['seconds'] / new['seconds']:.1f}x wall, {old['cpu_seconds'] / new['cpu_seconds']:.1f}x CPU",
                      flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "torch": torch.__version__, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
