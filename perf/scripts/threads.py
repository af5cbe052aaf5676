#!/usr/bin/env python3
"""Where a server's CPU and context switches go, thread by thread, over a window.

    perf/scripts/threads.py PID DELAY SECONDS [OPS_PER_S]

Sleeps DELAY seconds (e.g. past mbload's floor loop and warm-up), then reads every thread's
`/proc/PID/task/TID/stat` (utime+stime) and `status` (voluntary / nonvoluntary context
switches) at the start and end of a SECONDS window, and prints each thread group's (threads
grouped by name) CPU share and switches per second — and per operation when OPS_PER_S (the
rate the run is offered, or its measured throughput) is given. A voluntary switch is the
thread going to sleep (it will need a wake-up); at a fixed rate, wake-ups per operation are
what a saturated server does not pay.
"""

import os
import sys
import time
from collections import defaultdict

HZ = os.sysconf("SC_CLK_TCK")


def snapshot(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
            status = open(f"/proc/{pid}/task/{tid}/status").read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / HZ
        sw = {k: int(v) for k, v in (line.split(":") for line in status.splitlines() if "ctxt_switches" in line)}
        out[tid] = (comm, cpu, sw["voluntary_ctxt_switches"], sw["nonvoluntary_ctxt_switches"])
    return out


def main():
    if len(sys.argv) < 4:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    pid, delay, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    rate = float(sys.argv[4]) if len(sys.argv) > 4 else None
    time.sleep(delay)
    a, t0 = snapshot(pid), time.monotonic()
    time.sleep(secs)
    b, t1 = snapshot(pid), time.monotonic()
    window = t1 - t0
    groups = defaultdict(lambda: [0, 0.0, 0, 0])
    for tid, (comm, cpu, vol, nonvol) in b.items():
        _, cpu0, vol0, nonvol0 = a.get(tid, (comm, 0.0, 0, 0))
        g = groups[comm]
        g[0] += 1
        g[1] += cpu - cpu0
        g[2] += vol - vol0
        g[3] += nonvol - nonvol0
    per = f" {'µs/op':>7} {'vol/op':>7} {'invol/op':>8}" if rate else ""
    print(f"{'threads':<20} {'n':>2} {'cores':>6} {'vol/s':>8} {'invol/s':>8}{per}")
    rows = sorted(groups.items(), key=lambda kv: -kv[1][1])
    total = [sum(g[i] for _, g in rows) for i in range(4)]
    for comm, (n, cpu, vol, nonvol) in rows + [("(all)", total)]:
        line = f"{comm:<20} {n:>2} {cpu / window:>6.3f} {vol / window:>8.0f} {nonvol / window:>8.0f}"
        if rate:
            ops = rate * window
            line += f" {cpu * 1e6 / ops:>7.1f} {vol / ops:>7.3f} {nonvol / ops:>8.3f}"
        print(line)
    print(f"window {window:.2f} s" + (f", {rate:.0f} ops/s" if rate else ""))


if __name__ == "__main__":
    main()
