#!/usr/bin/env bash
# `mbload send` against our release server with metrics off and on (scraped once a second),
# alternating, 3 rounds, fresh SQLite database each time. Prints server CPU-µs per send and
# the rate per line. Needs target/release/{messagebox,mbload} and curl.
#
#   perf/scripts/metrics-onoff.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-3}"
for round in $(seq 1 "$rounds"); do
  for mode in off on; do
    if [ "$mode" = on ]; then export MESSAGEBOX_METRICS_ADDR=127.0.0.1:19464; else unset MESSAGEBOX_METRICS_ADDR; fi
    pid=$(perf/scripts/server.sh sqlite 18080)
    scraper=""
    if [ "$mode" = on ]; then
      ( while true; do curl -s -o /dev/null http://127.0.0.1:19464/metrics; sleep 1; done ) & scraper=$!
    fi
    result=$(target/release/mbload send -c 16 -d 10s --url http://127.0.0.1:18080 --server-pid "$pid" --quiet --json \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["server"]["cpu_us_per_op"],1), round(d["throughput_per_s"]), d["errors"] or "")')
    [ -n "$scraper" ] && kill "$scraper"
    if [ "$mode" = on ]; then
      curl -s http://127.0.0.1:19464/metrics | grep -E '^messagebox_http_requests_total\{route="/sendMessage"' || true
    fi
    kill "$pid"; sleep 1
    echo "round $round metrics $mode: server CPU-µs/op, rate/s: $result"
  done
done
