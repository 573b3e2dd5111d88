#!/usr/bin/env bash
# bench/ltv: the ltv module beside what a team writes by hand, in one run.
#   1. LTV_ROWS payments (default 1M) inserted in batches of 1,000 into a
#      monthly-partitioned table (12 months + default) over 100 tenants and
#      100k customers: (a) no tracking, (b) ltv_track (statement triggers
#      appending the statement's changes to the pending log, one row per
#      tenant), (c) a row-level PL/pgSQL trigger
#      upserting the same ledger and daily series per row. (d) pg_ivm is not
#      packaged for Debian 12 and is not built here: no figure.
#      The sides take turns within each of LTV_ROUNDS rounds; each side's
#      time is the server-side time of its batches (clock_timestamp() in
#      one DO block), its ledger checked against the others' afterwards.
#      After (b)'s load, ltv_compact folds its log (timed apart: the work
#      the writers no longer do, done by run_maintenance).
#   2. retention_risk over LTV_RISK_ROWS rows (default 1M) against a
#      PL/pgSQL implementation of the same rules returning the same type.
#   3. ltv_summary and revenue_metrics for one tenant with 10k customers and
#      100k payments (10k customers' subscriptions): p50/p95 of LTV_CALLS
#      calls against the same figures computed from the raw tables with SQL.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../lib.sh"
ROWS=${LTV_ROWS:-1000000}
ROUNDS=${LTV_ROUNDS:-3}
RISK_ROWS=${LTV_RISK_ROWS:-1000000}
CALLS=${LTV_CALLS:-20}
# Which parts to run (all by default): "1 2 3".
SECTIONS=${LTV_SECTIONS:-1 2 3}
section() { case " $SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# spread LABEL FIGURES...: the per-round figures behind a median.
spread() { printf '%s: %s ms per round' "$1" "$(echo "${@:2}" | tr ' ' '/')"; }
BATCHES=$((ROWS / 1000))

bench_psql >/dev/null <<'SQL'
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS b_ltv CASCADE;
CREATE SCHEMA b_ltv;
CREATE TABLE b_ltv.tenants AS
  SELECT n, ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid AS id FROM generate_series(0, 99) n;
-- The hand-written ledger and series (same shape as saas.ltv_ledger/ltv_daily).
CREATE TABLE b_ltv.ledger (tenant_id uuid, customer_id text, currency text, gross numeric NOT NULL DEFAULT 0,
  refunds numeric NOT NULL DEFAULT 0, net numeric NOT NULL DEFAULT 0, payments bigint NOT NULL DEFAULT 0,
  first_payment_on date, last_payment_on date, PRIMARY KEY (tenant_id, customer_id, currency));
CREATE TABLE b_ltv.daily (tenant_id uuid, customer_id text, currency text, day date, gross numeric NOT NULL DEFAULT 0,
  refunds numeric NOT NULL DEFAULT 0, payments bigint NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, customer_id, currency, day));
CREATE FUNCTION b_ltv.hand_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  d date := (NEW.paid_at AT TIME ZONE 'UTC')::date;
BEGIN
  INSERT INTO b_ltv.daily AS t VALUES (NEW.tenant_id, NEW.customer_id, 'XXX', d, NEW.amount, 0, 1)
  ON CONFLICT (tenant_id, customer_id, currency, day) DO UPDATE SET gross = t.gross + EXCLUDED.gross, payments = t.payments + 1;
  INSERT INTO b_ltv.ledger AS l VALUES (NEW.tenant_id, NEW.customer_id, 'XXX', NEW.amount, 0, NEW.amount, 1, d, d)
  ON CONFLICT (tenant_id, customer_id, currency) DO UPDATE
    SET gross = l.gross + EXCLUDED.gross, net = l.net + EXCLUDED.net, payments = l.payments + 1,
        first_payment_on = LEAST(l.first_payment_on, d), last_payment_on = GREATEST(l.last_payment_on, d);
  RETURN NULL;
END $$;
SQL

# make_table NAME: a fresh monthly-partitioned payments table.
make_table() {
  bench_psql >/dev/null <<SQL
SET client_min_messages = warning;
DROP TABLE IF EXISTS b_ltv.$1;
CREATE TABLE b_ltv.$1 (id bigint GENERATED ALWAYS AS IDENTITY, tenant_id uuid NOT NULL, customer_id text NOT NULL,
  amount numeric(12, 2) NOT NULL, paid_at timestamptz NOT NULL, PRIMARY KEY (tenant_id, id, paid_at)) PARTITION BY RANGE (paid_at);
DO \$\$ BEGIN
  FOR m IN 0..11 LOOP
    EXECUTE format('CREATE TABLE b_ltv.%s_m%s PARTITION OF b_ltv.%s FOR VALUES FROM (%L) TO (%L)', '$1', m, '$1',
                   date '2026-01-01' + make_interval(months => m), date '2026-01-01' + make_interval(months => m + 1));
  END LOOP;
END \$\$;
CREATE TABLE b_ltv.$1_rest PARTITION OF b_ltv.$1 DEFAULT;
SQL
}

