#!/usr/bin/env bash
# bench/audit: what auditing a table costs, ours beside two peers, in one run:
#   floor    no audit at all
#   plpgsql  the seeds' PL/pgSQL row trigger: to_jsonb(OLD/NEW) inserted into
#            a log partitioned and keyed like saas.audit_log (row images,
#            no hash, no seal)
#   pgaudit  pgaudit's object audit logging of the table (pgaudit.role and
#            GRANTs): one line of statement text in the server log per
#            statement, no row image (only when bench/run.sh preloaded it)
#   ours     saas.audit_enable: row images, actor and request, SHA-256 of
#            each row (sealing is audit_seal's job, later, and not timed)
# Cases: 1. single-row INSERT, UPDATE, DELETE on a 10-column table (ours in
# row mode); 2. one 100k-row INSERT ... SELECT (ours in statement mode, the
# PL/pgSQL peer still per row).
#
# Why not pgbench latencies: a 30-60 us overhead is the difference of two
# ~1 ms client round trips, and on a shared 2-core machine that difference
# moves by more than itself between runs. So the server measures:
# every statement runs under EXPLAIN (ANALYZE, FORMAT JSON), which gives
#   - its execution time (no parse, plan, client or commit), and
#   - each trigger's own time (Triggers: Time over Calls), the cost inside
#     the trigger with no floor subtracted (pgaudit is no trigger: it has
#     only the first figure).
# Single-row statements run in a procedure that commits after each (one
# transaction per statement, as autocommit clients send them), the sides
# taking turns statement by statement, so load from elsewhere (other builds
# on the same cores) falls on every side alike: per round, each side's mean
# over SINGLE statements after WARM unmeasured ones, its slowest TRIM left
# out (below). We report the median over the rounds with p25-p75, and
# ours/peer as the ratio of the medians with the min-max of the per-round
# ratios. "over floor" is a side's execution time minus the floor's in the
# same round: everything auditing adds, including queueing the after-trigger
# events and filling the transition tables, which the trigger time leaves
# out. Every statement's figures land in target/bench/audit-statements.tsv.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../lib.sh"
ROWS=${AUDIT_ROWS:-200000}
BULK=${AUDIT_BULK:-100000}
ROUNDS=${AUDIT_ROUNDS:-9}
SINGLE=${AUDIT_SINGLE:-1000}
WARM=${AUDIT_WARM:-100}
# A round's figure for a side is the mean of its statements but the slowest
# TRIM: on a busy machine those are the ones that waited for a core (tens of
# us to milliseconds added to a 30 us statement), and which side that hits
# is luck.
# AUDIT_TRIM=0 gives plain means (Time/Calls). Bulk inserts are one per round.
TRIM=${AUDIT_TRIM:-0.05}
TENANT=0000000a-0000-4000-8000-00000000bec0
# UPDATE and DELETE take distinct ids (DELETE's from the second half of a
# permutation of 1..ROWS), the same ones on every side.
[ $((ROUNDS * (SINGLE + WARM))) -le $((ROWS / 2)) ] || { echo "  AUDIT_ROWS too small for the rounds" >&2; exit 1; }

sides=(floor plpgsql ours)
if [ "$(bench_psql -At -c "SELECT current_setting('shared_preload_libraries') ~ 'pgaudit'")" = t ]; then
  sides=(floor plpgsql pgaudit ours)
else
  echo "  pgaudit is not preloaded (postgresql-15-pgaudit not installed): that peer is left out"
fi

bench_psql >/dev/null <<SQL
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS b_audit CASCADE;
CREATE SCHEMA b_audit;
-- The PL/pgSQL peer's log: same partitioning and key as saas.audit_log.
CREATE TABLE b_audit.peer_log (
  tenant_id uuid NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY, logged_at timestamptz NOT NULL DEFAULT now(),
  txid bigint NOT NULL DEFAULT txid_current(), actor_id uuid, actor_role text, operation text NOT NULL,
  schema_name text NOT NULL, table_name text NOT NULL, old_values jsonb, new_values jsonb,
  PRIMARY KEY (tenant_id, id, logged_at)
) PARTITION BY RANGE (logged_at);
SELECT count(*) FROM saas.create_monthly_partitions('b_audit.peer_log', 'logged_at');
-- The seeds' trigger: the actor from the JWT, whole rows as jsonb.
CREATE FUNCTION b_audit.peer_audit() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS \$\$
DECLARE
  claims jsonb := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
