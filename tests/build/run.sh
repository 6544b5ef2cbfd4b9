#!/usr/bin/env bash
# `make test-build`: the build the way clusters and sites build (issue 27), each
# check on a real build. Ends with one line "N passed, M failed"; exit status 0
# only when nothing failed. One extra build of the program (-O1, about 1-2
# minutes on 2 cores) serves the checks 2-5.
#
#   tests/build/run.sh            # from anywhere in a checkout
#   KEEP=1 tests/build/run.sh     # keep the temporary folder (build, install, logs)
#
# What it checks:
#   1. the Makefile honours CC from the environment and stops with a message
#      naming a library pkg-config cannot find (make -n, no build)
#   2. a build with the user's CFLAGS (-O1: it wins over the project's -O3),
#      CPPFLAGS, LDFLAGS and LDLIBS, on the command line and in the environment,
#      and without oneDNN (ONEDNN=0): the project's flags (include path,
#      -fopenmp, -march) are kept, no -ldnnl, the program runs
#   3. that build's bf16 says it is emulated because oneDNN was left out
#   4. make install PREFIX=...: from a folder outside the tree, the installed
#      program finds configs/tiny.ini and tiny.ini, trains the tiny config on
#      CIFAR-10, and the installed jobs/local.sh runs the installed program
#   5. make check-deps (what SKIP_DEPS=1 runs) passes, without dpkg or root
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
. "$ROOT/tests/lib/harness.sh"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shiftvit-build.XXXXXX")
teardown() { :; }
harness_start
B=$WORK/build   # the build folder (make BUILD=...)
P=$WORK/prefix  # the install prefix

# ---------------------------------------------------------------- 1. make -n
echo "--- CC from the environment, a library pkg-config cannot find"
out=$(CC=my-mpicc make -n BUILD="$B" "$B/obj/base/common.o" 2>&1)
check "CC=my-mpicc make: compiles with my-mpicc" grep -q '^my-mpicc .*-c src/base/common.c' <<< "$out"
out=$(PKG_CONFIG_PATH=/nonexistent PKG_CONFIG_LIBDIR=/nonexistent make -n BUILD="$B" "$B/obj/base/common.o" 2>&1); rc=$?
check "pkg-config without hdf5.pc: make stops, naming hdf5 and HDF5_CFLAGS" \
  eval "[ $rc -ne 0 ] && grep -q \"cannot find library 'hdf5'\" <<< \"\$out\" && grep -q HDF5_CFLAGS <<< \"\$out\""
note "$(grep -m1 -o "pkg-config cannot find library 'hdf5'.\{0,120\}" <<< "$out")"

# ---------------------------------------------------------------- 2. user flags
echo "--- a build with the user's flags and ONEDNN=0 (in $B)"
CPPFLAGS=-DSV_USER_CPPFLAGS_SEEN LDLIBS=-lrt make -j"$(scripts/cores.sh)" BUILD="$B" ONEDNN=0 \
  CFLAGS="-O1 -g0" LDFLAGS="-Wl,-O1" all > "$WORK/build.log" 2>&1; rc=$?
check "make CFLAGS=-O1 LDFLAGS=... (CPPFLAGS, LDLIBS from the environment) ONEDNN=0 builds" test "$rc" -eq 0
[ $rc -eq 0 ] || tail -20 "$WORK/build.log"
main=$(grep -m1 -- ' -c src/base/common.c' "$WORK/build.log")
link=$(grep -m1 -- "-o $B/shiftvit" "$WORK/build.log")
check "compile line keeps -Iinclude, -fopenmp, -march and adds CPPFLAGS, CFLAGS after -O3" \
  eval "grep -q -- '-Iinclude .*-DSV_USER_CPPFLAGS_SEEN.*-O3 .*-march=.*-fopenmp.* -O1 -g0' <<< \"\$main\""
check "link line keeps -fopenmp and BLIS, adds LDFLAGS and LDLIBS, leaves out -ldnnl" \
  eval "grep -q -- '-fopenmp -Wl,-O1 .*-lblis.* -lrt' <<< \"\$link\" && ! grep -q -- -ldnnl <<< \"\$link\""
check "the program is not linked with oneDNN (ldd)" eval "! ldd '$B/shiftvit' | grep -q dnnl"

