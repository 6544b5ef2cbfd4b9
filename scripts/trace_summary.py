#!/usr/bin/python3
"""Sums up a step timeline written by `shiftvit train --trace FILE` (or bench --trace):
per rank, the total time of each event kind, and how much of the gradient all-reduce
was hidden behind the backward pass.

    /usr/bin/python3 scripts/trace_summary.py TRACE.json
    /usr/bin/python3 scripts/trace_summary.py --check TRACE.json [--ranks P]

An all-reduce bucket is "hidden" for the part of its interval (its MPI_Iallreduce to
the moment the rank saw it complete) that lies inside the same step's backward event
on that rank; the rest is exposed (the rank waited for it, or it overlapped the
optimizer). Per rank and step the union of the buckets' intervals is used, so
buckets in flight together count once.

--check validates the file instead (exit status 1 with the reasons): JSON with a
traceEvents list; complete events with non-negative durations; on each rank's main
thread (tid 0) events nest properly (no partial overlap); every backward part lies
inside its step's backward event; every optimizer step has exactly one allreduce
(or, with train.zero_stage = 1, reduce_scatter) event per bucket on every rank (with
P > 1); P ranks when --ranks is given.
"""
import argparse
import collections
import json
import sys


# The per-bucket gradient collective: all-reduce, or reduce-scatter under ZeRO stage 1.
GRADIENT_COLLECTIVES = ("allreduce", "reduce_scatter")


def load(path):
    with open(path) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise ValueError("not a trace: no traceEvents list")
    return doc


def malformed(doc):
    """Events this script cannot read, each named by its index."""
    problems = []
    for i, e in enumerate(doc["traceEvents"]):
        if not isinstance(e, dict):
            problems.append(f"event {i} is not an object: {e!r:.60}")
            continue
        if e.get("ph") != "X":
            continue
        for key, types, what in (("name", str, "a string"), ("pid", int, "an integer"), ("tid", int, "an integer"),
                                 ("ts", (int, float), "a number"), ("dur", (int, float), "a number")):
            if not isinstance(e.get(key), types) or isinstance(e.get(key), bool):
                problems.append(f"event {i}: '{key}' is missing or not {what}")
        args = e.get("args")
        if not isinstance(args, dict) or not isinstance(args.get("step"), int):
            problems.append(f"event {i}: args.step is missing or not an integer")
        elif e.get("name") in GRADIENT_COLLECTIVES + ("allgather",) and not isinstance(args.get("bucket"), int):
            problems.append(f"event {i}: args.bucket is missing or not an integer")
    return problems


def complete(doc):
    return [e for e in doc["traceEvents"] if e.get("ph") == "X"]


def union(intervals):
    out = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def overlap(intervals, lo, hi):
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals)


