#!/usr/bin/env bash
# Runs the abuse scenarios, each against a fresh release server (SQLite, the default
# `standard` profile), and keeps every report (text and JSON) in OUTDIR. RESULTS.md
# ("Abuse (issue 9)") quotes its output.
#
#   perf/scripts/abuse-all.sh OUTDIR [kind…]     kinds: handshake handshake-unlimited
#                                                 slow-headers fanout sockets sockets-ws
#
# Each run lasts 2 s of warm-up + 20 s: the legitimate client's own 10 requests a second
# (221 with its handshake) stay under the default per-IP limit of 300 a minute, so what it
# meets is the attack, not its own budget. `handshake-unlimited` lifts the per-IP limit
# (MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX=1000000): a flood from many addresses, as far as the
# session table sees it. PORT (18080) and MBLOAD_ARGS (extra mbload options) may be set.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:?usage: abuse-all.sh OUTDIR [kind…]}"; shift
mkdir -p "$out"
port="${PORT:-18080}"
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(handshake handshake-unlimited slow-headers fanout sockets sockets-ws)
[ -x target/release/mbload ] || cargo build --release -p mbload >&2
ulimit -n 20000 2>/dev/null || true
for kind in "${kinds[@]}"; do
  env=(); args=()
  case "$kind" in
    handshake) scenario=abuse-handshake ;;
    handshake-unlimited) scenario=abuse-handshake; env=(MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX=1000000) ;;
    slow-headers) scenario=abuse-slow-headers ;;
    fanout) scenario=abuse-fanout ;;
    sockets) scenario=abuse-sockets ;;
    sockets-ws) scenario=abuse-sockets; args=(--transport websocket) ;;
    *) echo "unknown kind $kind" >&2; exit 2 ;;
  esac
  pid=$(env BENCH_LIMITS=default "${env[@]}" perf/scripts/server.sh sqlite "$port")
  echo "== $kind (server $pid${env:+, ${env[*]}})" >&2
  target/release/mbload "$scenario" -u "http://127.0.0.1:$port" -d 20s --server-pid "$pid" -q \
    --label "$kind${env:+, ${env[*]}}" "${args[@]}" ${MBLOAD_ARGS:-} \
    --json-out "$out/$kind.json" | tee "$out/$kind.txt"
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  ls -l /tmp/mbload-bench.sqlite3* >&2 || true
done
