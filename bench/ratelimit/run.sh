#!/usr/bin/env bash
# bench/ratelimit: checks per second of saas.rate_limit with its shared-memory
# backend and with its table backend, beside a peer written the way the
# seeds did it (PL/pgSQL: select the key's counter, then update or insert
# it; a fixed window), in one run:
#   1. throughput, pgbench, 8 clients: one hot key, and 10k distinct keys;
#      limits high enough that every check is admitted (the common case).
#      Twice: with PostgreSQL's default durability (fsync, synchronous_commit
#      and full_page_writes on: every table-backend check is a durable
#      write, as in production) and with all three off, as every bench
#      runs (only the CPU cost of each backend); the cluster's own settings
#      are put back at the end. Each round also runs `SELECT 1`
#      the same way: the per-query floor that every check pays.
#   2. concurrency: 8 clients hammer one fresh key with a limit of 100 per
#      day; the requests each one admitted beyond the limit are reported
#      (a sequence counts admissions, since it is not rolled back)
#   3. what saas.pre_request() adds to a PostgREST-shaped GET (not a target)
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../lib.sh"
CLIENTS=${RATELIMIT_CLIENTS:-8}
SECONDS_PER_RUN=${RATELIMIT_SECONDS:-5}
ROUNDS=${RATELIMIT_ROUNDS:-5}
KEYS=${RATELIMIT_KEYS:-10000}
# pgbench threads: no more than the cores the clients and the server share
# (more threads only add context switches to every check's cost).
JOBS=${RATELIMIT_JOBS:-$(( $(nproc) < CLIENTS ? $(nproc) : CLIENTS ))}
LIMIT=100
RUN=$(date +%s%N)   # fresh race keys on every run (shared memory outlives a run)


# pgbench connects through the server's Unix socket when it has one, as a
# co-located PostgREST can: a check is a few microseconds of work, so the
# client's path is a large part of what each one costs.
socket=$(bench_psql -At -c "SELECT split_part(current_setting('unix_socket_directories'), ',', 1)")
PGBENCH_HOST=${socket:-$PGHOST}

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

dir=
bench_tmpdir dir
# Throughput scripts: every check admitted (a billion per hour). Both
# limiters are called in the select list (ours reads one field of its row),
# so neither pays for a function scan the other does not.
for keys in hot many; do
  if [ "$keys" = hot ]; then key="'hot'"; pick=""; else key="'k' || :k"; pick="\\set k random(1, $KEYS)"; fi
  printf '%s\nSELECT (saas.rate_limit(%s, 1000000000, 1000000000, interval %s)).allowed;\n' "$pick" "$key" "'1 hour'" >"$dir/ours_$keys.sql"
  printf '%s\nSELECT b_rl.peer_check(%s, 1000000000, interval %s);\n' "$pick" "$key" "'1 hour'" >"$dir/peer_$keys.sql"
done
echo 'SELECT 1;' >"$dir/floor.sql"

tps() { # script backend
  PGHOST=$PGBENCH_HOST PGOPTIONS="-c saas.rate_limit_backend=$2" "$PG_BIN/pgbench" -n -M prepared -f "$dir/$1.sql" \
    -T "$SECONDS_PER_RUN" -c "$CLIENTS" -j "$JOBS" >"$dir/last.out" 2>&1 || { cat "$dir/last.out" >&2; exit 1; }
  awk '/^tps/ { print $3 }' "$dir/last.out"
}

# The three settings the durability runs change, as the cluster had them
# (from postgresql.auto.conf, or nothing), to put back at the end.
DURABILITY_SETTINGS="fsync synchronous_commit full_page_writes"
declare -A own_setting=()
for name in $DURABILITY_SETTINGS; do
  own_setting[$name]=$(bench_psql -At -c "SELECT setting FROM pg_catalog.pg_settings WHERE name = '$name' AND sourcefile LIKE '%postgresql.auto.conf'")
done

# durability on|off|restore: PostgreSQL's defaults (all three on), all three
# off, or what the cluster had; each takes a reload.
durability() {
  local name value
  for name in $DURABILITY_SETTINGS; do
    case $1 in
      on | off) value=$1 ;;
      restore) value=${own_setting[$name]} ;;
    esac
    if [ -n "$value" ]; then
      bench_psql -c "ALTER SYSTEM SET $name = '$value'" || return 1
    else
      bench_psql -c "ALTER SYSTEM RESET $name" || return 1
    fi
  done
  bench_psql -c "SELECT pg_reload_conf()" >/dev/null || return 1
  sleep 1
  [ "$1" = restore ] || [ "$(bench_psql -At -c 'SHOW fsync')" = "$1" ] || { echo "  fsync did not become $1" >&2; return 1; }
}
# Replaces bench_tmpdir's trap, and removes the directory as it did.
trap 'durability restore >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

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

