#!/usr/bin/env bash
# `make test-slurm`: jobs/train.sbatch on a real single-node SLURM cluster started on
# this machine from Debian's packages (tests/slurm/cluster.sh), with real Open MPI and
# the real CIFAR-10 files. No mocks. Ends with one line "N passed, M failed"; exit
# status 0 only when nothing failed. Takes 1-3 minutes on 2 cores.
#
#   tests/slurm/run.sh            # as root, from anywhere in a built checkout
#   KEEP=1 tests/slurm/run.sh     # keep the temporary folder (logs, runs, cluster state)
#
# Environment: SHIFTVIT (binary, default build/shiftvit), CIFAR10_DIR (data folder;
# default: the trainer's own search, data/cifar-10-batches-bin then
# ../shared/data/cifar-10-batches-bin), SLURM_TEST_DIR (parent of the temporary folder).
#
# What it checks:
#   1. the cluster starts (munged, slurmctld, slurmd; generated slurm.conf)
#   2. plain `srun` without PMI (MpiDefault=none): the ranks fail, nothing written
#   3. ranks that each come up alone under srun (a PMI mismatch): shiftvit stops
#      with its "PMI mismatch" message before writing anything
#   4. srun --mpi=pmix, 1 rank x 2 threads: placement report, no warning
#   5. sbatch jobs/train.sbatch (1 node x 2 ranks x 1 thread) with configs/tiny.ini:
#      exit 0, run dir named after the job id, checkpoints, metrics, TEST line
#   6. preemption: an uninterrupted run, then the same run hit by the warning signal
#      (SIGUSR1 to the batch shell, then more signals while it checkpoints) in its
#      first epoch: it checkpoints, requeues itself, resumes and finishes with the same
#      step count and metrics as the uninterrupted run
#   6b. a two-task job array: a warning signal to task 0 requeues task 0 only, task 1
#      runs on undisturbed
#   7. a plain `scancel` cancels for good (no requeue)
#   8. jobs/scaling.sbatch runs scripts/scaling.sh with srun (tiny model): CSV + plot
#   9. jobs/local.sh (mpirun, no SLURM) binds 1x2 and 2x1 as it says
#  10. a launcher's loss-of-node exit (a stand-in trainer): 141 (SIGPIPE) after a new
#      checkpoint is requeued and resumes; 205 (Open MPI's daemon check) before any
#      checkpoint is requeued once, and not again after a second such attempt
# and 5b: the same job launched with LAUNCHER=mpirun inside the allocation.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
export PATH="$PATH:/usr/sbin"

. "$ROOT/tests/lib/harness.sh"

WORK=$(mktemp -d "${SLURM_TEST_DIR:-${TMPDIR:-/tmp}}/shiftvit-slurm.XXXXXX")
CLUSTER=$WORK/cluster

teardown() { tests/slurm/cluster.sh stop "$CLUSTER"; }
harness_start

# ---------------------------------------------------------------- prerequisites
harness_need_binary_and_root "the SLURM daemons run as root"

# The real data: the trainer's search order, checked here so a missing download
# reads as such rather than as a failed job.
if [ -z "${CIFAR10_DIR:-}" ]; then
  for d in data/cifar-10-batches-bin ../shared/data/cifar-10-batches-bin; do
    [ -f "$d/data_batch_1.bin" ] && { CIFAR10_DIR=$(cd "$d" && pwd); break; }
  done
fi
data_ok() {
  local f
  for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
    [ "$(stat -c %s "${CIFAR10_DIR:-/nonexistent}/$f.bin" 2>/dev/null)" = 30730000 ] || return 1
  done
}
if ! data_ok && [ -z "${CIFAR10_DIR:-}" ] && [ -x scripts/get-cifar10.sh ]; then
  echo "slurm tests: no CIFAR-10 data found; trying scripts/get-cifar10.sh (downloads 163 MB into data/)"
  scripts/get-cifar10.sh && CIFAR10_DIR=$ROOT/data/cifar-10-batches-bin
