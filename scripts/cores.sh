#!/usr/bin/env bash
# Prints the number of physical cores this process may run on: distinct
# (core, socket) pairs of lscpu among the CPUs of its affinity mask (a SLURM or
# cgroup cpuset, taskset), so hardware threads of one core count once. Falls
# back to the logical CPU count. Unlike GNU `nproc`, it does not obey
# OMP_NUM_THREADS or OMP_THREAD_LIMIT: a script that exports
# OMP_NUM_THREADS=1 and then asks `nproc` gets 1 (issue 27).
# usage: scripts/cores.sh
set -euo pipefail
allowed=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status 2>/dev/null || true)
n=$(lscpu -p=cpu,core,socket 2>/dev/null | awk -F, -v list="$allowed" '
  BEGIN {
    k = split(list, r, ",")
    for (i = 1; i <= k; i++) {
      m = split(r[i], ab, "-"); hi = m > 1 ? ab[2] : ab[1]
      for (c = ab[1] + 0; c <= hi + 0; c++) ok[c] = 1
    }
  }
  /^#/ { next }
  list == "" || ($1 in ok) { seen[$2 "," $3] = 1 }
  END { n = 0; for (s in seen) n++; print n }' || true)
[[ ${n:-} =~ ^[1-9][0-9]*$ ]] || n=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
echo "$n"
