#!/usr/bin/env bash
# Issue 6: our trainer and a PyTorch model of the same recipe, side by side on
# this machine, in one go (`make bench` builds first, then runs this).
#
# For each mode (training step, inference forward) and each thread count it runs
#   ours:    build/shiftvit bench -c CONFIG --json      (OMP_NUM_THREADS=T)
#   PyTorch: /usr/bin/python3 bench/pytorch_shiftvit.py --threads T --json
# back to back, with (WITH_BF16=1) ours again in bf16 (--set train.precision=bf16)
# and, for inference, PyTorch's model cast to bf16 (--dtype bf16),
# plus (WITH_MPI=1) our training step on 2 ranks x 1 thread. The
# PyTorch side runs at its best settings (/work/shared/MACHINE_NOTES.md): glibc
# malloc tunables that keep freed memory mapped, OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE unset, BLIS_ARCH_TYPE=0 (skx kernels) when libblas.so.3 is
# BLIS on an AVX-512 CPU. Ours runs with BLIS_ARCH_TYPE and GLIBC_TUNABLES unset:
# it picks its BLIS kernels and malloc settings itself.
#
# Writes results/bench/<date>.csv (impl,mode,threads,batch,images_per_s,
# median_ms,peak_rss_mib), <date>.jsonl (every run's full JSON: phases, MFU, env),
# <date>.log (stdout/stderr of every run) and regenerates results/bench/README.md
# (table with the ratios ours/PyTorch, machine, library versions, load, commands).
#
# Knobs (environment): STEPS (10) timed steps and WARMUP (2) untimed ones per run,
# BATCH (256), THREADS_LIST ("1 2"), MODES ("train eval"), WITH_MPI (1),
# CONFIG (configs/cifar10_keras.ini), BUILD (build), PY (/usr/bin/python3),
# OUT (results/bench), TORCH_BLIS_ARCH (auto: 0 on AVX-512 with BLIS, else unset),
# MAX_LOAD (unset): wait (sleep 120, up to MAX_WAIT=1200 s) until the 1-minute
# load average is at most MAX_LOAD before starting.
# About 3-4 minutes on an idle 2-core machine with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
BIN=$BUILD/shiftvit
CONFIG=${CONFIG:-configs/cifar10_keras.ini}
PY=${PY:-/usr/bin/python3}
BATCH=${BATCH:-256}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-2}
THREADS_LIST=${THREADS_LIST:-"1 2"}
MODES=${MODES:-"train eval"}
WITH_MPI=${WITH_MPI:-1}
WITH_BF16=${WITH_BF16:-1}
OUT=${OUT:-results/bench}
MAX_WAIT=${MAX_WAIT:-1200}
TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=68719476736
LIBBLAS=/usr/lib/x86_64-linux-gnu/libblas.so.3

die() { echo "bench.sh: $*" >&2; exit 1; }
[ -x "$BIN" ] || die "$BIN not found: run 'make' (or 'make bench') first"
[ -x "$PY" ] || die "$PY not found (Debian's python3 with python3-torch)"
"$PY" -c 'import torch' 2>/dev/null || die "$PY cannot import torch (apt-get install python3-torch)"

# PyTorch's BLAS: Debian's torch calls the system libblas.so.3; when that is BLIS
# on an AVX-512 CPU, BLIS 0.9.0 may not pick its AVX-512 kernels by itself.
if [ -z "${TORCH_BLIS_ARCH+x}" ]; then
    TORCH_BLIS_ARCH=
    if [[ "$(readlink -f "$LIBBLAS" 2>/dev/null)" == *blis* ]] && grep -qw avx512f /proc/cpuinfo; then
        TORCH_BLIS_ARCH=0
    fi
fi

if [ -n "${MAX_LOAD:-}" ]; then
    waited=0
    while awk -v m="$MAX_LOAD" '{exit !($1 > m)}' /proc/loadavg && [ "$waited" -lt "$MAX_WAIT" ]; do
        echo "bench.sh: load average $(cut -d' ' -f1-3 /proc/loadavg) > $MAX_LOAD, waiting 120 s" >&2
        sleep 120
        waited=$((waited + 120))
    done
