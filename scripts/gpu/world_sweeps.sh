#!/usr/bin/env bash
# One H100 call (issues #29-#31, #33): the embedded shapes world's sweeps, run side by side on
# one GPU (the 64-px model leaves it mostly idle), each resumable; then the H100 start-up probe.
#   source scripts/device_env.sh && bash scripts/gpu/world_sweeps.sh $OUT 54 470
# Args: output folder, prompts per sweep (a multiple of 6: the same number per category),
# seconds each sweep may run (a killed sweep keeps its records in <out>.part* files).
set -u
OUT=${1:?out dir}; K=${2:-54}; LIMIT=${3:-470}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>/dev/null
sweep() {  # name methods args...: one process per method (torchrun's ranks would each take a GPU of their own)
  local name=$1 methods=$2; shift 2
  for m in ${methods//,/ }; do
    timeout "$LIMIT" python3 -m tts_diffusion.cli bench --device ${DEV:-cuda:0} --threads 1 --num-prompts "$K" \
      --methods "$m" --out "$OUT/$name-$m.jsonl" "$@" > "$OUT/$name-$m.log" 2>&1 &
  done
}
# #30: evo against best_of_n, zero_order and smc at equal NFE, the oracle guiding and judging
sweep oracle evo,best_of_n,zero_order,smc --budgets 4,16,64 --verifier oracle --judge oracle
# #30 / #31 / #33: the domain CLIP guiding, the oracle judging (held out)
sweep clip best_of_n,evo,zero_order,smc --budgets 1,4,16,64 --verifier clip --judge oracle
sweep clip driftlite,draft_commit,das --budgets 4,16,64 --verifier clip --judge oracle
# #33: TFG reward guidance (the domain CLIP's gradient) under best_of_n and SMC
sweep tfg best_of_n,smc --budgets 4,16,64 --verifier clip --judge oracle --reward-guidance clip
# #31: gradient noise optimisation, the domain CLIP guiding
sweep clip noise_opt --budgets 4,16,64 --verifier clip --judge oracle
wait
python3 scripts/gpu/summarise.py "$OUT"
# #29: start-up on the H100: the whole process minus the search's own timings.total, 3 runs
[ -n "${SKIP_STARTUP:-}" ] || python3 scripts/bench_startup.py --device cuda --repeats 3 --phases \
  > "$OUT/startup_h100.json" 2> "$OUT/startup.log"
tar czf /tmp/world_results.tgz -C "$OUT" . && rm -rf "$OUT"/* && mv /tmp/world_results.tgz "$OUT/"
