"""The shapes oracle on images of an independent renderer (tts_diffusion/testing/pil_renderer.py: PIL
polygons, 8x supersampling, other proportions and colours), per scene kind. Grammar v1 at
64 px: in-distribution grammar scenes, two touching shapes of the same colour, a shape cut
by the border (60-85% visible, counts), an extra 40-60% visible shape at the border
(counts, so the prompt's count is wrong), heavy overlap of two shapes. Grammar v2 at 128
px: in-distribution scenes of the new categories, an inner object crossing the outline of
its container (not inside), a middle object off the line (not between), two objects of
about the same area prompted as big and small, five or six objects two of which touch.
Prints a table and adds an "other_renderer" section to docs/oracle_accuracy.json (or --out).

    python scripts/check_oracle_other_renderer.py --n 60 --seed 0
"""
from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path


from tts_diffusion.testing.pil_renderer import draw_all, scene_kinds, scene_kinds_v2  # noqa: E402

from tts_diffusion.shapes.oracle import check_batch  # noqa: E402


def run(scenes, size: int, seed: int, n: int, label: str) -> dict:
    """Right verdicts per scene kind, printed and returned as a report section."""
    t0 = time.time()
    images = draw_all(scenes, size, seed)
    results = check_batch(images, [s.prompt for s in scenes])
    stats: dict[str, dict] = defaultdict(lambda: {"n": 0, "right": 0, "failures": []})
    for s, r in zip(scenes, results):
        st = stats[s.kind]
        st["n"] += 1
        st["right"] += r.correct == s.expected
        if r.correct != s.expected:
            st["failures"].append({"prompt": s.prompt, "expected": s.expected, "feedback": r.feedback})
    print(f"{label}: {size} px, {n} scenes per kind, seed {seed} ({time.time() - t0:.0f} s)")
    print(f"{'kind':20s} {'n':>4s} {'right':>7s}")
    section = {"size": size, "n_per_kind": n, "seed": seed, "kinds": {}}
    for kind, st in stats.items():
        acc = st["right"] / st["n"]
        print(f"{kind:20s} {st['n']:4d} {acc:7.1%}")
        for f in st["failures"][:3]:
            print(f"    {f['prompt']!r} expected {'correct' if f['expected'] else 'wrong'}: {f['feedback']}")
        section["kinds"][kind] = {"n": st["n"], "right": acc, "failures": st["failures"][:10]}
    return section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=60, help="scenes per kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="grammar v1 image size")
    ap.add_argument("--size-v2", type=int, default=128, help="grammar v2 image size")
    ap.add_argument("--out", type=Path, default=Path("docs/oracle_accuracy.json"))
    args = ap.parse_args()
    v1 = run(scene_kinds(args.n, args.seed), args.size, args.seed, args.n, "grammar v1")
    v2 = run(scene_kinds_v2(args.n, args.seed), args.size_v2, args.seed, args.n, "grammar v2")
    report = json.loads(args.out.read_text()) if args.out.is_file() else {"version": 2}
    report["other_renderer"] = {"v1": v1, "v2": v2}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
