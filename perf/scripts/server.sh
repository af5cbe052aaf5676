#!/usr/bin/env bash
# Starts our release server on a fresh database for a benchmark and prints its PID.
#
#   perf/scripts/server.sh sqlite|mysql [port]      (default port 8080)
#
# sqlite: a new file /tmp/mbload-bench.sqlite3; mysql: the database mbload_bench on
# MBLOAD_MYSQL (default mysql://root@127.0.0.1:3306), dropped and created anew. Logs go to
# /tmp/mbload-server.log (RUST_LOG=warn unless set). Extra server settings can be passed in
# the environment (MESSAGEBOX_THREADS, MESSAGEBOX_DB_POOL, ...; MESSAGEBOX_BIN runs another
# binary, e.g. a copy of an earlier build to compare). Stop it with `kill PID`.
#
# MBLOAD_TAG=x gives the run its own file, database and log (/tmp/mbload-bench-x.sqlite3,
# mbload_bench_x, /tmp/mbload-server-x.log), so two benchmarks can run side by side.
#
# The per-client limits are lifted (perf/scripts/limits.sh; BENCH_LIMITS=default keeps them).
set -euo pipefail
cd "$(dirname "$0")/../.."
store="${1:?usage: server.sh sqlite|mysql [port]}"
port="${2:-8080}"
bin="${MESSAGEBOX_BIN:-target/release/messagebox}"
[ -x "$bin" ] || [ -n "${MESSAGEBOX_BIN:-}" ] || cargo build --release --bin messagebox >&2
mysql="${MBLOAD_MYSQL:-mysql://root@127.0.0.1:3306}"
tag="${MBLOAD_TAG:+-$MBLOAD_TAG}"
db="mbload_bench${MBLOAD_TAG:+_$MBLOAD_TAG}"
file="/tmp/mbload-bench$tag.sqlite3"
log="/tmp/mbload-server$tag.log"
case "$store" in
  sqlite)
    rm -f "$file" "$file-wal" "$file-shm"
    url="sqlite://$file" ;;
  mysql)
    hostport="${mysql#mysql://}"; hostport="${hostport#*@}"
    mariadb --protocol=TCP -h"${hostport%:*}" -P"${hostport#*:}" -uroot \
      -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db" >&2
    url="$mysql/$db" ;;
  *) echo "unknown store $store (sqlite or mysql)" >&2; exit 2 ;;
esac
. perf/scripts/limits.sh
key="$("$bin" keygen | sed -n 's/^SERVER_PRIVATE_KEY=//p')"
SERVER_PRIVATE_KEY="$key" MESSAGEBOX_PORT="$port" MESSAGEBOX_BIND="${MESSAGEBOX_BIND:-127.0.0.1}" \
  DATABASE_URL="$url" RUST_LOG="${RUST_LOG:-warn}" \
  nohup "$bin" >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$pid"; exit 0; fi
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
echo "the server did not start listening on $port" >&2
exit 1
