#!/usr/bin/env bash
# What the storage quotas cost a send: `mbload send` against our release server with the
# quotas on (the standard profile's; the sender usage table kept by the writer) and against
# a *baseline binary* with no quotas at all (all four at -1, and the `(sender, expires_at)`
# index that its quota reads needed dropped after start-up), alternating, fresh database each
# time. The baseline is the build before the sender usage table (e50936b): it still creates
# that index, and only it can run without one, so "off" is "no quota work at all".
# Prints server CPU-µs per send and the rate per line. Needs target/release/{messagebox,mbload}
# and the baseline binary (BASELINE_BIN, default /work/baseline-e50936b/messagebox).
# (The rate limiters cannot be switched off; `cargo bench --bench limits` measures them.)
#
#   perf/scripts/quota-onoff.sh sqlite|mysql [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
store="${1:?usage: quota-onoff.sh sqlite|mysql [rounds] [seconds]}"
rounds="${2:-3}"
secs="${3:-10}"
baseline="${BASELINE_BIN:-/work/baseline-e50936b/messagebox}"
[ -x "$baseline" ] || { echo "no baseline binary at $baseline (set BASELINE_BIN)" >&2; exit 2; }
quotas=(MESSAGE_BOX_MAX_SENDER_MESSAGES MESSAGE_BOX_MAX_SENDER_BYTES MESSAGE_BOX_MAX_INBOX_MESSAGES MESSAGE_BOX_MAX_INBOX_BYTES)
drop_index() {
  case "$store" in
    sqlite) sqlite3 /tmp/mbload-bench.sqlite3 'DROP INDEX messages_sender_expires_at_index' ;;
    mysql) mariadb --protocol=TCP -h127.0.0.1 -P3306 -uroot mbload_bench \
             -e 'ALTER TABLE messages DROP INDEX messages_sender_expires_at_index' ;;
  esac
}
for round in $(seq 1 "$rounds"); do
  for mode in on off; do
    for v in "${quotas[@]}"; do
      if [ "$mode" = off ]; then export "$v=-1"; else unset "$v"; fi
    done
    if [ "$mode" = off ]; then
      pid=$(MESSAGEBOX_BIN="$baseline" perf/scripts/server.sh "$store" 18080)
      drop_index
      label="off (baseline $(basename "$(dirname "$baseline")"), no sender index)"
    else
      pid=$(perf/scripts/server.sh "$store" 18080)
      label="on"
    fi
    result=$(target/release/mbload send -c 16 -d "${secs}s" --url http://127.0.0.1:18080 --server-pid "$pid" --quiet --json \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["server"]["cpu_us_per_op"],1), round(d["throughput_per_s"]), d["errors"] or "")')
    kill "$pid"; sleep 1
    echo "round $round quotas $label ($store): server CPU-µs/op, rate/s: $result"
  done
done
