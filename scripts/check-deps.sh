#!/usr/bin/env bash
# What building and testing shiftvit needs, checked one library at a time
# without any package manager (`make check-deps`; `make test`, `make demo` and
# `make train` run it instead of scripts/install-deps.sh with SKIP_DEPS=1 or
# where there is no dpkg-query). For each library: found (by a compile and
# link test with the flags the build will use) or MISSING, with the variable
# that points to it. Exit status 1 when a library the build needs is missing.
#
# The Makefile passes its settings in the environment: CC, CPPFLAGS, CFLAGS,
# LDFLAGS, LDLIBS, PKG_CONFIG, ONEDNN, DNNL_CFLAGS, DNNL_LIBS, SV_BLIS_CFLAGS and
# SV_BLIS_LIBS (empty: pkg-config's blis), and any NAME_CFLAGS / NAME_LIBS the
# user set (they replace pkg-config's answer for that library).
set -uo pipefail
CC=${CC:-mpicc}
PKG_CONFIG=${PKG_CONFIG:-pkg-config}
ONEDNN=${ONEDNN:-auto}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
missing=() optional=()

row() { printf 'check-deps: %-8s %-46s %s\n' "$1" "$2" "$3"; }

# try NAME HOW CFLAGS LIBS PROGRAM: compiles and links PROGRAM; prints the row.
try() {
  local name=$1 how=$2 cflags=$3 libs=$4 prog=$5
  printf '%s\n' "$prog" > "$TMP/t.c"
  # shellcheck disable=SC2086
  if $CC ${CPPFLAGS:-} $cflags ${CFLAGS:-} "$TMP/t.c" -o "$TMP/t" ${LDFLAGS:-} $libs ${LDLIBS:-} -lm > "$TMP/err" 2>&1; then
    row "$name" "$how" "ok"
    return 0
  fi
  row "$name" "$how" "MISSING: $(grep -m1 -i 'error\|cannot\|undefined\|not found' "$TMP/err" | sed 's/^[^ ]*: //' | cut -c1-150)"
  return 1
}

# pkg NAME VAR PACKAGE -> sets CF, LF from NAME's variables or pkg-config; 1 when neither
pkg() {
  local var=$2 pc=$3 c l
  c="${var}_CFLAGS" l="${var}_LIBS"
  [ "$var" = STB ] && l=STB_CFLAGS
  if [ -n "${!c+set}${!l+set}" ]; then CF=${!c:-} LF=${!l:-}; HOW="$c/$l"; [ "$c" = "$l" ] && HOW=$c; return 0; fi
  HOW="pkg-config $pc (or $c, $l)"; [ "$c" = "$l" ] && HOW="pkg-config $pc (or $c)"
  if ! $PKG_CONFIG --exists "$pc" 2>/dev/null; then
    row "$1" "$HOW" "MISSING: $($PKG_CONFIG --print-errors --exists "$pc" 2>&1 | head -1)"
    return 1
  fi
  CF=$($PKG_CONFIG --cflags "$pc") LF=$($PKG_CONFIG --libs "$pc")
}

# lib NAME VAR PACKAGE PROGRAM [headers-only]
lib() {
  local ok=1
  if pkg "$1" "$2" "$3"; then
    [ "${5:-}" = headers-only ] && LF=""
    try "$1" "$HOW" "$CF" "$LF" "$4" || ok=0
  else ok=0; fi
  [ $ok = 1 ] || missing+=("$1")
}

main_of() { printf '%s\nint main(void) { %s; return 0; }\n' "$1" "$2"; }

version=$($CC --version 2>/dev/null | head -1)
if [ -n "$version" ]; then row compiler "CC=$CC (or MPICC=...)" "ok: $version"
else row compiler "CC=$CC (or MPICC=...)" "MISSING: '$CC' does not run"; missing+=(compiler); fi
try MPI "mpi.h via CC (an MPI wrapper, or CPPFLAGS/LDLIBS)" "" "" \
  "$(main_of '#include <mpi.h>' 'MPI_Init(0, 0); MPI_Finalize()')" || missing+=(MPI)
try OpenMP "-fopenmp" "-fopenmp" "-fopenmp" "$(main_of '#include <omp.h>' 'return omp_get_max_threads() < 1')" ||
  missing+=(OpenMP)

if [ -n "${SV_BLIS_CFLAGS:-}${SV_BLIS_LIBS:-}" ]; then
  try BLIS "BLIS_INC/BLIS_LIB (or BLIS_CFLAGS/BLIS_LIBS)" "$SV_BLIS_CFLAGS" "$SV_BLIS_LIBS" \
    "$(main_of '#include <blis.h>' 'return bli_info_get_version_str() == 0')" || missing+=(BLIS)
else
  lib BLIS BLIS blis "$(main_of '#include <blis.h>' 'return bli_info_get_version_str() == 0')"
fi
lib HDF5 HDF5 hdf5 "$(main_of '#include <hdf5.h>' 'return H5open() < 0')"
lib inih INIH inih "$(main_of '#include <ini.h>' 'return ini_parse_string("", 0, 0)')"
lib libpng LIBPNG libpng "$(main_of '#include <png.h>' 'return png_access_version_number() == 0')"
lib libjpeg LIBJPEG libjpeg "$(main_of $'#include <stdio.h>\n#include <jpeglib.h>' 'struct jpeg_error_mgr e; return jpeg_std_error(&e) == 0')"
lib stb STB stb "$(main_of $'#include <stb_image_write.h>\n#include <stb_easy_font.h>' 'return 0')" headers-only

case $ONEDNN in
  0) row oneDNN "ONEDNN=0" "not used: bf16 runs emulated" ;;
  *) if try oneDNN "dnnl.h, ${DNNL_LIBS:--ldnnl} (DNNL_CFLAGS, DNNL_LIBS)" "${DNNL_CFLAGS:-}" "${DNNL_LIBS:--ldnnl}" \
          "$(main_of '#include <dnnl.h>' 'return dnnl_version() == 0')"; then :
     elif [ "$ONEDNN" = 1 ]; then missing+=(oneDNN)
     else optional+=("oneDNN (ONEDNN=auto builds without it; bf16 then runs emulated)"); fi ;;
esac

echo "check-deps: for make test:"
lib cmocka CMOCKA cmocka "$(main_of $'#include <stdarg.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <setjmp.h>\n#include <cmocka.h>' '_cmocka_run_group_tests("x", 0, 0, 0, 0)')"
for tool in mpirun timeout; do
  if command -v "$tool" > /dev/null; then row "$tool" "on PATH" "ok: $(command -v "$tool")"
  else row "$tool" "on PATH" "MISSING"; missing+=("$tool"); fi
done
if /usr/bin/python3 -c 'import numpy, matplotlib' 2> /dev/null || python3 -c 'import numpy, matplotlib' 2> /dev/null; then
  row python3 "numpy, matplotlib (plots)" "ok"
else row python3 "numpy, matplotlib (plots)" "MISSING (optional: curves.png, scaling plots)"; optional+=(python3-matplotlib); fi

[ ${#optional[@]} -gt 0 ] && echo "check-deps: optional, missing: ${optional[*]}"
if [ ${#missing[@]} -gt 0 ]; then
  echo "check-deps: missing: ${missing[*]} (on Debian 12: scripts/install-deps.sh; elsewhere set the variables above, README \"Building elsewhere\")"
  exit 1
fi
echo "check-deps: everything the build and the tests need is there"
