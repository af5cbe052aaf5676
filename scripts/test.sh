#!/usr/bin/env bash
# Runs every test of the project: unit, integration (SQLite and MySQL/MariaDB) and the
# interop suites that drive the real JS clients from npm. A part that cannot run is a
# failure, not a skip (MESSAGEBOX_REQUIRE_ALL=1), so a green run means everything ran.
#
#   MESSAGEBOX_TEST_MYSQL_URL  MySQL server for the tests (default mysql://root@127.0.0.1:3306/)
#   MESSAGEBOX_REQUIRE_ALL     1 (default): skipping MySQL or node tests fails the run
set -euo pipefail
cd "$(dirname "$0")/.."

export MESSAGEBOX_REQUIRE_ALL="${MESSAGEBOX_REQUIRE_ALL:-1}"
export MESSAGEBOX_TEST_MYSQL_URL="${MESSAGEBOX_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/}"

if command -v npm >/dev/null 2>&1; then
  for dir in tests/interop tests/payments-storage; do
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
      echo "== installing the JS packages of $dir (npm ci)"
      npm ci --prefix "$dir" --no-audit --no-fund
    fi
  done
else
  echo "== npm not found: the interop tests will fail (MESSAGEBOX_REQUIRE_ALL=$MESSAGEBOX_REQUIRE_ALL)" >&2
fi

echo "== cargo test --workspace (MySQL: ${MESSAGEBOX_TEST_MYSQL_URL%%@*}@…)"
cargo test --workspace --all-targets --no-fail-fast
