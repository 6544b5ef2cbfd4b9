#!/usr/bin/env bash
# An emulated cluster of N nodes on this machine, for multi-node tests and scaling
# measurements without a real cluster (issue 13). As root; Linux namespaces only.
#
#   scripts/vcluster.sh up N [--rate RATE] [--cpus C] [--slurm]
#   scripts/vcluster.sh down
#   scripts/vcluster.sh status
#   scripts/vcluster.sh run CMD...          # CMD on the head node (mpirun, sbatch, ...)
#   scripts/vcluster.sh exec NODE CMD...    # CMD on node NODE (n1 ... nN, or head)
#   scripts/vcluster.sh mpirun ARGS...      # mpirun from the head with the options below
#   scripts/vcluster.sh link NODE up|down   # take a node's network link down (failure tests)
#   scripts/vcluster.sh kill NODE           # kill everything on a node (a node crash)
#
# What a node is:
#   - its own network namespace (vc-n1 ...) with one interface eth0, address
#     $SUBNET.(10+i)/24, cabled by a veth pair to a Linux bridge that lives in the head
#     node's namespace (vc-head, $SUBNET.1). Nothing is created in the machine's own
#     namespace and no address outside $SUBNET is used.
#   - a link rate: a tbf qdisc on both ends of its veth pair (--rate, default 10gbit;
#     netem is missing here, so no added latency).
#   - its own UTS namespace, so `hostname` says n1 ..., its own /etc/hosts and its
#     own local disk at $DIR/nodelocal (a private mount namespace per command binds
#     $DIR/hosts and $DIR/local/NODE there; the machine's /etc/hosts is never
#     written). SLURM's TmpFS (PMIx's per-node folders) is that local disk.
#   - a fixed CPU share, through the cgroup v1 controllers this machine mounts: when
#     the cores divide evenly among the nodes, each node gets its own cores (cpuset:
#     no two nodes share a core's caches or time slices, as on real nodes); otherwise
#     (or with --cpus C) each may run on every core but gets C cores' worth of time
#     per 100 ms period (cpu.cfs_quota_us, the v1 form of cpu.max), the only way to
#     give 4 or 8 nodes a fair share of 2 cores.
#   - with --slurm: one slurmd per node (slurmd -N NODE inside the node), slurmctld on
#     the head, one munged; `source $DIR/env`, then `scripts/vcluster.sh run sbatch
#     -N 2 ...`. Jobs launch Open MPI ranks with `srun --mpi=pmix`.
#
# mpirun across nodes: `scripts/vcluster.sh mpirun -np 2 --host n1,n2 CMD` adds
#   --mca plm_rsh_agent $DIR/bin/rsh (runs orted on a node through `exec`),
#   --bind-to none (the node's cgroup is its CPU share),
#   --mca btl self,vader,tcp, --mca btl_tcp_if_include / oob_tcp_if_include $SUBNET.0/24,
#   and TCP keepalives on mpirun's own connections (oob_tcp_keepalive_*: a lost
#   node is noticed in ~25 s).
#
# Environment: VCLUSTER_DIR (state folder, default /tmp/shiftvit-vcluster),
# VCLUSTER_SUBNET (first three octets of the private /24, default 10.77.0),
# VCLUSTER_NAME (prefix of the namespaces and cgroups, default vc): two clusters
# with different names, folders and subnets can be up at once.
# `up` tears down what an earlier `up` left, then builds; a failed or interrupted
# `up` tears down what it built. `down` is safe to run at any time, twice.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/slurm_conf.sh"

D=${VCLUSTER_DIR:-/tmp/shiftvit-vcluster}
SUBNET=${VCLUSTER_SUBNET:-10.77.0}
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
NS=${VCLUSTER_NAME:-vc}   # namespace prefix: vc-head, vc-n1, ...
[[ $NS =~ ^[a-z][a-z0-9]{0,7}$ ]] || { echo "vcluster.sh: error: VCLUSTER_NAME '$NS': 1-8 lower-case letters and digits" >&2; exit 1; }
CG=shiftvit-$NS
CPU_CG=/sys/fs/cgroup/cpu/$CG
CPUSET_CG=/sys/fs/cgroup/cpuset/$CG
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "vcluster.sh: error: $*" >&2; exit 1; }
log() { echo "vcluster.sh: $*"; }

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (namespaces, cgroups, tc)"; }

