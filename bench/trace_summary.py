"""Where a traced step spends its time: self time per op, from a `noregret bench ... --trace` file.

  python bench/trace_summary.py /tmp/step.trace [--top 30]

Self time is an event's duration less that of the events nested inside it on the same thread,
so the figures add up to the traced wall time (minus gaps between top-level ops).
"""
import argparse
import collections
import json


def self_times(events):
    """{name: (self microseconds, calls)} over complete ("X") events, nesting per thread."""
    totals = collections.defaultdict(lambda: [0.0, 0])
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X":
            by_thread[e.get("tid")].append(e)
    for evs in by_thread.values():
        # Parents first: earlier start, then longer duration.
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, event, child time]
        def close(item):
            end, ev, child = item
            totals[ev["name"]][0] += ev["dur"] - child
            totals[ev["name"]][1] += 1
            if stack:
                stack[-1][2] += ev["dur"]
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                close(stack.pop())
            stack.append([e["ts"] + e["dur"], e, 0.0])
        while stack:
            close(stack.pop())
    return totals


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    events = json.load(open(args.trace))
    xs = [e for e in events if e.get("ph") == "X"]
    wall = max(e["ts"] + e["dur"] for e in xs) - min(e["ts"] for e in xs)
    totals = self_times(events)
    inside = sum(us for us, _ in totals.values())
    print(f"traced wall time {wall / 1e3:.1f} ms, {len(xs)} events; {(wall - inside) / 1e3:.1f} ms outside any op")
    print(f"{'self ms':>9} {'%':>6} {'calls':>6}  op")
    for name, (us, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{us / 1e3:9.2f} {100 * us / wall:6.1f} {calls:6d}  {name}")


if __name__ == "__main__":
    main()
