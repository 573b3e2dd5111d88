#!/usr/bin/env bash
# Runs a command against a fresh test cluster and always tears it down.
#   with-test-cluster.sh CMD...
# The cluster listens on $TEST_PORT; it has an empty $REGRESS_DB (pg_regress's
# setup suite creates the extension there) and $IT_DB with pg_saas installed
# for the integration tests.
#
# A real PostgREST (the one `make deps` installed) serves $IT_DB on
# $PGRST_TEST_PORT for the HTTP tests (tests/http.rs, and tests/js/, the
# postgrest-js client test): db-schemas = "http_api, saas_api, js_api"
# (http_api and js_api are empty schemas made here; the tests create their
# tables in them and reload PostgREST's schema cache), with a new
# random JWT secret. The command gets
# PG_SAAS_HTTP_URL and PG_SAAS_JWT_SECRET; PostgREST is stopped on exit
# however the command ends, before the cluster.
#
# The cluster and the PostgREST instance are named $TEST_CLUSTER ("test":
# target/pg/test, target/postgrest/test); starting a cluster of a name stops
# and wipes the running one of that name, so a second run in the same
# checkout needs another name as well as other ports, e.g.
#   TEST_CLUSTER=jsdev TEST_PORT=54391 scripts/with-test-cluster.sh make js-run TEST_PORT=54391
# (tests/backup.rs's own clusters have fixed names: one `make test` at a
# time per checkout).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEST_PORT=${TEST_PORT:-54331}
REGRESS_DB=${REGRESS_DB:-pg_saas_regress}
IT_DB=${IT_DB:-pg_saas_it}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/${PG_MAJOR:-15}/bin}
export PG_BIN
# PostgREST's port follows the cluster's (54331 -> 54340; its admin server
# on the next one), so test runs on other TEST_PORTs do not collide.
PGRST_TEST_PORT=${PGRST_TEST_PORT:-$((TEST_PORT + 9))}
TEST_CLUSTER=${TEST_CLUSTER:-test}

teardown() {
  "$ROOT/scripts/postgrest.sh" stop "$TEST_CLUSTER" || true
  "$ROOT/scripts/cluster.sh" remove "$TEST_CLUSTER" || true
}
trap teardown EXIT
trap 'exit 130' INT TERM

CRON_DB=$IT_DB "$ROOT/scripts/cluster.sh" start "$TEST_CLUSTER" "$TEST_PORT" fresh
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
CREATE SCHEMA js_api;
GRANT USAGE ON SCHEMA js_api TO anon, authenticated;
SQL
# http_api stays the default profile; saas_api and js_api are picked with
# Accept-Profile / Content-Profile (postgrest-js: .schema('js_api')).
schemas="http_api, saas_api, js_api"
"$ROOT/scripts/postgrest.sh" start "$TEST_CLUSTER" "$PGRST_TEST_PORT" \
  "postgresql://authenticator@localhost:$TEST_PORT/$IT_DB" "$schemas"
PG_SAAS_HTTP_URL="http://127.0.0.1:$PGRST_TEST_PORT"
PG_SAAS_JWT_SECRET=$(cat "$ROOT/target/postgrest/$TEST_CLUSTER/jwt-secret")
export PG_SAAS_HTTP_URL PG_SAAS_JWT_SECRET

"$@"