fi

mkdir -p "$OUT"
DATE=$(date +%Y-%m-%d)
STEM=$OUT/$DATE
i=2
while [ -e "$STEM.csv" ]; do STEM=$OUT/$DATE-$i; i=$((i + 1)); done
LOG=$STEM.log
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
RUNS=$TMP/runs.tsv
: > "$RUNS"
: > "$LOG"

START_ISO=$(date -Is)
START_S=$(date +%s)
cut -d' ' -f1-3 /proc/loadavg > "$TMP/load_start"
psi() { sed -n 's/^some avg10=\([0-9.]*\) avg60=\([0-9.]*\) avg300=\([0-9.]*\).*/\1 \2 \3/p' /proc/pressure/cpu 2>/dev/null || true; }
psi > "$TMP/psi_start"
ps -eo pcpu,etime,args --sort=-pcpu | head -9 | cut -c1-150 > "$TMP/ps_start"
echo "bench.sh: start $START_ISO, load average $(cat "$TMP/load_start"); log: $LOG" >&2

# One run: impl, mode, threads, then the command. Appends impl \t mode \t threads
# \t rc \t command \t JSON line to $RUNS; all output goes to the log.
run() {
    local impl=$1 mode=$2 threads=$3
    shift 3
    local cmd json load rc=0
    cmd=$(printf '%q ' "$@")
    load=$(cut -d' ' -f1 /proc/loadavg)
    echo "bench.sh: [$impl $mode $threads thread(s)] ${cmd% }" >&2
    { echo; echo "### $impl $mode threads=$threads  $(date -Is)  load $(cut -d' ' -f1-3 /proc/loadavg)"; echo "\$ ${cmd% }"; } >> "$LOG"
    "$@" > "$TMP/out" 2>> "$LOG" || rc=$?
    cat "$TMP/out" >> "$LOG"
    json=$(grep '^{' "$TMP/out" | tail -n 1 || true)
    [ -n "$json" ] || json='{}'
    [ "$rc" -eq 0 ] || echo "bench.sh: $impl $mode $threads: exit status $rc (see $LOG)" >&2
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$impl" "$mode" "$threads" "$rc" "$load" "${cmd% }" "$json" >> "$RUNS"
}

# Our header once (BLIS sub-configuration choice, placement), not timed.
env -u BLIS_ARCH_TYPE -u GLIBC_TUNABLES OMP_NUM_THREADS=1 BLIS_NUM_THREADS=1 \
    "$BIN" bench -c "$CONFIG" --eval --steps 1 --warmup 0 --batch 8 > "$TMP/ours_header" 2>&1 || true
# PyTorch's build configuration and the BLAS it loads.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE GLIBC_TUNABLES=$TUNABLES \
    "$PY" -c 'import torch; print(torch.__config__.show()); print(torch.__config__.parallel_info())' \
    > "$TMP/torch_config" 2>&1 || true