# load NAME: inserts ROWS rows in batches of 1000 (each its own statement),
# prints the server-side milliseconds.
load() {
  bench_psql -At <<SQL | tail -n 1
SET client_min_messages = warning;
DO \$\$
DECLARE
  t0 timestamptz := clock_timestamp();
BEGIN
  FOR b IN 0..$BATCHES - 1 LOOP
    INSERT INTO b_ltv.$1 (tenant_id, customer_id, amount, paid_at)
    SELECT t.id, 'c' || ((g * 7919) % 100000), ((g * 37) % 20000) / 100.0 + 1,
           timestamptz '2026-01-01 00:00+00' + ((g * 104729) % 8760) * interval '1 hour'
    FROM generate_series(b::bigint * 1000, b::bigint * 1000 + 999) g JOIN b_ltv.tenants t ON t.n = (g * 31) % 100;
  END LOOP;
  RAISE WARNING 'ms %', round(extract(epoch FROM clock_timestamp() - t0) * 1000, 1);
END \$\$;
SQL
}
# psql prints the WARNING on stderr: capture it.
load_ms() { load "$1" 2>&1 | sed -n 's/.*WARNING: *ms //p' | tail -n 1; }

if section 1; then
plain=() tracked=() hand=()
for r in $(seq 1 "$ROUNDS"); do
  for side in plain tracked hand; do
    [ "$side" != tracked ] || bench_psql -c "SELECT saas.ltv_untrack('b_ltv.tracked')" >/dev/null 2>&1 || true
    make_table "$side"
    case $side in
      tracked) bench_psql -c "SELECT saas.ltv_track('b_ltv.tracked', occurred_at_column => 'paid_at')" >/dev/null ;;
      hand) bench_psql -c "TRUNCATE b_ltv.ledger, b_ltv.daily" \
              -c "CREATE TRIGGER hand AFTER INSERT ON b_ltv.hand FOR EACH ROW EXECUTE FUNCTION b_ltv.hand_trigger()" >/dev/null ;;
    esac
    bench_psql -c "CHECKPOINT" >/dev/null
    ms=$(load_ms "$side")
    case $side in
      plain) plain+=("$ms") ;; tracked) tracked+=("$ms") ;; hand) hand+=("$ms") ;;
    esac
    echo "  round $r $side: $ms ms"
    if [ "$side" = tracked ]; then
      echo "  round $r compaction of the pending log: $(timed "SELECT saas.ltv_compact('b_ltv.tracked')") ms"
    fi
  done
done
# Same ledger on both tracked sides (the last round's).
require_equal_work "$(bench_psql -At -c "SELECT (SELECT md5(string_agg(format('%s %s %s %s %s %s', tenant_id, customer_id, gross, payments, first_payment_on, last_payment_on), ',' ORDER BY tenant_id, customer_id)) FROM saas.ltv_ledger)
  || '|' || (SELECT md5(string_agg(format('%s %s %s %s %s %s', tenant_id, customer_id, gross, payments, first_payment_on, last_payment_on), ',' ORDER BY tenant_id, customer_id)) FROM b_ltv.ledger)")"
p=$(echo "${plain[*]}" | median); t=$(echo "${tracked[*]}" | median); h=$(echo "${hand[*]}" | median)
report "insert $ROWS payments: ltv_track vs none" "$t" "no tracking" "$p" ms "$(spread ours "${tracked[@]}"); $(spread none "${plain[@]}")"
report "insert $ROWS payments: ltv_track vs row trigger" "$t" "plpgsql row trigger" "$h" ms "$(spread ours "${tracked[@]}"); $(spread row-trigger "${hand[@]}")"
echo "  pg_ivm: not packaged for Debian 12 and not built here; no figure"
bench_psql -c "SELECT saas.ltv_untrack('b_ltv.tracked')" >/dev/null
fi

# --- 2. retention_risk -----------------------------------------------------------
if section 2; then
bench_psql >/dev/null <<'SQL'
CREATE FUNCTION b_ltv.risk_plpgsql(m numeric, w numeric, s numeric, d int, t text)
RETURNS saas.retention_risk_result LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  score int := 0;
  drivers text[] := '{}';