fi
if ! data_ok; then
  fail "prerequisites" "no complete CIFAR-10 binary set (6 files of 30,730,000 bytes) in ${CIFAR10_DIR:-data/ or ../shared/data/}; run scripts/get-cifar10.sh or set CIFAR10_DIR"
  exit 1
fi
export CIFAR10_DIR
echo "slurm tests: $SHIFTVIT, data $CIFAR10_DIR, work folder $WORK"

# ---------------------------------------------------------------- helpers
# Submits jobs/train.sbatch with `sbatch --wait` in the background.
# Sets JOB (the id) and SB_PID (the waiting sbatch). Extra arguments go to sbatch;
# the environment (CONFIG, TRAIN_ARGS, RUN_DIR, ...) is exported to the job.
submit() {
  local out=$1; shift
  local idf=$WORK/sbatch.$RANDOM
  sbatch --wait --parsable --output="$out" "$@" jobs/train.sbatch > "$idf" 2>&1 &
  SB_PID=$!
  JOB=""
  local end=$((SECONDS + 30))
  while [ -z "$JOB" ] && [ $SECONDS -lt $end ]; do
    JOB=$(grep -o '^[0-9]\+' "$idf" 2>/dev/null | head -1)
    [ -n "$JOB" ] || sleep 0.1
  done
  [ -n "$JOB" ] || { cat "$idf"; return 1; }
}
# Waits (at most $1 s) for job $JOB to reach a final state; sets SB_RC to its exit
# code. With $2 = sbatch, waits for `sbatch --wait` itself and takes its exit status
# instead; otherwise stops the waiting sbatch, whose polling interval grows to tens
# of seconds, once SLURM says the job is over.
wait_job() {
  local end=$((SECONDS + $1)) st=""
  while [ $SECONDS -lt $end ]; do
    if [ "${2:-}" = sbatch ]; then
      kill -0 "$SB_PID" 2>/dev/null || break
    else
      st=$(job_field "$JOB" JobState)
      case $st in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED) break ;; esac
    fi
    sleep 0.5
  done
  if [ $SECONDS -ge $end ]; then
    echo "      job $JOB still not finished after $1 s; cancelling it"
    scancel "$JOB" 2>/dev/null
    [ -n "$SB_PID" ] && { kill "$SB_PID" 2>/dev/null; wait "$SB_PID" 2>/dev/null; }
    SB_RC=124
    return 1
  fi
  # ... and for its processes to be gone (COMPLETING), so its log is complete.
  local cg=$((SECONDS + 30))
  while [ -n "$(squeue -h -j "$JOB" 2>/dev/null)" ] && [ $SECONDS -lt $cg ]; do sleep 0.2; done
  if [ "${2:-}" = sbatch ]; then
    wait "$SB_PID"; SB_RC=$?
  else
    [ -n "$SB_PID" ] && { kill "$SB_PID" 2>/dev/null; wait "$SB_PID" 2>/dev/null; }
    SB_RC=$(job_field "$JOB" ExitCode | cut -d: -f1)
  fi
}
job_field() { scontrol show job "$1" 2>/dev/null | grep -o "\b$2=[^ ]*" | head -1 | cut -d= -f2; }
csv_rows() { [ -f "$1" ] && echo $(( $(wc -l < "$1") - 1 )) || echo 0; }
last_step() { tail -1 "$1" 2>/dev/null | cut -d, -f1; }
# "STEP EPOCH" of a checkpoint by `shiftvit info`, else "unreadable: <its error>".
ckpt_step() {
  local out
  if out=$("$SHIFTVIT" info "$1" 2>&1); then
    sed -n 's/^Step: \([0-9]*\), epoch: \([0-9]*\).*/\1 \2/p' <<< "$out"
  else
    echo "unreadable: $(head -1 <<< "$out" | cut -c1-160)"
  fi
}
has() { grep -q -- "$2" "$1"; }
all_nonempty() { local d=$1 f; shift; for f in "$@"; do [ -s "$d/$f" ] || return 1; done; }
hasnt() { ! grep -q -- "$2" "$1"; }
# Steps 1..N each exactly once, in order.
steps_contiguous() {
  local n; n=$(csv_rows "$1")
  [ "$n" -gt 0 ] && [ "$(tail -n +2 "$1" | cut -d, -f1 | tr '\n' ' ')" = "$(seq -s ' ' 1 "$n") " ]
}

