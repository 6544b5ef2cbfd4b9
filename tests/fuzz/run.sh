#!/usr/bin/env bash
# Builds the libFuzzer targets (clang -fsanitize=fuzzer,address,undefined,
# compiled against the project's sources) and runs each for SECONDS (default
# 60) on its seed corpus tests/fuzz/corpus/<target>/. Every input of the seed
# corpus, including the regression inputs of crashes found earlier, runs
# first. Exits non-zero if a target fails to build or finds a crash, a leak,
# a timeout or an out-of-memory; the input that did it is kept in
# build/fuzz/artifacts/ and named in the output.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET...]    (make fuzz runs it with 60)
#
# Environment: CLANG (default clang), FUZZ_BUILD (default build/fuzz).
set -u
cd "$(dirname "$0")/../.." || exit 2   # the repository root

SECONDS_EACH=${1:-60}
shift $(( $# > 0 ? 1 : 0 ))
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(fuzz_cifar fuzz_config fuzz_image)
CLANG=${CLANG:-clang}
OUT=${FUZZ_BUILD:-build/fuzz}

if ! command -v "$CLANG" >/dev/null 2>&1; then
    echo "fuzz: $CLANG not found (Debian: apt-get install clang)" >&2
    exit 2
fi
case $SECONDS_EACH in ''|*[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

TRIPLET=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
BLIS_INC=${BLIS_INC:-/usr/include/$TRIPLET/blis-openmp}
BLIS_LIB=${BLIS_LIB:-/usr/lib/$TRIPLET/blis-openmp}
PKG_CFLAGS=$(pkg-config --cflags hdf5 inih stb libpng libjpeg)
PKG_LIBS=$(pkg-config --libs hdf5 inih libpng libjpeg)
MPI_CFLAGS=$(mpicc --showme:compile)
MPI_LIBS=$(mpicc --showme:link)
# Every sanitizer report ends the run. libpng and libjpeg-turbo are Debian's
# builds, not instrumented (see fuzz_image.c).
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=c11 -D_GNU_SOURCE -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -g -O1 -fno-omit-frame-pointer -fopenmp -Iinclude \
  -isystem $BLIS_INC $PKG_CFLAGS $MPI_CFLAGS -Wno-unused-command-line-argument"
LIBS="-L$BLIS_LIB -Wl,-rpath,$BLIS_LIB -lblis $PKG_LIBS $MPI_LIBS -ldnnl -lm"

mkdir -p "$OUT/obj" "$OUT/artifacts" || exit 2

# Objects compiled with other flags are rebuilt.
flags="$CLANG $CFLAGS $SAN"
if [ "$(cat "$OUT/obj/flags" 2>/dev/null)" != "$flags" ]; then
    rm -f "$OUT"/obj/*.o
    printf '%s' "$flags" >"$OUT/obj/flags"
fi

# The project's sources (not main.c and the commands) as one instrumented
# archive; a target links only the objects it uses.
LIB="$OUT/libshiftvit_fuzz.a"
objs=()
for src in src/*/*.c; do
    base=$(basename "$src" .c)
    case $base in main|cmd_*) continue ;; esac
    obj="$OUT/obj/$base.o"   # file names are unique across src/'s folders
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find include/shiftvit src -newer "$obj" -name '*.h' 2>/dev/null)" ]; then
        echo "fuzz: compiling $src"
        # shellcheck disable=SC2086
        "$CLANG" $CFLAGS $SAN -fsanitize=fuzzer-no-link -c "$src" -o "$obj" || exit 2
    fi
    objs+=("$obj")
done
rm -f "$LIB"
ar rcs "$LIB" "${objs[@]}" || exit 2

status=0
for t in "${TARGETS[@]}"; do
    src=tests/fuzz/$t.c
    if [ ! -f "$src" ]; then echo "fuzz: no $src" >&2; status=2; continue; fi
    echo "fuzz: building $t"
    # shellcheck disable=SC2086
    if ! "$CLANG" $CFLAGS $SAN -fsanitize=fuzzer "$src" "$LIB" -o "$OUT/$t" $LIBS; then
        echo "fuzz: $t does not build" >&2
        status=2
        continue
    fi
    seeds=tests/fuzz/corpus/$t
    work=$OUT/corpus/$t          # new inputs land here, never in the seed folder
    mkdir -p "$work" "$seeds"
    case $t in
        fuzz_cifar) max_len=16384 ;;   # up to 5 records
        fuzz_image) max_len=65536 ;;
        *) max_len=8192 ;;
    esac
    echo "fuzz: running $t for $SECONDS_EACH s (seeds: $seeds, $(ls "$seeds" | wc -l) files)"
    log=$OUT/$t.log
    # libFuzzer: -max_total_time bounds the run; a crash, leak, timeout (60 s: an image of the largest accepted size,
    # 64 Mpixels, takes ~15 s to resize under ASan) or an allocation over 2 GB
    # ends it with a non-zero status.
    OMP_NUM_THREADS=1 BLIS_NUM_THREADS=1 \
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        "$OUT/$t" -max_total_time="$SECONDS_EACH" -timeout=60 -rss_limit_mb=2560 \
        -malloc_limit_mb=2048 -max_len=$max_len -print_final_stats=1 \
        -artifact_prefix="$OUT/artifacts/$t-" \
        "$work" "$seeds" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{s+=$1} END {print s+0}')
    if [ $rc -ne 0 ]; then
        echo "fuzz: $t FAILED (exit $rc) after $execs runs; log $log; the end of it:" >&2
        grep -E "ERROR|SUMMARY|Test unit written|runtime error|==[0-9]+==" "$log" | head -20 >&2
        tail -5 "$log" >&2
        status=1
    else
        echo "fuzz: $t OK, $execs runs in $SECONDS_EACH s, corpus $(ls "$work" | wc -l) inputs"
    fi
done
[ $status -eq 0 ] && echo "fuzz: all targets OK" || echo "fuzz: FAILED" >&2
exit $status
