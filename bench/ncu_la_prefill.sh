#!/usr/bin/env bash
# Nsight Compute on the Hopper (wgmma) LA prefill kernels of one la_prefill call (PERFORMANCE.md
# M1; GPU machine, ncu in /usr/local/cuda/bin).
#   bash bench/ncu_la_prefill.sh [CONFIG ...]     CONFIG = BxTxDV, default 16x8192x64 1x8192x64
# One call per config through bench/profile_la_prefill.py --once (inputs as M1: H16, f16 features,
# bf16); the segmented short-batch path profiles its delta pass, scan and output pass. Besides the
# sections, the tensor-pipe utilisation counters this ncu knows for the chip (wgmma "gmma", mma.sync
# "hmma"). Clocks are left as they are (--clock-control none). Full reports go to
# ${OUT:-build/ncu}/ncu_la_prefill_CONFIG.txt; the headline lines are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/ncu}
mkdir -p "$OUT"
export PATH=$PATH:/usr/local/cuda/bin
cfgs=("$@")
[ ${#cfgs[@]} -gt 0 ] || cfgs=(16x8192x64 1x8192x64)
args=()
for sec in SpeedOfLight ComputeWorkloadAnalysis Occupancy LaunchStats WarpStateStats SchedulerStats; do
  args+=(--section "$sec")
done
# tensor pipes: only counters this ncu lists (an unknown metric name would fail the whole run)
pipes=$(ncu --query-metrics 2>/dev/null | grep -oE "^sm__pipe_tensor_op_(gmma|hmma)_cycles_active\b" | sort -u |
  sed 's/$/.avg.pct_of_peak_sustained_active/' | paste -sd, || true)
[ -n "$pipes" ] && args+=(--metrics "$pipes")
for cfg in "${cfgs[@]}"; do
  rep="$OUT/ncu_la_prefill_${cfg}.txt"
  # the wgmma kernels only (profile_la_prefill.py --once also runs the mma.sync variant)
  ncu --clock-control none --kernel-name "regex:la_wg_kernel|la_chunk_scan" --launch-count 3 "${args[@]}" \
    python3 bench/profile_la_prefill.py --once "$cfg" >"$rep" 2>&1 || { tail -20 "$rep"; exit 1; }
  echo "== $cfg"
  grep -E "^  [a-z_ ]*(void|based_core)|Duration|Compute \(SM\) Throughput|DRAM Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|pipe_tensor|Block Limit Shared|stalled" "$rep" | head -60 || true
  echo "report: $rep"
done
