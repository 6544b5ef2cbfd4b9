#!/usr/bin/env bash
# Downloads CIFAR-10, binary version (Krizhevsky 2009), into DEST (default: data/
# of the repository), so the files end up in DEST/cifar-10-batches-bin/ where
# shiftvit looks for them (see include/shiftvit/data.h, sv_find_data_dir).
#
#   scripts/get-cifar10.sh [--force] [--keep-archive] [DEST]
#
# Idempotent: does nothing when the six .bin files are already there with the
# right size. Verifies the archive's MD5 before unpacking. Uses curl or wget.
# Environment: CIFAR10_URL overrides the download address (a mirror).
set -euo pipefail

URL=${CIFAR10_URL:-https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz}
MD5=c32a1d4ab5d03f1284b67883e8d87530
ARCHIVE=cifar-10-binary.tar.gz
SUBDIR=cifar-10-batches-bin
FILES=(data_batch_1.bin data_batch_2.bin data_batch_3.bin data_batch_4.bin
       data_batch_5.bin test_batch.bin)
FILE_SIZE=30730000 # 10,000 records of 3,073 bytes

say() { echo "get-cifar10: $*"; }
die() { echo "get-cifar10: error: $*" >&2; exit 1; }
usage() {
  cat <<EOF
usage: scripts/get-cifar10.sh [--force] [--keep-archive] [DEST]

Downloads CIFAR-10 (binary version, 163 MB) from
  $URL
checks its MD5 ($MD5) and unpacks it into DEST/$SUBDIR/.
DEST defaults to the repository's data/ folder.

  --force         download and unpack again even if the files are present
  --keep-archive  keep DEST/$ARCHIVE after unpacking (removed by default)
  -h, --help      this text

Set CIFAR10_URL to use a mirror. Without network access, copy the six .bin
files (data_batch_1..5.bin, test_batch.bin) into DEST/$SUBDIR/ by hand, or
point shiftvit at them with --data-dir or \$CIFAR10_DIR.
EOF
}

force=0 keep=0 dest=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --force) force=1 ;;
    --keep-archive) keep=1 ;;
    --) shift; [ $# -gt 0 ] && { dest=$1; shift; }; [ $# -eq 0 ] || { usage >&2; exit 2; }; break ;;
    -*) echo "get-cifar10: unknown option: $1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$dest" ] || { echo "get-cifar10: more than one DEST given: '$dest' and '$1'" >&2; usage >&2; exit 2; }
       dest=$1 ;;
  esac
  shift
done
if [ -z "$dest" ]; then
  dest="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/data"
fi
target="$dest/$SUBDIR"

# 0 when every .bin file is present with the right size; lists problems otherwise.
check_files() {
  local ok=0 f size
  for f in "${FILES[@]}"; do
    if [ ! -f "$target/$f" ]; then
      [ "${1:-}" = quiet ] || say "missing: $target/$f"
      ok=1
      continue
    fi
    size=$(stat -L -c %s "$target/$f")
    if [ "$size" != "$FILE_SIZE" ]; then
      [ "${1:-}" = quiet ] || say "wrong size: $target/$f has $size bytes, expected $FILE_SIZE"
      ok=1
    fi
  done
  return $ok
}

if [ $force -eq 0 ] && check_files quiet; then
  say "CIFAR-10 already present in $target (6 files, $FILE_SIZE bytes each); nothing to do"
  say "(use --force to download again)"
  exit 0
fi

if [ $force -eq 0 ] && [ -d "$target" ]; then
  say "$target is incomplete:"
  check_files || true
fi

md5_of() {
  if command -v md5sum >/dev/null 2>&1; then
    md5sum "$1" | cut -d' ' -f1
  elif command -v md5 >/dev/null 2>&1; then
    md5 -q "$1"
  else
    die "neither md5sum nor md5 found; cannot verify the archive"
  fi
}

mkdir -p "$dest" || die "cannot create $dest"
archive="$dest/$ARCHIVE"

if [ -f "$archive" ] && [ "$(md5_of "$archive")" = "$MD5" ]; then
  say "using the archive already downloaded: $archive (MD5 ok)"
else
  part="$archive.part"
  rm -f "$part"
  say "downloading $URL (about 163 MB) to $archive"
  if command -v curl >/dev/null 2>&1; then
    curl -fL --retry 3 --connect-timeout 30 -o "$part" "$URL" ||
      { rm -f "$part"; die "download failed (curl) from $URL; check the network, or set CIFAR10_URL to a mirror"; }
  elif command -v wget >/dev/null 2>&1; then
    wget --tries=3 --timeout=30 -O "$part" "$URL" ||
      { rm -f "$part"; die "download failed (wget) from $URL; check the network, or set CIFAR10_URL to a mirror"; }
  else
    die "neither curl nor wget is installed (Debian: apt-get install curl)"
  fi
  got=$(md5_of "$part")
  if [ "$got" != "$MD5" ]; then
    rm -f "$part"
    die "MD5 mismatch for $URL: got $got, expected $MD5 (corrupted or wrong file; removed)"
  fi
  mv -f "$part" "$archive"
  say "MD5 ok ($MD5)"
fi

say "unpacking into $dest/"
tar -xzf "$archive" -C "$dest" || die "cannot unpack $archive into $dest"
check_files || die "the archive did not produce the expected files in $target"
[ $keep -eq 1 ] || rm -f "$archive"
say "done: CIFAR-10 is in $target"
