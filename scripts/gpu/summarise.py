"""Accuracy, seconds and NFE per method and budget of every sweep in a folder of GPU-call
results (`<name>.log` beside `<name>.jsonl`, or the `.part*` files a killed sweep leaves),
for the call's printed output: `python3 scripts/gpu/summarise.py DIR`."""
from __future__ import annotations

import glob
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tts_diffusion.bench.records import load_done  # noqa: E402


def main(folder: str) -> None:
    for log in sorted(glob.glob(f"{folder}/*.log")):
        out = Path(log[:-4] + ".jsonl")
        if not glob.glob(f"{out}*"):
            print(Path(log).stem, "(no records)", Path(log).read_text()[-300:].replace("\n", " | "))
            continue
        cells: dict[tuple, list] = {}
        for r in load_done(out).values():
            cells.setdefault((r["method"], r["budget"]), []).append(r)
        print(out.stem)
        for (method, budget), rs in sorted(cells.items()):
            n = len(rs)
            print(f"  {method:13s} {budget:3d}x  acc {sum(r['hit'] for r in rs) / n:.3f}  n {n}"
                  f"  s/search {sum(r.get('seconds') or 0 for r in rs) / n:.2f}"
                  f"  nfe {sum(r.get('nfe') or 0 for r in rs) / n:.0f}")


if __name__ == "__main__":
    main(sys.argv[1])
