#!/usr/bin/env bash
# Installs the Debian 12 packages that building, testing, plotting and the PyTorch
# reference scripts need. Idempotent: installs only what is missing. As non-root it
# prints the command to run instead.
set -euo pipefail

PKGS=(
  build-essential pkg-config            # gcc, make
  openmpi-bin libopenmpi-dev            # mpicc, mpirun: the default build
  mpich libmpich-dev                    # mpicc.mpich, mpiexec.mpich: the MPICH build (make CC=mpicc.mpich)
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
  python3-pil                           # the reference predict check (tests/reference)
  python3-onnx                          # scripts/export_onnx.py: builds and checks the graph
)
# Node.js and npm run ONNX Runtime (onnxruntime-node, tests/export/) on the exported
# graph; a machine that has them from elsewhere keeps its own.
command -v node >/dev/null 2>&1 || PKGS+=(nodejs)
command -v npm >/dev/null 2>&1 || PKGS+=(npm)
# SLURM tests, and the emulated multi-node cluster (ip, tc; nsenter, unshare).
[ "${WITH_SLURM:-0}" = 1 ] && PKGS+=(slurm-wlm munge iproute2 util-linux)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: missing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: not root; run:  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    echo "install-deps: or, with the libraries installed some other way: make SKIP_DEPS=1 ... (make check-deps says what is missing)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Both MPIs are installed; Debian's alternatives (mpi: mpicc, mpirun: mpirun and
# mpiexec) prefer Open MPI (priority 50 against MPICH's 40 on amd64), so the
# default build stays Open MPI. A machine where someone chose MPICH by hand
# (update-alternatives --set) keeps its choice: the build then uses MPICH's
# mpicc and the binary its launcher (src/dist/launch.c), consistently; say so.
if command -v mpirun >/dev/null 2>&1 && ! mpirun --version 2>/dev/null | grep -q 'Open MPI'; then
  echo "install-deps: note: mpirun is not Open MPI's ($(readlink -f "$(command -v mpirun)")); the default build uses" \
       "that MPI (make CC=mpicc.openmpi for Open MPI)" >&2
fi

# ONNX Runtime for Node.js, pinned by tests/export/package-lock.json, into
# tests/export/node_modules (from the npm registry; its CPU runtime is inside the
# package, and ONNXRUNTIME_NODE_INSTALL=skip stops its install script from
# fetching the optional CUDA provider from elsewhere).
here=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$here/tests/export/node_modules/onnxruntime-node/package.json" ]; then
  echo "install-deps: installing onnxruntime-node into tests/export/node_modules"
  (cd "$here/tests/export" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error) || {
    echo "install-deps: npm ci in tests/export failed (the ONNX export test needs it)" >&2
    exit 1
  }
fi
