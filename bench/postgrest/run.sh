#!/usr/bin/env bash
# bench/postgrest: requests per second and latency through the real
# PostgREST (12.0.2, target/bin/postgrest) with wrk, on a tenant-scoped table
# of 1M rows over 100 tenants, three ways:
#   (a) pg_saas:  saas.enable_tenancy's policies, db-pre-request =
#                 saas.pre_request with one rate-limit rule on every path
#                 (a limit so high nothing is refused) and a daily API quota
#                 (the same), both counted in shared memory on every request
#   (b) Supabase by hand: RLS policies that read
#                 current_setting('request.jwt.claims') in each policy (the
#                 (SELECT ...) form Supabase's docs recommend), no pre-request,
#                 no rate limit, no quota
#   (c) no RLS:   the same table without row level security; the client asks
#                 for its tenant's rows with ?tenant_id=eq.<id> (nothing
#                 stops it from asking for another's)
# Each in its own schema, served by its own PostgREST (ports 3101-3103, admin
# servers 3201-3203) that exposes only that schema; one JWT secret for the
# three. Requests: GET of one tenant's first 20 rows (?limit=20&order=id) and
# a POST RPC that inserts a row for the caller's tenant. wrk: 2 connections
# per core, one thread per core; its Lua script picks a random tenant's token
# (a user token: sub, role, tenant_id, as Supabase Auth issues them) per
# request. Rounds alternate the three setups (the order rotates); the median
# of the rounds is reported, every round printed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/../lib.sh"
ROWS=${POSTGREST_ROWS:-1000000}
TENANTS=${POSTGREST_TENANTS:-100}
SECONDS_EACH=${POSTGREST_SECONDS:-10}
ROUNDS=${POSTGREST_ROUNDS:-5}
CORES=$(nproc)
CONNECTIONS=$((2 * CORES))
POSTGREST=${POSTGREST:-$ROOT/target/bin/postgrest}
WRK=${WRK:-wrk}
SETUPS=(a b c)
declare -A PORT=([a]=3101 [b]=3102 [c]=3103) ADMIN=([a]=3201 [b]=3202 [c]=3203)
declare -A NAME=([a]="pg_saas" [b]="Supabase-style RLS" [c]="no RLS")
[ -x "$POSTGREST" ] || { echo "  $POSTGREST is missing: run make deps" >&2; exit 1; }
command -v "$WRK" >/dev/null || { echo "  wrk is missing: run make deps" >&2; exit 1; }

WORK=$(mktemp -d)
declare -A PID=()
cleanup() {
  local s
  for s in "${!PID[@]}"; do
    kill "${PID[$s]}" 2>/dev/null || true
  done
  for s in "${!PID[@]}"; do
    for _ in $(seq 1 50); do kill -0 "${PID[$s]}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${PID[$s]}" 2>/dev/null || true
  done
  rm -rf "$WORK"
  # Leave no rule on every path behind for the modules that run after this one.
  bench_psql -c "SET client_min_messages = warning" \
    -c "DELETE FROM saas.rate_limit_rules WHERE path_pattern = '/*' AND count = 1000000000" \
    -c "DROP SCHEMA IF EXISTS pgrst_a, pgrst_b, pgrst_c CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "  loading $ROWS rows over $TENANTS tenants into three schemas"
bench_psql >/dev/null <<SQL
SET client_min_messages = warning;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_authenticator') THEN
    CREATE ROLE bench_authenticator LOGIN NOINHERIT;
  END IF;
END \$\$;
GRANT anon, authenticated TO bench_authenticator;
SELECT saas.grant_api('{anon,authenticated}');
DROP SCHEMA IF EXISTS pgrst_a, pgrst_b, pgrst_c CASCADE;
CREATE SCHEMA pgrst_a;
CREATE SCHEMA pgrst_b;
CREATE SCHEMA pgrst_c;
GRANT USAGE ON SCHEMA pgrst_a, pgrst_b, pgrst_c TO anon, authenticated;

-- Tenant n: c0000000-0000-4000-8000-<n, 12 digits>, on a plan whose daily
-- quota is never reached; user n (c1000000-...) is a member of it.
CREATE FUNCTION pg_temp.tid(n int) RETURNS uuid LANGUAGE sql IMMUTABLE
  AS \$f\$ SELECT format('c0000000-0000-4000-8000-%s', lpad(n::text, 12, '0'))::uuid \$f\$;
INSERT INTO saas.plans (plan, api_calls_per_day) VALUES ('bench-postgrest', 1000000000000)
  ON CONFLICT (plan) DO UPDATE SET api_calls_per_day = excluded.api_calls_per_day;
INSERT INTO saas.tenants (id, slug, name, plan)
  SELECT pg_temp.tid(n), 'pgrst-' || n, 'PostgREST bench ' || n, 'bench-postgrest' FROM generate_series(1, $TENANTS) n
  ON CONFLICT DO NOTHING;
INSERT INTO saas.memberships (tenant_id, user_id, role)
  SELECT pg_temp.tid(n), format('c1000000-0000-4000-8000-%s', lpad(n::text, 12, '0'))::uuid, 'member'
  FROM generate_series(1, $TENANTS) n
  ON CONFLICT DO NOTHING;
-- One rule on every path, per user: a billion an hour (nothing is refused,
-- every request is still checked and counted).
SELECT saas.rate_limit_rule_set('/*', 1000000000, '1 hour');

-- Rows of all tenants interleaved, as they arrive in a real table; the same
-- rows in the three schemas.
CREATE TABLE pgrst_a.items (
  tenant_id uuid NOT NULL,
  id bigint GENERATED BY DEFAULT AS IDENTITY,
  amount int NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id));
