#!/usr/bin/env bash
# One H100 call: the world sweeps, then the SD-1.5-size compile variants and search costs.
set -u
OUT=${1:?out}
SKIP_STARTUP=1 bash scripts/gpu/world_sweeps.sh "$OUT/world" 36 230
timeout 215 python3 scripts/bench_compile.py --variants eager,eager+tgate,regional,regional+tgate --repeats 2 \
  --time-limit 200 --out "$OUT/bench_compile_h100.json" > "$OUT/bench_compile.log" 2>&1
tail -25 "$OUT/bench_compile.log"
timeout 110 python3 scripts/gpu/sd15_search.py --repeats 1 --out "$OUT/sd15_search.json" > "$OUT/sd15_search.log" 2>&1
tail -15 "$OUT/sd15_search.log"