# ---------------------------------------------------------------- 1. cluster
if tests/slurm/cluster.sh start "$CLUSTER" > "$WORK/cluster.log" 2>&1; then
  pass "cluster starts ($(tail -1 "$WORK/cluster.log" | sed 's/.*node: //; s/ NodeAddr.*CPUs=/, CPUs=/'))"
else
  cat "$WORK/cluster.log"
  fail "cluster starts"
  exit 1
fi
# shellcheck disable=SC1091
source "$CLUSTER/env"

TINY=(-c configs/tiny.ini)

# ---------------------------------------------------------------- 2. srun without PMI
out=$WORK/nopmi.log
timeout 120 srun --mpi=none -n 2 "$SHIFTVIT" train "${TINY[@]}" --out "$WORK/nopmi" > "$out" 2>&1
rc=$?
check "plain srun without PMI (MpiDefault=none) fails (exit $rc) and writes nothing" \
  test "$rc" -ne 0 -a ! -e "$WORK/nopmi"

# ---------------------------------------------------------------- 3. PMI mismatch
# Ranks that each initialise MPI alone while SLURM says 2 tasks: what a launcher and
# MPI library without a common PMI give. Emulated by hiding the job's SLURM variables
# from Open MPI (it then starts as a singleton), keeping SLURM_PROCID and
# SLURM_STEP_NUM_TASKS, which is what shiftvit compares against the MPI world size.
out=$WORK/mismatch.log
timeout 120 srun --mpi=none -n 2 bash -c '
  for v in $(compgen -e | grep "^SLURM"); do
    case $v in SLURM_PROCID|SLURM_STEP_NUM_TASKS) ;; *) unset "$v" ;; esac
  done
  exec "$0" "$@"' "$SHIFTVIT" train "${TINY[@]}" --out "$WORK/mismatch" > "$out" 2>&1
rc=$?
check "singleton ranks under srun: 'PMI mismatch' error, exit $rc, nothing written" \
  eval "[ $rc -ne 0 ] && [ ! -e '$WORK/mismatch' ] && grep -q 'PMI mismatch' '$out'"

# ---------------------------------------------------------------- 4. placement
out=$WORK/placement.log
OMP_NUM_THREADS=2 BLIS_NUM_THREADS=2 timeout 120 srun --mpi=pmix -n 1 -c 2 \
  "$SHIFTVIT" bench "${TINY[@]}" --steps 1 --warmup 0 > "$out" 2>&1
rc=$?
check "srun --mpi=pmix -n 1 -c 2: 1 rank x 2 threads on 2 CPUs, no warning" \
  eval "[ $rc -eq 0 ] && grep -q 'World size 1, 1 rank(s) per node, 2 thread(s) per rank' '$out' &&
        grep -q 'rank 0 on .*: 2 threads, CPUs .*(2)' '$out' && ! grep -q WARNING '$out'"
[ $rc -eq 0 ] || tail -5 "$out"

