#!/usr/bin/env bash
# Strong and weak scaling sweep of the training step over ranks x threads, plus the
# gradient all-reduce alone per world size, each with the shared-memory transport and
# with TCP only. Writes one CSV (results/scaling/<host>-<date>.csv) and, unless
# PLOT=0, redraws results/scaling/scaling.png with scripts/plot_scaling.py.
#
#   scripts/scaling.sh                          # this machine: P x T in 1x1 1x2 2x1
#   POINTS="1x1 1x2 2x1 2x2" STEPS=5 scripts/scaling.sh
#   sbatch jobs/scaling.sbatch                  # across nodes (LAUNCHER=srun)
#
# Every point runs `shiftvit bench --json` (synthetic images, full model, AdamW) with:
#   strong scaling: global batch STRONG_BATCH (default 256) split over the P ranks
#   weak scaling:   WEAK_BATCH images per rank (default 128), global batch P x WEAK_BATCH
# and every world size P > 1 runs `shiftvit bench --allreduce --json` (the 45 MiB
# gradient buffer in 4 MiB buckets, alone).
#
# Environment:
#   POINTS        "PxT" list (default "1x1 1x2 2x1"); "PxT:N" = on N nodes (srun only)
#   TRANSPORTS    subset of "shm tcp default" (default "shm tcp"):
#                   shm      --mca pml ob1 --mca btl self,vader  (one node only)
#                   tcp      --mca pml ob1 --mca btl self,tcp    (what crosses nodes)
#                   default  Open MPI's own choice (UCX/OFI on a cluster fabric)
#                 P = 1 points do not communicate; they run once, transport "none".
#   STEPS, WARMUP timed and untimed steps per point (default 3 and 1)
#   STRONG_BATCH, WEAK_BATCH, MODES ("strong weak")
#   AR_STEPS      timed all-reduce calls (default 5)
#   CONFIG        model config (default configs/cifar10_keras.ini, the recipe's model)
#   LAUNCHER      mpirun (default; the binding of jobs/local.sh: --map-by slot:PE=T
#                 --bind-to core) or srun (inside an allocation: srun --mpi=pmix)
#   SHIFTVIT      binary (default build/shiftvit); OUT (CSV path); PLOT=0: no plot
#   LABEL         free text stored in every row (e.g. "noisy: shared machine")
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SHIFTVIT=${SHIFTVIT:-build/shiftvit}
POINTS=${POINTS:-1x1 1x2 2x1}
TRANSPORTS=${TRANSPORTS:-shm tcp}
MODES=${MODES:-strong weak}
STEPS=${STEPS:-3}
WARMUP=${WARMUP:-1}
AR_STEPS=${AR_STEPS:-5}
STRONG_BATCH=${STRONG_BATCH:-256}
WEAK_BATCH=${WEAK_BATCH:-128}
CONFIG=${CONFIG:-configs/cifar10_keras.ini}
LAUNCHER=${LAUNCHER:-mpirun}
LABEL=${LABEL:-}
HOST=$(hostname -s)
DATE=$(date +%Y-%m-%d)
OUT=${OUT:-results/scaling/$HOST-$DATE.csv}
PY=/usr/bin/python3
[ -x $PY ] || PY=python3

[ -x "$SHIFTVIT" ] || { echo "scaling.sh: $SHIFTVIT not found; run make" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
LOG=${OUT%.csv}.log
: > "$LOG"

CORES=$(scripts/cores.sh)
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
say() { echo "scaling.sh: $*" | tee -a "$LOG" >&2; }
say "host $HOST, $CORES cores ($CPU), load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "points: $POINTS; transports: $TRANSPORTS; modes: $MODES; $STEPS steps after $WARMUP warm-up"

transport_env() { # TRANSPORT -> env assignments for Open MPI
  case $1 in
    shm) echo "OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader" ;;
    tcp) echo "OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,tcp" ;;
    default|none) echo "" ;;
    *) echo "scaling.sh: unknown transport '$1'" >&2; exit 2 ;;
  esac
}

# launch P T NODES TRANSPORT shiftvit-args... : prints rank 0's output
launch() {
  local P=$1 T=$2 N=$3 TR=$4; shift 4
  local envs; envs=$(transport_env "$TR")
  local cmd
  if [ "$LAUNCHER" = srun ]; then
    cmd=(srun --mpi=pmix -n "$P" -c "$T")
    [ -n "$N" ] && cmd+=(-N "$N")
  else
    cmd=(mpirun -np "$P")
    if [ $((P * T)) -le "$CORES" ]; then cmd+=(--map-by "slot:PE=$T" --bind-to core)
    else cmd+=(--oversubscribe --bind-to none); fi
    [ "$(id -u)" -eq 0 ] && cmd+=(--allow-run-as-root)
    cmd+=(-x OMP_NUM_THREADS -x BLIS_NUM_THREADS)
  fi
  echo "+ $envs OMP_NUM_THREADS=$T ${cmd[*]} $SHIFTVIT $*" >> "$LOG"
  # shellcheck disable=SC2086
  env $envs OMP_NUM_THREADS="$T" BLIS_NUM_THREADS="$T" "${cmd[@]}" "$SHIFTVIT" "$@" 2>>"$LOG" | tee -a "$LOG"
}

json_line() { awk '/^{/ && !f { print; f = 1 }'; }  # reads all input: no SIGPIPE upstream

TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
# Raw results, one JSON object per line, with the sweep's labels added.
for mode in $MODES; do
  for pt in $POINTS; do
    PT=${pt%%:*}; N=""; [[ $pt == *:* ]] && N=${pt#*:}
    P=${PT%x*}; T=${PT#*x}
    if [ "$mode" = strong ]; then B=$STRONG_BATCH; else B=$((WEAK_BATCH * P)); fi
    trs=$TRANSPORTS; [ "$P" -eq 1 ] && trs=none
    for tr in $trs; do
      say "$mode ${P}x${T}${N:+ on $N nodes}, transport $tr, global batch $B"
      j=$(launch "$P" "$T" "$N" "$tr" bench -c "$CONFIG" --json --batch "$B" --steps "$STEPS" --warmup "$WARMUP" | json_line)
      if [ -z "$j" ]; then say "  no result (see $LOG)"; continue; fi
      echo "{\"kind\":\"$mode\",\"transport\":\"$tr\",\"nodes\":\"${N:-1}\",\"bench\":$j}" >> "$TMP"
    done
  done
done
# The all-reduce alone, per world size P > 1 (threads do not matter: 1 each).
declare -A AR_NODES=()
for pt in $POINTS; do
  PT=${pt%%:*}; P=${PT%x*}
  [ "$P" -gt 1 ] || continue
  [[ $pt == *:* ]] && AR_NODES[$P]=${pt#*:} || AR_NODES[$P]=${AR_NODES[$P]:-}
done
for P in $(printf '%s\n' "${!AR_NODES[@]}" | sort -n); do
  N=${AR_NODES[$P]}
  for tr in $TRANSPORTS; do
    say "all-reduce alone, $P ranks${N:+ on $N nodes}, transport $tr"
    j=$(launch "$P" 1 "$N" "$tr" bench -c "$CONFIG" --allreduce --json --steps "$AR_STEPS" --warmup 1 | json_line)
    [ -n "$j" ] || { say "  no result (see $LOG)"; continue; }
    echo "{\"kind\":\"allreduce\",\"transport\":\"$tr\",\"nodes\":\"${N:-1}\",\"bench\":$j}" >> "$TMP"
  done
done

# CSV: efficiency = images/s per core relative to the 1x1 point of the same mode.
HOST=$HOST DATE=$DATE LABEL=$LABEL STEPS=$STEPS WARMUP=$WARMUP AR_STEPS=$AR_STEPS LOAD="$(cut -d' ' -f1-3 /proc/loadavg)" \
$PY - "$TMP" "$OUT" <<'EOF'
import csv, json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
base = {}
for r in rows:
    b = r["bench"]
    if r["kind"] != "allreduce" and b["world_size"] == 1 and b["threads"] == 1:
        base[r["kind"]] = b["images_per_s"]
cols = ["host", "date", "mode", "transport", "nodes", "ranks", "threads", "cores", "global_batch",
        "per_rank_batch", "images_per_s", "step_ms", "compute_ms", "allreduce_ms", "efficiency",
        "forward_ms", "backward_ms", "optimizer_ms", "step_min_ms", "step_max_ms",
        "sgemm_gflops_per_rank", "allreduce_bytes", "busbw_GBps", "steps", "warmup", "label"]
with open(sys.argv[2], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols)
    w.writeheader()
    for r in rows:
        b = r["bench"]
        d = dict(host=os.environ["HOST"], date=os.environ["DATE"], mode=r["kind"],
                 transport=r["transport"], nodes=r["nodes"], ranks=b["world_size"],
                 label=os.environ.get("LABEL", ""))
        if r["kind"] == "allreduce":
            d.update(threads=1, cores=b["world_size"], allreduce_ms=b["median_ms"],
                     step_ms=b["median_ms"], step_min_ms=b["min_ms"], step_max_ms=b["max_ms"],
                     allreduce_bytes=int(b["bytes"]), busbw_GBps=b["busbw_GBps"],
                     steps=os.environ.get("AR_STEPS", ""), warmup=1)
        else:
            P, T = b["world_size"], b["threads"]
            compute = b["forward_ms"] + b["backward_ms"] + b["optimizer_ms"]
            eff = ""
            if r["kind"] in base:
                eff = "%.3f" % (b["images_per_s"] / (P * T * base[r["kind"]]))
            d.update(threads=T, cores=P * T, global_batch=b["global_batch"],
                     per_rank_batch=round(b["global_batch"] / P, 1),
                     images_per_s=b["images_per_s"], step_ms=b["median_ms"],
                     compute_ms=round(compute, 3), allreduce_ms=b["allreduce_wait_ms"],
                     efficiency=eff, forward_ms=b["forward_ms"], backward_ms=b["backward_ms"],
                     optimizer_ms=b["optimizer_ms"], step_min_ms=b["min_ms"], step_max_ms=b["max_ms"],
                     sgemm_gflops_per_rank=b["sgemm_peak_gflops_per_rank"],
                     steps=b["steps"], warmup=os.environ["WARMUP"])
        w.writerow(d)
print("wrote %s (%d rows); load average at the end %s" % (sys.argv[2], len(rows), os.environ["LOAD"]))
EOF
say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
column -s, -t < <(cut -d, -f3-15 "$OUT") | tee -a "$LOG"
if [ "${PLOT:-1}" != 0 ]; then
  $PY scripts/plot_scaling.py "$OUT" -o "$(dirname "$OUT")/scaling.png" | tee -a "$LOG"
fi
