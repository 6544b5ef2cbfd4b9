#!/usr/bin/env bash
# The full recipe (`make train`): 100 epochs with early stopping (patience 5),
# one MPI rank per core; CONFIG=configs/cifar10_fast.ini (`make train-fast`)
# runs the time-to-accuracy recipe the same way. NP and THREADS as in
# scripts/mpirun.sh. Extra arguments go to `shiftvit train`.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(scripts/find-data.sh)
CONFIG=${CONFIG:-configs/cifar10_keras.ini}
OUT=${OUT:-results/runs/$(basename "$CONFIG" .ini)-$(date +%Y%m%d-%H%M%S)}
scripts/mpirun.sh build/shiftvit train -c "$CONFIG" --data-dir "$DATA" --out "$OUT" "$@"
/usr/bin/python3 scripts/plot_metrics.py "$OUT" || true