nodes() { [ -f "$D/nodes" ] && cat "$D/nodes" || true; }
node_ip() { # NODE -> address
  case $1 in head) echo "$SUBNET.1" ;; n[0-9]*) echo "$SUBNET.$((10 + ${1#n}))" ;; *) return 1 ;; esac
}

node_exists() { # NODE: dies with what there is instead
  [ -e "/run/netns/$NS-$1" ] && return 0
  [ -f "$D/nodes" ] || die "the cluster is down (scripts/vcluster.sh up N)"
  die "no node '$1'; the nodes are: head $(nodes | tr '\n' ' ')"
}

# ------------------------------------------------------------------ entering a node
# Runs CMD inside NODE: its cgroups, network and UTS namespaces, and a private mount
# namespace with the cluster's /etc/hosts.
node_exec() {
  local node=$1; shift
  node_exists "$node"
  if [ "$node" != head ]; then
    [ -d "$CPU_CG/$node" ] && echo $BASHPID > "$CPU_CG/$node/tasks"
    [ -d "$CPUSET_CG/$node" ] && echo $BASHPID > "$CPUSET_CG/$node/tasks"
  fi
  mkdir -p "$D/local/$node"
  exec nsenter --net="/run/netns/$NS-$node" --uts="$D/ns/$node.uts" -- \
    unshare --mount --propagation private -- \
    env VC_DIR="$D" VC_NODE="$node" /bin/sh -c \
    'mount --bind "$VC_DIR/hosts" /etc/hosts && mount --bind "$VC_DIR/local/$VC_NODE" "$VC_DIR/nodelocal" && exec "$@"' \
    "vcluster $node" "$@"
}

# ------------------------------------------------------------------ up
make_node_ns() { # NODE
  local node=$1
  ip netns add "$NS-$node"
  ip -n "$NS-$node" link set lo up
  # A connection to a peer that vanished without a reset fails after ~25 s of
  # retransmissions instead of Linux's default ~15 min (tcp_retries2=15): the
  # launcher (mpirun, srun) then notices a lost node. Per namespace: the
  # machine's own setting is untouched.
  ip netns exec "$NS-$node" sysctl -q -w net.ipv4.tcp_retries2=6
  touch "$D/ns/$node.uts"
  unshare --uts="$D/ns/$node.uts" hostname "$node"
}

shape() { # NETNS DEV RATE: tbf on DEV's egress
  local rate_bits burst
  rate_bits=$(rate_to_bits "$3")
  # One millisecond at the rate, at least 128 KiB (a GSO packet is up to 64 KiB;
  # a burst below it would drop every such packet).
  burst=$(( rate_bits / 8 / 1000 ))
  [ "$burst" -lt 131072 ] && burst=131072
  ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "$3" burst "$burst" latency 100ms
}

rate_to_bits() { # 10gbit, 2.5gbit, 500mbit -> bits/s
  awk -v r="$1" 'BEGIN {
    n = r + 0; u = tolower(substr(r, length(n "") + 1));
    if (u == "gbit") n *= 1e9; else if (u == "mbit") n *= 1e6; else if (u == "kbit") n *= 1e3;
    else if (u != "bit" && u != "") { print "bad"; exit }
    printf "%d\n", n }'
}

cpu_shares() { # N CPUS_OPT -> sets CPU_MODE and per-node values
  local n=$1 cpus=$2 ncpu
  ncpu=$(nproc --all)
  if [ -z "$cpus" ] && [ $((ncpu % n)) -eq 0 ]; then
    CPU_MODE=cpuset; PER_NODE_CPUS=$((ncpu / n))
  else
    CPU_MODE=quota
    PER_NODE_CPUS=${cpus:-$(awk -v c="$ncpu" -v n="$n" 'BEGIN { printf "%.3f", c / n }')}
  fi
}

make_cgroup() { # NODE INDEX(0-based)
  local node=$1 i=$2
  mkdir -p "$CPU_CG/$node"
  if [ "$CPU_MODE" = cpuset ]; then
    mkdir -p "$CPUSET_CG/$node"
    cat /sys/fs/cgroup/cpuset/cpuset.mems > "$CPUSET_CG/cpuset.mems"
    cat /sys/fs/cgroup/cpuset/cpuset.cpus > "$CPUSET_CG/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems > "$CPUSET_CG/$node/cpuset.mems"
    local lo=$((i * PER_NODE_CPUS)) hi=$(((i + 1) * PER_NODE_CPUS - 1))
    echo "$lo-$hi" > "$CPUSET_CG/$node/cpuset.cpus"
    echo -1 > "$CPU_CG/$node/cpu.cfs_quota_us"
  else
    echo 100000 > "$CPU_CG/$node/cpu.cfs_period_us"
    awk -v c="$PER_NODE_CPUS" 'BEGIN { printf "%d\n", c * 100000 }' > "$CPU_CG/$node/cpu.cfs_quota_us"
  fi
}

