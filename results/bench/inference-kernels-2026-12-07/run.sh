#!/usr/bin/env bash
# Per-kernel times of the fp32 inference forward pass, ours and PyTorch's
# (issue 23 section 1), batch 256, 1 and 2 threads, recipe model; the
# environment of each side exactly as scripts/bench.sh sets it. Run from the
# repository root under the timing lock:
#   flock /tmp/shiftvit-timing.lock results/bench/inference-kernels-2026-12-07/run.sh
# Writes, next to this script: bench/ (scripts/bench.sh's unprofiled images/s,
# MODES=eval WITH_MPI=0 WITH_BF16=0), profile.jsonl (one JSON line per
# profiled run: ours `bench --eval --profile`, PyTorch `--eval --kernels`),
# machine.txt (CPU, flags, load before).
set -euo pipefail
cd "$(dirname "$0")/../../.."
HERE=results/bench/inference-kernels-2026-12-07
BIN=${BUILD:-build}/shiftvit
PY=/usr/bin/python3
TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=68719476736
STEPS=${STEPS:-10}
{
    echo "date: $(date -Is)"
    echo "uptime: $(uptime)"
    echo "busiest processes:"; ps -eo pcpu,etime,args --sort=-pcpu | head -5 | cut -c1-120
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs"
    echo "flags: $(grep -ow -E 'avx512f|avx512_bf16|amx_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "git: $(git rev-parse --short HEAD), $(git status --porcelain | wc -l) uncommitted paths"
} > "$HERE/machine.txt"
# 1. images/s without any timer, scripts/bench.sh's own runs
MODES=eval WITH_MPI=0 WITH_BF16=0 STEPS=$STEPS OUT=$HERE/bench scripts/bench.sh
# 2. the profiled runs, same environments (PyTorch: BLIS_ARCH_TYPE=0, skx, as bench.sh picks on AVX-512)
: > "$HERE/profile.jsonl"
for t in 1 2; do
    env -u BLIS_ARCH_TYPE -u GLIBC_TUNABLES OMP_NUM_THREADS=$t BLIS_NUM_THREADS=$t \
        "$BIN" bench -c configs/cifar10_keras.ini --steps "$STEPS" --warmup 2 --batch 256 --eval --profile --json \
        | grep '^{' | sed 's/^{/{"impl":"ours",/' >> "$HERE/profile.jsonl"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE -u BLIS_ARCH_TYPE GLIBC_TUNABLES=$TUNABLES BLIS_ARCH_TYPE=0 \
        OMP_NUM_THREADS=$t BLIS_NUM_THREADS=$t \
        "$PY" bench/pytorch_shiftvit.py --env asis --threads "$t" --steps "$STEPS" --warmup 2 --batch 256 --eval \
        --kernels --json | grep '^{' >> "$HERE/profile.jsonl"
done
echo "uptime after: $(uptime)" >> "$HERE/machine.txt"
