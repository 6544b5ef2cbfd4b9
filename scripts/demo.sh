#!/usr/bin/env bash
# The README's main job in one command (`make demo`): trains the recipe
# (configs/cifar10_keras.ini) on real CIFAR-10 for one epoch (the schedule
# sized for that epoch) with one MPI rank per core, prints the TEST line,
# classifies the sample photos and draws the learning curves.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(scripts/find-data.sh)
OUT=${OUT:-results/runs/demo-$(date +%Y%m%d-%H%M%S)}
PHOTOS=${PHOTOS:-../shared/data/inference_set}
echo "== training 1 epoch of the recipe on $DATA with ${NP:-$(scripts/cores.sh)} rank(s); output in $OUT"
scripts/mpirun.sh build/shiftvit train -c "${CONFIG:-configs/cifar10_keras.ini}" --set train.epochs=1 \
  --data-dir "$DATA" --out "$OUT"
if [ -d "$PHOTOS" ]; then
  echo "== classifying the photos in $PHOTOS"
  build/shiftvit predict --checkpoint "$OUT/last.h5" --grid "$OUT/predictions.png" "$PHOTOS" || true
fi
/usr/bin/python3 scripts/plot_metrics.py "$OUT"
echo "== done: checkpoints, metrics (CSV + metrics.h5), curves.png and predictions.png are in $OUT"
# One epoch is a smoke test, not a trained model: put its TEST line beside the
# committed converged runs (figures read from their logs, not typed here).
echo "== for context: one epoch of a 100-epoch schedule is far from converged. Trained to the end on a 2-core machine:"
for run in results/full-recipe:"make train" results/fast:"make train-fast"; do
  dir=${run%%:*} how=${run#*:}
  [ -f "$dir/train.log" ] || continue
  test_line=$(grep '^TEST ' "$dir/train.log" | tail -1)
  minutes=$(awk -F, 'NR > 1 { s += $9 } END { printf "%.0f", s / 60 }' "$dir/metrics_epochs.csv")
  epochs=$(awk -F, 'NR > 1 { n++ } END { print n }' "$dir/metrics_epochs.csv")
  printf '   %-16s %s after %s epochs, %s min (%s/README.md)\n' "$how" "$test_line" "$epochs" "$minutes" "$dir"
done
