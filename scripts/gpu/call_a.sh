#!/usr/bin/env bash
# One H100 call (issues #29, #30, #32), timing-sensitive work only, nothing else on the GPU:
# call_one.sh's first part (the start-up probe, draft_commit against best_of_n uncontended on the
# embedded world: $OUT/a1.tgz), then the SD-1.5-size compile variants with the plain diffusers
# baseline in the same run ($OUT/a.tgz).
#   source scripts/device_env.sh && bash scripts/gpu/call_a.sh $OUT
set -u
OUT=${1:?out}; R=$OUT/a; mkdir -p "$R"
bash scripts/gpu/call_one.sh "$OUT" 0
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader > "$R/gpu.txt" 2>&1
timeout 300 python3 scripts/bench_compile.py --variants plain,eager,eager+tgate,regional+tgate,compiled-ro+tgate \
  --repeats 2 --time-limit 290 --profile-eager --out "$R/bench_compile.json" > "$R/bench_compile.log" 2>&1
tail -30 "$R/bench_compile.log"
tar czf /tmp/a.tgz -C "$OUT" a && rm -rf "$R" && mv /tmp/a.tgz "$OUT/"