BEGIN
  INSERT INTO b_audit.peer_log (tenant_id, actor_id, actor_role, operation, schema_name, table_name, old_values, new_values)
  VALUES (CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END,
          (claims ->> 'sub')::uuid, coalesce(claims ->> 'role', current_user), TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME,
          CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END, CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
  RETURN NULL;
END \$\$;
-- One table per side and case: <side> for single rows, bulk_<side>.
DO \$\$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['floor', 'plpgsql', 'pgaudit', 'ours'] LOOP
    EXECUTE format('CREATE TABLE b_audit.%I (
      id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, tenant_id uuid NOT NULL, c1 text, c2 int, c3 numeric,
      c4 timestamptz, c5 boolean, c6 text, c7 jsonb, c8 int)', t);
    EXECUTE format('CREATE TABLE b_audit.%I (LIKE b_audit.%I INCLUDING ALL)', 'bulk_' || t, t);
  END LOOP;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'b_auditor') THEN CREATE ROLE b_auditor NOLOGIN; END IF;
END \$\$;
INSERT INTO b_audit.floor (tenant_id, c1, c2, c3, c4, c5, c6, c7, c8)
SELECT '$TENANT', 'row ' || g, g, g * 1.5, now(), g % 2 = 0, repeat('x', 20), jsonb_build_object('g', g), g
FROM generate_series(1, $ROWS) g;
INSERT INTO b_audit.plpgsql SELECT * FROM b_audit.floor;
INSERT INTO b_audit.pgaudit SELECT * FROM b_audit.floor;
INSERT INTO b_audit.ours SELECT * FROM b_audit.floor;
SELECT setval(pg_get_serial_sequence('b_audit.' || t, 'id'), $ROWS) FROM unnest(ARRAY['floor', 'plpgsql', 'pgaudit', 'ours']) t;
CREATE TRIGGER peer_audit AFTER INSERT OR UPDATE OR DELETE ON b_audit.plpgsql FOR EACH ROW EXECUTE FUNCTION b_audit.peer_audit();
CREATE TRIGGER peer_audit AFTER INSERT OR UPDATE OR DELETE ON b_audit.bulk_plpgsql FOR EACH ROW EXECUTE FUNCTION b_audit.peer_audit();
SELECT saas.audit_enable('b_audit.ours');
SELECT saas.audit_enable('b_audit.bulk_ours', mode => 'statement');
-- pgaudit's object logging: what the audit role may write is logged.
GRANT INSERT, UPDATE, DELETE ON b_audit.pgaudit, b_audit.bulk_pgaudit TO b_auditor;
VACUUM ANALYZE b_audit.floor, b_audit.plpgsql, b_audit.pgaudit, b_audit.ours;

CREATE UNLOGGED TABLE b_audit.stmts (round int, case_name text, side text, i int, exec_ms float8, trig_ms float8);
-- sample(round, case, sides, n, warm, first): n + warm statements of CASE on
-- each side's table, the sides taking turns statement by statement, one
-- transaction per statement, under EXPLAIN ANALYZE; stores the execution
-- time and trigger time of each of the last n.
CREATE PROCEDURE b_audit.sample(round int, case_name text, sides text[], n int, warm int, first bigint)
LANGUAGE plpgsql AS \$\$
DECLARE
  tbl text; id bigint; plan json;