per_check() { awk -v t="$1" 'BEGIN { printf "%.2f", 1e6 / t }'; }
via=$([ "$PGBENCH_HOST" = "$PGHOST" ] && echo "TCP" || echo "Unix socket")
echo "  1. checks per second, pgbench, $CLIENTS clients, $JOBS threads, $via, ${SECONDS_PER_RUN}s per run, median of $ROUNDS rounds"
for fsync in on off; do
  durability "$fsync" || exit 1
  config=$([ "$fsync" = on ] && echo "durable" || echo "fsync off")
  for keys in hot many; do
    declare -A got=([floor]="" [shmem]="" [table]="" [peer]="")
    for _ in $(seq 1 "$ROUNDS"); do
      got[floor]="${got[floor]} $(tps floor shmem)"
      got[shmem]="${got[shmem]} $(tps "ours_$keys" shmem)"
      got[table]="${got[table]} $(tps "ours_$keys" table)"
      got[peer]="${got[peer]} $(tps "peer_$keys" table)"
    done
    floor=$(echo "${got[floor]}" | median)
    shmem=$(echo "${got[shmem]}" | median)
    table=$(echo "${got[table]}" | median)
    peer=$(echo "${got[peer]}" | median)
    label="$config, $([ "$keys" = hot ] && echo "one hot key" || echo "$KEYS keys")"
    echo "  $label, checks/s: floor (SELECT 1) $floor, shmem $shmem, table $table, peer $peer"
    echo "    rounds: floor${got[floor]}; shmem${got[shmem]}; table${got[table]}; peer${got[peer]}"
    report "$label: shmem vs table backend" "$(per_check "$shmem")" "table backend" "$(per_check "$table")" "us/check"
    report "$label: table backend vs peer" "$(per_check "$table")" "plpgsql select+update" "$(per_check "$peer")" "us/check"
    record "$label: floor (SELECT 1)" "$(per_check "$floor")" "shmem" "$(per_check "$shmem")" "us/query"
  done
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
  PGHOST=$PGBENCH_HOST PGOPTIONS="-c saas.rate_limit_backend=$backend" "$PG_BIN/pgbench" -n -f "$dir/race_$impl.sql" \
    -T "$SECONDS_PER_RUN" -c "$CLIENTS" -j "$JOBS" >"$dir/race_$impl.out" 2>&1
  checks=$(awk '/number of transactions actually processed/ { print $6 }' "$dir/race_$impl.out")
  admitted=$(bench_psql -At -c "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM b_rl.admitted_$impl")
  echo "  $impl: $checks checks, $admitted admitted, $((admitted - LIMIT)) over the limit"
  record "over-admission $impl" "$((admitted - LIMIT))" "limit" "$LIMIT" "requests"
done

# 3. What pre_request adds to a request: a PostgREST-shaped GET (READ ONLY
# transaction, claims, path and headers set as PostgREST sets them) with and
# without saas.pre_request(). The tenant has a plan with a daily quota; one
# of three rules matches the path. Not a target: the hook's cost per request.
tenant=b0000000-0000-4000-8000-000000000001
user=b0000000-0000-4000-8000-000000000002
part3_cleanup() {
  bench_psql >/dev/null <<SQL
SET row_security = off;
SELECT saas.rate_limit_rule_drop(p) FROM unnest(ARRAY['/rpc/b_rl_generate', '/rpc/b_rl_chat_*', '/b_rl_*']) p;
DELETE FROM saas.tenants WHERE id = '$tenant';
DELETE FROM saas.plans WHERE plan = 'b_rl';
SQL
}
part3_cleanup  # what an interrupted run left
bench_psql >/dev/null <<SQL
SET row_security = off;
INSERT INTO saas.plans (plan, api_calls_per_day) VALUES ('b_rl', 1000000000000);
INSERT INTO saas.tenants (id, slug, name, plan) VALUES ('$tenant', 'b-rl', 'bench', 'b_rl');
INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES ('$tenant', '$user', 'member');
SELECT saas.rate_limit_rule_set('/rpc/b_rl_generate', 5, '1 hour');
SELECT saas.rate_limit_rule_set('/rpc/b_rl_chat_*', 50, '1 hour');
SELECT saas.rate_limit_rule_set('/b_rl_*', 1000000000, '1 hour');
SQL
for hook in with without; do
  call=$([ "$hook" = with ] && echo "SELECT saas.pre_request();" || echo "SELECT 1;")
  cat >"$dir/request_$hook.sql" <<SQL
BEGIN READ ONLY;
SELECT set_config('request.jwt.claims', '{"sub":"$user","role":"authenticated","tenant_id":"$tenant"}', true), set_config('request.method', 'GET', true), set_config('request.path', '/b_rl_items', true), set_config('request.headers', '{"x-forwarded-for":"203.0.113.9","user-agent":"pgbench"}', true);
$call
COMMIT;
SQL
done
echo "  3. pre_request: requests per second, $CLIENTS clients, a GET of a tenant's member (one matching rule, a daily quota), median of $ROUNDS rounds"
declare -A req=([with]="" [without]="")
for _ in $(seq 1 "$ROUNDS"); do
  for hook in without with; do
    req[$hook]="${req[$hook]} $(tps "request_$hook" shmem)"
  done
done
with=$(echo "${req[with]}" | median)
without=$(echo "${req[without]}" | median)
echo "  requests/s: with pre_request $with, without $without (rounds: with${req[with]}; without${req[without]})"
record "pre_request: request with the hook vs without" "$(per_check "$with")" "same request, no hook" "$(per_check "$without")" "us/request"
part3_cleanup
