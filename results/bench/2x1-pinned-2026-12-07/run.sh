#!/bin/bash
# issue 27: the 2 x 1 training step through the fixed scripts/mpirun.sh against 1 x 2, alternated 3 times
cd /work/main
B=/var/tmp/sv/r2x1/shiftvit
out=/var/tmp/sv/r2x1/out.jsonl; : > $out
lscpu | grep -E "Model name" > /var/tmp/sv/r2x1/machine.txt
lscpu | grep Flags | tr ' ' '\n' | grep -E "^(avx512f|avx512_bf16|amx_bf16)$" >> /var/tmp/sv/r2x1/machine.txt
uptime >> /var/tmp/sv/r2x1/machine.txt
for i in 1 2 3; do
  echo "{\"impl\":\"1x2\",\"rep\":$i,\"result\":$(env -u BLIS_ARCH_TYPE -u GLIBC_TUNABLES OMP_NUM_THREADS=2 BLIS_NUM_THREADS=2 $B bench -c configs/cifar10_keras.ini --steps 10 --warmup 2 --batch 256 --json 2>/dev/null)}" >> $out
  echo "{\"impl\":\"2x1\",\"rep\":$i,\"result\":$(env -u BLIS_ARCH_TYPE -u GLIBC_TUNABLES NP=2 THREADS=1 scripts/mpirun.sh $B bench -c configs/cifar10_keras.ini --steps 10 --warmup 2 --batch 256 --json 2>/var/tmp/sv/r2x1/mpi$i.err)}" >> $out
done
$B launcher -n 2 -t 1 --bind cores > /var/tmp/sv/r2x1/launcher.txt 2>&1 || true
NP=2 THREADS=1 scripts/mpirun.sh $B bench -c configs/tiny.ini --steps 2 --warmup 1 > /var/tmp/sv/r2x1/placement.txt 2>&1 || true
echo done >> /var/tmp/sv/r2x1/machine.txt
