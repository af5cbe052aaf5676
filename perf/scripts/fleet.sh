#!/usr/bin/env bash
# Starts a fleet for a benchmark: N release nodes on one fresh MySQL database and one Redis,
# sharing one server key, on ports BASE, BASE+1, …; prints their PIDs as a comma list (what
# `mbload --server-pid` takes).
#
#   perf/scripts/fleet.sh [nodes] [base port]      (default 2 nodes from 8080)
#
# The database is mbload_bench on MBLOAD_MYSQL (default mysql://root@127.0.0.1:3306), dropped
# and created anew. Redis: REDIS_URL if set, else a private redis-server on port
# MBLOAD_REDIS_PORT (default 6390, no persistence), started here and left running (its PID is
# in /tmp/mbload-redis.pid). Node logs: /tmp/mbload-node-<port>.log; each node's Prometheus
# metrics on 127.0.0.1:<port + 1000>/metrics (the messagebox_fleet_* counters). Limits are lifted as in
# server.sh (perf/scripts/limits.sh; BENCH_LIMITS=default keeps the defaults). Stop with `kill <PIDs>` (and the Redis).
set -euo pipefail
cd "$(dirname "$0")/../.."
nodes="${1:-2}"
base="${2:-8080}"
bin=target/release/messagebox
[ -x "$bin" ] || cargo build --release --bin messagebox >&2
mysql="${MBLOAD_MYSQL:-mysql://root@127.0.0.1:3306}"
hostport="${mysql#mysql://}"; hostport="${hostport#*@}"
mariadb --protocol=TCP -h"${hostport%:*}" -P"${hostport#*:}" -uroot \
  -e 'DROP DATABASE IF EXISTS mbload_bench; CREATE DATABASE mbload_bench' >&2
if [ -z "${REDIS_URL:-}" ]; then
  rport="${MBLOAD_REDIS_PORT:-6390}"
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >/tmp/mbload-redis.log 2>&1 &
  echo $! > /tmp/mbload-redis.pid
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break; sleep 0.1; done
  export REDIS_URL="redis://127.0.0.1:$rport/0"
fi
. perf/scripts/limits.sh
key="$("$bin" keygen | sed -n 's/^SERVER_PRIVATE_KEY=//p')"
pids=()
for i in $(seq 0 $((nodes - 1))); do
  port=$((base + i))
  SERVER_PRIVATE_KEY="$key" MESSAGEBOX_PORT="$port" MESSAGEBOX_BIND="${MESSAGEBOX_BIND:-127.0.0.1}" \
    MESSAGEBOX_METRICS_ADDR="127.0.0.1:$((port + 1000))" DATABASE_URL="$mysql/mbload_bench" RUST_LOG="${RUST_LOG:-warn}" \
    nohup "$bin" >"/tmp/mbload-node-$port.log" 2>&1 &
  pid=$!
  started=
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then started=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$started" ] || { cat "/tmp/mbload-node-$port.log" >&2; exit 1; }
  pids+=("$pid")
done
(IFS=,; echo "${pids[*]}")
