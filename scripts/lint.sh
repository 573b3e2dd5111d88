#!/usr/bin/env bash
# make lint: what CI checks before the tests.
#   rustfmt (rustfmt.toml), clippy with every warning an error (the unsafe
#   lints are denied at the top of src/lib.rs), shellcheck on every script, and no
#   tabs or trailing spaces in hand-written SQL.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
step() { printf '==> lint: %s\n' "$1"; }

step "cargo fmt --check"
cargo fmt --all -- --check || status=1

step "cargo clippy -D warnings"
cargo clippy --all-targets -- -D warnings || status=1

step "shellcheck"
shellcheck -x scripts/*.sh bench/*.sh bench/*/run.sh .ci/run || status=1

step "sql/: no tabs or trailing spaces"
# Released install scripts (sql/pg_saas--X.Y.Z.sql) are generated and frozen.
sql_files=()
for f in sql/*.sql tests/upgrade/*.sql; do
  case "$f" in sql/pg_saas--*--*.sql) sql_files+=("$f") ;; sql/pg_saas--*.sql) ;; *) sql_files+=("$f") ;; esac
done
if grep -nE $'\t| +$' "${sql_files[@]}"; then
  echo "lint: tabs or trailing spaces in the SQL above" >&2
  status=1
fi

[ "$status" -eq 0 ] && echo "make lint: all passed"
exit "$status"
