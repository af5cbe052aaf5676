#!/usr/bin/env bash
# What fleet mode (REDIS_URL: fleet-wide sessions, replay claims and rate limits, one Redis
# round trip per request) costs a request: `mbload send` and `mbload list` against our
# release server on MySQL without and with REDIS_URL, alternating, fresh database each time,
# against a private redis-server this script starts and stops. Prints per line the server's
# CPU-µs per request and rate, and with Redis: Redis's own CPU per request (used_cpu_sys +
# used_cpu_user over the run, warm-up included, over its EVALSHA calls), its EVALSHA calls and
# their mean execution time (INFO commandstats). Needs target/release/{messagebox,mbload},
# redis-server and redis-cli.
#
#   perf/scripts/redis-onoff.sh [rounds] [seconds] [port]      (3, 10, 18080)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-3}"
secs="${2:-10}"
port="${3:-18080}"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "port $port is in use: pick another (third argument)" >&2; exit 1
fi
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
rpid=$!
trap 'kill $rpid 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do redis-cli -p "$rport" PING >/dev/null 2>&1 && break; sleep 0.1; done
rc() { redis-cli -p "$rport" "$@" | tr -d '\r'; }
redis_cpu() { rc INFO cpu | awk -F: '/used_cpu_(sys|user):/{s+=$2} END{printf "%.6f", s}'; }
for round in $(seq 1 "$rounds"); do
  for scenario in send list; do
    for mode in local redis; do
      if [ "$mode" = redis ]; then export REDIS_URL="redis://127.0.0.1:$rport/0"; else unset REDIS_URL; fi
      pid=$(perf/scripts/server.sh mysql "$port")
      rc CONFIG RESETSTAT >/dev/null
      c0=$(redis_cpu)
      args=(-c 16 -d "${secs}s")
      [ "$scenario" = list ] && args+=(--messages 10)
      result=$(target/release/mbload "$scenario" "${args[@]}" --url "http://127.0.0.1:$port" --server-pid "$pid" --quiet --json \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["server"]["cpu_us_per_op"],1), round(d["throughput_per_s"]), d["errors"] or "")')
      c1=$(redis_cpu)
      calls=$(rc INFO commandstats | awk -F'[=,:]' '/cmdstat_evalsha/{print $3}')
      kill "$pid"; sleep 1
      line="round $round $scenario $mode: server CPU-µs/op, rate/s: ${result% }"
      if [ "$mode" = redis ]; then
        usec=$(rc INFO commandstats | awk -F'[=,:]' '/cmdstat_evalsha/{print $7}')
        line="$line; Redis: $(python3 -c "print(round(($c1-$c0)*1e6/max(1,${calls:-0}),1))") CPU-µs/request, ${calls:-0} EVALSHA, ${usec:-?} µs each"
      fi
      echo "$line"
    done
  done
done
