#!/usr/bin/env bash
# Reproduces the figures of results/image_decoding.md: stb_image (src/image.c
# of commit OLD, the last with stb) against libpng + libjpeg-turbo (the
# working tree's src/image.c).
#   (a) pixels of ../shared/data/inference_set against PIL's decode, and
#   (a2) of PNG files of every colour type and bit depth
#   (b) every input of tests/fuzz/corpus/fuzz_image under AddressSanitizer
#       (+UBSan; stb_image compiled in and instrumented, libpng/libjpeg-turbo
#       are the uninstrumented Debian libraries)
#   (c) decode time per photo, median of RUNS (default 21), one decoder at a
#       time under flock /tmp/shiftvit-timing.lock
# Run from the repository root: results/image_decoding/measure.sh
set -eu
OLD=${OLD:-bf44ea0}
RUNS=${RUNS:-21}
SET=${SET:-../shared/data/inference_set}
PY=${PY:-/usr/bin/python3}
B=build/image_decoding
HERE=results/image_decoding
mkdir -p $B/old $B/new $B/old-asan $B/new-asan
git show "$OLD:src/image.c" >$B/image_stb.c
printf '#define STB_IMAGE_IMPLEMENTATION\n#include <stb/stb_image.h>\n' >$B/stb_impl.c
CF="-std=c11 -D_GNU_SOURCE -Iinclude"
OPT="-O3 -march=native"
ASAN="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined"
STB=$(pkg-config --cflags stb)
NEW=$(pkg-config --cflags --libs libpng libjpeg)
gcc $CF $OPT $STB $HERE/decode_dump.c $B/image_stb.c -o $B/decode_stb -lstb -lm
gcc $CF $OPT $HERE/decode_dump.c src/image.c -o $B/decode_new $NEW -lm
gcc $CF $ASAN $STB $HERE/decode_dump.c $B/image_stb.c $B/stb_impl.c -o $B/decode_stb_asan -lm
gcc $CF $ASAN $HERE/decode_dump.c src/image.c -o $B/decode_new_asan $NEW -lm

