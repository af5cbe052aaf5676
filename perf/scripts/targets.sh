#!/usr/bin/env bash
# Issue 12's targets, measured on one or two server builds and printed as a Markdown table.
#
#   [BEFORE_BIN=path] [AFTER_BIN=path] [ROUNDS=3] perf/scripts/targets.sh [OUTDIR]
#
# BEFORE_BIN and AFTER_BIN are messagebox binaries (either may be left out; with neither, the
# current target/release/messagebox is AFTER). For each round, store (STORES, default
# "sqlite mysql") and measurement, the builds run one after the other (before first in odd
# rounds, after first in even ones, so a drifting machine does not favour one), each on a
# fresh server and database (perf/scripts/server.sh with MBLOAD_TAG, default `targets`, on
# PORT, default 18300). The table gives the median over ROUNDS (and the range when ROUNDS > 1)
# of each figure; every ratio "× floor" is taken within one mbload run (its own floor).
#
# The measurements (D = SECS, default 8):
#   send     send -c 16 -d D                         server and MariaDB CPU/send × floor, rate, p99
#   list     list --messages 10 -c 16 -d D           server CPU/list × floor
#   ack      ack -c 16 -d D                          server CPU/ack × floor
#   live     live -k 100 -c 16 -d D                  server CPU/delivery × live floor
#   findrate send --find-rate --p99 50ms -c 64 -d 4s -w 1s --find-rate-steps 6   rate, rate × floor
#   send2000 send --rate 2000 -c 64 -d D             server CPU/send at 2000/s over `send`'s
# MEASURES (default all six, space-separated) picks a subset, e.g. MEASURES="ack".
# Each run's report (text and JSON) and the exact command are kept in OUTDIR (default
# /tmp/mbload-targets-<tag>-<time>; commands in OUTDIR/commands.log). ROUNDS=1 with both
# builds takes about 8 minutes on 2 cores. Needs target/release/mbload.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${ROUNDS:-3}"
secs="${SECS:-8}"
port="${PORT:-18300}"
stores="${STORES:-sqlite mysql}"
export MBLOAD_TAG="${MBLOAD_TAG:-targets}"
out="${1:-/tmp/mbload-targets-$MBLOAD_TAG-$(date -u +%Y%m%dT%H%M%S)}"
mkdir -p "$out"
M=target/release/mbload
[ -x "$M" ] || { echo "build mbload first: cargo build --release -p mbload" >&2; exit 2; }

bins=()
[ -n "${BEFORE_BIN:-}" ] && bins+=("before=$(realpath "$BEFORE_BIN")")
if [ -n "${AFTER_BIN:-}" ]; then
  bins+=("after=$(realpath "$AFTER_BIN")")
elif [ -z "${BEFORE_BIN:-}" ]; then
  bins+=("after=$(realpath target/release/messagebox)")
fi
dbpid="$(pgrep -x mariadbd || pgrep -x mysqld || true)"
dbpid="${dbpid%%$'\n'*}"

read -r -a measurements <<< "${MEASURES:-send list ack live findrate send2000}"
args_of() {
  case "$1" in
    send) echo "send -c 16 -d ${secs}s" ;;
    list) echo "list --messages 10 -c 16 -d ${secs}s" ;;
    ack) echo "ack -c 16 -d ${secs}s" ;;
    live) echo "live -k 100 -c 16 -d ${secs}s" ;;
    findrate) echo "send --find-rate --p99 50ms -c 64 -d 4s -w 1s --find-rate-steps 6" ;;
    send2000) echo "send --rate 2000 -c 64 -d ${secs}s" ;;
  esac
}

