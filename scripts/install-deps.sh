#!/usr/bin/env bash
# Installs the Debian 12 packages that building, testing, plotting and the PyTorch
# reference scripts need. Idempotent: installs only what is missing. As non-root it
# prints the command to run instead.
set -euo pipefail

PKGS=(
  build-essential pkg-config            # gcc, make
  openmpi-bin libopenmpi-dev            # mpicc, mpirun
  libblis-openmp-dev                    # BLIS, OpenMP-threaded
  libdnnl-dev                           # oneDNN: bf16 matrix products (optional: make ONEDNN=0)
  libhdf5-dev hdf5-tools                # checkpoints, metrics log, h5dump
  libcmocka-dev                         # C test framework
  libinih-dev                           # INI config parser
  libjpeg62-turbo-dev libpng-dev        # predict's photo decoding
  libstb-dev                            # stb_image_write, stb_easy_font headers (predict's grid)
  clang                                 # libFuzzer targets (make fuzz)
  valgrind                              # tests/valgrind.sh
  python3 python3-numpy python3-torch python3-h5py python3-matplotlib
)
# SLURM tests, and the emulated multi-node cluster (ip, tc; nsenter, unshare).
[ "${WITH_SLURM:-0}" = 1 ] && PKGS+=(slurm-wlm munge iproute2 util-linux)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: not root; run:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  echo "install-deps: or, with the libraries installed some other way: make SKIP_DEPS=1 ... (make check-deps says what is missing)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
