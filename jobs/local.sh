#!/usr/bin/env bash
# shiftvit on one workstation: RANKS ranks x THREADS threads, each rank
# bound to its own THREADS cores. Everything after the options goes to shiftvit.
#
#   jobs/local.sh [-n RANKS] [-t THREADS] [--dry-run] [SHIFTVIT ARGS...]
#   jobs/local.sh train -c configs/cifar10_keras.ini          # one rank per core
#   jobs/local.sh -n 2 -t 4 train -c configs/cifar10_keras.ini
#   jobs/local.sh -n 1 -t 2 bench --steps 5
#
# Defaults: THREADS=1, RANKS = physical cores / THREADS (environment RANKS/THREADS
# work too). SHIFTVIT overrides the binary (default build/shiftvit); the default
# command is `train -c configs/cifar10_keras.ini`.
#
# The line it runs (printed first), with the launcher of the MPI shiftvit was built
# with (`shiftvit launcher`):
#   mpirun -np R --map-by slot:PE=T --bind-to core -x OMP_NUM_THREADS=T \
#          -x BLIS_NUM_THREADS=T build/shiftvit ...           (Open MPI)
#   mpiexec -n R -bind-to core:T -genv OMP_NUM_THREADS T ...  (MPICH)
# Why PE=T: Open MPI binds each rank to ONE core when it starts 2 ranks or fewer, so
# `mpirun -np 1` with OMP_NUM_THREADS=2 runs both threads on one core (shiftvit prints
# a WARNING with the affinity it got). `--map-by slot:PE=T --bind-to core` gives each
# rank T cores of its own. When R x T exceeds the cores it falls back to
# `--bind-to none --oversubscribe` (slower; says so).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# In the source tree it runs from the tree's root (build/shiftvit, configs/);
# installed (make install), from the caller's folder.
[ -f "$HERE/Makefile" ] && cd "$HERE"
SHIFTVIT=${SHIFTVIT:-build/shiftvit}
RANKS=${RANKS:-}
THREADS=${THREADS:-1}
DRY=0
while [ $# -gt 0 ]; do
  case $1 in
    -n) RANKS=$2; shift 2 ;;
    -t) THREADS=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || set -- train -c configs/cifar10_keras.ini

# Physical cores (not hardware threads) this shell may run on.
CORES=$("$HERE/scripts/cores.sh")
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || { echo "local.sh: -t wants a positive integer" >&2; exit 2; }
[ -n "$RANKS" ] || RANKS=$(( CORES / THREADS > 0 ? CORES / THREADS : 1 ))
[[ $RANKS =~ ^[1-9][0-9]*$ ]] || { echo "local.sh: -n wants a positive integer" >&2; exit 2; }
# The program says which launcher its MPI has, so --dry-run needs it too.
[ -x "$SHIFTVIT" ] || { echo "local.sh: $SHIFTVIT not found; run make" >&2; exit 1; }

BIND=cores
if [ $((RANKS * THREADS)) -gt "$CORES" ]; then
  echo "local.sh: $RANKS ranks x $THREADS threads > $CORES cores: oversubscribing, no binding" >&2
  BIND=none
fi
ENV=(-x "OMP_NUM_THREADS=$THREADS" -x "BLIS_NUM_THREADS=$THREADS")
LAUNCH=$("$SHIFTVIT" launcher -n "$RANKS" -t "$THREADS" --bind "$BIND" "${ENV[@]}") || exit
mapfile -t OPTS <<< "$LAUNCH"

echo "+ ${OPTS[*]} $SHIFTVIT $*"
[ "$DRY" = 1 ] && exit 0
exec "${OPTS[@]}" "$SHIFTVIT" "$@"