BEGIN
  IF m < 0 OR m > 100 OR w < 0 OR w > 100 OR s < 0 OR s > 100 OR d < 0 THEN RAISE EXCEPTION 'out of range'; END IF;
  IF t NOT IN ('up', 'stable', 'down') THEN RAISE EXCEPTION 'trend'; END IF;
  IF m < 50 THEN score := score + 30; drivers := drivers || 'Motivational drivers misaligned with role'::text;
  ELSIF m < 70 THEN score := score + 15; END IF;
  IF w < 50 THEN score := score + 25; drivers := drivers || 'Working style not accommodated'::text;
  ELSIF w < 70 THEN score := score + 12; END IF;
  IF s < 60 THEN score := score + 25; drivers := drivers || 'Skills underutilized or overextended'::text;
  ELSIF s < 80 THEN score := score + 10; END IF;
  IF d > 180 THEN score := score + 10; drivers := drivers || 'Assessments outdated (>6 months)'::text;
  ELSIF d > 90 THEN score := score + 5; END IF;
  IF t = 'down' THEN score := score + 10; drivers := drivers || 'Declining performance trend'::text; END IF;
  RETURN ROW(least(score, 100), CASE WHEN score >= 70 THEN 'critical' WHEN score >= 50 THEN 'high'
                                     WHEN score >= 30 THEN 'medium' ELSE 'low' END, drivers, 0)::saas.retention_risk_result;
END $$;
SQL
bench_psql -c "CREATE TABLE b_ltv.people AS SELECT (g * 37 % 101)::numeric AS m, (g * 53 % 101)::numeric AS w,
  (g * 71 % 101)::numeric AS s, (g * 13 % 400)::int AS d, (ARRAY['up','stable','down'])[1 + g % 3] AS t
  FROM generate_series(1, $RISK_ROWS) g" -c "VACUUM ANALYZE b_ltv.people" >/dev/null
require_equal_work "$(bench_psql -At -c "SELECT (SELECT md5(string_agg(r::text, ',' ORDER BY ctid)) FROM (SELECT ctid, saas.retention_risk(m, w, s, d, t) r FROM b_ltv.people LIMIT 20000) x)
  || '|' || (SELECT md5(string_agg(r::text, ',' ORDER BY ctid)) FROM (SELECT ctid, b_ltv.risk_plpgsql(m, w, s, d, t) r FROM b_ltv.people LIMIT 20000) x)")"
ours=() peer=()
for _ in $(seq 1 "$ROUNDS"); do
  ours+=("$(timed "SET max_parallel_workers_per_gather = 0; SELECT sum((saas.retention_risk(m, w, s, d, t)).score) FROM b_ltv.people")")
  peer+=("$(timed "SET max_parallel_workers_per_gather = 0; SELECT sum((b_ltv.risk_plpgsql(m, w, s, d, t)).score) FROM b_ltv.people")")
done
report "retention_risk over $RISK_ROWS rows" "$(echo "${ours[*]}" | median)" "plpgsql" "$(echo "${peer[*]}" | median)" ms \
  "$(spread ours "${ours[@]}"); $(spread plpgsql "${peer[@]}")"
fi

# --- 3. summary and metrics for one tenant -------------------------------------------
section 3 || exit 0
bench_psql >/dev/null <<'SQL'
SET client_min_messages = warning;
INSERT INTO saas.tenants (id, slug, name) VALUES ('00000000-0000-4000-8000-00000000aaaa', 'bench-ltv', 'bench ltv');
DROP TABLE IF EXISTS b_ltv.one;
CREATE TABLE b_ltv.one (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id uuid NOT NULL, customer_id text NOT NULL,
  amount numeric(12, 2) NOT NULL, paid_at timestamptz NOT NULL);
CREATE INDEX ON b_ltv.one (tenant_id, customer_id, paid_at);
SELECT saas.ltv_track('b_ltv.one', occurred_at_column => 'paid_at');
INSERT INTO b_ltv.one (tenant_id, customer_id, amount, paid_at)
SELECT '00000000-0000-4000-8000-00000000aaaa', 'c' || (g % 10000), ((g * 37) % 20000) / 100.0 + 1,
       timestamptz '2025-01-01 00:00+00' + ((g * 104729) % 17520) * interval '1 hour'
FROM generate_series(1::bigint, 100000) g;
CREATE TABLE b_ltv.subs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id uuid NOT NULL, customer_id text NOT NULL,
  mrr numeric NOT NULL, started_at timestamptz NOT NULL, ended_at timestamptz);
