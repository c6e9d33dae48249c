#!/usr/bin/env bash
# One GPU call (issue #32, items 4-5): diffusers' features under search at real sizes (random
# weights), peak memory against a 24 GB card, the no-feature baseline first in each run.
#   source scripts/device_env.sh && bash scripts/gpu/call_c.sh $OUT
set -u
OUT=${1:?out}; R=$OUT/c; mkdir -p "$R"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$R/gpu.txt" 2>&1
feat() {  # name seconds args...
  local name=$1 limit=$2; shift 2
  timeout "$limit" python3 scripts/bench_features.py --repeats 1 --out "$R/$name.json" "$@" > "$R/$name.log" 2>&1
  grep -v "^\s*$" "$R/$name.log" | tail -12
}
feat flux 290 --models flux --features none,layerwise_fp8,group_offload,first_block_cache
feat sdxl 130 --models sdxl --features none,model_offload,group_offload,layerwise_fp8,lora,lora_fused,compile_blocks
feat sd3 120 --models sd3 --features none,group_offload,layerwise_fp8,lora
tar czf /tmp/c.tgz -C "$OUT" c && rm -rf "$R" && mv /tmp/c.tgz "$OUT/"
