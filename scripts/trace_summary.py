#!/usr/bin/python3
"""Sums up a step timeline written by `shiftvit train --trace FILE` (or bench --trace):
per rank, the time of each event kind, its compute and wait per step (as the straggler
report of the metrics counts them), and how much of the gradient all-reduce was hidden
behind the backward pass.

    /usr/bin/python3 scripts/trace_summary.py TRACE.json
    /usr/bin/python3 scripts/trace_summary.py --check TRACE.json [--ranks P]

Per rank and kind the time is the union of the kind's intervals, so buckets in flight
together count once and no kind's total exceeds the wall time. Per step, compute is the
forward, backward and optimizer time less the parameter all-gather inside the optimizer
(ZeRO stage 1), and wait is the rest of the step's span (from the forward's start to the
optimizer's end): the exposed all-reduce and the small collectives. The straggler report
(metrics_ranks.csv) also counts the batch making as compute, which the trace leaves out.
The slowest rank is named when its compute per step is more than 10% above the median.

An all-reduce bucket is "hidden" for the part of its interval (its MPI_Iallreduce to
the moment the rank saw it complete) that lies inside the same step's backward event
on that rank; the rest is exposed (the rank waited for it, or it overlapped the
optimizer).

--check validates the file instead (exit status 1 with the reasons): JSON with a
traceEvents list; complete events with non-negative durations; no events dropped by a
full trace buffer (otherData.dropped_events); on every track (rank and tid) events nest
properly, with no partial overlap, which Perfetto's JSON importer cannot draw; every
backward part lies inside its step's backward event; every optimizer step has exactly
one allreduce (or, with train.zero_stage = 1, reduce_scatter) event per bucket on every
rank (with P > 1); P ranks when --ranks is given.

Time and memory are linear in the number of events (sorting per track aside).
"""
import argparse
import collections
import json
import statistics
import sys


# The per-bucket gradient collective: all-reduce, or reduce-scatter under ZeRO stage 1.
GRADIENT_COLLECTIVES = ("allreduce", "reduce_scatter")
STEP_KINDS = ("forward", "backward", "allreduce", "reduce_scatter", "optimizer", "allgather")
EVENT_KINDS = ("eval", "checkpoint", "wait")
COMPUTE = ("forward", "backward", "optimizer")
STRAGGLER_RATIO = 1.10  # as the trainer's epoch line (src/train/straggler.c)
EPS = 1e-3  # us: the file's rounding


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


def length(intervals):
    return sum(b - a for a, b in union(intervals))


def overlap(intervals, lo, hi):
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals)


def by_track(ev):
    tracks = collections.defaultdict(list)
    for e in ev:
        tracks[(e["pid"], e["tid"])].append(e)
    return tracks


def check_nesting(pid, tid, events):
    """Partial overlaps on one track: what Perfetto's JSON importer cannot draw."""
    problems = []
    stack = []
    for e in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
        a, b = e["ts"], e["ts"] + e["dur"]
        while stack and stack[-1][1] <= a + EPS:
            stack.pop()
        if stack and b > stack[-1][1] + EPS:
            where = f"rank {pid}" if tid == 0 else f"rank {pid}, track {tid}"
            problems.append(f"{where}: {e['name']} at {a:.1f} us overlaps {stack[-1][2]} without nesting in it")
        stack.append((a, b, e["name"]))
    return problems


def check(doc, ranks):
    problems = []
    ev = complete(doc)
    if not ev:
        return ["no complete (ph X) events"]
    other = doc.get("otherData") or {}
    if other.get("dropped_events"):
        problems.append(f"{other['dropped_events']} events were dropped (the trace buffer was full from step "
                        f"{other.get('dropped_from_step', '?')}): the file is incomplete")
    pids = sorted({e["pid"] for e in ev})
    if ranks is not None and pids != list(range(ranks)):
        problems.append(f"ranks {pids}, expected 0..{ranks - 1}")
    for e in ev:
        if e["dur"] < 0:
            problems.append(f"bad event {e}")
    for (pid, tid), events in sorted(by_track(ev).items()):
        problems += check_nesting(pid, tid, events)
    # with gradient accumulation a step has one backward per micro-step
    backward = collections.defaultdict(list)
    for e in ev:
        if e["name"] == "backward":
            backward[(e["pid"], e["args"]["step"])].append(e)
    for e in ev:
        parents = backward.get((e["pid"], e["args"]["step"])) if e["name"].startswith("backward ") else None
        if parents and not any(p["ts"] - EPS <= e["ts"] and e["ts"] + e["dur"] <= p["ts"] + p["dur"] + EPS
                               for p in parents):
            problems.append(f"rank {e['pid']}: {e['name']} of step {e['args']['step']} lies outside "
                            f"its backward event")
    training = bool(backward)  # an inference (bench --eval) trace has no buckets
    if len(pids) > 1 and training:
        buckets = {e["args"]["bucket"] for e in ev if e["name"] in GRADIENT_COLLECTIVES}
        steps = {e["args"]["step"] for e in ev if e["name"] == "optimizer"}
        seen = collections.Counter((e["pid"], e["args"]["step"], e["args"]["bucket"])
                                   for e in ev if e["name"] in GRADIENT_COLLECTIVES)
        if not buckets:
            problems.append("no allreduce events with more than one rank")
        for pid in pids:
            for s in sorted(steps):
                for b in sorted(buckets):
                    if seen[(pid, s, b)] != 1:
                        problems.append(f"rank {pid}, step {s}: bucket {b} appears {seen[(pid, s, b)]} times")
    return problems


