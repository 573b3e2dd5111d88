#!/usr/bin/env bash
# bench/tenancy: a tenant-scoped SELECT on 1M rows over 100 tenants.
#   ours:  enable_tenancy's policies, tenant from the JWT claim
#   (a)    the same query with a hand-written WHERE tenant_id = ..., RLS off
#          (the same table, read by a BYPASSRLS role: same heap, same cache)
#   (b)    a naive policy calling a plpgsql tenant lookup per row
# Every transaction does what a PostgREST request does first (set the claims,
# switch role), so the three differ only in how the tenant filter is applied.
# Part 2: what checking a user token's membership costs: resolving the
# tenant of a user token (a sub that is a member: membership checked)
# against a machine token (no sub: the claim alone), a point read each.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../lib.sh"
ROWS=${TENANCY_ROWS:-1000000}
TENANTS=${TENANCY_TENANTS:-100}
SECONDS_EACH=${TENANCY_SECONDS:-6}
bench_tmpdir WORK

echo "  loading $ROWS rows over $TENANTS tenants"
bench_psql >/dev/null <<SQL
SET client_min_messages = warning;
ALTER DATABASE $PGDATABASE SET max_parallel_workers_per_gather = 0;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_user') THEN CREATE ROLE bench_user NOLOGIN; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_bypass') THEN CREATE ROLE bench_bypass NOLOGIN BYPASSRLS; END IF;
END \$\$;
SELECT saas.grant_api('{bench_user}');
CREATE SCHEMA IF NOT EXISTS bench;
GRANT USAGE ON SCHEMA bench TO bench_user, bench_bypass;
DROP TABLE IF EXISTS bench.items, bench.items_naive;

-- Tenant n has id 00000000-0000-4000-8000-<n, 12 digits>.
CREATE FUNCTION pg_temp.tid(n int) RETURNS uuid LANGUAGE sql IMMUTABLE
  AS \$f\$ SELECT format('00000000-0000-4000-8000-%s', lpad(n::text, 12, '0'))::uuid \$f\$;
INSERT INTO saas.tenants (id, slug, name)
  SELECT pg_temp.tid(n), 'bench-' || n, 'Bench ' || n FROM generate_series(1, $TENANTS) n
  ON CONFLICT DO NOTHING;
-- User n (same digits, another prefix) is a member of tenant n.
INSERT INTO saas.memberships (tenant_id, user_id, role)
  SELECT pg_temp.tid(n), format('10000000-0000-4000-8000-%s', lpad(n::text, 12, '0'))::uuid, 'member'
  FROM generate_series(1, $TENANTS) n
  ON CONFLICT DO NOTHING;

-- Rows of all tenants interleaved, as they arrive in a real table.
CREATE TABLE bench.items (
  tenant_id uuid NOT NULL,
  id bigint GENERATED ALWAYS AS IDENTITY,
  amount int NOT NULL,
  created_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id));
INSERT INTO bench.items (tenant_id, amount, created_at)
  SELECT pg_temp.tid(1 + g % $TENANTS), (g::bigint * 7919 % 1000)::int, '2026-01-01'::timestamptz + g * interval '1 second'
  FROM generate_series(1, $ROWS) g;
CREATE TABLE bench.items_naive (LIKE bench.items INCLUDING ALL);
INSERT INTO bench.items_naive OVERRIDING SYSTEM VALUE SELECT * FROM bench.items;

SELECT saas.enable_tenancy('bench.items');

-- (b): what hand-rolled RLS often looks like: a plpgsql lookup, left VOLATILE
-- (the default), called in the policy without a (SELECT ...) wrapper.
CREATE OR REPLACE FUNCTION bench.naive_tenant() RETURNS uuid LANGUAGE plpgsql AS \$f\$
DECLARE t uuid;
BEGIN
  SELECT id INTO t FROM saas.tenants
  WHERE id = (current_setting('request.jwt.claims', true)::jsonb ->> 'tenant_id')::uuid;
  RETURN t;
END \$f\$;
ALTER TABLE bench.items_naive ENABLE ROW LEVEL SECURITY;
ALTER TABLE bench.items_naive FORCE ROW LEVEL SECURITY;
CREATE POLICY naive ON bench.items_naive USING (tenant_id = bench.naive_tenant());
GRANT EXECUTE ON FUNCTION bench.naive_tenant() TO bench_user;
GRANT SELECT ON bench.items, bench.items_naive TO bench_user;
GRANT SELECT ON bench.items TO bench_bypass;
VACUUM ANALYZE bench.items, bench.items_naive, saas.tenants;
SQL

