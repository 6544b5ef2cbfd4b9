#!/usr/bin/env bash
# Runs every cmocka test program in $BUILD/tests and ends with one summary line
# "N passed, M failed, K skipped" (skipped tests, e.g. the disk-full test where
# mounting a tmpfs is not allowed, are listed by name above it). Each program
# prints its own cmocka report. Exit status 0 only if no test failed, at least
# one passed and every program exited cleanly.
set -u
BUILD=${BUILD:-build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export BLIS_NUM_THREADS=${BLIS_NUM_THREADS:-$OMP_NUM_THREADS}
# Sanitizer builds: Open MPI keeps some allocations until exit.
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}
export ASAN_OPTIONS=${ASAN_OPTIONS:-fast_unwind_on_malloc=0}
passed=0 failed=0 skipped=0 broken=() skipped_names=()
for t in "$BUILD"/tests/test_*; do
  case $(basename "$t") in test_util*) continue ;; esac # the shared helpers, not a test
  [ -x "$t" ] || continue
  name=$(basename "$t")
  echo "=== $name"
  start=$(date +%s)
  out=$("$t" 2>&1); rc=$?
  printf '%s\n' "$out"
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]\+\) test(s)\./\1/p' | awk '{s+=$1} END {print s+0}')
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]\+\) test(s), listed below:/\1/p' | awk '{s+=$1} END {print s+0}')
  k=$(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([0-9]\+\) test(s).*/\1/p' | awk '{s+=$1} END {print s+0}')
  while IFS= read -r s; do skipped_names+=("$name: $s"); done < <(printf '%s\n' "$out" | sed -n 's/^\[  SKIPPED \] \([A-Za-z_0-9]\+\)$/\1/p' | sort -u)
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + k))
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); broken+=("$name (exit $rc)"); fi
  echo "=== $name: $p passed, $f failed, $k skipped, exit $rc, $(( $(date +%s) - start )) s"
done
[ ${#broken[@]} -gt 0 ] && echo "programs that exited abnormally: ${broken[*]}"
for s in "${skipped_names[@]}"; do echo "SKIPPED: $s"; done
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ] && [ $passed -gt 0 ]
