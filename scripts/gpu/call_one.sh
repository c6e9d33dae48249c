#!/usr/bin/env bash
# The one GPU call when machines are scarce (issues #29-#31, #33): the timing-sensitive
# start-up probe and draft_commit-vs-best_of_n sweep first, alone on the GPU, then the
# embedded-world sweeps side by side (call_b.sh). Results: $OUT/a1.tgz and $OUT/b.tgz.
#   source scripts/device_env.sh && bash scripts/gpu/call_one.sh $OUT [sweep seconds, 0: no sweeps]
set -u
OUT=${1:?out}; LIMIT=${2:-380}; R=$OUT/a1; mkdir -p "$R"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$R/gpu.txt" 2>&1
timeout 150 python3 scripts/bench_startup.py --device cuda --repeats 3 --phases --importtime > "$R/startup_h100.json" \
  2> "$R/startup.log"
tail -c 1200 "$R/startup_h100.json"
timeout 75 python3 -m tts_diffusion.cli bench --device cuda --num-prompts 36 --methods best_of_n,draft_commit \
  --budgets 4,16,64 --verifier clip --judge oracle --out "$R/draft.jsonl" > "$R/draft.log" 2>&1; tail -12 "$R/draft.log"
tar czf /tmp/a1.tgz -C "$OUT" a1 && rm -rf "$R" && mv /tmp/a1.tgz "$OUT/"
if [ "$LIMIT" -gt 0 ]; then bash scripts/gpu/call_b.sh "$OUT" 36 "$LIMIT"; fi  # 0: the first part only
