# Shared by the shell test suites (tests/slurm/run.sh, tests/multinode/run.sh):
# PASS/FAIL lines, a work folder kept on failure (or KEEP=1), and the closing
# "N passed, M failed" line. Source it, set WORK, define teardown(), then call
# harness_start; set DONE=1 after the last check.
PASSED=0
FAILED=0
FAILED_NAMES=()
DONE=0
pass() { PASSED=$((PASSED + 1)); echo "PASS  $1"; }
fail() { FAILED=$((FAILED + 1)); FAILED_NAMES+=("$1"); echo "FAIL  $1${2:+ -- $2}"; }
check() { # NAME COMMAND...: pass when the command succeeds
  local name=$1; shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}
note() { echo "      $*"; }

harness_finish() {
  local rc=$?
  trap - EXIT INT TERM
  teardown > "$WORK/teardown.log" 2>&1 || { echo "teardown: see $WORK/teardown.log"; cat "$WORK/teardown.log"; }
  [ "$DONE" = 1 ] || fail "test run aborted (exit status $rc)"
  if [ "$FAILED" -gt 0 ]; then
    echo "failed: ${FAILED_NAMES[*]}"
    echo "logs kept in $WORK"
  elif [ "${KEEP:-0}" = 1 ]; then
    echo "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
  exit $?
}

harness_start() {
  trap harness_finish EXIT
  trap 'echo "interrupted"; exit 130' INT TERM
}

# SHIFTVIT (default build/shiftvit) as an absolute path, exported; fails the
# suite when it is missing or when not root.
harness_need_binary_and_root() {
  SHIFTVIT=${SHIFTVIT:-build/shiftvit}
  case $SHIFTVIT in /*) ;; *) SHIFTVIT=$ROOT/$SHIFTVIT ;; esac
  export SHIFTVIT
  [ -x "$SHIFTVIT" ] || { fail "prerequisites" "$SHIFTVIT missing: run make first"; exit 1; }
  [ "$(id -u)" -eq 0 ] || { fail "prerequisites" "run as root ($1)"; exit 1; }
}