BEGIN
  FOR i IN 1 .. n + warm LOOP
    id := (first + i) * 7919 % $ROWS + 1;  -- 7919 is prime to ROWS: distinct ids
    FOR s IN 1 .. cardinality(sides) LOOP
      tbl := format('b_audit.%I', CASE WHEN case_name = 'bulk' THEN 'bulk_' || sides[s] ELSE sides[s] END);
      -- pgaudit logs only for its own side: the others run without its check.
      PERFORM set_config('pgaudit.role', CASE WHEN sides[s] = 'pgaudit' THEN 'b_auditor' ELSE '' END, false);
      EXECUTE 'EXPLAIN (ANALYZE, FORMAT JSON) ' || CASE case_name
        WHEN 'insert' THEN format('INSERT INTO %s (tenant_id, c1, c2, c3, c4, c5, c6, c7, c8)
          VALUES (%L, %L, %s, %s * 1.5, now(), true, %L, %L, %s)', tbl, '$TENANT', 'new ' || i, i, i, repeat('x', 20), '{"g": 1}', i)
        WHEN 'update' THEN format('UPDATE %s SET c2 = c2 + 1, c1 = %L WHERE id = %s', tbl, 'updated', id)
        WHEN 'delete' THEN format('DELETE FROM %s WHERE id = %s', tbl, id)
        WHEN 'bulk' THEN format('INSERT INTO %s (tenant_id, c1, c2, c3, c4, c5, c6, c7, c8)
          SELECT %L, %L || g, g, g * 1.5, now(), true, %L, jsonb_build_object(%L, g), g FROM generate_series(1, $BULK) g',
          tbl, '$TENANT', 'bulk ', repeat('x', 20), 'g')
      END INTO plan;
      IF i > warm THEN
        INSERT INTO b_audit.stmts SELECT round, case_name, sides[s], i, (plan -> 0 ->> 'Execution Time')::float8,
          (SELECT coalesce(sum((t ->> 'Time')::float8), 0) FROM json_array_elements(plan -> 0 -> 'Triggers') t);
      END IF;
      COMMIT;
    END LOOP;
  END LOOP;
  PERFORM set_config('pgaudit.role', '', false);
  COMMIT;
END \$\$;
SQL

# One session runs every sample, so every side works with warm caches. The
# sides take turns statement by statement for single rows (a burst of load
# elsewhere hits all alike), and bulk insert by bulk insert, each after a
# CHECKPOINT (no side pays for another's dirty pages); the order rotates
# each round.
echo "  $ROUNDS rounds of: $SINGLE single-row statements per case and side (after $WARM unmeasured; mean of the fastest $(awk -v t="$TRIM" 'BEGIN { print 100 - t * 100 }')%), one $BULK-row INSERT per side"
script=$(
  for round in $(seq 1 "$ROUNDS"); do
    order=()
    for i in "${!sides[@]}"; do order+=("'${sides[$(((i + round) % ${#sides[@]}))]}'"); done
    list=$(IFS=,; echo "ARRAY[${order[*]}]")
    echo "CALL b_audit.sample($round, 'insert', $list, $SINGLE, $WARM, 0);"
    echo "CALL b_audit.sample($round, 'update', $list, $SINGLE, $WARM, $(((round - 1) * (SINGLE + WARM))));"
    echo "CALL b_audit.sample($round, 'delete', $list, $SINGLE, $WARM, $((ROWS / 2 + (round - 1) * (SINGLE + WARM))));"
    for side in "${order[@]}"; do echo "CHECKPOINT; CALL b_audit.sample($round, 'bulk', ARRAY[$side], 1, 0, 0);"; done
  done
)
bench_psql <<<"$script"

# Every statement's figures, for a closer look (target/bench/audit-statements.tsv).
bench_psql -c "\\copy (SELECT * FROM b_audit.stmts ORDER BY 1, 2, 3, 4) TO '$(dirname "$BENCH_RESULTS")/audit-statements.tsv' WITH (HEADER)"

# Equal work: every trigger fired once per row (the statement trigger once
# per statement), and each log holds what the other holds.
per_side=$((ROUNDS * (SINGLE + WARM) * 3 + ROUNDS * BULK))
logged=$(bench_psql -At -c "SELECT (SELECT count(*) FROM b_audit.peer_log), (SELECT count(*) FROM saas.audit_log WHERE schema_name = 'b_audit')")
echo "  audit rows written (plpgsql|ours): $logged, expected $per_side each"
require_equal_work "$logged" "$per_side"

# Per case and metric, median [p25-p75] over the rounds of each side's
# trimmed means and ours/peer per round. Units: us per statement (single rows), ms (bulk).
stats=$(bench_psql -At -F ' ' <<SQL
WITH ranked AS (
  SELECT *, row_number() OVER (w ORDER BY exec_ms) AS by_exec, row_number() OVER (w ORDER BY trig_ms) AS by_trig,
         ceil(count(*) OVER w * (1 - $TRIM)) AS kept
  FROM b_audit.stmts WINDOW w AS (PARTITION BY round, case_name, side)
), samples AS (
  SELECT round, case_name, side, avg(exec_ms) FILTER (WHERE by_exec <= kept) AS exec_ms,
         avg(trig_ms) FILTER (WHERE by_trig <= kept) AS trig_ms
  FROM ranked GROUP BY 1, 2, 3
), s AS (
  SELECT round, case_name, x.side, m.metric, m.v * CASE WHEN case_name = 'bulk' THEN 1 ELSE 1000 END AS v
  FROM samples x
  JOIN samples f USING (round, case_name)
  CROSS JOIN LATERAL (VALUES ('total', x.exec_ms), ('over_floor', x.exec_ms - f.exec_ms), ('trigger', x.trig_ms)) m(metric, v)
  WHERE f.side = 'floor' AND x.side <> 'floor' AND NOT (m.metric = 'trigger' AND x.side = 'pgaudit')
    AND (m.metric <> 'total' OR case_name = 'bulk')
), q AS (
  SELECT case_name, metric, side, percentile_cont(ARRAY[0.25, 0.5, 0.75]) WITHIN GROUP (ORDER BY v) AS p FROM s GROUP BY 1, 2, 3
)
SELECT o.case_name, o.metric, q.side, round(o.p[2]::numeric, 2), round(o.p[1]::numeric, 2), round(o.p[3]::numeric, 2),
       round(q.p[2]::numeric, 2), round(q.p[1]::numeric, 2), round(q.p[3]::numeric, 2),
       -- per-round ratios only where the peer's figure is above zero in every round
       coalesce(CASE WHEN bool_and(sp.v > 0) THEN round(min(so.v / sp.v)::numeric, 2) || '-' || round(max(so.v / sp.v)::numeric, 2) END, 'n/a')
FROM q o JOIN q USING (case_name, metric)
JOIN s so ON so.case_name = o.case_name AND so.metric = o.metric AND so.side = 'ours'
JOIN s sp ON sp.case_name = o.case_name AND sp.metric = o.metric AND sp.side = q.side AND sp.round = so.round
WHERE o.side = 'ours' AND q.side <> 'ours'
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
ORDER BY array_position(ARRAY['insert', 'update', 'delete', 'bulk'], o.case_name),
         array_position(ARRAY['trigger', 'over_floor', 'total'], o.metric), 3;
SQL
)
declare -A label=([total]="total statement time" [over_floor]="over no-audit floor" [trigger]="trigger time")
declare -A peer_label=([plpgsql]="plpgsql to_jsonb trigger" [pgaudit]="pgaudit object log")
while read -r case metric peer o o25 o75 p p25 p75 ratios; do
  unit=us; [ "$case" != bulk ] || unit=ms
  what="$case: ${label[$metric]}"; [ "$case" != bulk ] || what="bulk insert $BULK rows: ${label[$metric]}"
  report "$what" "$o" "${peer_label[$peer]}" "$p" "$unit" \
    "median [p25-p75] of $ROUNDS rounds: ours $o [$o25-$o75], peer $p [$p25-$p75]; per-round ours/peer $ratios"
done <<<"$stats"

# pgaudit logged every statement it audited (EXPLAIN ANALYZE runs them).
if [[ " ${sides[*]} " == *" pgaudit "* ]]; then
  log="$(dirname "$(bench_psql -At -c 'SHOW data_directory')")/server.log"
  echo "  pgaudit lines in the server log: $(grep -c 'AUDIT: OBJECT' "$log" || true), expected $((ROUNDS * (SINGLE + WARM) * 3 + ROUNDS))"
fi
# Ours must not have written a bad hash.
bench_psql -At -c "SELECT count(*) FROM saas.audit_seal()" >/dev/null
bench_psql -At -c "SELECT 'verify: ' || ok || ', ' || detail FROM saas.audit_verify('-infinity', 'infinity')"
