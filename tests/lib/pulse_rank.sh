#!/usr/bin/env bash
# Slows one MPI rank down for the straggler tests, with SIGSTOP/SIGCONT pulses:
#
#   tests/lib/pulse_rank.sh TAG RANK [STOP_MS [RUN_MS [WAIT_S]]]
#
# finds the process named shiftvit whose environment holds SV_TEST_TAG=TAG and the launcher's rank
# variable (OMPI_COMM_WORLD_RANK, or PMI_RANK under MPICH/SLURM) equal to RANK
# (waiting up to WAIT_S seconds, default 60, for it to start), then stops it for
# STOP_MS ms (default 40) and lets it run RUN_MS ms (default 20), again and again
# until it exits. Only the one process found gets signals: the tag is the test's
# own (a random word it passes to mpirun), so no other job's ranks are touched.
# Exit status 1 when no such process appeared.
set -u
tag=$1 rank=$2 stop_ms=${3:-40} run_ms=${4:-20} wait_s=${5:-60}

# Only the processes named shiftvit are looked at (their command name, read with bash's
# own `read`: no fork per process), so one search takes milliseconds and can run every
# 50 ms: the pulses start while the ranks initialise, before their first step (a tiny
# run's steps take milliseconds).
find_rank() {
  local d comm
  for d in /proc/[0-9]*; do
    { read -r comm < "$d/comm"; } 2>/dev/null || continue
    [ "$comm" = shiftvit ] || continue
    grep -qxz "SV_TEST_TAG=$tag" "$d/environ" 2>/dev/null || continue
    grep -qxzE "(OMPI_COMM_WORLD_RANK|PMI_RANK)=$rank" "$d/environ" 2>/dev/null || continue
    echo "${d#/proc/}"
    return 0
  done
  return 1
}

pid=
for ((i = 0; i < wait_s * 20; i++)); do
  pid=$(find_rank) && break
  sleep 0.05
done
[ -n "$pid" ] || { echo "pulse_rank.sh: no rank $rank with SV_TEST_TAG=$tag appeared in $wait_s s" >&2; exit 1; }
stop_s=$(awk -v m="$stop_ms" 'BEGIN { printf "%.3f", m / 1000 }')
run_s=$(awk -v m="$run_ms" 'BEGIN { printf "%.3f", m / 1000 }')
while kill -STOP "$pid" 2>/dev/null; do
  sleep "$stop_s"
  kill -CONT "$pid" 2>/dev/null || break
  sleep "$run_s"
done
kill -CONT "$pid" 2>/dev/null
exit 0
