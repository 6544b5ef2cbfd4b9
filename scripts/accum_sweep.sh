#!/usr/bin/env bash
# Gradient accumulation measurements (issue 24, results/scaling/README.md):
#   1. one rank, a fixed global batch, A = 1, 2, 4, 8 micro-steps: median step time
#      (from metrics_steps.csv's images/s, the first 2 steps left out) and peak RSS
#      (/usr/bin/time's maximum resident set size, the whole process);
#   2. the per-step losses of (P, A) = (1, 4), (2, 2) and (4, 1) on one plot.
# Runs under the timing lock; writes PREFIX.csv, PREFIX-curves.csv, PREFIX-curves.png.
#
#   scripts/accum_sweep.sh results/scaling/accum-2026-12-07 [CONFIG] [STEPS]
set -euo pipefail
PREFIX=$1 CONFIG=${2:-configs/cifar10_fast.ini} STEPS=${3:-30}
BIN=${SHIFTVIT:-build/shiftvit}
WORK=$(mktemp -d /tmp/accum_sweep.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
run() { # NAME NP A [extra args]: a short training run in $WORK/NAME
  local name=$1 np=$2 a=$3; shift 3
  OMP_NUM_THREADS=$((2 / np > 0 ? 2 / np : 1)) /usr/bin/time -f '%M' -o "$WORK/$name.rss" \
    mpirun --oversubscribe --allow-run-as-root --bind-to none -np "$np" -x OMP_NUM_THREADS \
    "$BIN" train -c "$CONFIG" --out "$WORK/$name" --set train.max_steps="$STEPS" \
    --set train.accumulation_steps="$a" --set train.log_every=1000 \
    --set data.val_size=1000 --set data.test_size=1000 "$@" > "$WORK/$name.log" 2>&1
}
echo "cpu,$(lscpu | sed -n 's/^Model name: *//p' | head -1)" > "$PREFIX.csv"
echo "A,global_batch,micro_batch,step_ms_median,peak_rss_mib" >> "$PREFIX.csv"
for A in 1 2 4 8; do
  run "a$A" 1 "$A"
  B=$(sed -n 's/^batch_size *= *//p' "$WORK/a$A/config.ini")
  ms=$(tail -n +4 "$WORK/a$A/metrics_steps.csv" | awk -F, -v b="$B" '{ print 1000 * b / $NF }' | sort -g |
       awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
  echo "$A,$B,$(( (B + A - 1) / A )),$ms,$(awk '{ printf "%.0f", $1 / 1024 }' "$WORK/a$A.rss")" >> "$PREFIX.csv"
done
echo "P,A,step,loss" > "$PREFIX-curves.csv"
for pa in "1 4" "2 2" "4 1"; do
  set -- $pa
  run "p$1a$2" "$1" "$2"
  tail -n +2 "$WORK/p$1a$2/metrics_steps.csv" | awk -F, -v p="$1" -v a="$2" '{ print p "," a "," $1 "," $4 }' \
    >> "$PREFIX-curves.csv"
done
/usr/bin/python3 - "$PREFIX-curves.csv" "$PREFIX-curves.png" <<'PY'
import csv, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
rows = list(csv.DictReader(open(sys.argv[1])))
fig, ax = plt.subplots(figsize=(7, 4))
for (p, a), style in zip([("1", "4"), ("2", "2"), ("4", "1")], ["-", "--", ":"]):
    r = [x for x in rows if x["P"] == p and x["A"] == a]
    ax.plot([int(x["step"]) for x in r], [float(x["loss"]) for x in r], style, label=f"P = {p}, A = {a}")
ax.set_xlabel("optimizer step")
ax.set_ylabel("training loss (global batch)")
ax.set_title("Gradient accumulation: P ranks x A micro-steps, same global batch")
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
PY
cat "$PREFIX.csv"