CREATE INDEX ON b_ltv.subs (tenant_id, customer_id);
SELECT saas.ltv_track_subscriptions('b_ltv.subs');
INSERT INTO b_ltv.subs (tenant_id, customer_id, mrr, started_at, ended_at)
SELECT '00000000-0000-4000-8000-00000000aaaa', 'c' || (g % 10000), 10 + g % 90,
       timestamptz '2025-01-01' + (g % 700) * interval '1 day',
       CASE WHEN g % 3 = 0 THEN timestamptz '2025-01-01' + (g % 700 + 30 + g % 200) * interval '1 day' END
FROM generate_series(1::bigint, 20000) g;
SELECT saas.ltv_compact();
ANALYZE b_ltv.one; ANALYZE b_ltv.subs; ANALYZE saas.ltv_daily_compacted; ANALYZE saas.ltv_ledger_compacted;
SQL
SETT="SELECT saas.set_tenant('00000000-0000-4000-8000-00000000aaaa');"
# The same summary straight from the payments (lifetimes' definitions).
RAW_SUMMARY="WITH d AS (SELECT customer_id, (paid_at AT TIME ZONE 'UTC')::date AS day, sum(amount) AS net FROM b_ltv.one
  WHERE tenant_id = '00000000-0000-4000-8000-00000000aaaa' AND (paid_at AT TIME ZONE 'UTC')::date <= date '2026-12-31' GROUP BY 1, 2)
  SELECT customer_id, count(*) - 1, max(day) - min(day), date '2026-12-31' - min(day),
         CASE WHEN count(*) = 1 THEN 0 ELSE (sum(net) - (array_agg(net ORDER BY day))[1]) / (count(*) - 1) END FROM d GROUP BY 1"
# MRR per month straight from the subscriptions (state just before each month's end), without movements.
RAW_MRR="SELECT g, sum(mrr) FROM generate_series(timestamptz '2025-01-01', '2026-12-01', '1 month') g
  JOIN b_ltv.subs s ON s.tenant_id = '00000000-0000-4000-8000-00000000aaaa' AND s.started_at < g + interval '1 month'
   AND (s.ended_at IS NULL OR s.ended_at >= g + interval '1 month') GROUP BY 1"
# Both sides must answer the same rows before any timing counts.
require_equal_work "$(bench_psql -At -c "BEGIN; $SETT SELECT (SELECT count(*) FROM saas.ltv_summary('1 day', '2026-12-31')) || '|' || (SELECT count(*) FROM ($RAW_SUMMARY) x); COMMIT;" | grep '|')"
require_equal_work "$(bench_psql -At -c "BEGIN; $SETT SELECT (SELECT count(*) FROM saas.revenue_metrics('2025-01-01', '2027-01-01')) || '|' || (SELECT count(*) FROM ($RAW_MRR) x); COMMIT;" | grep '|')"
pct() { tr ' ' '\n' | awk 'NF' | sort -g | awk -v p="$1" '{ a[NR] = $1 } END { i = int(NR * p + 0.999); if (i < 1) i = 1; print a[i] }'; }
for case in summary metrics; do
  ours=() peer=()
  for _ in $(seq 1 "$CALLS"); do
    if [ "$case" = summary ]; then
      ours+=("$(timed "BEGIN; $SETT SELECT count(*) FROM saas.ltv_summary('1 day', '2026-12-31'); COMMIT;")")
      peer+=("$(timed "SELECT count(*) FROM ($RAW_SUMMARY) x")")
    else
      ours+=("$(timed "BEGIN; $SETT SELECT count(*) FROM saas.revenue_metrics('2025-01-01', '2027-01-01'); COMMIT;")")
      peer+=("$(timed "SELECT count(*) FROM ($RAW_MRR) x")")
    fi
  done
  o50=$(echo "${ours[*]}" | pct 0.5); o95=$(echo "${ours[*]}" | pct 0.95)
  p50=$(echo "${peer[*]}" | pct 0.5); p95=$(echo "${peer[*]}" | pct 0.95)
  label=$([ "$case" = summary ] && echo "ltv_summary 10k customers/100k payments" || echo "revenue_metrics 24 months, 10k customers")
  peer_name=$([ "$case" = summary ] && echo "SQL on raw payments" || echo "SQL MRR only, raw subs")
  report "$label p50" "$o50" "$peer_name" "$p50" ms "p95 ours $o95 ms, peer $p95 ms, $CALLS calls each"
done
bench_psql -c "SELECT saas.ltv_untrack('b_ltv.one')" -c "SELECT saas.ltv_untrack_subscriptions('b_ltv.subs')" >/dev/null
