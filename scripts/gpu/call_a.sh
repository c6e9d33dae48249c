#!/usr/bin/env bash
# One H100 call (issues #29, #30, #32), timing-sensitive work only, nothing else on the GPU:
# the start-up probe with the light path, draft_commit against best_of_n uncontended on the
# embedded world, then the SD-1.5-size compile variants (plain diffusers baseline in the same run).
#   source scripts/device_env.sh && bash scripts/gpu/call_a.sh $OUT
set -u
OUT=${1:?out}; R=$OUT/a; mkdir -p "$R"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader > "$R/gpu.txt" 2>&1
git log -1 --format=%H > "$R/commit.txt" 2>/dev/null
timeout 170 python3 scripts/bench_startup.py --device cuda --repeats 3 --phases --importtime \
  > "$R/startup_h100.json" 2> "$R/startup.log"; tail -c 1500 "$R/startup_h100.json"
timeout 110 python3 -m tts_diffusion.cli bench --device cuda --num-prompts 36 --methods best_of_n,draft_commit \
  --budgets 4,16,64 --verifier clip --judge oracle --out "$R/draft.jsonl" > "$R/draft.log" 2>&1; tail -15 "$R/draft.log"
timeout 300 python3 scripts/bench_compile.py --variants plain,eager,eager+tgate,regional+tgate,compiled-ro+tgate \
  --repeats 2 --time-limit 290 --profile-eager --out "$R/bench_compile.json" > "$R/bench_compile.log" 2>&1
tail -30 "$R/bench_compile.log"
tar czf /tmp/a.tgz -C "$OUT" a && rm -rf "$R" && mv /tmp/a.tgz "$OUT/"
