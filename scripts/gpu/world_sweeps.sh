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
port=29600
sweep() {  # name nproc args...
  local name=$1 n=$2; shift 2; port=$((port + 1))
  timeout "$LIMIT" python3 -m torch.distributed.run --nproc_per_node "$n" --master_port $port \
    -m tts_diffusion.cli bench --device ${DEV:-cuda:0} --threads 1 --num-prompts "$K" --out "$OUT/$name.jsonl" "$@" \
    > "$OUT/$name.log" 2>&1 &
}
# #30: evo against best_of_n, zero_order and smc at equal NFE, the oracle guiding and judging
sweep oracle 4 --methods evo,best_of_n,zero_order,smc --budgets 4,16,64 --verifier oracle --judge oracle
# #30 / #31 / #33: the domain CLIP guiding, the oracle judging (held out)
sweep clip 4 --methods best_of_n,evo,zero_order,smc --budgets 1,4,16,64 --verifier clip --judge oracle
sweep clip2 3 --methods driftlite,draft_commit,das --budgets 4,16,64 --verifier clip --judge oracle
# #33: TFG reward guidance (the domain CLIP's gradient) under best_of_n and SMC
sweep tfg 3 --methods best_of_n,smc --budgets 4,16,64 --verifier clip --judge oracle --reward-guidance clip
# #31: gradient noise optimisation, the domain CLIP guiding
sweep noiseopt 2 --methods noise_opt --budgets 4,16,64 --verifier clip --judge oracle
# #31: the hacking pool (64 candidates a prompt, the domain CLIP's scores and views, the oracle's verdicts)
timeout "$LIMIT" python3 scripts/bench_hacking.py pool --num-prompts $((2 * K)) --device ${DEV:-cuda} \
  --out "$OUT/hacking_pool.pt" > "$OUT/hacking_pool.log" 2>&1 &
wait
python3 - "$OUT" <<'PY'
import glob, json, sys
from pathlib import Path
sys.path.insert(0, ".")
from tts_diffusion.bench.records import load_done
for log in sorted(glob.glob(sys.argv[1] + "/*.log")):
    f = log[:-4] + ".jsonl"  # the merged file and/or a killed run's part files
    if not glob.glob(f + "*"):
        continue
    recs = list(load_done(Path(f)).values())
    by = {}
    for r in recs:
        by.setdefault((r["method"], r["budget"]), []).append(r["hit"])
    print(Path(f).stem, len(recs), "records")
    for (m, b), h in sorted(by.items()):
        print(f"  {m:13s} {b:3d}x  acc {sum(h)/len(h):.3f}  n {len(h)}")
PY
# #29: start-up on the H100: the whole process minus the search's own timings.total, 3 runs
python3 - "$OUT" ${SMOKE:+--smoke} <<'PY'
import json, subprocess, sys, time
out = sys.argv[1]
rows = []
for i in range(3 if "--smoke" not in sys.argv else 1):
    t = time.perf_counter(); subprocess.run([sys.executable, "-c", "import torch"], check=True)
    bare = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch; torch.zeros(1, device='cuda' if torch.cuda.is_available() else 'cpu')"], check=True)
    cuda = time.perf_counter() - t
    for budget in ([160, 1280] if "--smoke" not in sys.argv else [20]):
        img = f"{out}/startup{i}_{budget}.png"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tts_diffusion.cli", "generate", "two red circles", "--budget", str(budget),
                        "--seed", str(i), "--quiet", "--out", img], check=True)
        whole = time.perf_counter() - t
        search = json.load(open(img[:-4] + ".json"))["timings"]["total"]
        rows.append({"run": i, "budget": budget, "whole_s": whole, "search_s": search, "startup_s": whole - search,
                     "import_torch_s": bare, "torch_cuda_init_s": cuda})
        print(rows[-1], flush=True)
json.dump(rows, open(f"{out}/startup_h100.json", "w"), indent=1)
PY
