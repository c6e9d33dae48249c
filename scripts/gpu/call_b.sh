#!/usr/bin/env bash
# One GPU call (issues #31, #33): embedded-world sweeps side by side on one GPU (the 64-px
# model leaves it mostly idle; seconds are contended), each resumable, results in one tarball.
#   source scripts/device_env.sh && bash scripts/gpu/call_b.sh $OUT 36 480
# Args: output folder, prompts per sweep (a multiple of 6), seconds each sweep may run.
set -u
OUT=${1:?out}; K=${2:-36}; LIMIT=${3:-480}; R=$OUT/b; mkdir -p "$R"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$R/gpu.txt" 2>&1
git log -1 --format=%H > "$R/commit.txt" 2>/dev/null
bench() {  # name args...: one bench process
  local name=$1; shift
  timeout "$LIMIT" python3 -m tts_diffusion.cli bench --device cuda --threads 1 --out "$R/$name.jsonl" "$@" \
    > "$R/$name.log" 2>&1 &
}
# #33: DriftLite after the float16 fix, with best_of_n and smc on the same prompts (the domain CLIP
# guiding, the oracle judging, held out)
for m in best_of_n driftlite smc; do
  bench "clip-$m" --num-prompts "$K" --methods $m --budgets 4,16,64 --verifier clip --judge oracle
done
# #31: noise_opt, one process per budget (64x is the slow one)
for b in 4 16 64; do
  bench "clip-noise_opt-$b" --num-prompts "$K" --methods noise_opt --budgets $b --verifier clip --judge oracle
done
# #31: DAS on all 108 prompts of the hacking pool
timeout "$LIMIT" python3 scripts/bench_hacking.py das --num-prompts 108 --device cuda --workers 4 --budgets 4 16 64 \
  --out "$R/das108.json" > "$R/das108.log" 2>&1 &
wait
python3 scripts/gpu/summarise.py "$R"
tar czf /tmp/b.tgz -C "$OUT" b && rm -rf "$R" && mv /tmp/b.tgz "$OUT/"
