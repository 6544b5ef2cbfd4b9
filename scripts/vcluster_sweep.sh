#!/usr/bin/env bash
# Scaling measurements across emulated nodes (scripts/vcluster.sh), as root, on an
# otherwise idle machine (run it under `flock /tmp/shiftvit-timing.lock`):
#   1. all-reduce of buffers of several sizes (and of the model's gradient) across
#      2, 4 and 8 nodes at 1, 2.5 and 10 Gbit/s: time and bus bandwidth
#      (`shiftvit bench --allreduce --bytes`), for the alpha-beta fit
#   2. the training step across 1-4 nodes with the same CPU share per node
#      (--cpus CPUS_PER_NODE) at two link rates: strong scaling (global batch 256)
#      and weak scaling (64 images per node), with the exposed all-reduce wait
# Writes one CSV row per point to OUT.csv and the raw JSON to OUT.log; then
#   /usr/bin/python3 scripts/fit_allreduce.py OUT.csv
# fits the model, plots it and projects to 64 nodes.
#
#   scripts/vcluster_sweep.sh [OUT]     # default results/scaling/vcluster-<date>
# Environment: RATES ("1gbit 2.5gbit 10gbit"), AR_NODES ("2 4 8"),
# SIZES ("256K 1M 4M 16M"), SCALE_RATES ("1gbit 10gbit"), SCALE_NODES ("1 2 3 4"),
# CPUS_PER_NODE (0.5), STEPS (5), CONFIG (configs/cifar10_keras.ini).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/scaling/vcluster-$(date +%F)}
RATES=${RATES:-1gbit 2.5gbit 10gbit}
AR_NODES=${AR_NODES:-2 4 8}
SIZES=${SIZES:-256K 1M 4M 16M}
SCALE_RATES=${SCALE_RATES:-1gbit 10gbit}
SCALE_NODES=${SCALE_NODES:-1 2 3 4}
CPUS_PER_NODE=${CPUS_PER_NODE:-0.5}
STEPS=${STEPS:-5}
CONFIG=${CONFIG:-configs/cifar10_keras.ini}
SHIFTVIT=$(pwd)/build/shiftvit
VC=scripts/vcluster.sh
[ "$(id -u)" -eq 0 ] || { echo "vcluster_sweep.sh: run as root (scripts/vcluster.sh needs it)" >&2; exit 1; }
[ -x "$SHIFTVIT" ] || { echo "vcluster_sweep.sh: build first (make)" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
trap '"$VC" down >/dev/null 2>&1 || true' EXIT

hosts() { local h="" i; for i in $(seq 1 "$1"); do h+="${h:+,}n$i"; done; echo "$h"; }
field() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<< "$1"; }

{
  echo "# scripts/vcluster_sweep.sh on $(hostname) $(date -Iseconds), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)"
  echo "# lscpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc --all) CPUs, flags: $(grep -o -w 'avx512f\|avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')"
} > "$OUT.log"
echo "kind,rate,nodes,cpus_per_node,bytes,global_batch,median_ms,min_ms,max_ms,busbw_GBps,images_per_s,forward_ms,backward_ms,allreduce_wait_ms,optimizer_ms" > "$OUT.csv"

# 1. all-reduce
for rate in $RATES; do
  for n in $AR_NODES; do
    "$VC" up "$n" --rate "$rate" >> "$OUT.log"
    for size in $SIZES model; do
      args=(bench -c "$CONFIG" --allreduce --steps 10 --warmup 2 --json)
      [ "$size" = model ] || args+=(--bytes "$size")
      j=$("$VC" mpirun -np "$n" --host "$(hosts "$n")" -x OMP_NUM_THREADS=1 "$SHIFTVIT" "${args[@]}" 2>>"$OUT.log" | grep '^{')
      echo "allreduce $rate n=$n $size: $j" | tee -a "$OUT.log"
      echo "allreduce,$rate,$n,$(sed -n 's/^cpus_per_node=//p' "${VCLUSTER_DIR:-/tmp/shiftvit-vcluster}/config"),$(field "$j" bytes),,$(field "$j" median_ms),$(field "$j" min_ms),$(field "$j" max_ms),$(field "$j" busbw_GBps),,,,," >> "$OUT.csv"
    done
  done
done

# 2. training step, fixed CPU share per node
for rate in $SCALE_RATES; do
  for n in $SCALE_NODES; do
    "$VC" up "$n" --rate "$rate" --cpus "$CPUS_PER_NODE" >> "$OUT.log"
    for kind in strong weak; do
      batch=256; [ "$kind" = weak ] && batch=$((64 * n))
      j=$("$VC" mpirun -np "$n" --host "$(hosts "$n")" -x OMP_NUM_THREADS=1 "$SHIFTVIT" bench -c "$CONFIG" \
            --batch "$batch" --steps "$STEPS" --warmup 1 --json 2>>"$OUT.log" | grep '^{')
      echo "$kind $rate n=$n batch=$batch: $j" | tee -a "$OUT.log"
      echo "$kind,$rate,$n,$CPUS_PER_NODE,,$batch,$(field "$j" median_ms),$(field "$j" min_ms),$(field "$j" max_ms),,$(field "$j" images_per_s),$(field "$j" forward_ms),$(field "$j" backward_ms),$(field "$j" allreduce_wait_ms),$(field "$j" optimizer_ms)" >> "$OUT.csv"
    done
  done
done
echo "wrote $OUT.csv and $OUT.log"
