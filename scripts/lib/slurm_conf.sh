# slurm.conf lines shared by the throw-away test clusters (tests/slurm/cluster.sh,
# one node; scripts/vcluster.sh, emulated nodes): root daemons, munge through the
# given socket, no cgroups (linuxproc tracking, no task plugin), CPU-level
# scheduling, no accounting, a quick scheduler and requeue.
#   slurm_conf_common MUNGE_SOCKET STATE_DIR
slurm_conf_common() {
  cat <<EOF2
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again
# (default 120 s); short here so the requeue tests are quick.
AuthInfo=socket=$1,cred_expire=5
CredType=cred/munge
StateSaveLocation=$2
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Look at pending jobs every 2 s (default 60 s and 30 s): a requeued job restarts soon.
SchedulerParameters=sched_interval=2,bf_interval=2
ReturnToService=2
JobRequeue=1
# Keep finished jobs visible to scontrol for 10 minutes (the tests read Restarts=).
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
EOF2
}