for mode in $MODES; do
    eval_flag=()
    [ "$mode" = eval ] && eval_flag=(--eval)
    for t in $THREADS_LIST; do
        run ours "$mode" "$t" env -u BLIS_ARCH_TYPE -u GLIBC_TUNABLES \
            OMP_NUM_THREADS="$t" BLIS_NUM_THREADS="$t" \
            "$BIN" bench -c "$CONFIG" --steps "$STEPS" --warmup "$WARMUP" --batch "$BATCH" "${eval_flag[@]}" --json
        if [ "$WITH_BF16" = 1 ]; then
            run ours-bf16 "$mode" "$t" env -u BLIS_ARCH_TYPE -u GLIBC_TUNABLES \
                OMP_NUM_THREADS="$t" BLIS_NUM_THREADS="$t" \
                "$BIN" bench -c "$CONFIG" --steps "$STEPS" --warmup "$WARMUP" --batch "$BATCH" "${eval_flag[@]}" \
                --set train.precision=bf16 --json
        fi
        torch_env=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE -u BLIS_ARCH_TYPE GLIBC_TUNABLES="$TUNABLES")
        [ -n "$TORCH_BLIS_ARCH" ] && torch_env+=(BLIS_ARCH_TYPE="$TORCH_BLIS_ARCH")
        run pytorch "$mode" "$t" "${torch_env[@]}" OMP_NUM_THREADS="$t" BLIS_NUM_THREADS="$t" \
            "$PY" bench/pytorch_shiftvit.py --env asis --threads "$t" --steps "$STEPS" --warmup "$WARMUP" \
            --batch "$BATCH" "${eval_flag[@]}" --json
        if [ "$WITH_BF16" = 1 ] && [ "$mode" = eval ]; then
            # PyTorch 1.13's CPU autocast fails on this model (LayerNorm gets bf16 input and
            # fp32 weights); the model cast to bf16 runs, for inference only.
            run pytorch-bf16 "$mode" "$t" "${torch_env[@]}" OMP_NUM_THREADS="$t" BLIS_NUM_THREADS="$t" \
                "$PY" bench/pytorch_shiftvit.py --env asis --threads "$t" --steps "$STEPS" --warmup "$WARMUP" \
                --batch "$BATCH" --eval --dtype bf16 --json
        fi
    done
done
if [ "$WITH_MPI" = 1 ] && [[ " $MODES " == *" train "* ]] && command -v mpirun > /dev/null; then
    run ours-2x1 train 2 env -u BLIS_ARCH_TYPE -u GLIBC_TUNABLES NP=2 THREADS=1 scripts/mpirun.sh \
        "$BIN" bench -c "$CONFIG" --steps "$STEPS" --warmup "$WARMUP" --batch "$BATCH" --json
fi

END_ISO=$(date -Is)
ELAPSED=$(( $(date +%s) - START_S ))
cut -d' ' -f1-3 /proc/loadavg > "$TMP/load_end"
psi > "$TMP/psi_end"
echo "bench.sh: end $END_ISO (${ELAPSED} s), load average $(cat "$TMP/load_end")" >&2