# ---------------------------------------------------------------- 3. no oneDNN
echo "--- bf16 without oneDNN"
out=$(OMP_NUM_THREADS=1 timeout 120 "$B/shiftvit" bench -c configs/tiny.ini --set train.precision=bf16 \
  --steps 1 --warmup 0 2>&1); rc=$?
check "bf16 bench runs and says it is emulated, built without oneDNN" \
  eval "[ $rc -eq 0 ] && grep -q 'emulated: this shiftvit was built without oneDNN' <<< \"\$out\""

# ---------------------------------------------------------------- 4. install
echo "--- make install PREFIX=$P, run from outside the tree"
make BUILD="$B" ONEDNN=0 CFLAGS="-O1 -g0" LDFLAGS="-Wl,-O1" CPPFLAGS=-DSV_USER_CPPFLAGS_SEEN LDLIBS=-lrt \
  PREFIX="$P" install > "$WORK/install.log" 2>&1; rc=$?
check "make install PREFIX=... installs bin/shiftvit, configs, scripts, jobs" \
  eval "[ $rc -eq 0 ] && [ -x '$P/bin/shiftvit' ] && [ -f '$P/share/shiftvit/configs/tiny.ini' ] && \
        [ -x '$P/share/shiftvit/scripts/cores.sh' ] && [ -x '$P/share/shiftvit/jobs/local.sh' ]"
[ $rc -eq 0 ] || tail -5 "$WORK/install.log"
mkdir -p "$WORK/elsewhere"
DATA=${CIFAR10_DIR:-$ROOT/../shared/data/cifar-10-batches-bin}
cd "$WORK/elsewhere" || exit 1
out=$("$P/bin/shiftvit" info -c configs/tiny.ini 2>&1)
check "installed shiftvit info -c configs/tiny.ini, outside the tree" \
  eval "grep -q 'using $P/share/shiftvit/configs/tiny.ini' <<< \"\$out\" && grep -q 'Config: ' <<< \"\$out\""
out=$("$P/bin/shiftvit" info -c tiny.ini 2>&1)
check "installed shiftvit info -c tiny.ini finds it among the installed configs" \
  grep -q "using $P/share/shiftvit/configs/tiny.ini" <<< "$out"
out=$("$P/bin/shiftvit" info -c no-such.ini 2>&1); rc=$?
check "a config that is nowhere: exit 1, naming it" eval "[ $rc -ne 0 ] && grep -q 'no-such.ini' <<< \"\$out\""
if [ -f "$DATA/data_batch_1.bin" ]; then
  OMP_NUM_THREADS=1 timeout 300 "$P/bin/shiftvit" train -c tiny.ini --set train.epochs=1 --data-dir "$DATA" \
    --out run > "$WORK/train.log" 2>&1; rc=$?
  check "installed shiftvit trains tiny.ini from outside the tree (run folder in the caller's folder)" \
    eval "[ $rc -eq 0 ] && [ -f run/last.h5 ] && grep -q '^TEST ' '$WORK/train.log'"
else
  note "no CIFAR-10 in $DATA (CIFAR10_DIR): the installed training run is skipped"
fi
out=$("$P/share/shiftvit/jobs/local.sh" -n 1 -t 1 --dry-run 2>&1)
check "installed jobs/local.sh runs the installed program from the caller's folder" \
  grep -q -- "-np 1 .* $P/bin/shiftvit train -c configs/cifar10_keras.ini" <<< "$out"
out=$(OMP_NUM_THREADS=1 timeout 120 "$P/share/shiftvit/jobs/local.sh" -n 1 -t 1 bench -c tiny.ini --steps 1 --warmup 0 2>&1)
check "installed jobs/local.sh: a tiny bench runs" grep -q 'rank 0 on .*: 1 thread, CPUs' <<< "$out"
cd "$ROOT" || exit 1

# ---------------------------------------------------------------- 5. check-deps
echo "--- make check-deps (SKIP_DEPS=1)"
out=$(make check-deps 2>&1); rc=$?
check "make check-deps: every library found" eval "[ $rc -eq 0 ] && grep -q 'everything the build and the tests need' <<< \"\$out\""
out=$(make check-deps HDF5_CFLAGS=-I/nonexistent HDF5_LIBS=-lno-such-hdf5 2>&1); rc=$?
check "make check-deps with a wrong HDF5_CFLAGS: exit 1, HDF5 MISSING" \
  eval "[ $rc -ne 0 ] && grep -q 'HDF5 .*MISSING' <<< \"\$out\""
DONE=1