# One mbload run on a fresh server of build $2 ("name=path"), store $1, measurement $3.
run_one() {
  local store="$1" name="${2%%=*}" bin="${2#*=}" what="$3" round="$4"
  local base="$out/$store-$what-$name-r$round" pid db=() args
  [ "$store" = mysql ] && [ -n "$dbpid" ] && db=(--db-pid "$dbpid")
  args="$(args_of "$what")"
  pid="$(MESSAGEBOX_BIN="$bin" perf/scripts/server.sh "$store" "$port")"
  sleep 0.5
  local cmd="$M $args --url http://127.0.0.1:$port --server-pid \$PID${db:+ --db-pid \$(pgrep -x mariadbd)} -q --json-out $base.json"
  echo "$(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg) [$store $what $name r$round] MESSAGEBOX_BIN=$bin PID=\$(perf/scripts/server.sh $store $port); $cmd" >> "$out/commands.log"
  # shellcheck disable=SC2086 # $args is a word list on purpose
  "$M" $args --url "http://127.0.0.1:$port" --server-pid "$pid" "${db[@]}" -q \
    --label "$name, $store" --json-out "$base.json" > "$base.txt" 2>&1 || echo "mbload failed" >> "$base.txt"
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  echo "  $store $what $name r$round done ($(cut -d' ' -f1 /proc/loadavg) load)" >&2
}

