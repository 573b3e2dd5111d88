#!/usr/bin/env bash
# `make run`: a local PostgreSQL 15 with pg_saas and the demo, served over
# HTTP by PostgREST (the one `make deps` installed), re-runnable.
#   run.sh        (re)start the demo cluster, recreate the demo database, load
#                 examples/demo.sql, start PostgREST on $PGRST_PORT (3000) with
#                 a new JWT secret and print tokens for the demo users
#   run.sh stop   stop PostgREST and the demo cluster
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_PORT=${RUN_PORT:-54330}
DEMO_DB=${DEMO_DB:-pg_saas_demo}
PG_BIN=/usr/lib/postgresql/${PG_MAJOR:-15}/bin
PGRST_PORT=${PGRST_PORT:-3000}
PGRST_DIR="$ROOT/target/postgrest/run"

if [ "${1:-}" = stop ]; then
  "$ROOT/scripts/postgrest.sh" stop run
  "$ROOT/scripts/cluster.sh" stop run
  exit 0
fi

"$ROOT/scripts/postgrest.sh" stop run
CRON_DB=$DEMO_DB "$ROOT/scripts/cluster.sh" start run "$RUN_PORT"
psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h localhost -p "$RUN_PORT" -U postgres "$@"; }

# Recreate the demo database so every run starts from the same state.
psql -d postgres -c "DROP DATABASE IF EXISTS $DEMO_DB WITH (FORCE)" -c "CREATE DATABASE $DEMO_DB"
psql -d "$DEMO_DB" -c "SET client_min_messages = warning" \
  -c "CREATE EXTENSION pg_saas CASCADE" -c "CREATE EXTENSION pg_cron"
psql -d "$DEMO_DB" -f "$ROOT/examples/demo.sql"

# db-schemas: the demo's API schema (the default profile) and pg_saas's own,
# saas_api (requests pick it with Accept-Profile / Content-Profile).
schemas="api, saas_api"
"$ROOT/scripts/postgrest.sh" start run "$PGRST_PORT" \
  "postgresql://authenticator:authenticator@localhost:$RUN_PORT/$DEMO_DB" "$schemas"

# Demo tokens (HS256, valid for a day, signed with this run's secret).
exp=$(( $(date +%s) + 86400 ))
token() { "$ROOT/scripts/jwt.sh" "$PGRST_DIR/jwt-secret" "$1"; }
ACME=a0000000-0000-4000-8000-000000000001
GLOBEX=b0000000-0000-4000-8000-000000000002
ALICE=$(token "{\"sub\":\"11111111-1111-4111-8111-111111111111\",\"role\":\"authenticated\",\"tenant_id\":\"$ACME\",\"exp\":$exp}")
BOB=$(token "{\"sub\":\"22222222-2222-4222-8222-222222222222\",\"role\":\"authenticated\",\"tenant_id\":\"$GLOBEX\",\"exp\":$exp}")
CAROL=$(token "{\"sub\":\"33333333-3333-4333-8333-333333333333\",\"role\":\"authenticated\",\"exp\":$exp}")
URL="postgresql://postgres@localhost:$RUN_PORT/$DEMO_DB"
API="http://localhost:$PGRST_PORT"

cat <<MSG

pg_saas $(psql -d "$DEMO_DB" -At -c 'SELECT saas.version()') is running, served by $("$ROOT/target/bin/postgrest" --version) at $API
  psql:       psql '$URL'
  PostgREST:  db-schemas = "$schemas"; config $PGRST_DIR/postgrest.conf, log $PGRST_DIR/postgrest.log

Tokens for this run (the JWT secret is new on every make run):
  export ALICE=$ALICE   # owner of acme (tenant claim)
  export BOB=$BOB   # member of globex (tenant claim)
  export CAROL=$CAROL   # admin of acme, viewer of globex (no claim: picks with X-Tenant-Id)

Try:
  curl -H "Authorization: Bearer \$ALICE" $API/projects
  curl -H "Authorization: Bearer \$CAROL" -H "X-Tenant-Id: $GLOBEX" $API/projects
  curl -H "Authorization: Bearer \$CAROL" -H "Accept-Profile: saas_api" $API/rpc/my_memberships
  curl -H "Authorization: Bearer \$ALICE" -H "Content-Profile: saas_api" -H "Content-Type: application/json" -d '{}' $API/rpc/usage_report
  curl -i $API/projects    # anonymous: 401, anon may not read tenant tables
  stop:       make stop
MSG
