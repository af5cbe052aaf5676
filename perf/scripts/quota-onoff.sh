#!/usr/bin/env bash
# What the storage quotas cost a send: `mbload send` against our release server, alternating,
# a fresh database each line, in up to three modes:
#   on        this build, the quotas on (the standard profile's);
#   off       this build, all four quotas at -1 (no ledger; the writer still keeps
#             `messagebox_sender_usage`);
#   nousage   NOUSAGE_BIN (optional): a build of this commit whose SQLite writer skips the
#             usage upsert, run with the quotas off: "no quota work at all". Build it with the
#             one-line change in `src/store/sqlite.rs` (`change_usage(&tx, &usage::inserted(..),
#             Change::Add)?;` in the batch write → `let _ = ...;`), `cargo build --release`, copy
#             the binary away, revert. SQLite only.
# Prints server CPU-µs per send, the rate, the crypto floor mbload measured and the context
# switches per send; on mysql also MariaDB's CPU per send. Needs target/release/{messagebox,mbload}.
# (The rate limiters cannot be switched off; `cargo bench --bench limits` measures them.)
#
#   [NOUSAGE_BIN=path] perf/scripts/quota-onoff.sh sqlite|mysql [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
store="${1:?usage: quota-onoff.sh sqlite|mysql [rounds] [seconds]}"
rounds="${2:-3}"
secs="${3:-10}"
modes="on off"
[ -n "${NOUSAGE_BIN:-}" ] && modes="on off nousage"
quotas=(MESSAGE_BOX_MAX_SENDER_MESSAGES MESSAGE_BOX_MAX_SENDER_BYTES MESSAGE_BOX_MAX_INBOX_MESSAGES MESSAGE_BOX_MAX_INBOX_BYTES)
db=()
[ "$store" = mysql ] && db=(--db-pid "$(pgrep -x mariadbd | head -1)")
for round in $(seq 1 "$rounds"); do
  for mode in $modes; do
    for v in "${quotas[@]}"; do
      if [ "$mode" = on ]; then unset "$v"; else export "$v=-1"; fi
    done
    if [ "$mode" = nousage ]; then export MESSAGEBOX_BIN="$NOUSAGE_BIN"; else unset MESSAGEBOX_BIN; fi
    pid=$(perf/scripts/server.sh "$store" 18080)
    result=$(target/release/mbload send -c 16 -d "${secs}s" --url http://127.0.0.1:18080 --server-pid "$pid" "${db[@]}" --quiet --json \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); s=d["server"]; db=d.get("db") or {}
print(round(s["cpu_us_per_op"],1), "µs", round(d["throughput_per_s"]), "/s; floor", round(d.get("floor_us") or 0,1),
      "µs; ctx/op", round(s.get("ctx_switches_per_op") or 0,2), ("; db " + str(round(db["cpu_us_per_op"],1)) + " µs") if db.get("cpu_us_per_op") else "", d["errors"] or "")')
    kill "$pid"; sleep 1
    echo "round $round quotas $mode ($store): $result"
  done
done