# ---------------------------------------------------------------- 5. sbatch, tiny run
echo "--- sbatch jobs/train.sbatch, configs/tiny.ini, 1 node x 2 ranks x 1 thread"
log=$WORK/tiny.out
if CONFIG=configs/tiny.ini TRAIN_ARGS="" RUNS_DIR=$WORK/runs RUN_DIR="" submit "$log"; then
  wait_job 300 sbatch
  rd=$WORK/runs/slurm-$JOB
  check "job $JOB exits 0 (sbatch --wait status $SB_RC, state $(job_field "$JOB" JobState))" test "$SB_RC" -eq 0
  check "run directory named after the job id: runs/slurm-$JOB" test -d "$rd"
  check "OMP/BLIS threads from SLURM_CPUS_PER_TASK; 2 ranks on 1 node" \
    has "$log" "World size 2, 2 rank(s) per node, 1 thread(s) per rank"
  check "each rank's CPU affinity reported" eval "grep -q 'rank 0 on ' '$log' && grep -q 'rank 1 on ' '$log'"
  check "TEST line printed" has "$log" "^TEST loss=[0-9.]* top1=[0-9.]* top5=[0-9.]*"
  check "checkpoints epoch_0001.h5 epoch_0002.h5 best.h5 last.h5, config.ini" \
    all_nonempty "$rd" epoch_0001.h5 epoch_0002.h5 best.h5 last.h5 config.ini
  s=$(ckpt_step "$rd/last.h5")
  check "last.h5 is at step 16, epoch 2 (shiftvit info: '$s')" test "$s" = "16 2"
  check "metrics_steps.csv: steps 1..16 ($(csv_rows "$rd/metrics_steps.csv") rows)" \
    eval "steps_contiguous '$rd/metrics_steps.csv' && [ $(csv_rows "$rd/metrics_steps.csv") -eq 16 ]"
  check "metrics_epochs.csv: 2 epochs" test "$(csv_rows "$rd/metrics_epochs.csv")" -eq 2
  [ "$SB_RC" -eq 0 ] || tail -20 "$log"
else
  fail "sbatch submit"
fi

# ---------------------------------------------------------------- 5b. mpirun inside the job
echo "--- LAUNCHER=mpirun sbatch jobs/train.sbatch (the documented alternative to srun)"
log=$WORK/mpirun.out
if LAUNCHER=mpirun CONFIG=configs/tiny.ini TRAIN_ARGS="--set train.epochs=1" RUN_DIR=$WORK/mpirun submit "$log"; then
  wait_job 300
  check "mpirun in the allocation: exit $SB_RC, 2 ranks bound to 1 core each, 8 steps" \
    eval "[ $SB_RC -eq 0 ] && grep -q 'World size 2, 2 rank(s) per node, 1 thread(s) per rank' '$log' &&
          [ \$(grep -c 'rank [01] on .*: 1 thread, CPUs [0-9]* (1)' '$log') -eq 2 ] &&
          [ '$(last_step "$WORK/mpirun/metrics_steps.csv")' = 8 ]"
  [ "$SB_RC" -eq 0 ] || tail -20 "$log"
else
  fail "sbatch submit (mpirun)"
fi

# ---------------------------------------------------------------- 6. preemption + requeue
# Long enough to be hit mid-epoch: 4096 images = 128 steps per epoch, 3 epochs.
LONG="--set data.train_size=4096 --set train.epochs=3 --set train.log_every=32"
TOTAL=384
echo "--- uninterrupted reference run ($TOTAL steps)"
ref=$WORK/ref
if CONFIG=configs/tiny.ini TRAIN_ARGS=$LONG RUN_DIR=$ref submit "$WORK/ref.out"; then
  wait_job 300
  check "reference run: exit 0, $TOTAL steps (last step $(last_step "$ref/metrics_steps.csv"))" \
    eval "[ $SB_RC -eq 0 ] && [ '$(last_step "$ref/metrics_steps.csv")' = $TOTAL ]"
else
  fail "sbatch submit (reference)"
fi

