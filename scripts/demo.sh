#!/usr/bin/env bash
# The README's main job in one command (`make demo`): trains the time-to-
# accuracy recipe (configs/cifar10_fast.ini) on real CIFAR-10 for an 8-epoch
# schedule (about 3 minutes on a 2-core machine with bf16 instructions), prints
# the TEST line, classifies the sample photos, draws the learning curves and
# puts its result beside the committed runs.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$(scripts/find-data.sh)
OUT=${OUT:-results/runs/demo-$(date +%Y%m%d-%H%M%S)}
PHOTOS=${PHOTOS:-../shared/data/inference_set}
CONFIG=${CONFIG:-configs/cifar10_fast.ini}
EPOCHS=${EPOCHS:-8}
# One rank with every core: at this model size 1 x 2 ran faster than 2 x 1
# (results/demo/README.md).
export NP=${NP:-1} THREADS=${THREADS:-$(scripts/cores.sh)}
echo "== training $CONFIG for $EPOCHS epochs on $DATA ($NP rank(s) x $THREADS thread(s)); output in $OUT"
# The log is kept beside the run's metrics (train.log), as in results/.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
scripts/mpirun.sh build/shiftvit train -c "$CONFIG" --set train.epochs="$EPOCHS" \
  --set train.val_every="$EPOCHS" --data-dir "$DATA" --out "$OUT" 2>&1 | tee "$log"
cp "$log" "$OUT/train.log"
if [ -d "$PHOTOS" ]; then
  echo "== classifying the photos in $PHOTOS"
  build/shiftvit predict --checkpoint "$OUT/last.h5" --grid "$OUT/predictions.png" "$PHOTOS" || true
fi
/usr/bin/python3 scripts/plot_metrics.py "$OUT"
echo "== done: checkpoints, metrics (CSV + metrics.h5), curves.png and predictions.png are in $OUT"
# Context: this run beside the committed ones (figures read from their logs,
# not typed here) and the source example's published figure.
row() { # folder, label: the TEST top-1 and the minutes summed in metrics_epochs.csv
  local dir=$1 label=$2
  [ -f "$dir/train.log" ] && [ -f "$dir/metrics_epochs.csv" ] || return 0
  local top1 minutes
  top1=$(grep '^TEST ' "$dir/train.log" | tail -1 | sed 's/.*top1=\([0-9.]*\).*/\1/')
  minutes=$(awk -F, 'NR > 1 { s += $9 } END { printf "%.1f", s / 60 }' "$dir/metrics_epochs.csv")
  printf '   %-44s test top-1 %s in %5s min of training\n' "$label" "$top1" "$minutes"
}
echo "== for context (test top-1, minutes of training + validation on 2 cores):"
row "$OUT" "this demo ($EPOCHS epochs of $(basename "$CONFIG"))"
row results/demo "committed demo run (results/demo)"
row results/fast "make train-fast (results/fast, seed 42)"
row results/best "make train-best (results/best, seed 42)"
row results/full-recipe "make train: the reference recipe (results/full-recipe)"
echo "   the source example (Keras ShiftViT) publishes 76.38%; the field reaches 92-94% in an hour of such compute"
