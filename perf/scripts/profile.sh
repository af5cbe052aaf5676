#!/usr/bin/env bash
# Profiles our release server under one mbload scenario: a fresh server on STORE, the
# scenario run for its duration, `perf record -e cpu-clock -F 999` on the server for the
# middle of the run, then the coarse buckets and the top symbols.
#
#   perf/scripts/profile.sh sqlite|mysql OUTPREFIX mbload-args...
#   e.g. perf/scripts/profile.sh mysql /tmp/prof/send-mysql send -c 16 -d 12s
#
# Needs `perf` (apt-get install -y linux-perf). PROFILE_WHO=generator profiles mbload instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
store="$1"; out="$2"; shift 2
port="${PORT:-18080}"
mkdir -p "$(dirname "$out")"
pid="$(perf/scripts/server.sh "$store" "$port")"
target/release/mbload "$@" --url "http://127.0.0.1:$port" --server-pid "$pid" -q > "$out.report.txt" 2>&1 &
gen=$!
sleep 4
who="$pid"; [ "${PROFILE_WHO:-server}" = generator ] && who="$gen"
perf record -e cpu-clock -F 999 -g -p "$who" -o "$out.data" -- sleep "${PROFILE_SECONDS:-6}" >/dev/null 2>&1
wait "$gen" || true
kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
perf report -i "$out.data" --no-children --sort dso,symbol -g none --stdio --percent-limit 0 2>/dev/null \
  | perf/scripts/profile-buckets.py > "$out.buckets.txt"
perf report -i "$out.data" --no-children --sort symbol -g none --stdio --percent-limit 0.7 2>/dev/null \
  | grep '%' | grep -v '^#' | sed 's/ *$//' > "$out.top.txt"
cat "$out.report.txt" "$out.buckets.txt"
head -25 "$out.top.txt"
