#!/usr/bin/env bash
# `make bench`: runs every benchmark against a fresh bench cluster and prints
# our time next to the named peer's, as a ratio. Benchmarks are not tests:
# they assert no timings and do not run in CI.
#
# A benchmark is a directory bench/<module>/ with an executable `run.sh`
# (same name as the module in src/, sql/, pg_regress/, tests/). It runs with
# PGHOST/PGPORT/PGUSER/PGDATABASE pointing at a database that has pg_saas,
# sources bench/lib.sh, and reports each comparison with `report`:
#   report <case> <ours> <peer name> <peer> <unit> [<spread>]
# Lower is better for every unit (ms, us per op).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export BENCH_PORT=${BENCH_PORT:-54332}
# PG_BIN from the environment runs the benches on another installation, as
# scripts/with-test-cluster.sh does (e.g. PG_BIN=/opt/pgh4/usr/lib/postgresql/15/bin).
export PG_BIN=${PG_BIN:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin}
OUT="$ROOT/target/bench"
mkdir -p "$OUT"
export BENCH_RESULTS="$OUT/results.tsv"
: >"$BENCH_RESULTS"

teardown() { "$ROOT/scripts/cluster.sh" remove bench || true; }
trap teardown EXIT
# Shared buffers that hold every benchmark table, so no side pays for reads
# from the OS page cache that the other side happens to have in shared memory.
# pgaudit (a peer in bench/audit) works only when preloaded: preload it here,
# in the bench cluster only, when it is installed (test clusters never do).
PRELOAD=pg_cron,pg_saas
[ ! -f "$("$PG_BIN/pg_config" --pkglibdir)/pgaudit.so" ] || PRELOAD=$PRELOAD,pgaudit
PRELOAD=$PRELOAD PG_SHARED_BUFFERS=${PG_SHARED_BUFFERS:-1GB} CRON_DB=pg_saas_bench "$ROOT/scripts/cluster.sh" start bench "$BENCH_PORT" fresh
export PGHOST=localhost PGPORT=$BENCH_PORT PGUSER=postgres PGDATABASE=pg_saas_bench
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE pg_saas_bench"
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_saas CASCADE"

only=${BENCH:-}
found=0
for dir in "$ROOT"/bench/*/; do
  module=$(basename "$dir")
  [ -x "$dir/run.sh" ] || continue
  if [ -n "$only" ] && [ "$only" != "$module" ]; then continue; fi
  found=1
  echo "== bench/$module"
  BENCH_MODULE=$module "$dir/run.sh"
done

if [ "$found" = 0 ]; then
  echo "no benchmarks yet (add bench/<module>/run.sh; see bench/README.md)"
  exit 0
fi

echo
printf '%-12s %-40s %12s %-22s %12s %8s\n' module case ours peer peer_value ratio
awk -F'\t' '{ printf "%-12s %-40s %12.3f %-22s %12.3f %8.3gx  (%s, ours/peer)%s\n", $1, $2, $3, $4, $5, ($5 > 0 ? $3 / $5 : 0), $6, ($7 != "" ? "  " $7 : "") }' "$BENCH_RESULTS"
echo "results: $BENCH_RESULTS"
