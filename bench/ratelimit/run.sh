#!/usr/bin/env bash
# bench/ratelimit: checks per second of saas.rate_limit with its shared-memory
# backend and with its table backend, beside a peer written the way the
# seeds did it (PL/pgSQL: select the key's counter, then update or insert
# it; a fixed window), in one run:
#   1. throughput, pgbench, 8 clients: one hot key, and 10k distinct keys;
#      limits high enough that every check is admitted (the common case)
#   2. concurrency: 8 clients hammer one fresh key with a limit of 100 per
#      day; the requests each one admitted beyond the limit are reported
#      (a sequence counts admissions, since it is not rolled back)
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
CLIENTS=${RATELIMIT_CLIENTS:-8}
SECONDS_PER_RUN=${RATELIMIT_SECONDS:-5}
ROUNDS=${RATELIMIT_ROUNDS:-3}
KEYS=${RATELIMIT_KEYS:-10000}
LIMIT=100
RUN=$(date +%s%N)   # fresh race keys on every run (shared memory outlives a run)


bench_psql >/dev/null <<'SQL'
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS b_rl CASCADE;
CREATE SCHEMA b_rl;
CREATE TABLE b_rl.peer_counters (key text PRIMARY KEY, window_start timestamptz NOT NULL, count integer NOT NULL);
-- The seeds' limiter: read the counter, decide, then write it back.
CREATE FUNCTION b_rl.peer_check(p_key text, p_limit integer, p_window interval) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  r b_rl.peer_counters%ROWTYPE;
BEGIN
  SELECT * INTO r FROM b_rl.peer_counters WHERE key = p_key;
  IF NOT FOUND THEN
    INSERT INTO b_rl.peer_counters VALUES (p_key, now(), 1) ON CONFLICT (key) DO NOTHING;
    RETURN true;
  END IF;
  IF r.window_start + p_window <= now() THEN
    UPDATE b_rl.peer_counters SET window_start = now(), count = 1 WHERE key = p_key;
    RETURN true;
  END IF;
  IF r.count >= p_limit THEN
    RETURN false;
  END IF;
  UPDATE b_rl.peer_counters SET count = r.count + 1 WHERE key = p_key;
  RETURN true;
END $$;
CREATE SEQUENCE b_rl.admitted_shmem;
CREATE SEQUENCE b_rl.admitted_table;
CREATE SEQUENCE b_rl.admitted_peer;
SQL

bench_tmpdir dir
# Throughput scripts: every check admitted (a billion per hour).
for keys in hot many; do
  if [ "$keys" = hot ]; then key="'hot'"; pick=""; else key="'k' || :k"; pick="\\set k random(1, $KEYS)"; fi
  printf '%s\nSELECT allowed FROM saas.rate_limit(%s, 1000000000, 1000000000, interval %s);\n' "$pick" "$key" "'1 hour'" >"$dir/ours_$keys.sql"
  printf '%s\nSELECT b_rl.peer_check(%s, 1000000000, interval %s);\n' "$pick" "$key" "'1 hour'" >"$dir/peer_$keys.sql"
done

tps() { # script backend
  PGOPTIONS="-c saas.rate_limit_backend=$2" "$PG_BIN/pgbench" -n -M prepared -f "$dir/$1.sql" \
    -T "$SECONDS_PER_RUN" -c "$CLIENTS" -j "$CLIENTS" >"$dir/last.out" 2>&1 || { cat "$dir/last.out" >&2; exit 1; }
  awk '/^tps/ { print $3 }' "$dir/last.out"
}

# Steady state, as in production: every key exists before measuring (a
# first check inserts the key in the table backend and in the peer).
bench_psql >/dev/null <<SQL
SET saas.rate_limit_backend = 'table';
SELECT count(*) FROM generate_series(1, $KEYS) g, LATERAL saas.rate_limit('k' || g, 1000000000, 1000000000, interval '1 hour') r;
SELECT count(*) FROM saas.rate_limit('hot', 1000000000, 1000000000, interval '1 hour');
SET saas.rate_limit_backend = 'shmem';
SELECT count(*) FROM generate_series(1, $KEYS) g, LATERAL saas.rate_limit('k' || g, 1000000000, 1000000000, interval '1 hour') r;
SELECT count(*) FROM saas.rate_limit('hot', 1000000000, 1000000000, interval '1 hour');
SELECT count(*) FROM generate_series(1, $KEYS) g WHERE b_rl.peer_check('k' || g, 1000000000, interval '1 hour');
SELECT b_rl.peer_check('hot', 1000000000, interval '1 hour');
VACUUM ANALYZE saas.rate_limit_state, b_rl.peer_counters;
SQL

echo "  1. checks per second, pgbench, $CLIENTS clients, ${SECONDS_PER_RUN}s per run, median of $ROUNDS rounds"
for keys in hot many; do
  declare -A got=([shmem]="" [table]="" [peer]="")
  for _ in $(seq 1 "$ROUNDS"); do
    got[shmem]="${got[shmem]} $(tps "ours_$keys" shmem)"
    got[table]="${got[table]} $(tps "ours_$keys" table)"
    got[peer]="${got[peer]} $(tps "peer_$keys" table)"
  done
  shmem=$(echo "${got[shmem]}" | median)
  table=$(echo "${got[table]}" | median)
  peer=$(echo "${got[peer]}" | median)
  label=$([ "$keys" = hot ] && echo "one hot key" || echo "$KEYS keys")
  echo "  $label, checks/s: shmem $shmem, table $table, peer $peer (rounds: shmem${got[shmem]}; table${got[table]}; peer${got[peer]})"
  per_check() { awk -v t="$1" 'BEGIN { printf "%.2f", 1e6 / t }'; }
  report "$label: shmem vs table backend" "$(per_check "$shmem")" "table backend" "$(per_check "$table")" "us/check"
  report "$label: table backend vs peer" "$(per_check "$table")" "plpgsql select+update" "$(per_check "$peer")" "us/check"
done

echo "  2. over-admission: $CLIENTS clients on one fresh key, limit $LIMIT per day, ${SECONDS_PER_RUN}s"
for impl in shmem table peer; do
  if [ "$impl" = peer ]; then
    call="b_rl.peer_check('race-$RUN', $LIMIT, interval '1 day')"
    backend=table
  else
    call="(SELECT allowed FROM saas.rate_limit('race-$impl-$RUN', $LIMIT, $LIMIT, interval '1 day'))"
    backend=$impl
  fi
  printf 'SELECT CASE WHEN %s THEN nextval(%s) END;\n' "$call" "'b_rl.admitted_$impl'" >"$dir/race_$impl.sql"
  PGOPTIONS="-c saas.rate_limit_backend=$backend" "$PG_BIN/pgbench" -n -f "$dir/race_$impl.sql" \
    -T "$SECONDS_PER_RUN" -c "$CLIENTS" -j "$CLIENTS" >"$dir/race_$impl.out" 2>&1
  checks=$(awk '/number of transactions actually processed/ { print $6 }' "$dir/race_$impl.out")
  admitted=$(bench_psql -At -c "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM b_rl.admitted_$impl")
  echo "  $impl: $checks checks, $admitted admitted, $((admitted - LIMIT)) over the limit"
  record "over-admission $impl" "$((admitted - LIMIT))" "limit" "$LIMIT" "requests"
done