def rank_summary(mine):
    """One rank's events: per-kind union totals (ms), event counts, steps, per-step
    compute and wait (ms), all-reduce busy and hidden time (us)."""
    spans = collections.defaultdict(list)  # kind -> intervals
    count = collections.Counter()
    per_step = collections.defaultdict(lambda: collections.defaultdict(list))  # step -> kind -> intervals
    for e in mine:
        name = e["name"]
        if name.startswith("backward "):
            continue
        iv = (e["ts"], e["ts"] + e["dur"])
        spans[name].append(iv)
        count[name] += 1
        if name in STEP_KINDS:
            per_step[e["args"]["step"]][name].append(iv)
    tot = {k: length(v) / 1e3 for k, v in spans.items()}
    steps = sorted(s for s, k in per_step.items() if "optimizer" in k)
    compute = wait = hidden = busy = 0.0
    for s in steps:
        k = per_step[s]
        ar = union(k.get("allreduce", []) + k.get("reduce_scatter", []))
        busy += sum(b - a for a, b in ar)
        for a, b in k.get("backward", [])[:1]:
            hidden += overlap(ar, a, b)
        c = sum(b - a for kind in COMPUTE for a, b in k.get(kind, [])) - length(k.get("allgather", []))
        starts = [a for kind in COMPUTE for a, _ in k.get(kind, [])]
        ends = [b for kind in COMPUTE for _, b in k.get(kind, [])]
        compute += c
        wait += max(0.0, max(ends) - min(starts) - c)
    n = max(1, len(steps))
    return tot, count, steps, compute / 1e3 / n, wait / 1e3 / n, busy, hidden


def summary(doc):
    ev = complete(doc)
    names = {}
    for e in doc["traceEvents"]:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            names[e["pid"]] = e["args"]["name"]
    per_rank = collections.defaultdict(list)
    for e in ev:
        per_rank[e["pid"]].append(e)
    computes = {}
    for pid in sorted(per_rank):
        tot, count, steps, c_ms, w_ms, busy, hidden = rank_summary(per_rank[pid])
        print(f"{names.get(pid, 'rank %d' % pid)}: {len(steps)} steps")
        for k in STEP_KINDS:
            if k in tot:
                print(f"  {k:<15} {tot[k]:10.1f} ms total, {tot[k] / max(1, len(steps)):8.2f} ms per step")
        for k in EVENT_KINDS:
            if k in tot:
                print(f"  {k:<15} {tot[k]:10.1f} ms total in {count[k]} event(s)")
        if steps:
            computes[pid] = c_ms
            print(f"  per step: compute {c_ms:.2f} ms, wait {w_ms:.2f} ms")
        if busy > 0:
            print(f"  all-reduce busy {busy / 1e3:.1f} ms: {hidden / 1e3:.1f} ms hidden behind the backward pass "
                  f"({100 * hidden / busy:.0f}%), {(busy - hidden) / 1e3:.1f} ms exposed")
    if len(computes) > 1:
        slow = max(computes, key=computes.get)
        med = statistics.median(computes.values())
        if computes[slow] > STRAGGLER_RATIO * med:
            print(f"slowest: {names.get(slow, 'rank %d' % slow)}, compute {computes[slow]:.1f} ms per step "
                  f"against a median of {med:.1f}")
    other = doc.get("otherData") or {}
    if other.get("dropped_events"):
        print(f"note: {other['dropped_events']} events were dropped (the trace buffer was full from step "
              f"{other.get('dropped_from_step', '?')})")


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
    ev = complete(doc)
    if not ev:
        sys.exit(f"trace_summary.py: {a.trace}: no complete (ph X) events")
    if a.check:
        problems = check(doc, a.ranks)
        for p in problems[:20]:
            print("problem:", p)
        print(f"{a.trace}: {len(ev)} events, {len({e['pid'] for e in ev})} rank(s), "
              f"{len({e['args']['step'] for e in ev if e['name'] == 'optimizer'})} steps: "
              f"{'OK' if not problems else '%d problem(s)' % len(problems)}")
        sys.exit(1 if problems else 0)
    summary(doc)


if __name__ == "__main__":
    main()
