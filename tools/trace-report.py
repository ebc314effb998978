#!/usr/bin/env python3
"""trace-report.py - where the time of each decode step goes, from the trace
that `mpk-run --trace FILE` writes (Chrome trace event format).

    python3 tools/trace-report.py [--labels] TRACE.json

Reads the complete events ("ph": "X"), one per task run:
    tid           the SM the task ran on (its track)
    ts, dur       start and duration, in microseconds
    cat           the task's op kind (matvec, attention, ...)
    args.step     the step it ran in, of its graph
    args.graph    "chunk" for a task of the chunk graph (a prompt in chunk
                  steps, mpk build --chunk), absent for the decode graph
    args.bytes    optional: bytes the task moved; mpk-run writes the weight
                  bytes of matvec and embed tasks; without it bytes and
                  GB/s are not reported
    args.wait, args.run, args.sig, args.in
                  optional: the task's phases in microseconds: how long
                  its worker waited for its event before ts, how long the
                  op ran and the signalling took after it (run + sig =
                  dur), and for an op that marks a point (matvec: its
                  input and staged weights in place) the time from ts to
                  that point; with them the op table has their medians
and the "thread_name" metadata events ("ph": "M"), one per SM of the GPU,
for the number of SMs (without them, the SMs that ran a task). name, the
task's label, is used by --labels only; the other fields (args.task,
args.layer, args.i) are not used.

Prints, per step: the tasks run; the wall time, from the first start to the
last end of the step's tasks; the SM busy fraction, task time / (SMs x
wall); the median and 90th percentile of the gaps between one SM's
consecutive tasks (from one task's end to the next one's start on the same
SM, counted in the step of the later task; mpk-run starts a record once
the task's event has fired, so a gap holds the staging of the task's
weights and its wait for that event); and with bytes, the step's bytes
over its wall time. Then the median of each over the steps, and per op kind
(cat): tasks, total and median duration, and with bytes, the bytes moved and
GB/s per SM (bytes over the kind's task time), and with phases their
medians (an op without marks shows "-" for in). With --labels, the same
per op kind and task label, the label's layer prefix (model.layers.N.)
taken off: "matvec self_attn.q_proj" sums the q projections of every
layer. A step with fewer tasks than
the largest step is marked "partial": mpk-run keeps only the latest records
of a long run. Chunk steps are listed before the decode steps, as c0, c1,
...; their op kinds are counted apart ("chunk matvec"). Percentiles
interpolate linearly between ranks. Standard library only.
"""

import argparse
import json
import os
import re
import sys


PHASES = ("wait", "in", "run", "sig")
LAYER = re.compile(r"^(?:.*\.)?layers\.\d+\.")  # a label's layer prefix, for --labels


def quantile(xs, p):
    """The p-quantile of the sorted list xs, linearly interpolated; None if empty."""
    if not xs:
        return None
    h = (len(xs) - 1) * p
    lo = int(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"trace-report: {path}: {e}")
    events = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        sys.exit(f"trace-report: {path}: no traceEvents list: not a Chrome trace")
    tasks, sm_names = [], set()
    for k, e in enumerate(events):
        if not isinstance(e, dict):
            continue
        if e.get("ph") == "M" and e.get("name") == "thread_name":
            sm_names.add(e.get("tid"))
        if e.get("ph") != "X":
            continue
        args = e.get("args") or {}
        try:
            t = {
                "sm": e["tid"],
                "start": float(e["ts"]),
                "dur": float(e["dur"]),
                "op": str(e.get("cat", e.get("name", "?"))),
                "label": LAYER.sub("", str(e.get("name", "?"))),
                "step": (0, int(args["step"])) if args.get("graph") == "chunk" else (1, int(args["step"])),
                "bytes": None if args.get("bytes") is None else float(args["bytes"]),
            }
            for ph in PHASES:
                t[ph] = None if args.get(ph) is None else float(args[ph])
        except (KeyError, TypeError, ValueError):
            sys.exit(f"trace-report: {path}: event {k}: a task needs tid, ts, dur and args.step, "
                     "and numbers in args.bytes and its phases")
        t["end"] = t["start"] + t["dur"]
        if t["step"][0] == 0:
            t["op"] = "chunk " + t["op"]
        tasks.append(t)
    if not tasks:
        sys.exit(f"trace-report: {path}: no task events (\"ph\": \"X\")")
    nsm = len(sm_names) or len({t["sm"] for t in tasks})
    return tasks, nsm


