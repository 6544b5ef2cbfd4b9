#!/usr/bin/env bash
# mpirun with the options this project always wants on one machine:
# NP ranks (default: one per core), T threads each (default 1), each rank bound
# to its own T cores; --allow-run-as-root when run as root (CI, containers).
# usage: NP=2 THREADS=1 scripts/mpirun.sh build/shiftvit train ...
set -euo pipefail
NP=${NP:-$(nproc)}
THREADS=${THREADS:-1}
export OMP_NUM_THREADS=$THREADS BLIS_NUM_THREADS=$THREADS
opts=(-np "$NP" --map-by "slot:PE=$THREADS" --bind-to core)
# More ranks x threads than cores (tests on small machines): no binding.
if [ $((NP * THREADS)) -gt "$(nproc)" ]; then opts=(-np "$NP" --oversubscribe --bind-to none); fi
[ "$(id -u)" -eq 0 ] && opts+=(--allow-run-as-root)
exec mpirun "${opts[@]}" -x OMP_NUM_THREADS -x BLIS_NUM_THREADS "$@"
