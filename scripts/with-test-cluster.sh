#!/usr/bin/env bash
# Runs a command against a fresh test cluster and always tears it down.
#   with-test-cluster.sh CMD...
# The cluster listens on $TEST_PORT; it has an empty $REGRESS_DB (pg_regress's
# setup suite creates the extension there) and $IT_DB with pg_saas installed
# for the integration tests.
#
# A real PostgREST (the one `make deps` installed) serves $IT_DB on
# $PGRST_TEST_PORT for the HTTP tests (tests/http.rs): db-schemas =
# "http_api, saas_api" (http_api is an empty schema made here; the tests
# create their tables in it and reload PostgREST's schema cache), with a new
# random JWT secret. The command gets
# PG_SAAS_HTTP_URL and PG_SAAS_JWT_SECRET; PostgREST is stopped on exit
# however the command ends, before the cluster.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEST_PORT=${TEST_PORT:-54331}
REGRESS_DB=${REGRESS_DB:-pg_saas_regress}
IT_DB=${IT_DB:-pg_saas_it}
PG_BIN=/usr/lib/postgresql/${PG_MAJOR:-15}/bin
# PostgREST's port follows the cluster's (54331 -> 54340; its admin server
# on the next one), so test runs on other TEST_PORTs do not collide.
PGRST_TEST_PORT=${PGRST_TEST_PORT:-$((TEST_PORT + 9))}

teardown() {
  "$ROOT/scripts/postgrest.sh" stop test || true
  "$ROOT/scripts/cluster.sh" remove test || true
}
trap teardown EXIT

CRON_DB=$IT_DB "$ROOT/scripts/cluster.sh" start test "$TEST_PORT" fresh
psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h localhost -p "$TEST_PORT" -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE $REGRESS_DB" -c "CREATE DATABASE $IT_DB"
psql -d "$IT_DB" -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_saas CASCADE" -c "CREATE EXTENSION pg_cron"

# The roles of a PostgREST deployment (the tests' ensure_api_roles finds
# anon and authenticated made) and the schema PostgREST exposes.
psql -d "$IT_DB" <<'SQL'
CREATE ROLE anon NOLOGIN;
CREATE ROLE authenticated NOLOGIN;
CREATE ROLE authenticator LOGIN NOINHERIT;
GRANT anon, authenticated TO authenticator;
CREATE SCHEMA http_api;
GRANT USAGE ON SCHEMA http_api TO anon, authenticated;
SQL
schemas="http_api, saas_api"
"$ROOT/scripts/postgrest.sh" start test "$PGRST_TEST_PORT" \
  "postgresql://authenticator@localhost:$TEST_PORT/$IT_DB" "$schemas"
PG_SAAS_HTTP_URL="http://127.0.0.1:$PGRST_TEST_PORT"
PG_SAAS_JWT_SECRET=$(cat "$ROOT/target/postgrest/test/jwt-secret")
export PG_SAAS_HTTP_URL PG_SAAS_JWT_SECRET

"$@"
