#!/usr/bin/env bash
# Runs a command against a fresh test cluster and always tears it down.
#   with-test-cluster.sh CMD...
# The cluster listens on $TEST_PORT; it has an empty $REGRESS_DB (pg_regress's
# setup suite creates the extension there) and $IT_DB with pg_saas installed
# for the integration tests.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEST_PORT=${TEST_PORT:-54331}
REGRESS_DB=${REGRESS_DB:-pg_saas_regress}
IT_DB=${IT_DB:-pg_saas_it}
PG_BIN=/usr/lib/postgresql/${PG_MAJOR:-15}/bin

teardown() { "$ROOT/scripts/cluster.sh" remove test || true; }
trap teardown EXIT

CRON_DB=$IT_DB "$ROOT/scripts/cluster.sh" start test "$TEST_PORT" fresh
psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h localhost -p "$TEST_PORT" -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE $REGRESS_DB" -c "CREATE DATABASE $IT_DB"
psql -d "$IT_DB" -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_saas CASCADE" -c "CREATE EXTENSION pg_cron"

"$@"
