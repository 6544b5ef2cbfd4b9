#!/usr/bin/env bash
# The full recipe (`make train`): 100 epochs with early stopping (patience 5),
# one MPI rank per core. Extra arguments go to `shiftvit train`.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(scripts/find-data.sh)
OUT=${OUT:-results/runs/cifar10_keras-$(date +%Y%m%d-%H%M%S)}
scripts/mpirun.sh build/shiftvit train -c configs/cifar10_keras.ini --data-dir "$DATA" --out "$OUT" "$@"
/usr/bin/python3 scripts/plot_metrics.py "$OUT" || true
