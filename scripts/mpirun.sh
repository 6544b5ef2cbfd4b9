#!/usr/bin/env bash
# The MPI launcher with the options this project always wants on one machine:
# NP ranks (default: one per core), T threads each (default 1), each rank bound
# to its own T cores; --allow-run-as-root when Open MPI runs as root (CI,
# containers). The launcher is that of the MPI the program was built with
# (`shiftvit launcher`: mpirun for Open MPI, mpiexec for MPICH).
# usage: NP=2 THREADS=1 scripts/mpirun.sh build/shiftvit train ...
set -euo pipefail
# Physical cores, counted before OMP_NUM_THREADS is exported and without GNU
# nproc, which obeys OMP_NUM_THREADS: with THREADS=1 it said 1 core, and 2 ranks
# x 1 thread ran unbound, both on every CPU (issue 27).
CORES=$("$(dirname "${BASH_SOURCE[0]}")/cores.sh")
NP=${NP:-$CORES}
THREADS=${THREADS:-1}
[[ $NP =~ ^[1-9][0-9]*$ ]] || { echo "mpirun.sh: NP wants a positive integer, not '$NP'" >&2; exit 2; }
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || { echo "mpirun.sh: THREADS wants a positive integer, not '$THREADS'" >&2; exit 2; }
[ $# -gt 0 ] && [ -x "$1" ] || { echo "mpirun.sh: the first argument must be the program (build/shiftvit), not '${1:-}'" >&2; exit 2; }
export OMP_NUM_THREADS=$THREADS BLIS_NUM_THREADS=$THREADS
bind=cores
# More ranks x threads than cores (tests on small machines): no binding.
if [ $((NP * THREADS)) -gt "$CORES" ]; then
  echo "mpirun.sh: $NP ranks x $THREADS threads > $CORES cores: oversubscribing, no binding" >&2
  bind=none
fi
launch=$("$1" launcher -n "$NP" -t "$THREADS" --bind "$bind" -x OMP_NUM_THREADS -x BLIS_NUM_THREADS) || exit
mapfile -t words <<< "$launch"
exec "${words[@]}" "$@"
