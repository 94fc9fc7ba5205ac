#!/usr/bin/env bash
# Nsight Compute on decode kernels of a based_core generate (GPU machine; ncu in /usr/local/cuda/bin).
#   bash bench/ncu_decode.sh MODEL BATCH KERNEL_REGEX [SKIP] [COUNT] [STEPS]
#   e.g. bash bench/ncu_decode.sh based-1b 64 swa_decode 14 1
# Random weights of the released shape (models.py), prompts of 1024 tokens (M4), then STEPS
# (default 4) decode steps; profiles COUNT (default 1) launches of kernels matching
# KERNEL_REGEX after skipping SKIP (default 14: past the prefill and the first decode steps;
# a kernel that also runs in prefill, such as rmsnorm_reg or gemv, needs a larger SKIP).
# Clocks are left as they are (--clock-control none). The full report goes to
# ${OUT:-build/ncu}/ncu_MODEL_bBATCH_REGEX.txt; the headline metrics are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?MODEL} batch=${2:?BATCH} regex=${3:?KERNEL_REGEX} skip=${4:-14} count=${5:-1} steps=${6:-4}
OUT=${OUT:-build/ncu}
mkdir -p "$OUT"
rep="$OUT/ncu_${model}_b${batch}_${regex//[^A-Za-z0-9_]/_}.txt"
args=()
for sec in SpeedOfLight Occupancy LaunchStats WarpStateStats MemoryWorkloadAnalysis SchedulerStats SourceCounters; do
  args+=(--section "$sec")
done
export PATH=$PATH:/usr/local/cuda/bin
ncu --clock-control none --kernel-name "regex:$regex" --launch-skip "$skip" \
  --launch-count "$count" "${args[@]}" python3 - "$model" "$batch" "$steps" >"$rep" 2>&1 <<'PY' ||
  { tail -20 "$rep"; exit 1; }
import sys
sys.path.insert(0, "bench")
import models
name, B, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model, cfg = models.build_model(name, "cuda")
s = model.session(max_batch=B)
s.generate(models.random_prompts(B, 1024, cfg["vocab_size"], seed=B), max_new_tokens=steps)
PY
grep -E "^  [a-z_ ]*void|Duration|DRAM Throughput|Memory Throughput +[TG]byte|Registers Per|Waves Per SM|Achieved Occupancy|Warp Cycles Per Issued|Est. Speedup" "$rep" | head -40 || true
echo "report: $rep"