up() {
  need_root
  local n=${1:-}; shift || true
  [[ $n =~ ^[1-9][0-9]?$ ]] || die "up needs a node count 1-99, got '${n}'"
  local rate=10gbit cpus="" slurm=0
  while [ $# -gt 0 ]; do
    case $1 in
      --rate|--cpus) [ $# -ge 2 ] || die "$1 needs a value"
                     if [ "$1" = --rate ]; then rate=$2; else cpus=$2; fi; shift 2 ;;
      --slurm) slurm=1; shift ;;
      *) die "unknown option '$1' for up (--rate, --cpus, --slurm)" ;;
    esac
  done
  [[ $rate =~ ^[0-9]+(\.[0-9]+)?(gbit|mbit|kbit)$ ]] && [ "$(rate_to_bits "$rate")" -ge 1000000 ] ||
    die "--rate '$rate': a link rate of at least 1mbit, e.g. 10gbit, 2.5gbit, 500mbit"
  local ncpu; ncpu=$(nproc --all)
  if [ -n "$cpus" ]; then
    [[ $cpus =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v c="$cpus" -v n="$ncpu" 'BEGIN { exit !(c >= 0.01 && c <= n) }' ||
      die "--cpus '$cpus': cores' worth of time per node, from 0.01 to this machine's $ncpu"
  fi
  for b in ip tc nsenter unshare; do command -v $b >/dev/null || die "'$b' not found"; done
  down quiet
  trap 'echo "vcluster.sh: up failed or interrupted; tearing down" >&2; down quiet' EXIT
  [ ! -e "$D" ] || [ -z "$(ls -A "$D")" ] || die "$D exists and is not an emulated cluster's folder; set VCLUSTER_DIR"
  mkdir -p "$D/ns" "$D/bin" "$D/log" "$D/nodelocal"
  touch "$D/.vcluster"
  cpu_shares "$n" "$cpus"

  { echo "127.0.0.1 localhost"; echo "$SUBNET.1 head"
    for i in $(seq 1 "$n"); do echo "$(node_ip "n$i") n$i"; done; } > "$D/hosts"
  : > "$D/nodes"

  make_node_ns head
  ip -n "$NS-head" link add br0 type bridge
  ip -n "$NS-head" addr add "$SUBNET.1/24" dev br0
  ip -n "$NS-head" link set br0 up
  for i in $(seq 1 "$n"); do
    local node=n$i
    make_node_ns "$node"
    ip -n "$NS-head" link add "veth-$node" type veth peer name eth0 netns "$NS-$node"
    ip -n "$NS-head" link set "veth-$node" master br0 up
    ip -n "$NS-$node" addr add "$(node_ip "$node")/24" dev eth0
    ip -n "$NS-$node" link set eth0 up
    shape "$NS-$node" eth0 "$rate"
    shape "$NS-head" "veth-$node" "$rate"
    make_cgroup "$node" $((i - 1))
    echo "$node" >> "$D/nodes"
  done

  cat > "$D/bin/rsh" <<EOF
#!/bin/sh
# mpirun's remote shell for the emulated nodes (plm_rsh_agent): rsh HOST COMMAND...
host=\$1; shift
exec "$SELF" exec "\$host" /bin/sh -c "\$*"
EOF
  chmod +x "$D/bin/rsh"
  { echo "rate=$rate"; echo "cpu_mode=$CPU_MODE"; echo "cpus_per_node=$PER_NODE_CPUS"; } > "$D/config"
  [ "$slurm" = 1 ] && slurm_up "$n"
  trap - EXIT
  log "up: $n node(s) n1..n$n on $SUBNET.0/24, links $rate each way (tbf)," \
      "$( [ "$CPU_MODE" = cpuset ] && echo "$PER_NODE_CPUS own core(s) per node (cpuset)" ||
          echo "$PER_NODE_CPUS cores' time per node (cfs quota)")$( [ "$slurm" = 1 ] && echo ", SLURM: source $D/env")"
}

