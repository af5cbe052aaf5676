#!/usr/bin/env bash
# Runs every scenario against our release server on one store, each on a fresh server and
# database, and keeps each report (text and JSON) in OUTDIR. The commands are the ones quoted
# in perf/RESULTS.md.
#
#   perf/scripts/bench-all.sh sqlite|mysql OUTDIR [scenario ...]
#
# PORT (default 18080) is the server's port; MBLOAD_ARGS adds options to every run; DB_PID
# names the database process on mysql (default: the local mariadbd or mysqld).
set -euo pipefail
cd "$(dirname "$0")/../.."
store="${1:?usage: bench-all.sh sqlite|mysql OUTDIR [scenario ...]}"
out="${2:?usage: bench-all.sh sqlite|mysql OUTDIR [scenario ...]}"
shift 2
only=("$@")
port="${PORT:-18080}"
mkdir -p "$out"
[ -x target/release/mbload ] || cargo build --release -p mbload
[ -x target/release/messagebox ] || cargo build --release --bin messagebox

# On MySQL, the local database server's CPU is reported too (`db`: per operation and as a
# multiple of the crypto floor); DB_PID overrides the lookup.
db=()
if [ "$store" = mysql ]; then
  dbpid="${DB_PID:-$(pgrep -x mariadbd || pgrep -x mysqld || true)}"
  [ -n "$dbpid" ] && db=(--db-pid "$dbpid")
fi

want() { [ ${#only[@]} -eq 0 ] && return 0; local s; for s in "${only[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

bench() {
  local name="$1"; shift
  want "$name" || return 0
  local pid
  pid="$(perf/scripts/server.sh "$store" "$port")"
  sleep 0.5
  {
    echo "# $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# mbload $* --url http://127.0.0.1:$port --server-pid PID"
  } > "$out/$name.txt"
  target/release/mbload "$@" --url "http://127.0.0.1:$port" --server-pid "$pid" --label "ours, $store" -q \
    --json-out "$out/$name.json" "${db[@]}" ${MBLOAD_ARGS:-} >> "$out/$name.txt" 2>&1 || echo "mbload failed" >> "$out/$name.txt"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  cat "$out/$name.txt"
}

bench handshake   handshake -c 16 -d 10s
bench send        send -c 16 -d 10s
bench send-2000   send --rate 2000 -c 64 -d 20s
bench list        list --messages 10 -c 16 -d 10s
bench ack         ack -c 16 -d 10s
bench mixed       mixed -c 16 -d 10s
bench live        live -k 100 -c 16 -d 10s
bench live-2000   live -k 100 --rate 2000 -c 64 -d 20s
bench idle        idle -k 5000 -d 30s --connect-concurrency 64
bench memory      mixed -c 16 -n 1000000 --warmup 0s --rss-every 100000