started=$(date +%s)
echo "targets: ${bins[*]}; rounds $rounds; stores $stores; out $out; load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq 1 "$rounds"); do
  order=("${bins[@]}")
  if [ $((round % 2)) -eq 0 ] && [ ${#bins[@]} -eq 2 ]; then order=("${bins[1]}" "${bins[0]}"); fi
  for store in $stores; do
    for what in "${measurements[@]}"; do
      for b in "${order[@]}"; do run_one "$store" "$b" "$what" "$round"; done
    done
  done
done
elapsed=$(( $(date +%s) - started ))

names=()
for b in "${bins[@]}"; do names+=("${b%%=*}"); done
python3 - "$out" "$rounds" "$stores" "${names[*]}" "$elapsed" <<'EOF'
import json, statistics, sys
from pathlib import Path

out, rounds, stores, names, elapsed = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), int(sys.argv[5])

def load(store, what, name):
    """round -> report, for the runs whose report exists."""
    rs = {}
    for r in range(1, rounds + 1):
        p = out / f"{store}-{what}-{name}-r{r}.json"
        if p.exists():
            rs[r] = json.loads(p.read_text())
    return rs

def get(d, path):
    for k in path.split("."):
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d

def lat(r, kind):
    return get(r, f"latency.{kind}.p99_ms")

# (row label, target, measurement, value(report, same-round `send` report) -> float, format)
ROWS = [
    ("send -c 16: server CPU-µs/send", "", "send", lambda r, s: get(r, "server.cpu_us_per_op"), "{:.0f}"),
    ("send -c 16: server × floor", "≤ 2.0", "send", lambda r, s: get(r, "server.floor_ratio"), "{:.2f}"),
    ("send -c 16: MariaDB CPU-µs/send", "", "send", lambda r, s: get(r, "db.cpu_us_per_op"), "{:.0f}"),
    ("send -c 16: MariaDB × floor", "≤ 1.0", "send", lambda r, s: get(r, "db.floor_ratio"), "{:.2f}"),
    ("send -c 16: throughput /s", "", "send", lambda r, s: get(r, "throughput_per_s"), "{:.0f}"),
    ("send -c 16: p99 ms", "", "send", lambda r, s: lat(r, "send"), "{:.1f}"),
    ("send -c 16: ctx switches/send", "", "send", lambda r, s: get(r, "server.ctx_switches_per_op"), "{:.2f}"),
    ("list (10 messages): server × floor", "≤ 2.0", "list", lambda r, s: get(r, "server.floor_ratio"), "{:.2f}"),
    ("ack: server CPU-µs/ack", "", "ack", lambda r, s: get(r, "server.cpu_us_per_op"), "{:.0f}"),
    ("ack: server × floor", "≤ 2.0", "ack", lambda r, s: get(r, "server.floor_ratio"), "{:.2f}"),
    ("ack: MariaDB CPU-µs/ack", "", "ack", lambda r, s: get(r, "db.cpu_us_per_op"), "{:.0f}"),
    ("ack: throughput /s", "", "ack", lambda r, s: get(r, "throughput_per_s"), "{:.0f}"),
    ("live: server × live floor", "≤ 2.0", "live", lambda r, s: get(r, "server.floor_ratio"), "{:.2f}"),
    ("live: delivery p99 ms", "", "live", lambda r, s: lat(r, "delivery"), "{:.1f}"),
    ("find-rate p99 < 50 ms: rate /s", "", "findrate", lambda r, s: get(r, "find_rate.rate"), "{:.0f}"),
    ("find-rate: rate × floor", "", "findrate", lambda r, s: get(r, "find_rate.rate_x_floor"), "{:.3f}"),
    ("send 2000/s -c 64: server CPU-µs/send", "", "send2000", lambda r, s: get(r, "server.cpu_us_per_op"), "{:.0f}"),
    ("send 2000/s: ctx switches/send", "", "send2000", lambda r, s: get(r, "server.ctx_switches_per_op"), "{:.2f}"),
    ("send 2000/s: p99 ms", "", "send2000", lambda r, s: lat(r, "send"), "{:.1f}"),
    ("send 2000/s over saturation (CPU/send)", "≤ 1.10", "send2000",
     lambda r, s: (get(r, "server.cpu_us_per_op") / get(s, "server.cpu_us_per_op"))
     if s and get(r, "server.cpu_us_per_op") and get(s, "server.cpu_us_per_op") else None, "{:.2f}"),
]

def cell(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = fmt.format(statistics.median(values))
    return med if len(values) == 1 else f"{med} ({fmt.format(min(values))}–{fmt.format(max(values))})"

head = "| store | figure | target | " + " | ".join(names) + (" | after/before |" if len(names) == 2 else " |")
print(head)
print("|" + "---|" * (head.count("|") - 1))
for store in stores:
    for label, target, what, f, fmt in ROWS:
        meds, cells = [], []
        for name in names:
            rs = load(store, what, name)
            sends = load(store, "send", name)
            vals = [f(r, sends.get(i)) for i, r in rs.items()]
            vals = [v for v in vals if v is not None]
            meds.append(statistics.median(vals) if vals else None)
            # A search where no rate kept the p99 under the bound has no rate to show.
            cells.append("none passed" if what == "findrate" and rs and not vals else cell(vals, fmt))
        if all(c == "–" for c in cells):
            continue
        row = f"| {store} | {label} | {target} | " + " | ".join(cells) + " |"
        if len(names) == 2:
            row += f" {meds[1] / meds[0]:.2f} |" if meds[0] and meds[1] else " – |"
        print(row)

floors = [get(json.loads(p.read_text()), "floor.request_us") for p in out.glob("*.json")]
floors = [x for x in floors if x]
if floors:
    print(f"\nFloor (request, p10 of batches) over {len(floors)} runs: median {statistics.median(floors):.1f} µs, "
          f"{min(floors):.1f}–{max(floors):.1f}. Rounds: {rounds}; took {elapsed // 60} min {elapsed % 60} s.")
print("\nCommands (PID from `MESSAGEBOX_BIN=<build> perf/scripts/server.sh <store> <port>`, fresh each run):\n")
seen = set()
for line in (out / "commands.log").read_text().splitlines():
    tag = line.split("[", 1)[1].split("]", 1)[0].split()
    key = (tag[0], tag[1])
    if key in seen:
        continue
    seen.add(key)
    cmd = line.split("; ", 1)[1]
    cmd = cmd.rsplit(" -q --json-out", 1)[0]
    print(f"- {tag[0]} {tag[1]}: `{cmd}`")
print(f"\nReports and the full log: {out}/ (commands.log has each run's load average)")
EOF
