#!/usr/bin/env bash
# `make run`: a local PostgreSQL 15 with pg_saas and the demo, re-runnable.
#   run.sh        (re)start the demo cluster, recreate the demo database, load examples/demo.sql
#   run.sh stop   stop PostgREST (if we started it) and the demo cluster
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_PORT=${RUN_PORT:-54330}
DEMO_DB=${DEMO_DB:-pg_saas_demo}
PG_BIN=/usr/lib/postgresql/${PG_MAJOR:-15}/bin
PGRST_PORT=${PGRST_PORT:-3000}
PGRST_DIR="$ROOT/target/postgrest"

stop_postgrest() {
  if [ -f "$PGRST_DIR/postgrest.pid" ]; then
    kill "$(cat "$PGRST_DIR/postgrest.pid")" 2>/dev/null || true
    rm -f "$PGRST_DIR/postgrest.pid"
    echo "stopped PostgREST"
  fi
}

if [ "${1:-}" = stop ]; then
  stop_postgrest
  "$ROOT/scripts/cluster.sh" stop run
  exit 0
fi

stop_postgrest
CRON_DB=$DEMO_DB "$ROOT/scripts/cluster.sh" start run "$RUN_PORT"
psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h localhost -p "$RUN_PORT" -U postgres "$@"; }

# Recreate the demo database so every run starts from the same state.
psql -d postgres -c "DROP DATABASE IF EXISTS $DEMO_DB WITH (FORCE)" -c "CREATE DATABASE $DEMO_DB"
psql -d "$DEMO_DB" -c "SET client_min_messages = warning" \
  -c "CREATE EXTENSION pg_saas CASCADE" -c "CREATE EXTENSION pg_cron"
psql -d "$DEMO_DB" -f "$ROOT/examples/demo.sql"

URL="postgresql://postgres@localhost:$RUN_PORT/$DEMO_DB"
echo
echo "pg_saas $(psql -d "$DEMO_DB" -At -c 'SELECT saas.version()') is running."
echo "  connect:  psql '$URL'"
echo "  try:      psql '$URL' -c 'SELECT api.health()'"

if command -v postgrest >/dev/null 2>&1; then
  mkdir -p "$PGRST_DIR"
  cat >"$PGRST_DIR/postgrest.conf" <<CONF
db-uri = "postgresql://authenticator:authenticator@localhost:$RUN_PORT/$DEMO_DB"
db-schemas = "api"
db-extra-search-path = "saas"
db-anon-role = "anon"
db-pre-request = "saas.pre_request"
server-port = $PGRST_PORT
jwt-secret = "pg_saas-demo-secret-change-me-0123456789abcdef"
CONF
  nohup postgrest "$PGRST_DIR/postgrest.conf" >"$PGRST_DIR/postgrest.log" 2>&1 &
  echo $! >"$PGRST_DIR/postgrest.pid"
  echo "  PostgREST: http://localhost:$PGRST_PORT/rpc/health  (config: $PGRST_DIR/postgrest.conf)"
else
  echo "  PostgREST is optional and not on PATH. To serve the API, point one at this database:"
  echo "    db-uri = \"postgresql://authenticator:authenticator@localhost:$RUN_PORT/$DEMO_DB\""
  echo "    db-schemas = \"api\", db-anon-role = \"anon\", db-pre-request = \"saas.pre_request\""
  echo "    (pg_saas functions are called through wrappers in schema api: docs/operations.md, 'Serving it through PostgREST')"
fi
echo "  stop:     make stop"