INSERT INTO pgrst_a.items (tenant_id, id, amount, created_at)
  SELECT pg_temp.tid(1 + g % $TENANTS), g, (g::bigint * 7919 % 1000)::int, '2026-01-01'::timestamptz + g * interval '1 second'
  FROM generate_series(1, $ROWS) g;
CREATE TABLE pgrst_b.items (LIKE pgrst_a.items INCLUDING ALL);
CREATE TABLE pgrst_c.items (LIKE pgrst_a.items INCLUDING ALL);
INSERT INTO pgrst_b.items SELECT * FROM pgrst_a.items;
INSERT INTO pgrst_c.items SELECT * FROM pgrst_a.items;
SELECT setval(pg_get_serial_sequence('pgrst_' || s || '.items', 'id'), $ROWS) FROM unnest('{a,b,c}'::text[]) s;

-- (a) pg_saas: forced RLS, its policies, the tenant default.
SELECT saas.enable_tenancy('pgrst_a.items');

-- (b) what a Supabase project writes by hand: the tenant from the JWT's
-- claims in each policy and in the column default.
ALTER TABLE pgrst_b.items ALTER COLUMN tenant_id
  SET DEFAULT (current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')::uuid;
ALTER TABLE pgrst_b.items ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_select ON pgrst_b.items FOR SELECT TO authenticated
  USING (tenant_id = (SELECT (current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')::uuid));
CREATE POLICY tenant_insert ON pgrst_b.items FOR INSERT TO authenticated
  WITH CHECK (tenant_id = (SELECT (current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')::uuid));
CREATE POLICY tenant_update ON pgrst_b.items FOR UPDATE TO authenticated
  USING (tenant_id = (SELECT (current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')::uuid))
  WITH CHECK (tenant_id = (SELECT (current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')::uuid));
CREATE POLICY tenant_delete ON pgrst_b.items FOR DELETE TO authenticated
  USING (tenant_id = (SELECT (current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')::uuid));

-- (c) no RLS: the same default, no policy.
ALTER TABLE pgrst_c.items ALTER COLUMN tenant_id
  SET DEFAULT (current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')::uuid;

-- The POST RPC: a row for the caller's tenant (the default), its id back.
CREATE FUNCTION pgrst_a.add_item(p_amount int) RETURNS bigint LANGUAGE sql VOLATILE
  AS \$f\$ INSERT INTO pgrst_a.items (amount) VALUES (p_amount) RETURNING id \$f\$;
CREATE FUNCTION pgrst_b.add_item(p_amount int) RETURNS bigint LANGUAGE sql VOLATILE
  AS \$f\$ INSERT INTO pgrst_b.items (amount) VALUES (p_amount) RETURNING id \$f\$;
CREATE FUNCTION pgrst_c.add_item(p_amount int) RETURNS bigint LANGUAGE sql VOLATILE
  AS \$f\$ INSERT INTO pgrst_c.items (amount) VALUES (p_amount) RETURNING id \$f\$;
GRANT SELECT, INSERT, UPDATE, DELETE ON pgrst_a.items, pgrst_b.items, pgrst_c.items TO authenticated;
GRANT EXECUTE ON FUNCTION pgrst_a.add_item(int), pgrst_b.add_item(int), pgrst_c.add_item(int) TO authenticated;
VACUUM ANALYZE pgrst_a.items, pgrst_b.items, pgrst_c.items, saas.tenants, saas.memberships;
SQL

# One secret for the three servers, so one set of tokens serves all of them.
(umask 077 && openssl rand -hex 32 | tr -d '\n' >"$WORK/jwt-secret")
for s in "${SETUPS[@]}"; do
  pre=''
  [ "$s" = a ] && pre='db-pre-request = "saas.pre_request"'
  cat >"$WORK/$s.conf" <<CONF
db-uri = "postgresql://bench_authenticator@$PGHOST:$PGPORT/$PGDATABASE"
db-schemas = "pgrst_$s"
db-anon-role = "anon"
$pre
db-pool = 10
server-host = "127.0.0.1"
server-port = ${PORT[$s]}
admin-server-port = ${ADMIN[$s]}
jwt-secret = "@$WORK/jwt-secret"
log-level = "error"
CONF
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:${PORT[$s]}/"; then
    echo "  port ${PORT[$s]} is already in use" >&2
    exit 1
  fi
  "$POSTGREST" "$WORK/$s.conf" >"$WORK/$s.log" 2>&1 &
  PID[$s]=$!
done
for s in "${SETUPS[@]}"; do
  ready=0
  for _ in $(seq 1 100); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${ADMIN[$s]}/ready" || true)" = 200 ]; then
      ready=1; break
    fi
    kill -0 "${PID[$s]}" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$ready" = 0 ]; then
    echo "  PostgREST ($s) did not become ready:" >&2
    cat "$WORK/$s.log" >&2
    exit 1
  fi
done
echo "  PostgREST $("$POSTGREST" --version 2>/dev/null | head -n1) on ports ${PORT[a]} (a), ${PORT[b]} (b), ${PORT[c]} (c)"

# Tokens: user n of tenant n, valid for a day.
exp=$(( $(date +%s) + 86400 ))
token() {
  local n; n=$(printf '%012d' "$1")
  "$ROOT/scripts/jwt.sh" "$WORK/jwt-secret" \
    "{\"sub\":\"c1000000-0000-4000-8000-$n\",\"role\":\"authenticated\",\"tenant_id\":\"c0000000-0000-4000-8000-$n\",\"exp\":$exp}"
}
{
  echo 'tokens = {}'
  echo 'tenants = {}'
  for n in $(seq 1 "$TENANTS"); do
    printf 'tokens[%d] = "%s"\ntenants[%d] = "c0000000-0000-4000-8000-%012d"\n' "$n" "$(token "$n")" "$n" "$n"
  done
} >"$WORK/tokens.lua"

# wrk scripts: CASE (get|rpc) x SETUP. (c) names the tenant in the query.
for s in "${SETUPS[@]}"; do
  filter=''
  [ "$s" = c ] && filter='&tenant_id=eq." .. tenants[i] .. "'
  cat >"$WORK/get-$s.lua" <<LUA
dofile("$WORK/tokens.lua")
local threads = 0
function setup(thread) threads = threads + 1; thread:set("id", threads) end
function init(args) math.randomseed(os.time() * 100 + id) end
function request()
  local i = math.random(#tokens)
  return wrk.format("GET", "/items?limit=20&order=id$filter",
    { ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA
  cat >"$WORK/rpc-$s.lua" <<LUA
dofile("$WORK/tokens.lua")
local threads = 0
function setup(thread) threads = threads + 1; thread:set("id", threads) end
function init(args) math.randomseed(os.time() * 100 + id) end
function request()
  local i = math.random(#tokens)
  return wrk.format("POST", "/rpc/add_item",
    { ["Authorization"] = "Bearer " .. tokens[i], ["Content-Type"] = "application/json" },
    '{"p_amount": ' .. math.random(1000) .. '}')
end
LUA
done

# Equal work: tenant 42's first page is the same 20 rows from all three, and
# the RPC writes a row of the caller's tenant in each.
t42=$(token 42)
tid42=c0000000-0000-4000-8000-000000000042
for s in "${SETUPS[@]}"; do
  filter=''
  [ "$s" = c ] && filter="&tenant_id=eq.$tid42"
  curl -s -f -D "$WORK/headers-$s" -H "Authorization: Bearer $t42" "http://127.0.0.1:${PORT[$s]}/items?limit=20&order=id$filter" >"$WORK/page-$s.json" \
    || { echo "  GET through ($s) failed" >&2; exit 1; }
done
if ! cmp -s "$WORK/page-a.json" "$WORK/page-b.json" || ! cmp -s "$WORK/page-a.json" "$WORK/page-c.json"; then
  echo "  the three pages differ: the comparison is void" >&2
  head -c 300 "$WORK"/page-?.json >&2
  exit 1
fi
require_equal_work "$(grep -o '"tenant_id":"[^"]*"' "$WORK/page-a.json" | grep -c "$tid42")|$(grep -o '"tenant_id"' "$WORK/page-a.json" | wc -l)" 20
for s in "${SETUPS[@]}"; do
  id=$(curl -s -f -H "Authorization: Bearer $t42" -H 'Content-Type: application/json' -d '{"p_amount": 1}' \
         "http://127.0.0.1:${PORT[$s]}/rpc/add_item") || { echo "  POST /rpc/add_item through ($s) failed" >&2; exit 1; }
  require_equal_work "$(bench_psql -At -c "SELECT tenant_id FROM pgrst_$s.items WHERE id = $id")|$tid42"
done
# (a) checked the request against its rule (the headers pre_request adds), (b) and (c) did not.
grep -qi '^ratelimit-limit: 1000000000' "$WORK/headers-a" \
  || { echo "  (a) answered without its rate-limit headers:" >&2; cat "$WORK/headers-a" >&2; exit 1; }
if grep -qi '^ratelimit-' "$WORK/headers-b" "$WORK/headers-c"; then
  echo "  (b) or (c) answered with rate-limit headers" >&2; exit 1
fi
echo "  tenant 42: the same 20 rows from (a), (b), (c); add_item writes a row of the caller's tenant in each"

# run_wrk SCRIPT PORT SECONDS: "rps p50_ms p99_ms" of one wrk run; stops the
# bench if any answer was not 2xx (a refused request is not the same work).
run_wrk() {
  local out
  out=$("$WRK" -t "$CORES" -c "$CONNECTIONS" -d "${3}s" --latency -s "$1" "http://127.0.0.1:$2" 2>&1)
  if grep -q 'Non-2xx' <<<"$out" || grep -q 'Socket errors' <<<"$out"; then
    echo "  wrk saw failed requests ($1):" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec:/ { rps = $2 }
    END { printf "%s %.3f %.3f\n", rps, p50, p99 }' <<<"$out"
}

declare -A RPS=() P50=() P99=()
for case in get rpc; do
  case $case in
    get) label="GET /items?limit=20&order=id, 1 tenant of $TENANTS ($ROWS rows)" ;;
    rpc) label="POST /rpc/add_item (inserts 1 row)" ;;
  esac
  echo "  $label: $ROUNDS rounds of ${SECONDS_EACH} s per setup, wrk -t $CORES -c $CONNECTIONS"
  for s in "${SETUPS[@]}"; do run_wrk "$WORK/$case-$s.lua" "${PORT[$s]}" 3 >/dev/null; done   # warm-up
  for round in $(seq 1 "$ROUNDS"); do
    order=("${SETUPS[@]:$(( (round - 1) % 3 ))}" "${SETUPS[@]:0:$(( (round - 1) % 3 ))}")
    line="    round $round:"
    for s in "${order[@]}"; do
      res=$(run_wrk "$WORK/$case-$s.lua" "${PORT[$s]}" "$SECONDS_EACH")
      read -r rps p50 p99 <<<"$res"
      RPS[$case-$s]+="$rps " P50[$case-$s]+="$p50 " P99[$case-$s]+="$p99 "
      line+=$(printf ' (%s) %.0f req/s p50 %.2f ms p99 %.2f ms;' "$s" "$rps" "$p50" "$p99")
    done
    echo "${line%;}"
  done
  for s in "${SETUPS[@]}"; do
    printf '    median (%s) %-20s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms\n' "$s" "${NAME[$s]}" \
      "$(median <<<"${RPS[$case-$s]}")" "$(median <<<"${P50[$case-$s]}")" "$(median <<<"${P99[$case-$s]}")"
  done
  for peer in b c; do
    # Throughput as time per request (1/throughput), so lower is better like the rest.
    report "$case: us per request (1/throughput)" \
      "$(awk -v r="$(median <<<"${RPS[$case-a]}")" 'BEGIN { printf "%.3f", 1e6 / r }')" "${NAME[$peer]}" \
      "$(awk -v r="$(median <<<"${RPS[$case-$peer]}")" 'BEGIN { printf "%.3f", 1e6 / r }')" "us/req"
    report "$case: p50 latency" "$(median <<<"${P50[$case-a]}")" "${NAME[$peer]}" "$(median <<<"${P50[$case-$peer]}")" "ms"
    report "$case: p99 latency" "$(median <<<"${P99[$case-a]}")" "${NAME[$peer]}" "$(median <<<"${P99[$case-$peer]}")" "ms"
  done
done
