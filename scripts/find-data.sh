#!/usr/bin/env bash
# Prints the CIFAR-10 binary folder the trainer will use (same search order as
# `shiftvit train`: $CIFAR10_DIR, data/cifar-10-batches-bin,
# ../shared/data/cifar-10-batches-bin), fetching it with scripts/get-cifar10.sh
# when none has the files.
set -euo pipefail
cd "$(dirname "$0")/.."
for d in "${CIFAR10_DIR:-}" data/cifar-10-batches-bin ../shared/data/cifar-10-batches-bin; do
  if [ -n "$d" ] && [ -f "$d/data_batch_1.bin" ]; then echo "$d"; exit 0; fi
done
echo "CIFAR-10 not found locally; downloading it with scripts/get-cifar10.sh" >&2
scripts/get-cifar10.sh >&2
echo data/cifar-10-batches-bin