# ------------------------------------------------------------------ SLURM
slurm_up() {
  local n=$1 S=$D/slurm ncpu mem port
  for b in munged slurmctld slurmd sbatch scontrol; do
    command -v $b >/dev/null || die "'$b' not found; install with: WITH_SLURM=1 scripts/install-deps.sh"
  done
  mkdir -p "$S/state" "$S/spool" "$S/log" "$S/run" "$S/munge"
  chmod 700 "$S/munge"
  mungekey --create --keyfile="$S/munge/munge.key" 2>/dev/null ||
    dd if=/dev/urandom of="$S/munge/munge.key" bs=1024 count=1 status=none
  chmod 600 "$S/munge/munge.key"
  # One munged for all nodes: its socket is a file, reachable from every namespace.
  munged --force --key-file="$S/munge/munge.key" --socket="$S/munge/munge.sock" \
         --pid-file="$S/munge/munged.pid" --log-file="$S/munge/munged.log" \
         --seed-file="$S/munge/munged.seed" || die "munged did not start; see $S/munge/munged.log"
  ncpu=$(awk -v c="$PER_NODE_CPUS" 'BEGIN { c = int(c + 0.5); print c < 1 ? 1 : c }')
  mem=$(( $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) / n ))
  port=6817   # every node has its own addresses: the default ports cannot clash
  local first_job=$(( $(date +%s) % 60000000 + 1000 ))
  {
    cat <<EOF
# Generated by scripts/vcluster.sh: $n emulated nodes, state in $S
ClusterName=shiftvit-vcluster
# Job ids go on from the clock, so a cluster brought up again does not hand out
# the ids (and run folders, slurm-JOBID.out) of an earlier one.
FirstJobId=$first_job
SlurmctldHost=head($SUBNET.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
$(slurm_conf_common "$S/munge/munge.sock" "$S/state")
SlurmdSpoolDir=$S/spool/%n
# Each node's own local disk (see node_exec): PMIx folders must not be shared.
TmpFS=$D/nodelocal
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd-%n.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd-%n.log
KillWait=5
# A node that stops answering is DOWN after 10 s (default 300), so that the
# failure tests see a lost node and a requeued job within a minute.
SlurmdTimeout=10
MessageTimeout=5
EOF
    for node in $(nodes); do
      echo "NodeName=$node NodeAddr=$(node_ip "$node") NodeHostname=$node CPUs=$ncpu RealMemory=$mem State=UNKNOWN"
    done
    echo "PartitionName=vc Nodes=n[1-$n] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
  } > "$S/slurm.conf"
  for node in $(nodes); do mkdir -p "$S/spool/$node"; done
  cat > "$D/env" <<EOF
export SLURM_CONF=$S/slurm.conf
export PATH="\$PATH:/usr/sbin"
EOF
  export SLURM_CONF=$S/slurm.conf
  "$SELF" exec head slurmctld -c -f "$S/slurm.conf" || die "slurmctld did not start; see $S/log/slurmctld.log"
  for node in $(nodes); do
    "$SELF" exec "$node" slurmd -N "$node" -f "$S/slurm.conf" || die "slurmd on $node did not start; see $S/log/slurmd-$node.log"
  done
  local end=$((SECONDS + 60))
  until [ "$("$SELF" exec head sinfo -h -N -o %t 2>/dev/null | grep -cx idle)" -eq "$n" ]; do
    if [ $SECONDS -ge $end ]; then
      "$SELF" exec head sinfo -N -l >&2 || true
      tail -5 "$S/log/slurmctld.log" >&2 || true
      die "not all $n slurmd became idle within 60 s"
    fi
    sleep 0.5
  done
}

slurm_down() {
  local S=$D/slurm f pid
  [ -d "$S" ] || return 0
  if [ -f "$S/slurm.conf" ] && [ -e "/run/netns/$NS-head" ] && [ -s "$S/run/slurmctld.pid" ] &&
     kill -0 "$(cat "$S/run/slurmctld.pid")" 2>/dev/null; then
    SLURM_CONF=$S/slurm.conf timeout 10 "$SELF" exec head scancel --quiet --user=root 2>/dev/null || true
  fi
  for f in "$S"/run/slurmd-*.pid "$S/run/slurmctld.pid" "$S/munge/munged.pid"; do
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || continue
    local end=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # slurmstepd and the tasks they ran (matched by this cluster's spool folder).
  for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
    grep -qs "$S" "/proc/$pid/environ" "/proc/$pid/cmdline" && kill -KILL "$pid" 2>/dev/null || true
  done
}