# ---------------------------------------------------------------- facts for the README
{
    echo "cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    echo "cpus=$(nproc --all)"
    echo "cores_per_socket=$(lscpu | sed -n 's/^Core(s) per socket: *//p' | head -1)"
    echo "sockets=$(lscpu | sed -n 's/^Socket(s): *//p' | head -1)"
    echo "threads_per_core=$(lscpu | sed -n 's/^Thread(s) per core: *//p' | head -1)"
    echo "hypervisor=$(lscpu | sed -n 's/^Hypervisor vendor: *//p' | head -1)"
    echo "l2=$(lscpu | sed -n 's/^L2 cache: *//p' | head -1)"
    echo "l3=$(lscpu | sed -n 's/^L3 cache: *//p' | head -1)"
    echo "avx512f=$(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)"
    echo "bf16_flags=$(grep -ow -E 'avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ' | sed 's/ $//')"
    echo "mem_gib=$(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "os=$(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")"
    echo "blis_pkg=$(dpkg-query -W -f='${Package} ${Version}' libblis4-openmp 2>/dev/null || true)"
    echo "libblas=$(readlink -f "$LIBBLAS" 2>/dev/null || true)"
    echo "openmpi=$(mpirun --version 2>/dev/null | head -1 || true)"
    echo "gcc=$(gcc --version 2>/dev/null | head -1 || true)"
    echo "glibc=$(ldd --version 2>/dev/null | head -1 || true)"
    echo "python=$("$PY" --version 2>&1)"
    echo "torch_pkg=$(dpkg-query -W -f='${Package} ${Version}' python3-torch 2>/dev/null || true)"
    echo "git_head=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "git_dirty=$(git status --porcelain 2>/dev/null | wc -l)"
    echo "bin_mtime=$(date -r "$BIN" -Is)"
    echo "torch_blis_arch=$TORCH_BLIS_ARCH"
    # what BLIS picks by itself here, and what BLIS_ARCH_TYPE=$TORCH_BLIS_ARCH selects
    for a in auto "$TORCH_BLIS_ARCH"; do
        [ -n "$a" ] || continue
        arch=$( (if [ "$a" = auto ]; then unset BLIS_ARCH_TYPE; else export BLIS_ARCH_TYPE=$a; fi
                 "$PY" -c 'import ctypes
b = ctypes.CDLL("libblis.so.4"); b.bli_init(); b.bli_arch_string.restype = ctypes.c_char_p
print(b.bli_arch_string(b.bli_arch_query_id()).decode())') 2>/dev/null || echo unknown)
        echo "blis_arch_$a=$arch"
    done
    echo "tunables=$TUNABLES"
    echo "start=$START_ISO"
    echo "end=$END_ISO"
    echo "elapsed_s=$ELAPSED"
    echo "load_start=$(cat "$TMP/load_start")"
    echo "load_end=$(cat "$TMP/load_end")"
    echo "psi_start=$(cat "$TMP/psi_start")"
    echo "psi_end=$(cat "$TMP/psi_end")"
    echo "steps=$STEPS"
    echo "warmup=$WARMUP"
    echo "batch=$BATCH"
    echo "config=$CONFIG"
    echo "stem=$STEM"
} > "$TMP/facts"

"$PY" - "$TMP" "$OUT" <<'PYEOF'
import csv, json, os, sys

tmp, out = sys.argv[1], sys.argv[2]
facts = {}
for line in open(os.path.join(tmp, "facts")):
    k, _, v = line.rstrip("\n").partition("=")
    facts[k] = v
stem = facts["stem"]
rd = lambda n: open(os.path.join(tmp, n)).read().rstrip("\n")

runs = []
for line in open(os.path.join(tmp, "runs.tsv")):
    impl, mode, threads, rc, load, cmd, js = line.rstrip("\n").split("\t", 6)
    try:
        res = json.loads(js)
    except ValueError:
        res = {}
    runs.append(dict(impl=impl, mode=mode, threads=int(threads), rc=int(rc), load1_at_start=load,
                     command=cmd, result=res))

with open(stem + ".jsonl", "w") as f:
    for r in runs:
        f.write(json.dumps(r) + "\n")
with open(stem + ".csv", "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["impl", "mode", "threads", "batch", "images_per_s", "median_ms", "peak_rss_mib"])
    for r in runs:
        res = r["result"]
        batch = res.get("batch", res.get("global_batch", facts["batch"]))
        w.writerow([r["impl"], r["mode"], r["threads"], batch, res.get("images_per_s", ""),
                    res.get("median_ms", ""), res.get("peak_rss_mib", "")])

def get(impl, mode, t):
    for r in runs:
        if (r["impl"], r["mode"], r["threads"]) == (impl, mode, t):
            return r["result"] if r["rc"] == 0 else None
    return None

def f1(v, fmt="%.1f"):
    return fmt % v if isinstance(v, (int, float)) else "n/a"

targets = {("train", 2): 2.0, ("train", 1): 1.8, ("eval", 1): 1.5, ("eval", 2): 1.5}
modes = []
for r in runs:
    if r["impl"] in ("ours", "pytorch") and (r["mode"], r["threads"]) not in modes:
        modes.append((r["mode"], r["threads"]))

L = []
L.append("# Benchmark: shiftvit vs PyTorch, same model, same batch, same threads")
L.append("")
L.append("Generated by `scripts/bench.sh` (`make bench`) on %s; raw data: `%s.csv`, every run's "
         "JSON (phases, MFU, environment) in `%s.jsonl`, full output in `%s.log`."
         % (facts["start"][:10], os.path.basename(stem), os.path.basename(stem), os.path.basename(stem)))
L.append("")
L.append("fp32, global batch %s, synthetic 48x48x3 images (no data pipeline on either side), "
         "%s timed steps after %s warm-up steps per run; the median step is reported. "
         "A training step is forward + loss + backward + AdamW (dropout 0.2 and drop path on, "
         "training mode); inference is the forward pass." % (facts["batch"], facts["steps"], facts["warmup"]))
L.append("")
L.append("| mode | threads | ours images/s | PyTorch images/s | ours / PyTorch | target | "
         "ours median ms (min-max) | PyTorch median ms (min-max) | ours peak RSS MiB | PyTorch peak RSS MiB |")
L.append("|---|---|---|---|---|---|---|---|---|---|")
for mode, t in modes:
    o, p = get("ours", mode, t), get("pytorch", mode, t)
    ratio = (o["images_per_s"] / p["images_per_s"]) if o and p and p.get("images_per_s") else None
    tgt = targets.get((mode, t))
    L.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        "training" if mode == "train" else "inference", t,
        f1(o and o.get("images_per_s")), f1(p and p.get("images_per_s")),
        ("**%.2fx**" % ratio) if ratio else "n/a",
        (">= %.1fx %s" % (tgt, "(met)" if ratio and ratio >= tgt else "(not met)")) if tgt else "",
        "%s (%s-%s)" % (f1(o and o.get("median_ms"), "%.0f"), f1(o and o.get("min_ms"), "%.0f"),
                        f1(o and o.get("max_ms"), "%.0f")),
        "%s (%s-%s)" % (f1(p and p.get("median_ms"), "%.0f"), f1(p and p.get("min_ms"), "%.0f"),
                        f1(p and p.get("max_ms"), "%.0f")),
        f1(o and o.get("peak_rss_mib"), "%.0f"), f1(p and p.get("peak_rss_mib"), "%.0f")))
bf_rows = [(mode, t) for (mode, t) in modes if get("ours-bf16", mode, t)]
if bf_rows:
    L.append("")
    L.append("Ours in bf16 (`--set train.precision=bf16`: bf16 operands, fp32 accumulation, oneDNN) against "
             "ours in fp32, same run:")
    L.append("")
    L.append("| mode | threads | fp32 images/s | bf16 images/s | bf16 / fp32 | target | bf16 MFU vs sgemm peak "
             "| bf16 MFU vs measured bf16 product | fp32 peak RSS MiB | bf16 peak RSS MiB "
             "| PyTorch bf16-cast images/s (ours bf16 / it) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, t in bf_rows:
        o, b, pb = get("ours", mode, t), get("ours-bf16", mode, t), get("pytorch-bf16", mode, t)
        ratio = (b["images_per_s"] / o["images_per_s"]) if o and o.get("images_per_s") else None
        vs_torch = ("%s (%.2fx)" % (f1(pb["images_per_s"]), b["images_per_s"] / pb["images_per_s"])
                    if pb and pb.get("images_per_s") else ("n/a (autocast fails)" if mode == "train" else "n/a"))
        L.append("| %s | %d | %s | %s | %s | >= 1.5x %s | %s | %s | %s | %s | %s |" % (
            mode, t, f1(o and o.get("images_per_s")), f1(b.get("images_per_s")),
            ("**%.2fx**" % ratio) if ratio else "n/a", "(met)" if ratio and ratio >= 1.5 else "(not met)",
            f1(100 * b["mfu"], "%.1f%%") if b.get("mfu") is not None else "n/a",
            f1(100 * b["mfu_bf16"], "%.1f%%") if b.get("mfu_bf16") is not None else "n/a",
            f1(o and o.get("peak_rss_mib"), "%.0f"), f1(b.get("peak_rss_mib"), "%.0f"), vs_torch))
    L.append("")
    L.append("Ours in bf16: bf16 operands read in place (the weights' copy written by AdamW, the activations "
             "that only feed products stored in bf16), fp32 accumulation; the bf16 product peak is measured "
             "on operands already in bf16. PyTorch bf16-cast: `model.to(torch.bfloat16)` and bf16 images "
             "(every op in bf16; not mixed precision), inference only.")
m = get("ours-2x1", "train", 2)
if m is not None:
    o = get("ours", "train", 2)
    rel = (m["images_per_s"] / o["images_per_s"]) if o and o.get("images_per_s") else None
    L.append("")
    L.append("Ours on 2 MPI ranks x 1 thread (training, bucketed all-reduce, `scripts/mpirun.sh`): "
             "%s images/s, median %s ms, all-reduce wait %s ms per step, peak RSS %s MiB per rank; "
             "%s of 1 rank x 2 threads (target: within 5%%)."
             % (f1(m.get("images_per_s")), f1(m.get("median_ms"), "%.0f"),
                f1(m.get("allreduce_wait_ms")), f1(m.get("peak_rss_mib"), "%.0f"),
                ("%.2fx" % rel) if rel else "n/a"))
L.append("")
L.append("## Where the time goes (mean ms per step)")
L.append("")
L.append("| impl | mode | threads | forward | backward | all-reduce wait | optimiser | GFLOP/s | MFU (vs measured sgemm peak) | load avg at start |")
L.append("|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    res = r["result"]
    if r["rc"] != 0 or not res:
        L.append("| %s | %s | %d | failed (exit %d) | | | | | | %s |" % (r["impl"], r["mode"], r["threads"], r["rc"],
                                                                     r["load1_at_start"]))
        continue
    mfu = ("%.0f%% of %.0f GFLOP/s per rank" % (100 * res["mfu"], res["sgemm_peak_gflops_per_rank"])
           if "mfu" in res else "")
    L.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
        r["impl"], r["mode"], r["threads"], f1(res.get("forward_ms")),
        f1(res.get("backward_ms")) if r["mode"] == "train" else "",
        f1(res.get("allreduce_wait_ms")) if r["mode"] == "train" and "allreduce_wait_ms" in res else "",
        f1(res.get("optimizer_ms")) if r["mode"] == "train" else "",
        f1(res.get("gflops")), mfu, r["load1_at_start"]))
L.append("")
L.append("GFLOP/s count only the GEMM/conv work (207.8 MFLOP per image forward, 3x for training). "
         "PyTorch's forward includes the loss; its optimiser column includes zero_grad.")
L.append("")
L.append("## Conditions")
L.append("")
L.append("- Run from %s to %s (%s s in all)." % (facts["start"], facts["end"], facts["elapsed_s"]))
L.append("- Load average (1, 5, 15 min) at the start: %s; at the end: %s. The machine is shared: "
         "other jobs running at the same time make every number here lower and noisier, "
         "for both sides." % (facts["load_start"], facts["load_end"]))
if facts.get("psi_start"):
    L.append("- CPU pressure (`/proc/pressure/cpu`, share of time some task waited for a CPU, "
             "%% over 10 s, 60 s, 300 s) at the start: %s; at the end: %s."
             % (facts["psi_start"], facts["psi_end"]))
L.append("- Busiest processes at the start (`ps -eo pcpu,etime,args --sort=-pcpu`):")
L.append("")
L.append("```")
L.extend(rd("ps_start").splitlines())
L.append("```")
L.append("")
L.append("## Machine and libraries")
L.append("")
L.append("- CPU: %s, %s CPUs (%s socket(s) x %s core(s) x %s thread(s)), AVX-512F: %s, bf16 flags: %s, L2 %s, "
         "L3 %s, hypervisor %s; %s GiB memory; %s, Linux %s."
         % (facts["cpu_model"], facts["cpus"], facts["sockets"], facts["cores_per_socket"],
            facts["threads_per_core"], facts["avx512f"], facts.get("bf16_flags") or "none", facts["l2"], facts["l3"],
            facts["hypervisor"] or "none", facts["mem_gib"], facts["os"], facts["kernel"]))
L.append("- Compiler: %s; %s." % (facts["gcc"], facts["glibc"]))
L.append("- BLIS: %s. Ours links BLIS directly and selects the sub-configuration itself:" % facts["blis_pkg"])
L.append("")
L.append("```")
L.extend(l for l in rd("ours_header").splitlines() if not l.startswith(("  step", "  throughput", "  MFU", "  peak", "  rank 0 phases", "images_per_s", "Inference step")))
L.append("```")
L.append("")
L.append("- Open MPI: %s." % facts["openmpi"])
L.append("- PyTorch: %s (%s), %s; eager mode. Its BLAS is the system `libblas.so.3` -> `%s`%s; "
         "its convolutions (none by default, see below) go to oneDNN."
         % ((get("pytorch", modes[0][0], modes[0][1]) or {}).get("torch_version", "?") if modes else "?",
            facts["torch_pkg"], facts["python"], facts["libblas"],
            (", run with `BLIS_ARCH_TYPE=%s` (BLIS sub-configuration `%s`; left to itself BLIS picks `%s` "
             "on this CPU)" % (facts["torch_blis_arch"], facts.get("blis_arch_" + facts["torch_blis_arch"], "?"),
                               facts.get("blis_arch_auto", "?"))) if facts["torch_blis_arch"] else
            (" (BLIS sub-configuration left to BLIS: `%s`)" % facts.get("blis_arch_auto", "?")
             if "blis" in facts["libblas"] else "")))
L.append("- ours: shiftvit at git %s (the working tree had %s uncommitted changes when this ran; "
         "binary built %s)." % (facts["git_head"], facts["git_dirty"], facts["bin_mtime"]))
L.append("")
L.append("`torch.__config__.show()` and `parallel_info()` (no thread settings in effect):")
L.append("")
L.append("```")
L.extend(rd("torch_config").splitlines())
L.append("```")
L.append("")
L.append("## The PyTorch side, at its best settings")
L.append("")
L.append("- `bench/pytorch_shiftvit.py`: the recipe of SPEC section 1 written for eager PyTorch; "
         "`--check` compares its forward pass with the functional reference of `python/shiftvit/model.py` "
         "(float64, same weights; all four patch/merge variants) and checks the parameter count "
         "(11,690,602), the drop-path rates and the shift's backward.")
L.append("- Layout NHWC (tokens [N, H, W, C], channels last; input [N, 48, 48, 3]): every Linear and "
         "LayerNorm works on contiguous [tokens, C] rows, and the Linear layers get 2-D operands so "
         "the bias is fused into `addmm`. Patch projection and patch merging are a patch reshape + "
         "`nn.Linear`; the oneDNN conv2d variants (`--patch conv --merge conv`) were the same within "
         "the noise in trials here (training 65-84 vs 67-70 images/s, inference 276-366 vs 334-357 "
         "at 2 threads), and `BLIS_ARCH_TYPE=0` (skx) beat BLIS's own choice (haswell) by "
         "1.1-2.3x in (noisy) trials.")
L.append("- The shift is a `torch.autograd.Function` whose backward is the opposite shift: one pass "
         "each way, instead of autograd's zero-filled full-size tensor per slice.")
L.append("- Dropout 0.2 (`nn.Dropout`) and per-sample drop path are on in training, as in our trainer; "
         "PyTorch draws their masks with `bernoulli_` on one thread.")
L.append("- `torch.optim.AdamW(foreach=True)` (multi-tensor), TensorFlow-Addons decay (w -= 1e-4 w), "
         "WarmUpCosine learning rate, `zero_grad(set_to_none=True)`; inference under "
         "`torch.inference_mode()`.")
L.append("- Environment: `GLIBC_TUNABLES=%s` (freed memory stays mapped: no page faults each step), "
         "`OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE` unset, `torch.set_num_threads(T)` and "
         "`OMP_NUM_THREADS=BLIS_NUM_THREADS=T` (BLIS takes its thread count from the environment), "
         "one inter-op thread." % facts["tunables"])
L.append("- Peak RSS is `ru_maxrss` of the whole process (Python and torch's libraries included: "
         "about %s MiB right after `import torch`)."
         % f1((get("pytorch", "train", 1) or get("pytorch", "eval", 1) or {}).get("rss_after_import_mib"), "%.0f"))
L.append("")
L.append("## Commands")
L.append("")
L.append("Run from the repository root (`make bench` = `make all` + `scripts/bench.sh`):")
L.append("")
L.append("```")
for r in runs:
    L.append(r["command"])
L.append("```")
L.append("")
with open(os.path.join(out, "README.md"), "w") as f:
    f.write("\n".join(L))
print("wrote %s.csv, %s.jsonl, %s.log and %s/README.md" % (stem, stem, stem, out))
PYEOF
cat "$STEM.csv"