def kind_table(groups, have_bytes, phases, out):
    """One row per group (a name and its tasks), by total time."""
    width = max(8, max(len(k) for k in groups))
    head = f"{'op':<{width}} {'tasks':>7} {'total_us':>12} {'median_us':>10}"
    if have_bytes:
        head += f" {'bytes':>14} {'GB/s/SM':>9}"
    for k in phases:
        head += f" {k + '_med':>9}"
    print(head, file=out)
    for op in sorted(groups, key=lambda k: (-sum(t["dur"] for t in groups[k]), k)):
        ts = groups[op]
        total = sum(t["dur"] for t in ts)
        line = f"{op:<{width}} {len(ts):>7} {total:>12.3f} {quantile(sorted(t['dur'] for t in ts), 0.5):>10.3f}"
        if have_bytes:
            nb = sum(t["bytes"] or 0 for t in ts)
            line += f" {nb:>14.0f} {fmt(nb / (total * 1e3) if total > 0 else None, '9.2f'):>9}"
        for k in phases:
            line += f" {fmt(quantile(sorted(t[k] for t in ts if t[k] is not None), 0.5), '9.3f'):>9}"
        print(line, file=out)


def report(path, out, labels=False):
    tasks, nsm = load(path)
    have_bytes = any(t["bytes"] is not None for t in tasks)
    steps = {}
    for t in tasks:
        steps.setdefault(t["step"], []).append(t)
    gaps = {s: [] for s in steps}
    by_sm = {}
    for t in tasks:
        by_sm.setdefault(t["sm"], []).append(t)
    for ts in by_sm.values():
        ts.sort(key=lambda t: (t["start"], t["end"]))
        for a, b in zip(ts, ts[1:]):
            gaps[b["step"]].append(b["start"] - a["end"])
    most = max(len(v) for v in steps.values())

    print(f"trace {path}: {len(tasks)} tasks, {len(steps)} steps, {nsm} SMs", file=out)
    print("", file=out)
    head = f"{'step':>6} {'tasks':>7} {'wall_us':>10} {'busy':>6} {'gap_med_us':>10} {'gap_p90_us':>10}"
    if have_bytes:
        head += f" {'GB/s':>9}"
    print(head, file=out)
    rows = []
    for s in sorted(steps):
        ts = steps[s]
        wall = max(t["end"] for t in ts) - min(t["start"] for t in ts)
        busy = sum(t["dur"] for t in ts) / (nsm * wall) if wall > 0 else None
        g = sorted(gaps[s])
        gbs = None
        if have_bytes and wall > 0:
            gbs = sum(t["bytes"] or 0 for t in ts) / (wall * 1e3)
        rows.append((wall, busy, quantile(g, 0.5), quantile(g, 0.9), gbs))
        label = f"c{s[1]}" if s[0] == 0 else str(s[1])
        line = (f"{label:>6} {len(ts):>7} {wall:>10.3f} {fmt(None if busy is None else 100 * busy, '5.1f'):>5}% "
                f"{fmt(rows[-1][2], '10.3f'):>10} {fmt(rows[-1][3], '10.3f'):>10}")
        if have_bytes:
            line += f" {fmt(gbs, '9.2f'):>9}"
        if len(ts) < most:
            line += "  partial"
        print(line, file=out)
    med = [quantile(sorted(r[k] for r in rows if r[k] is not None), 0.5) for k in range(5)]
    line = (f"{'median':>6} {'':>7} {fmt(med[0], '10.3f'):>10} {fmt(None if med[1] is None else 100 * med[1], '5.1f'):>5}% "
            f"{fmt(med[2], '10.3f'):>10} {fmt(med[3], '10.3f'):>10}")
    if have_bytes:
        line += f" {fmt(med[4], '9.2f'):>9}"
    print(line, file=out)

    print("", file=out)
    ops = {}
    for t in tasks:
        ops.setdefault(t["op"], []).append(t)
    phases = [k for k in PHASES if any(t[k] is not None for t in tasks)]
    kind_table(ops, have_bytes, phases, out)
    if labels:
        print("", file=out)
        by = {}
        for t in tasks:
            by.setdefault(t["op"] + " " + t["label"], []).append(t)
        kind_table(by, have_bytes, phases, out)
    if not have_bytes:
        print("", file=out)
        print("no task has args.bytes: bytes moved and GB/s are not known from this trace", file=out)


def main():
    ap = argparse.ArgumentParser(
        description="Per-step SM busy fraction, gaps between tasks, and per op kind times "
                    "(and GB/s, when the trace records bytes) from an mpk-run --trace file.")
    ap.add_argument("trace", help="the JSON file mpk-run --trace wrote")
    ap.add_argument("--labels", action="store_true",
                    help="also one row per op kind and task label, the layer prefix "
                         "(model.layers.N.) taken off, so that a model's layers add up")
    a = ap.parse_args()
    try:
        report(a.trace, sys.stdout, a.labels)
        sys.stdout.flush()
    except BrokenPipeError:  # | head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