photos=("$SET"/*.jpg)
echo "== (a) inference set against PIL ($($PY -c 'import PIL; print("Pillow", PIL.__version__)'))"
$B/decode_stb $B/old "${photos[@]}" >/dev/null
$B/decode_new $B/new "${photos[@]}" >/dev/null
echo "-- stb_image"; $PY $HERE/compare_pil.py $B/old "${photos[@]}"
echo "-- libjpeg-turbo"; $PY $HERE/compare_pil.py $B/new "${photos[@]}"

echo "== (a2) PNG variants of 000_cat.jpg (png_variants.py) against PIL"
rm -rf $B/pngv && $PY $HERE/png_variants.py "$SET/000_cat.jpg" $B/pngv
$B/decode_stb $B/old $B/pngv/*.png >/dev/null
$B/decode_new $B/new $B/pngv/*.png >/dev/null
echo "-- stb_image"; $PY -W ignore $HERE/compare_pil.py $B/old $B/pngv/*.png
echo "-- libpng"; $PY -W ignore $HERE/compare_pil.py $B/new $B/pngv/*.png

echo "== (b) fuzz corpus under ASan+UBSan: stb | libpng/libjpeg-turbo"
corpus=(tests/fuzz/corpus/fuzz_image/*)
export ASAN_OPTIONS=allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1
$B/decode_stb_asan $B/old-asan "${corpus[@]}" >$B/corpus_stb.tsv 2>$B/corpus_stb.err || echo "stb driver exit $?"
$B/decode_new_asan $B/new-asan "${corpus[@]}" >$B/corpus_new.tsv 2>$B/corpus_new.err || echo "new driver exit $?"
echo "sanitizer reports: stb $(grep -c 'ERROR: AddressSanitizer\|runtime error' $B/corpus_stb.err || true)," \
     "libpng/libjpeg-turbo $(grep -c 'ERROR: AddressSanitizer\|runtime error' $B/corpus_new.err || true)"
paste $B/corpus_stb.tsv $B/corpus_new.tsv | awk -F'\t' '{ printf "%-34s %-8s | %-8s %s\n", $1, $2, $5, ($2 != $5 ? "DIFFERS" : "") }'
echo "-- reasons (stb, then new):"; cat $B/corpus_stb.tsv; cat $B/corpus_new.tsv
echo "-- the corpus against PIL"
echo "stb:"; $PY $HERE/compare_pil.py $B/old-asan "${corpus[@]}"
echo "new:"; $PY $HERE/compare_pil.py $B/new-asan "${corpus[@]}"

echo "== (b2) damaged copies of 000_cat.jpg and of a PNG of it (mutate.py), ASan+UBSan"
rm -rf $B/mutants && $PY $HERE/mutate.py "$SET/000_cat.jpg" $B/mutants
mutants=($B/mutants/*)
$B/decode_stb_asan $B/old-asan "${mutants[@]}" >$B/mutants_stb.tsv 2>$B/mutants_stb.err || echo "stb driver exit $?"
$B/decode_new_asan $B/new-asan "${mutants[@]}" >$B/mutants_new.tsv 2>$B/mutants_new.err || echo "new driver exit $?"
echo "sanitizer reports: stb $(grep -c 'ERROR: AddressSanitizer\|runtime error' $B/mutants_stb.err || true)," \
     "libpng/libjpeg-turbo $(grep -c 'ERROR: AddressSanitizer\|runtime error' $B/mutants_new.err || true)"
$PY $HERE/compare_pil.py --outcome "${mutants[@]}" >$B/mutants_pil.tsv
paste $B/mutants_stb.tsv $B/mutants_new.tsv $B/mutants_pil.tsv | awk -F'\t' '{ split($1, e, "."); k = substr($1, 1, 3) "." e[2]; n[k]++;
    sa[k] += $2 == "accepted"; na[k] += $5 == "accepted"; pa[k] += $8 == "accepted"; sp[k] += $2 == $8; np[k] += $5 == $8 }
    END { for (k in n) printf "%-8s %3d files accepted by: stb %3d, libpng/libjpeg-turbo %3d, PIL %3d; outcome as PIL'"'"'s: stb %3d, new %3d\n",
          k, n[k], sa[k], na[k], pa[k], sp[k], np[k] }' | sort
echo "-- pixels of the damaged files libpng/libjpeg-turbo accepts, against PIL:"
$PY $HERE/compare_pil.py $B/new-asan "${mutants[@]}" | grep ALL
echo "-- where the outcome differs (stb | new):"
paste $B/mutants_stb.tsv $B/mutants_new.tsv | awk -F'\t' '$2 != $5 { printf "%s\t%s %s | %s %s\n", $1, $2, $3, $5, $6 }'

echo "== (c) decode time per photo, median of $RUNS (load: $(cut -d' ' -f1-3 /proc/loadavg))"
flock /tmp/shiftvit-timing.lock $B/decode_stb -t "$RUNS" $B/old "${photos[@]}" >$B/time_stb.tsv
flock /tmp/shiftvit-timing.lock $B/decode_new -t "$RUNS" $B/new "${photos[@]}" >$B/time_new.tsv
mkdir -p $B/png && $PY -c 'import sys, os; from PIL import Image
for f in sys.argv[2:]: Image.open(f).convert("RGB").save(os.path.join(sys.argv[1], os.path.basename(f)[:-4] + ".png"))' $B/png "${photos[@]}"
flock /tmp/shiftvit-timing.lock $B/decode_stb -t "$RUNS" $B/old $B/png/*.png >>$B/time_stb.tsv
flock /tmp/shiftvit-timing.lock $B/decode_new -t "$RUNS" $B/new $B/png/*.png >>$B/time_new.tsv
paste $B/time_stb.tsv $B/time_new.tsv | awk -F'\t' '{ printf "%-20s %-9s stb %9s   libjpeg-turbo/libpng %9s\n", $1, $3, $4, $8;
    e = substr($1, length($1) - 2); s[e] += $4; n[e] += $8 }
    END { for (e in s) printf "total %s: stb %.2f ms, libjpeg-turbo/libpng %.2f ms\n", e, s[e], n[e] }'