echo "--- the same run, warning signal in its first epoch"
int=$WORK/int
log=$WORK/int.out
if CONFIG=configs/tiny.ini TRAIN_ARGS=$LONG RUN_DIR=$int submit "$log"; then
  # Wait for the first steps, then SIGUSR1 to the batch shell (what --signal=B:USR1@120
  # does before the time limit), then a burst of further signals straight to the ranks
  # and to the batch shell while the trainer stops and writes its checkpoint.
  end=$((SECONDS + 120))
  until [ "$(csv_rows "$int/metrics_steps.csv")" -ge 8 ] || [ $SECONDS -ge $end ] ||
        ! kill -0 "$SB_PID" 2>/dev/null; do sleep 0.05; done
  at=$(csv_rows "$int/metrics_steps.csv")
  scancel --signal=USR1 --batch "$JOB"
  # The burst lasts at most 2 s (timeout kills its whole process group): scancel
  # retries on a job in transition, and a late signal must not reach the requeued
  # instance, which cannot start before cred_expire (5 s) has passed.
  timeout 2 bash -c '
    for i in 1 2 3 4 5 6; do
      sleep 0.05
      scancel --signal=USR1 "$0" 2>/dev/null        # the job steps: the ranks themselves
      scancel --signal=TERM --batch "$0" 2>/dev/null
    done' "$JOB"
  note "signalled job $JOB after $at steps"
  wait_job 300
  stopped=$(sed -n 's/.*Stopped by signal at step \([0-9]*\).*/\1/p' "$log" | head -1)
  check "trainer stopped at a step boundary in the first epoch (step ${stopped:-none} < 128) and exited 0" \
    eval "[ -n '$stopped' ] && [ '$stopped' -lt 128 ] && grep -q 'trainer exited with status 0' '$log'"
  check "job requeued itself (scontrol requeue)" has "$log" "requeueing job $JOB"
  check "requeued job resumed from last.h5" has "$log" "(restart 1): resuming from $int/last.h5"
  check "final state COMPLETED, exit 0, Restarts=1 (state $(job_field "$JOB" JobState), Restarts=$(job_field "$JOB" Restarts), sbatch status $SB_RC)" \
    eval "[ '$(job_field "$JOB" JobState)' = COMPLETED ] && [ '$(job_field "$JOB" Restarts)' = 1 ] && [ $SB_RC -eq 0 ]"
  check "same final step count as the uninterrupted run ($(last_step "$int/metrics_steps.csv") vs $(last_step "$ref/metrics_steps.csv"))" \
    eval "[ -n '$(last_step "$ref/metrics_steps.csv")' ] && [ '$(last_step "$int/metrics_steps.csv")' = '$(last_step "$ref/metrics_steps.csv")' ]"
  check "metrics_steps.csv holds steps 1..$TOTAL once each after the resume" \
    eval "steps_contiguous '$int/metrics_steps.csv' && [ $(csv_rows "$int/metrics_steps.csv") -eq $TOTAL ]"
  s=$(ckpt_step "$int/last.h5")
  check "last.h5 readable after the signal burst, at step $TOTAL epoch 3 ('$s')" test "$s" = "$TOTAL 3"
  check "TEST line printed after the restart" has "$log" "^TEST loss="
  # Same losses and accuracies as the uninterrupted run (the seconds column aside).
  if cmp -s <(cut -d, -f1-8 "$ref/metrics_epochs.csv" 2>/dev/null) <(cut -d, -f1-8 "$int/metrics_epochs.csv" 2>/dev/null) &&
     [ -s "$ref/metrics_epochs.csv" ]; then
    pass "per-epoch metrics identical to the uninterrupted run"
  else
    fail "per-epoch metrics identical to the uninterrupted run"
    diff <(cut -d, -f1-8 "$ref/metrics_epochs.csv") <(cut -d, -f1-8 "$int/metrics_epochs.csv") | head -8
  fi
  if [ "$SB_RC" -ne 0 ] || ! has "$log" "^TEST loss="; then
    grep -v '^ *[0-9]*/[0-9]* \[' "$log" | tail -25
  fi
else
  fail "sbatch submit (interrupted run)"
fi

