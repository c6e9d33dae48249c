"""Hard cases at a run's edges (issue 27), run against the installed package: the CLI as a
user types it (`python -m tts_diffusion.cli`, a real process each), `replay`, signals, two
racing writers and the Python API. Each case is classified:

  handled    the documented outcome (exit code, one `error:` line, files as promised)
  traceback  a Python traceback reached the user
  silent     bad input accepted without a word
  unclear    refused, but not with exactly one `error:` line
  data loss  a file that had to survive was changed or removed, or a pair does not match
  crash      killed by a signal or an undocumented exit code

Then the Ctrl-C loss bound per searcher: the longest stretch between two finished denoiser
calls (work an interrupt can lose) plus the time to score the best so far on the way out.

    python scripts/hard_inputs.py [--quick] [--json out.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tts_diffusion.testing.helpers import pump_stderr

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
CLI = [sys.executable, "-m", "tts_diffusion.cli"]
PROMPT = "a photo of a red circle"
SMALL = ["--budget", "20", "--steps", "2", "--device", "cpu", "--quiet", "--threads", "1"]
DOCUMENTED = {0, 1, 2, 129, 130, 143}


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def classify(rc: int, err: str, *, want_rc: set[int], keep: dict[Path, str | None] | None = None,
             pair: Path | None = None) -> str:
    if "Traceback" in err:
        return "traceback"
    if rc < 0 or rc not in DOCUMENTED:
        return "crash"
    for path, digest in (keep or {}).items():
        if sha(path) != digest:
            return "data loss"
    if pair is not None and pair.exists():
        side = json.loads(pair.with_suffix(".json").read_text())
        if side.get("image_sha256") != sha(pair):
            return "data loss"
    if rc not in want_rc:
        return "silent" if rc == 0 else "unclear"
    if rc == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if len(lines) != 1 or not lines[0].startswith("error: "):
            return "unclear"
    return "handled"


def run(args: list[str], cwd: Path, timeout: int = 600) -> tuple[int, str]:
    r = subprocess.run(CLI + args, capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout)
    return r.returncode, r.stderr


def case_files(d: Path) -> list[tuple[str, str]]:
    out = []
    # a good run first: the pair the later cases must keep
    rc, err = run(["generate", PROMPT, *SMALL, "--out", str(d / "s.png")], d)
    out.append(("generate small", classify(rc, err, want_rc={0}, pair=d / "s.png")))
    keep = {d / "s.png": sha(d / "s.png"), d / "s.json": sha(d / "s.json")}
    for name, setup, args in [
        ("unrelated data.json", lambda: (d / "data.json").write_text('{"rows": 1}'), ["--out", str(d / "data.png")]),
        ("rgba: unrelated .rgb.png", lambda: (d / "c.rgb.png").write_bytes(b"user"), ["--rgba", "--out", str(d / "c.png")]),
        ("rgba: unrelated .alpha.png", lambda: (d / "e.alpha.png").write_bytes(b"user"), ["--rgba", "--out", str(d / "e.png")]),
        ("reflect: <out>_chains is a file", lambda: (d / "r_chains").write_bytes(b"user"),
         ["--searcher", "reflect", "--out", str(d / "r.png")]),
        ("guidance 1e30", None, ["--guidance", "1e30", "--out", str(d / "g.png")]),
        ("smc reward_scale=1e300", None, ["--searcher", "smc", "-o", "reward_scale=1e300", "--out", str(d / "g.png")]),
        ("fkc prompt_2 outside the grammar", None, ["--searcher", "fkc", "-o", "mode=product", "-o",
                                                    "prompt_2=a purple dragon", "--out", str(d / "g.png")]),
    ]:
        if setup:
            setup()
        before = {p: sha(p) for p in d.iterdir() if p.is_file()}
        rc, err = run(["generate", PROMPT, *SMALL, *args], d)
        out.append((name, classify(rc, err, want_rc={2}, keep={**keep, **before})))
    side = d / "s.json"
    rc, err = run(["replay", str(side), "--out", str(d / "s.png"), "--quiet"], d)
    out.append(("replay --out over its own input", classify(rc, err, want_rc={2}, keep=keep)))
    record = json.loads(side.read_text())
    bad = {
        "replay: no run.prompt": {**record, "run": {k: v for k, v in record["run"].items() if k != "prompt"}},
        "replay: no run.budget": {**record, "run": {k: v for k, v in record["run"].items() if k != "budget"}},
        "replay: budget as text": {**record, "run": {**record["run"], "budget": "20"}},
        "replay: unknown option": {**record, "run": {**record["run"], "searcher_options": {"colour": 1}}},
        "replay: unknown run field": {**record, "run": {**record["run"], "colour": 1}},
        "replay: settings a list": {**record, "settings": []},
        "replay: a JSON list": [1, 2],
    }
    for name, content in bad.items():
        path = d / "bad.json"
        path.write_text(json.dumps(content))
        rc, err = run(["replay", str(path), "--out", str(d / "bad.png"), "--quiet"], d)
        out.append((name, classify(rc, err, want_rc={2}, keep=keep)))
    (d / "bad.json").write_bytes(json.dumps(record).encode("utf-16"))
    rc, err = run(["replay", str(d / "bad.json"), "--out", str(d / "bad.png"), "--quiet"], d)
    out.append(("replay: UTF-16 sidecar", classify(rc, err, want_rc={2}, keep=keep)))
    return out


def _nfe(text: str) -> int:
    return max((int(m) for m in re.findall(r"(\d+)/100000", text)), default=0)


def case_signals(d: Path) -> list[tuple[str, str]]:
    out = []
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        target = d / f"{sig.name}.png"
        proc = subprocess.Popen(CLI + ["generate", "two red circles", "--device", "cpu", "--budget", "100000",
                                       "--out", str(target)], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=ENV, cwd=d)
        hit, buf = pump_stderr(proc, lambda t: _nfe(t) >= 32)
        hit.wait(300)
        proc.send_signal(sig)
        proc.wait(300)
        time.sleep(0.2)
        err = "".join(buf)
        kind = classify(proc.returncode, err, want_rc={code}, pair=target)
        if kind == "handled":
            side = json.loads(target.with_suffix(".json").read_text()) if target.exists() else {}
            if not (side.get("interrupted") and side.get("signal") == sig.name and side.get("run")):
                kind = "data loss"
        out.append((f"{sig.name} during the default search", kind))
    # two racing writers on one --out
    target = d / "race.png"
    procs = [subprocess.Popen(CLI + ["generate", PROMPT, *SMALL, "--seed", str(s), "--out", str(target)],
                              stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV, cwd=d)
             for s in (1, 2)]
    res = [p.communicate(timeout=600)[1] for p in procs]
    codes = [p.returncode for p in procs]
    kind = "handled" if sorted(codes) in ([0, 0], [0, 2]) else "crash"
    kind = classify(0, "".join(res), want_rc={0}, pair=target) if kind == "handled" else kind
    out.append(("two processes racing on one --out", kind))
    return out


def case_api() -> list[tuple[str, str]]:
    from tts_diffusion import TTSPipeline
    from tts_diffusion.errors import TTSInputError

    tts = TTSPipeline.from_pretrained(None)
    out = []
    for name, kw in [("rgba=1", {"rgba": 1}), ("progress='yes'", {"progress": "yes"}),
                     ("guidance_scale=1e30", {"guidance_scale": 1e30}),
                     ("fkc prompt_2 dragon", {"searcher": "fkc", "mode": "product", "prompt_2": "a purple dragon"}),
                     ("smc reward_scale=1e300", {"searcher": "smc", "reward_scale": 1e300})]:
        try:
            tts(PROMPT, budget=20, num_inference_steps=2, **{"progress": False, **kw})
            out.append((f"API {name}", "silent"))
        except TTSInputError as e:
            out.append((f"API {name}", "handled" if "\n" not in str(e) else "unclear"))
        except Exception:  # noqa: BLE001
            out.append((f"API {name}", "traceback"))
    return out


def loss_bounds() -> dict[str, dict[str, float]]:
    """Per searcher (embedded model, CPU, its default settings at a 200-NFE budget): the
    longest time between two finished denoiser calls, and the exit scoring's time."""
    import torch

    from tts_diffusion import TTSPipeline
    from tts_diffusion.errors import SearchInterrupted
    from tts_diffusion.searchers import available_searchers

    torch.set_num_threads(1)
    tts = TTSPipeline.from_pretrained(None)
    out = {}
    for name in available_searchers():
        stamps: list[float] = []

        def on(p, stamps=stamps):
            stamps.append(time.perf_counter())

        try:
            tts(PROMPT, searcher=name, budget=200, num_inference_steps=10, progress=False, progress_callback=on)
        except Exception as e:  # noqa: BLE001
            out[name] = {"error": str(e)[:80]}
            continue
        gaps = [b - a for a, b in zip(stamps, stamps[1:])] or [0.0]
        # the exit: interrupt after half the reports and time the best-so-far scoring
        half = max(2, len(stamps) // 2)
        seen = [0]

        def stop(p, seen=seen, half=half):
            seen[0] += 1
            if seen[0] >= half:
                stop.t = time.perf_counter()
                raise KeyboardInterrupt

        stop.t = None
        t_exit = float("nan")
        try:
            tts(PROMPT, searcher=name, budget=200, num_inference_steps=10, progress=False, progress_callback=stop)
        except SearchInterrupted as e:
            t_exit = time.perf_counter() - stop.t
            kept = e.result is not None
        else:
            kept = True
        out[name] = {"max_gap_s": round(max(gaps), 3), "exit_s": round(t_exit, 3), "kept": kept,
                     "bound_s": round(max(gaps) + (t_exit if t_exit == t_exit else 0.0), 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip the signal and race cases")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cases = case_files(d) + ([] if args.quick else case_signals(d)) + case_api()
    counts: dict[str, int] = {}
    for name, kind in cases:
        counts[kind] = counts.get(kind, 0) + 1
        print(f"{kind:<10} {name}")
    print("counts:", json.dumps(counts))
    bounds = loss_bounds()
    for name, b in bounds.items():
        print(f"loss bound {name:<11} {b}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": cases, "counts": counts, "loss_bounds": bounds}, indent=2))


if __name__ == "__main__":
    main()
