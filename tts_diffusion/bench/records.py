"""The sweep's JSON Lines file: one record per (prompt, method, budget, seed), appended as
each search ends, so an interrupted sweep resumes where it stopped.

Processes of a sharded sweep append to their own part files (`<out>.part<rank>`); when the
sweep ends, the main process merges everything into `<out>`, sorted by key, and removes the
parts. A run that was killed mid-line leaves a torn last line, which is skipped on reading."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import TTSInputError

#: fields that identify a record
KEY_FIELDS = ("prompt", "method", "budget", "seed")
#: fields that differ between runs of the same sweep (wall-clock), left out of comparisons
TIMING_FIELDS = ("seconds", "run_seconds")
#: fields every record of one sweep file shares; a resumed sweep must match them
SETTING_FIELDS = ("model", "steps", "guidance", "verifier", "judge", "prompt_set", "preview_decoder", "reward_guidance")


def key(record: dict) -> tuple:
    return tuple(record[k] for k in KEY_FIELDS)


def part_path(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.part{rank}")


def read_records(path: Path) -> list[dict]:
    """The records of one file (missing file: none); torn or blank lines are skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and all(k in rec for k in KEY_FIELDS):
            out.append(rec)
    return out


def load_done(out: Path) -> dict[tuple, dict]:
    """Every record of the sweep so far: the merged file and any part files left by an
    interrupted sharded run (later records win on a repeated key)."""
    done: dict[tuple, dict] = {}
    for path in [out, *sorted(out.parent.glob(f"{out.name}.part*"))]:
        for rec in read_records(path):
            done[key(rec)] = rec
    return done


def check_same_sweep(done: dict[tuple, dict], setting: dict, options: dict[str, dict], out: Path) -> None:
    """Refuse to resume a file written with other settings (model, steps, verifier, ...)
    or other method options: its records would be mixed with this sweep's."""
    for rec in done.values():
        for f in SETTING_FIELDS:
            if rec.get(f) != setting.get(f):
                raise TTSInputError(f"{out} holds records of another sweep ({f} {rec.get(f)!r}, here "
                                    f"{setting.get(f)!r}); pass another --out, or the same settings to resume it")
        m = rec["method"]
        if m in options and rec.get("options_given") != json.loads(json.dumps(options[m])):
            raise TTSInputError(f"{out} holds {m} records with options {rec.get('options_given')}, here "
                                f"{options[m]}; pass another --out, or the same options to resume it")


class Appender:
    """Appends records to one file, one flushed line each (a crash loses at most the last)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            with path.open("a", encoding="utf-8") as f:  # a torn last line: start a fresh one
                f.write("\n")

    def write(self, records: list[dict]) -> None:
        if not records:
            return
        with self.path.open("a", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def write_merged(out: Path, records: list[dict]) -> None:
    """Write all records to `out`, sorted by key (atomically), and remove the part files."""
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in sorted(records, key=sort_key):
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    tmp.replace(out)
    for part in out.parent.glob(f"{out.name}.part*"):
        part.unlink()


def sort_key(record: dict) -> tuple:
    return (record["method"], record["budget"], record["seed"], record["prompt"])


def canonical(records: list[dict]) -> list[dict]:
    """Records without their wall-clock fields, sorted: equal for two runs of one sweep
    however the prompts were split over processes."""
    return sorted(({k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records), key=sort_key)