# ---------------------------------------------------------------- 6b. job array
# A warning signal to one task of a two-task array requeues that task only; the
# other one runs on undisturbed (before the fix, task 0's `scontrol requeue
# $SLURM_JOB_ID` requeued the whole array and killed task 1 without a checkpoint).
echo "--- job array of 2 tasks, warning signal to task 0 only"
log=$WORK/array-%A_%a.out
if CONFIG=configs/tiny.ini TRAIN_ARGS=$LONG RUNS_DIR=$WORK/array \
     submit "$log" --array=0-1 --ntasks-per-node=1 --cpus-per-task=1; then
  A=$JOB
  end=$((SECONDS + 120))
  until { [ "$(csv_rows "$WORK/array/slurm-${A}_0/metrics_steps.csv")" -ge 8 ] &&
          [ "$(csv_rows "$WORK/array/slurm-${A}_1/metrics_steps.csv")" -ge 8 ]; } ||
        [ $SECONDS -ge $end ] || ! kill -0 "$SB_PID" 2>/dev/null; do sleep 0.05; done
  scancel --signal=USR1 --batch "${A}_0"
  note "signalled task ${A}_0 after $(csv_rows "$WORK/array/slurm-${A}_0/metrics_steps.csv") steps"
  wait_job 300 sbatch
  l0=$WORK/array-${A}_0.out l1=$WORK/array-${A}_1.out
  check "task 0 requeued itself only (scontrol requeue ${A}_0)" has "$l0" "requeueing job ${A}_0"
  check "task 0: COMPLETED after 1 restart (state $(job_field "${A}_0" JobState), Restarts=$(job_field "${A}_0" Restarts))" \
    eval "[ '$(job_field "${A}_0" JobState)' = COMPLETED ] && [ '$(job_field "${A}_0" Restarts)' = 1 ]"
  check "task 1: COMPLETED, never stopped or requeued (state $(job_field "${A}_1" JobState), Restarts=$(job_field "${A}_1" Restarts))" \
    eval "[ '$(job_field "${A}_1" JobState)' = COMPLETED ] && [ '$(job_field "${A}_1" Restarts)' = 0 ] && ! grep -q 'Stopped by signal' '$l1'"
  check "both tasks trained all $TOTAL steps once each and printed TEST" \
    eval "steps_contiguous '$WORK/array/slurm-${A}_0/metrics_steps.csv' && steps_contiguous '$WORK/array/slurm-${A}_1/metrics_steps.csv' && [ $(csv_rows "$WORK/array/slurm-${A}_0/metrics_steps.csv") -eq $TOTAL ] && [ $(csv_rows "$WORK/array/slurm-${A}_1/metrics_steps.csv") -eq $TOTAL ] && has '$l0' '^TEST loss=' && has '$l1' '^TEST loss='"
else
  fail "sbatch submit (array)"
fi

# ---------------------------------------------------------------- 7. plain scancel
echo "--- plain scancel: cancelled for good"
log=$WORK/cancel.out
if CONFIG=configs/tiny.ini TRAIN_ARGS=$LONG RUN_DIR=$WORK/cancel submit "$log"; then
  end=$((SECONDS + 120))
  until [ "$(csv_rows "$WORK/cancel/metrics_steps.csv")" -ge 8 ] || [ $SECONDS -ge $end ] ||
        ! kill -0 "$SB_PID" 2>/dev/null; do sleep 0.05; done
  scancel "$JOB"
  wait_job 120
  st=$(job_field "$JOB" JobState); rs=$(job_field "$JOB" Restarts)
  check "scancel $JOB: state CANCELLED, Restarts=0, not requeued (state $st, Restarts=$rs)" \
    eval "[ '$st' = CANCELLED ] && [ '$rs' = 0 ] && ! grep -q 'requeueing job' '$log'"
else
  fail "sbatch submit (scancel)"
fi

# ---------------------------------------------------------------- 8. scaling sweep job
echo "--- sbatch jobs/scaling.sbatch (tiny model, 1 step per point)"
log=$WORK/scaling.out
sc=$WORK/scaling/sweep.csv
JOB=$(CONFIG=configs/tiny.ini STEPS=1 WARMUP=0 AR_STEPS=2 STRONG_BATCH=32 WEAK_BATCH=16 OUT=$sc \
      sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --output="$log" jobs/scaling.sbatch 2>&1)
if [[ $JOB =~ ^[0-9]+$ ]]; then
  SB_PID=""  # no sbatch --wait here: wait_job only polls SLURM
  wait_job 300 || true
  rows=$(grep -c '^[^,]*,[^,]*,\(strong\|weak\|allreduce\),' "$sc" 2>/dev/null || echo 0)
  check "scaling job $JOB: exit ${SB_RC:-?}, CSV with 10 rows (strong/weak x 1x1 1x2 2x1 x transports + all-reduce: $rows), plot" \
    eval "[ '${SB_RC:-1}' = 0 ] && [ $rows -eq 10 ] && [ -s '$WORK/scaling/scaling.png' ]"
  [ "${SB_RC:-1}" = 0 ] || tail -15 "$log"
