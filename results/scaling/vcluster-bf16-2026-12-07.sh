#!/bin/bash
# Issue 24, fp32 against bf16 gradient exchange on 2 emulated nodes (a core each, cpuset), one rate per call:
#   results/scaling/vcluster-bf16-2026-12-07.sh RATE OUT   -> appends JSON lines to OUT.log and rows to OUT.csv
# shiftvit bench on the recipe model, fp32 / bf16 exchange x ZeRO 0 / 1 x global batch 2 / 32.
set -u
cd "$(dirname "$0")/../.."
B=${B:-/var/tmp/sv/scaling-bin/shiftvit}  # a copy of build/shiftvit built at 1d9818e
RATE=$1; OUT=$2
VC=scripts/vcluster.sh
field() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<< "$1"; }
[ -f "$OUT.csv" ] || echo "rate,nodes,global_batch,allreduce_dtype,zero_stage,median_ms,min_ms,max_ms,forward_ms,backward_ms,allreduce_wait_ms,optimizer_ms,images_per_s" > "$OUT.csv"
echo "# $(date -Iseconds) rate $RATE, binary $B ($(git rev-parse --short HEAD))" >> "$OUT.log"
$VC up 2 --rate "$RATE" >> "$OUT.log" 2>&1 || { echo "vcluster up failed"; exit 1; }
for batch in 2 32; do
 for dt in fp32 bf16; do
  for z in 0 1; do
    j=$($VC mpirun -np 2 --host n1,n2 -x OMP_NUM_THREADS=1 -x BLIS_NUM_THREADS=1 $B bench --batch $batch --steps 8 --warmup 2 --json \
        --set train.allreduce_dtype=$dt --set train.zero_stage=$z 2>>"$OUT.log" | grep '^{')
    echo "bench $RATE batch=$batch dtype=$dt zero=$z: $j" | tee -a "$OUT.log"
    echo "$RATE,2,$batch,$dt,$z,$(field "$j" median_ms),$(field "$j" min_ms),$(field "$j" max_ms),$(field "$j" forward_ms),$(field "$j" backward_ms),$(field "$j" allreduce_wait_ms),$(field "$j" optimizer_ms),$(field "$j" images_per_s)" >> "$OUT.csv"
  done
 done
done
# the fp32 all-reduce alone, for the alpha-beta check on this day
j=$($VC mpirun -np 2 --host n1,n2 -x OMP_NUM_THREADS=1 $B bench --allreduce --steps 10 --warmup 2 --json 2>>"$OUT.log" | grep '^{')
echo "allreduce $RATE fp32 44.6MiB: $j" | tee -a "$OUT.log"
$VC down >> "$OUT.log" 2>&1
