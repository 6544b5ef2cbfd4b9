#!/usr/bin/env bash
# A tiny training run (3 steps, one rank, one OpenMP thread) under valgrind's
# memcheck: no invalid read or write, no use of uninitialised memory and no
# definite leak may come from shiftvit's code. Open MPI's and BLIS's own
# noise is suppressed by tests/valgrind.supp (library frames only).
# Prints OK or FAIL; exit status 0 only when clean.
#
#   tests/valgrind.sh            (from anywhere; runs from the repository root)
#
# valgrind cannot execute the AVX-512 code that `make` builds for this CPU
# (-march=native), so the program is built again into build/valgrind with
# -O1 -g -march=x86-64-v2 (same sources and Makefile, other CFLAGS and
# BUILD). Environment: VALGRIND_ARGS adds valgrind options; KEEP=1 keeps the
# run directory. The full valgrind log is build/valgrind/valgrind.log.
set -u
cd "$(dirname "$0")/.." || exit 2

if ! command -v valgrind >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "valgrind: installing it (apt-get install valgrind)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null || {
            echo "valgrind: FAIL (cannot install valgrind)"; exit 2; }
    else
        echo "valgrind: FAIL (valgrind is not installed: apt-get install valgrind)"; exit 2
    fi
fi

BUILD_DIR=build/valgrind
mkdir -p $BUILD_DIR || exit 2
echo "valgrind: building $BUILD_DIR/shiftvit (-O1 -g -march=x86-64-v2)"
# ARCH, not -march in CFLAGS: -march=native expands into -mavx512f and the
# like, which a later -march does not take back (the user's CFLAGS come last).
if ! CFLAGS="-O1 -g -fno-omit-frame-pointer" \
        make --no-print-directory BUILD=$BUILD_DIR ARCH=x86-64-v2 $BUILD_DIR/shiftvit >$BUILD_DIR/build.log 2>&1; then
    tail -20 $BUILD_DIR/build.log
    echo "valgrind: FAIL (build failed; see $BUILD_DIR/build.log)"
    exit 2
fi

out=$(mktemp -d /tmp/sv_valgrind.XXXXXX)
log=$BUILD_DIR/valgrind.log
# One thread: OpenMP worker threads add nothing to check here and slow
# valgrind down. Valgrind's virtual CPU has no AVX-512, so the program keeps
# BLIS's own choice (haswell) by itself.
cmd=(valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite
     --show-leak-kinds=definite --num-callers=40 --track-origins=yes
     --suppressions=tests/valgrind.supp ${VALGRIND_ARGS:-}
     $BUILD_DIR/shiftvit train -c configs/tiny.ini --set train.max_steps=3 --out "$out/run")
echo "valgrind: ${cmd[*]}"
start=$(date +%s)
OMP_NUM_THREADS=1 BLIS_NUM_THREADS=1 "${cmd[@]}" >"$log" 2>&1
rc=$?
secs=$(( $(date +%s) - start ))
summary=$(grep -E "ERROR SUMMARY" "$log" | tail -1 | sed 's/^==[0-9]*== //')
[ "${KEEP:-0}" = 1 ] && echo "valgrind: run directory kept: $out" || rm -rf "$out"
if [ $rc -eq 0 ] && grep -q "^TEST loss=" "$log"; then
    echo "valgrind: OK ($summary; ${secs} s; log $log)"
    exit 0
fi
echo "valgrind: FAIL (exit $rc after ${secs} s; $summary); the errors:"
grep -E -A30 "^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched|Source and destination|[0-9,]+ (\([0-9,]+ direct, [0-9,]+ indirect\) )?bytes in [0-9,]+ blocks are definitely)" "$log" \
    | grep -v "^--$" | head -150
echo "valgrind: FAIL (full log: $log)"
exit 1