# ------------------------------------------------------------------ down
kill_cgroup() { # DIR: kill every task in a cgroup
  local f=$1/tasks pid
  [ -f "$f" ] || return 0
  for _ in 1 2 3; do
    for pid in $(cat "$f"); do kill -KILL "$pid" 2>/dev/null || true; done
    [ -s "$f" ] || break
    sleep 0.2
  done
}

down() {
  need_root
  local quiet=${1:-}
  slurm_down
  local dir node
  for dir in "$CPU_CG"/*/ "$CPUSET_CG"/*/; do
    [ -d "$dir" ] || continue
    kill_cgroup "$dir"
    rmdir "$dir" 2>/dev/null || true
  done
  rmdir "$CPU_CG" "$CPUSET_CG" 2>/dev/null || true
  for node in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep "^$NS-" || true); do
    # Processes left in a namespace (an mpirun started by hand) go with it.
    for pid in $(ip netns pids "$node" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns delete "$node" 2>/dev/null || true
  done
  if [ -d "$D/ns" ]; then
    for f in "$D"/ns/*.uts; do
      [ -e "$f" ] || continue
      umount "$f" 2>/dev/null || true
      rm -f "$f"
    done
  fi
  # Only a folder this script made (marker file): VCLUSTER_DIR may be mistyped.
  [ -f "$D/.vcluster" ] && rm -rf "$D"
  [ -n "$quiet" ] || log "down"
}

status() {
  [ -f "$D/nodes" ] || { echo "vcluster.sh: the cluster is down"; return 0; }
  echo "vcluster.sh: $(wc -l < "$D/nodes") node(s) in $D; $(tr '\n' ' ' < "$D/config")"
  local node
  for node in head $(nodes); do
    printf '  %-5s %-12s %s\n' "$node" "$(node_ip "$node")" \
      "$(ip -n "$NS-$node" -br link 2>/dev/null | awk '$1 ~ /^(eth0|br0)/ { print $1, $2 }' | tr '\n' ' ')"
  done
  if [ -f "$D/env" ]; then
    SLURM_CONF=$D/slurm/slurm.conf "$SELF" exec head sinfo -N 2>/dev/null || true
  fi
}

link() { # NODE up|down
  need_root
  [ $# -eq 2 ] || die "usage: link NODE up|down"
  node_exists "$1"
  case $2 in up|down) ;; *) die "usage: link NODE up|down (not '$2')" ;; esac
  [ "$1" != head ] || die "the head has no link of its own"
  # The switch side: the node keeps its address but nothing reaches it, and it
  # reaches nothing (no TCP reset either: a cable pulled, not a process killed).
  ip -n "$NS-head" link set "veth-$1" "$2"
  log "link of $1 $2"
}

kill_node() { # NODE: everything running on it, slurmd included
  need_root
  [ $# -eq 1 ] || die "usage: kill NODE"
  node_exists "$1"
  [ -d "$CPU_CG/$1" ] || die "'$1' is not a compute node"
  kill_cgroup "$CPU_CG/$1"
  log "killed every process on $1"
}

[ $# -ge 1 ] || { sed -n '2,12p' "$0"; exit 2; }
cmd=$1; shift
case $cmd in
  up) up "$@" ;;
  down) down ;;
  status) status ;;
  exec) need_root; [ $# -ge 2 ] || die "exec NODE CMD..."; node_exec "$@" ;;
  run) need_root; [ $# -ge 1 ] || die "run CMD..."; [ -f "$D/env" ] && . "$D/env"; node_exec head "$@" ;;
  mpirun)
    need_root
    [ -f "$D/env" ] && . "$D/env"
    # --bind-to none: a node's cgroup (cpuset or quota) is its CPU share; Open MPI
    # would otherwise pin every node's first rank to core 0 in quota mode.
    node_exec head mpirun --allow-run-as-root --bind-to none --mca plm_rsh_agent "$D/bin/rsh" \
      --mca btl self,vader,tcp --mca btl_tcp_if_include "$SUBNET.0/24" \
      --mca oob_tcp_if_include "$SUBNET.0/24" --mca oob_tcp_keepalive_time 10 \
      --mca oob_tcp_keepalive_intvl 5 --mca oob_tcp_keepalive_probes 3 "$@" ;;
  link) link "$@" ;;
  kill) kill_node "$@" ;;
  -h|--help|help) sed -n '2,46p' "$0" ;;
  *) die "unknown command '$cmd' (up, down, status, run, exec, mpirun, link, kill; --help)" ;;
esac