else
  fail "sbatch submit (scaling)" "$JOB"
fi

# ---------------------------------------------------------------- 9. jobs/local.sh
echo "--- jobs/local.sh (mpirun on this machine, no SLURM)"
if [ "$(scripts/cores.sh)" -ge 2 ]; then
  out=$WORK/local12.log
  jobs/local.sh -n 1 -t 2 bench "${TINY[@]}" --steps 1 --warmup 0 > "$out" 2>&1; rc=$?
  check "jobs/local.sh -n 1 -t 2: the rank gets 2 cores for its 2 threads, no warning" \
    eval "[ $rc -eq 0 ] && grep -q 'rank 0 on .*: 2 threads, CPUs .*(2)' '$out' && ! grep -q WARNING '$out'"
  out=$WORK/local21.log
  jobs/local.sh -n 2 -t 1 bench "${TINY[@]}" --steps 1 --warmup 0 > "$out" 2>&1; rc=$?
  c0=$(sed -n 's/.*rank 0 on .*: 1 thread, CPUs \([0-9]*\) (1).*/\1/p' "$out")
  c1=$(sed -n 's/.*rank 1 on .*: 1 thread, CPUs \([0-9]*\) (1).*/\1/p' "$out")
  check "jobs/local.sh -n 2 -t 1: 2 ranks, each bound to its own core (CPUs ${c0:-?} and ${c1:-?})" \
    test "$rc" -eq 0 -a -n "$c0" -a -n "$c1" -a "$c0" != "$c1"
else
  note "jobs/local.sh checks skipped: fewer than 2 CPUs"
fi

# ---------------------------------------------------------------- 10. lost node: 205, 141
# A stand-in for the trainer (the exit statuses of a lost node cannot be produced on
# one machine): FAKE_MODE=lost exits 205 at once; FAKE_MODE=sigpipe writes
# RUN_DIR/last.h5 and exits 141, and exits 0 when last.h5 is there at its start.
echo "--- lost node: the launcher's exit statuses 205 and 141"
fake=$WORK/fake-trainer.sh
cat > "$fake" <<'FAKE'
#!/bin/bash
out=""; while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
case $FAKE_MODE in
  lost) echo "fake trainer: exit 205"; exit 205 ;;
  sigpipe) [ -f "$out/last.h5" ] && { echo "fake trainer: resumed"; exit 0; }
           mkdir -p "$out" && echo checkpoint > "$out/last.h5"; exit 141 ;;
esac
exit 2
FAKE
chmod +x "$fake"
log=$WORK/lost141.out
if SHIFTVIT=$fake FAKE_MODE=sigpipe RUN_DIR=$WORK/lost141 submit "$log" --ntasks=1 --ntasks-per-node=1; then
  wait_job 120
  st=$(job_field "$JOB" JobState); rs=$(job_field "$JOB" Restarts)
  check "exit 141 after a new checkpoint: requeued and resumed (state $st, Restarts=$rs)" \
    eval "[ '$st' = COMPLETED ] && [ '$rs' = 1 ] && grep -q 'SIGPIPE.*requeueing job $JOB to resume from $WORK/lost141/last.h5' '$log' && grep -q 'resuming from' '$log'"
else
  fail "sbatch submit (exit 141)"
fi
log=$WORK/lost205.out
if SHIFTVIT=$fake FAKE_MODE=lost RUN_DIR=$WORK/lost205 submit "$log" --ntasks=1 --ntasks-per-node=1; then
  wait_job 120
  st=$(job_field "$JOB" JobState); rs=$(job_field "$JOB" Restarts)
  check "exit 205 before any checkpoint: requeued once, then not (state $st, Restarts=$rs)" \
    eval "[ '$st' = FAILED ] && [ '$rs' = 1 ] && grep -q 'before the first checkpoint; requeueing job $JOB, which starts the run afresh' '$log' && grep -q 'second attempt in a row' '$log'"
  check "no message promises a resume from a last.h5 that does not exist" hasnt "$log" "resume from $WORK/lost205/last.h5"
else
  fail "sbatch submit (exit 205)"
fi

DONE=1
