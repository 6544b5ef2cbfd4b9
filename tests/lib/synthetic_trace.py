#!/usr/bin/python3
"""Writes a synthetic step timeline in the format of `shiftvit train --trace` (for the
tests of scripts/trace_summary.py: a file far larger than a test run could make).

    synthetic_trace.py OUT STEPS [--ranks P] [--buckets B] [--slow-rank R] [--one-track]

Every step of every rank lasts 10 ms: forward 0-3 ms, backward 3-8 ms (with 4 parts),
bucket b (of B, at most 5) from 4 + b ms to 8.5 + 0.2 b ms (so the buckets overlap each
other), optimizer 8.7-9.7 ms. Hence per step: compute 9 ms, wait 0.7 ms, all-reduce
busy (the union of the buckets) 4.5 + 0.2 (B - 1) ms, hidden 4 ms. --slow-rank R makes
rank R's forward 3 ms longer (compute 12 ms; the step then lasts 13 ms on every rank, as
the others wait for it). --one-track puts every bucket on tid 1 (the layout of traces
written before issue 26), whose partial overlaps Perfetto cannot draw.
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("steps", type=int)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--buckets", type=int, default=4)
    ap.add_argument("--slow-rank", type=int, default=-1)
    ap.add_argument("--one-track", action="store_true")
    a = ap.parse_args()
    assert 1 <= a.buckets <= 5
    slow = a.slow_rank >= 0
    period = 13000.0 if slow else 10000.0  # us
    with open(a.out, "w") as f:
        f.write('{"displayTimeUnit":"ms","otherData":{"world_size":%d,"dropped_events":0},\n"traceEvents":[' % a.ranks)
        first = True

        def put(d):
            nonlocal first
            f.write(("" if first else ",") + "\n" + json.dumps(d, separators=(",", ":")))
            first = False

        for r in range(a.ranks):
            put({"name": "process_name", "ph": "M", "pid": r, "args": {"name": f"rank {r} on host{r}"}})
            late = 3000.0 if r == a.slow_rank else 0.0  # a longer forward
            lag = 3000.0 if slow and r != a.slow_rank else 0.0  # the others wait in the all-reduce
            for s in range(1, a.steps + 1):
                t = (s - 1) * period

                def x(name, t0, t1, tid=0, **args):
                    put({"name": name, "ph": "X", "pid": r, "tid": tid, "ts": round(t + t0, 3),
                         "dur": round(t1 - t0, 3), "args": dict(step=s, **args)})

                x("forward", 0, 3000 + late)
                x("backward", 3000 + late, 8000 + late)
                for p in range(4):
                    x(f"backward stage{p + 1}/block1", 3000 + late + 1250 * p, 3000 + late + 1250 * (p + 1))
                for b in range(a.buckets):
                    x("allreduce", 4000 + 1000 * b + late, 8500 + 200 * b + late + lag,
                      tid=1 if a.one_track else 1 + b, bucket=b)
                x("optimizer", 8700 + late + lag, 9700 + late + lag)
        f.write("\n]}\n")


if __name__ == "__main__":
    main()