def check(doc, ranks):
    problems = []
    ev = complete(doc)
    if not ev:
        return ["no complete (ph X) events"]
    pids = sorted({e["pid"] for e in ev})
    if ranks is not None and pids != list(range(ranks)):
        problems.append(f"ranks {pids}, expected 0..{ranks - 1}")
    for e in ev:
        if e.get("dur", -1) < 0 or "ts" not in e:
            problems.append(f"bad event {e}")
    for pid in pids:
        main = sorted((e for e in ev if e["pid"] == pid and e.get("tid") == 0),
                      key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for e in main:
            a, b = e["ts"], e["ts"] + e["dur"]
            while stack and stack[-1][1] <= a + 1e-3:
                stack.pop()
            if stack and b > stack[-1][1] + 1e-3:
                problems.append(f"rank {pid}: {e['name']} at {a:.1f} us overlaps {stack[-1][2]} "
                                f"without nesting in it")
            stack.append((a, b, e["name"]))
        # with gradient accumulation a step has one backward per micro-step
        backward = collections.defaultdict(list)
        for e in main:
            if e["name"] == "backward":
                backward[e["args"]["step"]].append(e)
        for e in main:
            if e["name"].startswith("backward ") and e["args"]["step"] in backward:
                if not any(p["ts"] - 1e-3 <= e["ts"] and e["ts"] + e["dur"] <= p["ts"] + p["dur"] + 1e-3
                           for p in backward[e["args"]["step"]]):
                    problems.append(f"rank {pid}: {e['name']} of step {e['args']['step']} lies outside "
                                    f"its backward event")
    training = any(e["name"] == "backward" for e in ev)  # an inference (bench --eval) trace has no buckets
    if len(pids) > 1 and training:
        buckets = {e["args"]["bucket"] for e in ev if e["name"] in GRADIENT_COLLECTIVES}
        steps = {e["args"]["step"] for e in ev if e["name"] == "optimizer"}
        seen = collections.Counter((e["pid"], e["args"]["step"], e["args"]["bucket"])
                                   for e in ev if e["name"] in GRADIENT_COLLECTIVES)
        if not buckets:
            problems.append("no allreduce events with more than one rank")
        for pid in pids:
            for s in steps:
                for b in buckets:
                    if seen[(pid, s, b)] != 1:
                        problems.append(f"rank {pid}, step {s}: bucket {b} appears {seen[(pid, s, b)]} times")
    return problems


def summary(doc):
    ev = complete(doc)
    names = {}
    for e in doc["traceEvents"]:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            names[e["pid"]] = e["args"]["name"]
    for pid in sorted({e["pid"] for e in ev}):
        mine = [e for e in ev if e["pid"] == pid]
        tot = collections.defaultdict(float)
        for e in mine:
            if not e["name"].startswith("backward "):
                tot[e["name"]] += e["dur"] / 1e3
        steps = sorted({e["args"]["step"] for e in mine if e["name"] == "optimizer"})
        hidden = total_ar = 0.0
        for s in steps:
            ar = union([(e["ts"], e["ts"] + e["dur"]) for e in mine
                        if e["name"] in GRADIENT_COLLECTIVES and e["args"]["step"] == s])
            bw = [e for e in mine if e["name"] == "backward" and e["args"]["step"] == s]
            total_ar += sum(b - a for a, b in ar)
            if bw:
                hidden += overlap(ar, bw[0]["ts"], bw[0]["ts"] + bw[0]["dur"])
        print(f"{names.get(pid, 'rank %d' % pid)}: {len(steps)} steps")
        for k in ("forward", "backward", "allreduce", "reduce_scatter", "optimizer", "allgather"):
            if k in tot:
                print(f"  {k:<15} {tot[k]:10.1f} ms total, {tot[k] / max(1, len(steps)):8.2f} ms per step")
        for k in ("eval", "checkpoint"):
            if k in tot:
                n = sum(1 for e in mine if e["name"] == k)
                print(f"  {k:<15} {tot[k]:10.1f} ms total in {n} event(s)")
        if total_ar > 0:
            print(f"  all-reduce busy {total_ar / 1e3:.1f} ms: {hidden / 1e3:.1f} ms hidden behind the backward pass "
                  f"({100 * hidden / total_ar:.0f}%), {(total_ar - hidden) / 1e3:.1f} ms exposed")
    dropped = doc.get("otherData", {}).get("dropped_events", 0)
    if dropped:
        print(f"note: {dropped} events were dropped (the trace buffer was full)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--check", action="store_true", help="validate the file instead of summing it up")
    ap.add_argument("--ranks", type=int, help="with --check: the expected world size")
    a = ap.parse_args()
    try:
        doc = load(a.trace)
    except OSError as e:
        sys.exit(f"trace_summary.py: {a.trace}: cannot read it: {e.strerror}")
    except ValueError as e:
        sys.exit(f"trace_summary.py: {a.trace}: {e}")
    bad = malformed(doc)
    if bad:
        for p in bad[:20]:
            print("problem:", p)
        sys.exit(f"trace_summary.py: {a.trace}: {len(bad)} malformed event(s); not a shiftvit trace?")
    if not complete(doc):
        sys.exit(f"trace_summary.py: {a.trace}: no complete (ph X) events")
    if a.check:
        problems = check(doc, a.ranks)
        for p in problems[:20]:
            print("problem:", p)
        ev = complete(doc)
        print(f"{a.trace}: {len(ev)} events, {len({e['pid'] for e in ev})} rank(s), "
              f"{len({e['args']['step'] for e in ev if e['name'] == 'optimizer'})} steps: "
              f"{'OK' if not problems else '%d problem(s)' % len(problems)}")
        sys.exit(1 if problems else 0)
    summary(doc)


if __name__ == "__main__":
    main()
