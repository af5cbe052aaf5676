#!/usr/bin/env python3
"""Sums a `perf record` profile's self time into coarse buckets (crypto, database, kernel by
kind, allocator, JSON, HTTP/runtime, other) so a RESULTS entry can say where the time goes.

    perf report -i perf.data --no-children --sort dso,symbol -g none --stdio --percent-limit 0 \
        | perf/scripts/profile-buckets.py
"""
import re
import sys
from collections import defaultdict

RULES = [
    ("crypto: secp256k1 (EC mult, verify, sign)", r"secp256k1|ecmult|fe_mul|fe_sqr|gej_|ge_|scalar_|modinv"),
    ("crypto: SHA-256/HMAC", r"sha2::|sha256|hmac|compress256"),
    ("database: SQLite", r"sqlite3|^pcache|^wal|btree|vdbe|yy_|whereLoop|^pager"),
    ("database: MySQL client", r"mysql_async|mysql_common"),
    ("kernel: file I/O (write, fsync, locks)", r"ext4|jbd2|filemap|folio|mpage|fsync|vfs_|pwrite|pread|fcntl|locks_|posix_lock|block_write|buffer"),
    ("kernel: network (TCP loopback)", r"tcp_|ip_|skb|net_|sock_|napi|netif|__dev_queue|loopback|inet_"),
    ("kernel: scheduling, futex, epoll", r"futex|schedule|switch|wake|epoll|ep_|hrtimer|irq|softirq|select_task|enqueue|dequeue|update_curr|pick_next"),
    ("allocator (malloc/free)", r"malloc|free|_int_|cfree|realloc|unlink_chunk|mi_|alloc::alloc"),
    ("JSON (serde_json)", r"serde_json|serde::"),
    ("HTTP and runtime (hyper, tokio)", r"hyper|tokio|http::|httparse|mio"),
    ("memcpy/memmove/memcmp", r"memmove|memcpy|memset|memcmp|strlen"),
]


def bucket(sym: str, dso: str) -> str:
    for name, pat in RULES:
        if re.search(pat, sym):
            return name
    if "kernel" in dso:
        return "kernel: other"
    return "other (ours, std, libc)"


def main() -> None:
    totals = defaultdict(float)
    line_re = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*?)\s*$")
    for line in sys.stdin:
        m = line_re.match(line)
        if not m:
            continue
        pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
        totals[bucket(sym, dso)] += pct
    for name, pct in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{pct:6.1f}%  {name}")


if __name__ == "__main__":
    main()