prelude='\set t random(1, '"$TENANTS"')
BEGIN;
SELECT set_config('"'"'request.jwt.claims'"'"', format('"'"'{"role":"bench_user","tenant_id":"00000000-0000-4000-8000-%s"}'"'"', lpad(:t::text, 12, '"'"'0'"'"')), true);
SET LOCAL ROLE bench_user;'
printf '%s\nSELECT count(*), sum(amount) FROM bench.items;\nCOMMIT;\n' "$prelude" >"$WORK/ours.sql"
printf '%s\nSET LOCAL ROLE bench_bypass;\nSELECT count(*), sum(amount) FROM bench.items WHERE tenant_id = format('"'"'00000000-0000-4000-8000-%%s'"'"', lpad(:t::text, 12, '"'"'0'"'"'))::uuid;\nCOMMIT;\n' "$prelude" >"$WORK/plain.sql"
printf '%s\nSELECT count(*), sum(amount) FROM bench.items_naive;\nCOMMIT;\n' "$prelude" >"$WORK/naive.sql"

# Same answers first: the comparison is only fair if all three return one tenant's rows.
for f in ours plain naive; do
  sed 's/:t\b/42/g; /\\set/d' "$WORK/$f.sql" | bench_psql -At | tail -n 1 >"$WORK/$f.out"
done
if ! cmp -s "$WORK/ours.out" "$WORK/plain.out" || ! cmp -s "$WORK/ours.out" "$WORK/naive.out"; then
  echo "  results differ: ours=$(cat "$WORK/ours.out") plain=$(cat "$WORK/plain.out") naive=$(cat "$WORK/naive.out")" >&2
  exit 1
fi
echo "  tenant 42: count|sum = $(cat "$WORK/ours.out") in all three"

# Warm the cache for both, then alternate rounds so neither gains from order.
pgbench_latency_ms "$WORK/ours.sql" 3 >/dev/null
pgbench_latency_ms "$WORK/plain.sql" 3 >/dev/null
# Five alternating rounds; the median of each side.
ours_runs=() plain_runs=()
for round in 1 2 3 4 5; do
  o=$(pgbench_latency_ms "$WORK/ours.sql" "$SECONDS_EACH")
  p=$(pgbench_latency_ms "$WORK/plain.sql" "$SECONDS_EACH")
  echo "  round $round: ours $o ms, hand-written $p ms"
  ours_runs+=("$o") plain_runs+=("$p")
done
ours=$(echo "${ours_runs[*]}" | median)
plain=$(echo "${plain_runs[*]}" | median)
# The naive policy takes seconds per request: one pgbench run is plenty.
naive=$(pgbench_latency_ms "$WORK/naive.sql" "$SECONDS_EACH")
report "select 1 tenant of $TENANTS (1M rows)" "$ours" "hand-written WHERE" "$plain" "ms/request"
report "select 1 tenant of $TENANTS (1M rows)" "$ours" "naive plpgsql policy" "$naive" "ms/request"

# Part 2: a point read under a user token and under a machine token (row
# :t + 99 belongs to tenant :t).
point='SELECT amount FROM bench.items WHERE id = :t + 99;
COMMIT;'
printf '%s\nBEGIN;\nSELECT set_config('"'"'request.jwt.claims'"'"', format('"'"'{"role":"bench_user","sub":"10000000-0000-4000-8000-%%s","tenant_id":"00000000-0000-4000-8000-%%s"}'"'"', lpad(:t::text, 12, '"'"'0'"'"'), lpad(:t::text, 12, '"'"'0'"'"')), true);\nSET LOCAL ROLE bench_user;\n%s\n' '\set t random(1, '"$TENANTS"')' "$point" >"$WORK/user.sql"
printf '%s\n%s\n' "$prelude" "$point" >"$WORK/machine.sql"
for f in user machine; do
  out=$(sed 's/:t\b/42/g; /\\set/d' "$WORK/$f.sql" | bench_psql -At | tail -n 1)
  [ -n "$out" ] || { echo "  $f token: the point read found nothing" >&2; exit 1; }
done
pgbench_latency_ms "$WORK/user.sql" 3 >/dev/null
user_runs=() machine_runs=()
for round in 1 2 3 4 5; do
  u=$(pgbench_latency_ms "$WORK/user.sql" "$SECONDS_EACH")
  m=$(pgbench_latency_ms "$WORK/machine.sql" "$SECONDS_EACH")
  echo "  round $round: user token $u ms, machine token $m ms"
  user_runs+=("$u") machine_runs+=("$m")
done
report "point read: user token (membership checked)" "$(echo "${user_runs[*]}" | median)" "machine token (claim only)" "$(echo "${machine_runs[*]}" | median)" "ms/request"
