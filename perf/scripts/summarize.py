#!/usr/bin/env python3
"""Summarises repeated bench-all.sh runs as the Markdown table of perf/RESULTS.md.

    perf/scripts/summarize.py OUTDIR [OUTDIR ...]

Each OUTDIR holds one run's `<scenario>.json` (mbload --json-out). For every scenario
present, the table gives the median over the runs and, in brackets, the lowest and highest:
the server's CPU per operation (the headline: this VM's figures move by up to 30 % from run
to run, the median of three is the number quoted), the throughput, and the p50/p99 of the
scenario's main latency (delivery for `live`).
"""

import json
import statistics
import sys
from pathlib import Path

ORDER = ["handshake", "send", "send-2000", "list", "ack", "mixed", "live", "live-2000", "idle", "memory"]


def main_latency(report):
    lat = report.get("latency", {})
    for name in ("delivery", report["scenario"], "send", "list"):
        if name in lat:
            return name, lat[name]
    return None, None


def spread(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main():
    dirs = [Path(d) for d in sys.argv[1:]]
    if not dirs:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    names = sorted({p.stem for d in dirs for p in d.glob("*.json")}, key=lambda n: (ORDER.index(n) if n in ORDER else 99, n))
    print(f"| scenario | runs | server CPU-µs/op | throughput /s | latency | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        reports = [json.loads((d / f"{name}.json").read_text()) for d in dirs if (d / f"{name}.json").exists()]
        cpu = [r.get("server", {}).get("cpu_us_per_op") for r in reports]
        thr = [r.get("throughput_per_s") for r in reports]
        which, _ = main_latency(reports[0])
        p50 = [main_latency(r)[1]["p50_ms"] if main_latency(r)[1] else None for r in reports]
        p99 = [main_latency(r)[1]["p99_ms"] if main_latency(r)[1] else None for r in reports]
        print(
            f"| {name} | {len(reports)} | {spread(cpu, '{:.0f}')} | {spread(thr, '{:.0f}')} | {which or '–'} "
            f"| {spread(p50, '{:.1f}')} | {spread(p99, '{:.1f}')} |"
        )


if __name__ == "__main__":
    main()
