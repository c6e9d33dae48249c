"""Start-up of `tts-diffusion generate` against a bare `import torch`, and many prompts in one
run against one run per prompt (issue #29). A benchmark, not a test: timings on a shared
machine vary, so every number is taken in the same run, alternating the commands compared.

    python scripts/bench_startup.py --repeats 5                 # start-up / import torch
    python scripts/bench_startup.py --repeats 5 --compare ../main   # and the tree in ../main, alternated
    python scripts/bench_startup.py --repeats 0 --importtime --compare ../main   # imports by package
    python scripts/bench_startup.py --repeats 0 --many 20       # 20 prompts: one run vs 20 runs
    python scripts/bench_startup.py --repeats 0 --phases --compare ../main   # where start-up goes
    python scripts/bench_startup.py --device cuda --repeats 5 --phases --compare ../main   # on a GPU host

Start-up is the whole process's wall time minus the search's own `timings.total` (read from
the sidecar). `--compare DIR` runs the same command with PYTHONPATH=DIR first (e.g. a
checkout of the commit before, `git worktree add ../before <commit>`), so before and after
share the machine's load. Runs with `--threads 1` on the CPU; `--device cuda` runs the same
commands on the GPU (no `--threads`), where the issue's target is start-up <= 5 s.
`--phases` runs one `generate` per tree in-process with a clock at each step (imports, model
classes and weights, `.to(device)` with CUDA's initialisation, the first denoiser call, the
search, writing the files) and reports which heavy packages the run imported.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env(tree: Path) -> dict:
    """The tree first on the path; what the path already held after it (a GPU host's carried packages)."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), *rest]), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


def _timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - t


#: the device the commands run on (--device) and its flags
DEVICE = ["--threads", "1", "--device", "cpu"]


def _device_flags(device: str) -> list[str]:
    return ["--threads", "1", "--device", "cpu"] if device == "cpu" else ["--device", device]


def _generate(tree: Path, out: Path, budget: int) -> tuple[float, float]:
    """(wall, search) seconds of one `generate` process writing `out`."""
    cmd = [sys.executable, "-m", "tts_diffusion.cli", "generate", "two red circles", "--budget", str(budget),
           *DEVICE, "--quiet", "--out", str(out)]
    wall = _timed(cmd, _env(tree))
    return wall, json.loads(out.with_suffix(".json").read_text())["timings"]["total"]


def startup(trees: dict[str, Path], repeats: int, budget: int, work: Path) -> dict:
    torch_s: list[float] = []
    rows: dict[str, dict[str, list[float]]] = {name: {"wall": [], "search": [], "startup": []} for name in trees}
    for r in range(repeats):
        torch_s.append(_timed([sys.executable, "-c", "import torch"], _env(ROOT)))
        for name, tree in trees.items():
            wall, search = _generate(tree, work / f"{name}-{r}.png", budget)
            rows[name]["wall"].append(wall)
            rows[name]["search"].append(search)
            rows[name]["startup"].append(wall - search)
    bare = statistics.median(torch_s)
    out = {"import_torch_s": round(bare, 2), "repeats": repeats, "budget": budget}
    for name, row in rows.items():
        med = {k: statistics.median(v) for k, v in row.items()}
        out[name] = {**{f"{k}_s": round(v, 2) for k, v in med.items()},
                     "startup_over_import_torch": round(med["startup"] / bare, 2),
                     "ratios": [round(s / t, 2) for s, t in zip(row["startup"], torch_s)]}
    images = {name: (work / f"{name}-0.png").read_bytes() for name in trees}
    out["images_identical"] = len(set(images.values())) == 1
    return out


def import_profile(trees: dict[str, Path], work: Path) -> dict:
    """`python -X importtime` of one generate per tree: seconds of import (self time) by top-level
    package, the largest first, and the process's wall and search time."""
    out = {}
    for name, tree in trees.items():
        img = work / f"{name}-importtime.png"
        cmd = [sys.executable, "-X", "importtime", "-m", "tts_diffusion.cli", "generate", "two red circles",
               "--budget", "160", *DEVICE, "--quiet", "--out", str(img)]
        t = time.perf_counter()
        r = subprocess.run(cmd, env=_env(tree), check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t
        by_root: dict[str, float] = {}
        for line in r.stderr.splitlines():
            if line.startswith("import time:") and "self [us]" not in line:
                own, _, module = line[len("import time:"):].split("|")
                root = module.strip().split(".")[0]
                by_root[root] = by_root.get(root, 0.0) + int(own) / 1e6
        search = json.loads(img.with_suffix(".json").read_text())["timings"]["total"]
        top = dict(sorted(((k, round(v, 2)) for k, v in by_root.items()), key=lambda kv: -kv[1])[:12])
        out[name] = {"wall_s": round(wall, 2), "search_s": round(search, 2), "imports_s": round(sum(by_root.values()), 2),
                     "modules": sum(1 for ln in r.stderr.splitlines() if ln.startswith("import time:")) - 1,
                     "by_package_s": top}
    return out


#: runs `generate` in-process with a clock at each step; prints one JSON line on stderr
_PHASES = r"""
import json, sys, time
t0 = time.perf_counter()
marks = {}
def mark(name):
    marks[name] = round(time.perf_counter() - t0, 3)
sys.argv = ["tts-diffusion", "generate", *json.loads(sys.argv[1])]
import tts_diffusion.cli as cli
mark("import the CLI")
set_threads = cli._set_threads
def _set_threads(*a, **k):  # the request is checked; torch is imported by _device_and_dtype
    mark("check the request, import torch")
    return set_threads(*a, **k)
cli._set_threads = _set_threads
load = cli._load_pipeline
def _load_pipeline(*a, **k):
    mark("defer imports, import diffusers")
    import tts_diffusion.pipelines.direct_load as dl
    import tts_diffusion.pipelines.tts_pipeline as tp
    find_class, spent = dl._class, [0.0]
    def _class(*a):  # importing the model's classes (the rest of loading is reading weights)
        t = time.perf_counter()
        try:
            return find_class(*a)
        finally:
            spent[0] += time.perf_counter() - t
    dl._class = _class
    ldp = tp.load_diffusers_pipeline
    def load_diffusers_pipeline(*a, **k):
        r = ldp(*a, **k)
        mark("model classes and weights")
        marks["of which importing the classes"] = round(spent[0], 3)
        return r
    tp.load_diffusers_pipeline = load_diffusers_pipeline
    tts = load(*a, **k)
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    mark("TTSPipeline, .to(device)")
    return tts
cli._load_pipeline = _load_pipeline
search = cli._search_or_stop
def _search_or_stop(*a, **k):
    r = search(*a, **k)
    mark("search")
    marks["search (its timings.total)"] = r.timings["total"]
    return r
cli._search_or_stop = _search_or_stop
save = cli._save
def _save(*a, **k):
    r = save(*a, **k)
    mark("write image and sidecar")
    return r
cli._save = _save
try:
    cli.main()
except SystemExit as e:
    assert not e.code, e.code
heavy = ("torch._dynamo", "transformers", "peft", "torchvision", "sympy", "triton", "scipy.stats._stats_py")
print(json.dumps({"marks": marks, "imported": [m for m in heavy if m in sys.modules],
                  "modules": len(sys.modules)}), file=sys.stderr)
"""


def phases(trees: dict[str, Path], budget: int, work: Path) -> dict:
    """One in-process `generate` per tree: seconds between steps (see _PHASES)."""
    out = {}
    for name, tree in trees.items():
        args = ["two red circles", "--budget", str(budget), *DEVICE, "--quiet", "--out", str(work / f"{name}-ph.png")]
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", _PHASES, json.dumps(args)], env=_env(tree), check=True,
                           capture_output=True, text=True)
        wall = time.perf_counter() - t
        info = json.loads(r.stderr.strip().splitlines()[-1])
        marks, prev, steps = info["marks"], 0.0, {}
        search = marks.pop("search (its timings.total)")
        class_imports = marks.pop("of which importing the classes", 0.0)
        for step, at in marks.items():
            took = at - prev
            prev = at
            if step == "model classes and weights":
                steps["import the model's classes"] = round(class_imports, 2)
                steps["read the weights, build the pipeline"] = round(took - class_imports, 2)
            elif step == "search":  # its wall = verifier and process set-up + the search's own timings.total
                steps["verifier, process set-up"] = round(took - search, 2)
                steps["search (timings.total)"] = round(search, 2)
            else:
                steps[step] = round(took, 2)
        steps["interpreter start and exit"] = round(wall - prev, 2)
        out[name] = {"wall_s": round(wall, 2), "steps_s": steps, "search_s": round(search, 2),
                     "startup_s": round(wall - search, 2), "imported": info["imported"], "modules": info["modules"]}
    return out


def many(n: int, budget: int, work: Path) -> dict:
    """n prompts of the shipped eval set: one `generate --prompts` run against n one-prompt runs."""
    prompts = [p["prompt"] for p in json.loads((ROOT / "tts_diffusion/assets/prompts/shapes_eval.json")
                                               .read_text())["prompts"]][::600 // n][:n]
    (work / "prompts.txt").write_text("\n".join(prompts) + "\n")
    base = ["--budget", str(budget), *DEVICE, "--quiet", "--seed", "1"]
    cli = [sys.executable, "-m", "tts_diffusion.cli", "generate"]
    one_run = _timed([*cli, "--prompts", str(work / "prompts.txt"), "--out-dir", str(work / "list"), *base],
                     _env(ROOT))
    separate = 0.0
    for k, p in enumerate(prompts, 1):
        separate += _timed([*cli, p, "--out", str(work / f"single-{k:03d}.png"), *base], _env(ROOT))
    from tts_diffusion.prompt_list import output_stem

    same = all((work / "list" / f"{output_stem(k, p)}.png").read_bytes() == (work / f"single-{k:03d}.png").read_bytes()
               for k, p in enumerate(prompts, 1))
    return {"prompts": n, "budget": budget, "one_run_s": round(one_run, 1), "separate_runs_s": round(separate, 1),
            "speedup": round(separate / one_run, 2), "images_identical": same}


def _gpu_name(device: str) -> dict:
    """{"gpu": the device's name} ({} on the CPU); exits with one line if torch sees no such device."""
    if device == "cpu":
        return {}
    code = "import sys, torch; print(torch.cuda.get_device_name(sys.argv[1]) if torch.cuda.is_available() else '')"
    r = subprocess.run([sys.executable, "-c", code, device], capture_output=True, text=True)
    if r.returncode or not r.stdout.strip():
        sys.exit(f"error: --device {device}: torch sees no CUDA device here")
    return {"gpu": r.stdout.strip()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=int, default=160, help="NFE of the start-up runs' search (the issue's 160)")
    ap.add_argument("--compare", default=None, metavar="DIR", help="also time the package tree in DIR (alternated)")
    ap.add_argument("--importtime", action="store_true", help="also profile imports (-X importtime) by package")
    ap.add_argument("--many", type=int, default=0, metavar="N", help="time N prompts in one run against N runs")
    ap.add_argument("--many-budget", type=int, default=20, help="NFE per prompt of the --many runs")
    ap.add_argument("--device", default="cpu", help="cpu (with --threads 1) or cuda / cuda:N")
    ap.add_argument("--phases", action="store_true", help="also time each step of one run per tree")
    args = ap.parse_args()
    global DEVICE
    DEVICE = _device_flags(args.device)
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)  # `python -m` puts the working directory first on sys.path: keep every tree's own package
        report: dict = {"machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start",
                        "device": args.device, **_gpu_name(args.device)}
        if args.repeats:
            trees = {"this": ROOT, **({"compare": Path(args.compare).resolve()} if args.compare else {})}
            if args.compare:  # the tree compared runs first in each round
                trees = {"compare": trees["compare"], "this": ROOT}
            report["startup"] = startup(trees, args.repeats, args.budget, work)
        if args.importtime:
            trees = {**({"compare": Path(args.compare).resolve()} if args.compare else {}), "this": ROOT}
            report["imports"] = import_profile(trees, work)
        if args.phases:
            trees = {**({"compare": Path(args.compare).resolve()} if args.compare else {}), "this": ROOT}
            report["phases"] = phases(trees, args.budget, work)
        if args.many:
            report["many"] = many(args.many, args.many_budget, work)
        report["load_at_end"] = round(os.getloadavg()[0], 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
