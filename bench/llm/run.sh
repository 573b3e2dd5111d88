#!/usr/bin/env bash
# bench/llm: the LLM cache's hit path against two peers, in one run:
#   1. lookups, 8 clients, a Zipf-distributed workload over 100k distinct
#      cached requests (every lookup a hit), ROUNDS rounds, median and range
#      of the mean latency per lookup (pgbench's own figure, TCP loopback):
#      - ours: saas.llm_cache_get(request) in a READ ONLY transaction with
#        the tenant from request claims, as a PostgREST GET runs it (hit
#        counted in shared memory);
#      - (a) the seed's way in PL/pgSQL: pgcrypto digest of prompt||model,
#        SELECT, then UPDATE hit_count with the count it read;
#      - (b) Redis 7 from Debian as an exact cache the way an edge function
#        would use it: GET, then INCR of a hit counter, two round trips over
#        loopback (redis-benchmark's mean latency of each, added).
#      Lost updates: lookups made minus hits counted, for ours and (a).
#   2. key cost: microseconds per key for 1 KB and 100 KB prompts, ours
#      (llm_cache_key: RFC 8785 + SHA-256) and (a) (digest of the
#      concatenation).
#   3. budgets: 64 clients reserve against a budget that holds 100 calls;
#      overspend (micro-units above the limit) of ours and of (a)'s
#      check-then-insert.
#   4. the semantic cache: llm_cache_lookup of a paraphrase (an exact miss,
#      then the candidates of its context compared exactly: SEM_CANDIDATES
#      entries of SEM_DIMS dimensions per context, SEM_CONTEXTS contexts)
#      against llm_cache_lookup of a request cached exactly; both in
#      read-write transactions (a POST), request and embedding read from a
#      table by both.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../lib.sh"
CLIENTS=${LLM_CLIENTS:-8}
SECONDS_PER_RUN=${LLM_SECONDS:-5}
ROUNDS=${LLM_ROUNDS:-5}
KEYS=${LLM_KEYS:-100000}
REDIS_PORT=${LLM_REDIS_PORT:-$((PGPORT + 1))}
JOBS=$(( $(nproc) < CLIENTS ? $(nproc) : CLIENTS ))
TENANT=b0000000-0000-4000-8000-0000000000b1
bench_tmpdir TMP

bench_psql >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
DROP SCHEMA IF EXISTS b_llm CASCADE;
CREATE SCHEMA b_llm;
INSERT INTO saas.tenants (id, slug, name) VALUES ('$TENANT', 'bench-llm', 'bench llm') ON CONFLICT DO NOTHING;
-- Ours: KEYS cached answers of one tenant.
DELETE FROM saas.llm_cache WHERE tenant_id = '$TENANT';
INSERT INTO saas.llm_cache (tenant_id, cache_key, model, request, response, prompt_tokens, completion_tokens, cost_micros, created_at, expires_at)
SELECT '$TENANT', saas.llm_cache_key(r), 'gpt-4o', r,
       jsonb_build_object('choices', jsonb_build_array(jsonb_build_object('finish_reason', 'stop', 'message',
         jsonb_build_object('role', 'assistant', 'content', 'answer ' || i)))), 20, 40, 450, now(), now() + interval '7 days'
FROM generate_series(1, $KEYS) i,
     LATERAL (SELECT jsonb_build_object('model', 'gpt-4o', 'temperature', 0, 'messages',
              jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'prompt ' || i))) AS r) q;
-- (a) the seed's cache: sha256 of prompt || model, read then write.
CREATE TABLE b_llm.seed_cache (key text PRIMARY KEY, response jsonb NOT NULL, hit_count integer NOT NULL DEFAULT 0,
                               expires_at timestamptz NOT NULL);
INSERT INTO b_llm.seed_cache
SELECT encode(digest('prompt ' || i || 'gpt-4o', 'sha256'), 'hex'),
       jsonb_build_object('choices', jsonb_build_array(jsonb_build_object('finish_reason', 'stop', 'message',
         jsonb_build_object('role', 'assistant', 'content', 'answer ' || i)))), 0, now() + interval '7 days'
FROM generate_series(1, $KEYS) i;
CREATE FUNCTION b_llm.seed_get(p_prompt text, p_model text) RETURNS jsonb
LANGUAGE plpgsql AS \$\$
DECLARE
  k text := encode(digest(p_prompt || p_model, 'sha256'), 'hex');
  r b_llm.seed_cache%ROWTYPE;
BEGIN
  SELECT * INTO r FROM b_llm.seed_cache WHERE key = k AND expires_at > now();
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  UPDATE b_llm.seed_cache SET hit_count = r.hit_count + 1 WHERE key = k;
  RETURN r.response;
END
\$\$;
VACUUM ANALYZE saas.llm_cache;
VACUUM ANALYZE b_llm.seed_cache;
SQL
bench_psql -c "SELECT saas.llm_hits_flush()" >/dev/null
bench_psql -c "UPDATE saas.llm_cache SET hit_count = 0 WHERE tenant_id = '$TENANT'" >/dev/null

# One statement per lookup on each side. Ours sets the request's claims as
# PostgREST would and runs READ ONLY (PGOPTIONS below), as a GET does.
cat >"$TMP/ours.sql" <<SQL
\\set id random_zipfian(1, $KEYS, 1.1)
SELECT saas.llm_cache_get(('{"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "prompt ' || :id || '"}]}')::jsonb)
FROM (SELECT set_config('request.jwt.claims', '{"role": "postgres", "tenant_id": "$TENANT"}', true)) claims;
SQL
cat >"$TMP/seed.sql" <<SQL
\\set id random_zipfian(1, $KEYS, 1.1)
SELECT b_llm.seed_get('prompt ' || :id, 'gpt-4o');
SQL

# pgbench SCRIPT: "latency_ms transactions" of one run.
run_pgbench() {
  PGOPTIONS=${2-} "$PG_BIN/pgbench" -n -h localhost -M prepared -f "$1" -T "$SECONDS_PER_RUN" -c "$CLIENTS" -j "$JOBS" 2>&1 \
    | awk '/latency average/ { l = $4 } /number of transactions actually processed/ { split($6, a, "/"); t = a[1] }
           (/number of failed transactions/ && $5 != 0) || /aborted/ { print "  pgbench: " $0 > "/dev/stderr" } END { print l, t }'
}

# The Redis peer: its own server on a private port, KEYS answers.
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$TMP/redis.pid" --logfile "$TMP/redis.log"
stop_redis() { redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap stop_redis EXIT
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
# redis-benchmark's keys are key:<12 digits>; answers of the size ours return.
awk -v n="$KEYS" 'BEGIN {
  for (i = 0; i < n; i++) {
    k = sprintf("key:%012d", i)
    v = sprintf("{\"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": \"answer %d\"}, \"finish_reason\": \"stop\"}]}", i)
    printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
  }
}' | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
# redis-benchmark CMD...: mean latency in ms of CMD over CLIENTS connections.
redis_ms() {
  redis-benchmark -p "$REDIS_PORT" -h 127.0.0.1 -c "$CLIENTS" -n "$((KEYS * 2))" -r "$KEYS" --threads "$JOBS" --csv "$@" 2>/dev/null \
    | awk -F'","' 'NR == 2 { print $3 }'
}

echo "  lookups: $CLIENTS clients, ${SECONDS_PER_RUN}s per side per round, $ROUNDS rounds, Zipf(1.1) over $KEYS requests"
: >"$TMP/ours" ; : >"$TMP/seed" ; : >"$TMP/redis"
ours_n=0; seed_n=0
for round in $(seq "$ROUNDS"); do
  # The hit counters hold saas.llm_hit_slots keys between flushes (hourly
  # run_maintenance in production): flushed before each round.
  bench_psql -c "SELECT saas.llm_hits_flush()" >/dev/null
  read -r l n < <(run_pgbench "$TMP/ours.sql" "-c default_transaction_read_only=on"); echo "$l" >>"$TMP/ours"; ours_n=$((ours_n + n))
  read -r l n < <(run_pgbench "$TMP/seed.sql"); echo "$l" >>"$TMP/seed"; seed_n=$((seed_n + n))
  g=$(redis_ms GET key:__rand_int__); i=$(redis_ms INCR hits:key:__rand_int__)
  awk -v g="$g" -v i="$i" 'BEGIN { printf "%.4f\n", g + i }' >>"$TMP/redis"
  echo "    round $round: ours $(tail -1 "$TMP/ours") ms, seed $(tail -1 "$TMP/seed") ms, redis GET+INCR $(tail -1 "$TMP/redis") ms"
done
# median and range of a file of numbers
stats() { sort -g "$1" | awk '{ v[NR] = $1 } END { printf "%s %s %s\n", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
read -r om omin omax < <(stats "$TMP/ours")
read -r sm smin smax < <(stats "$TMP/seed")
read -r rm rmin rmax < <(stats "$TMP/redis")
report "hit lookup, Zipf, 8 clients" "$om" "seed plpgsql" "$sm" ms "ours $omin-$omax, seed $smin-$smax ms over $ROUNDS rounds"
report "hit lookup incl. round trip vs redis" "$om" "redis GET+INCR" "$rm" ms "ours $omin-$omax, redis $rmin-$rmax ms over $ROUNDS rounds"

bench_psql -c "SELECT saas.llm_hits_flush()" >/dev/null
# Hits of a full table are counted per model (overflow_hits), not on their entry.
ours_counted=$(bench_psql -At -c "SELECT (SELECT sum(hit_count) FROM saas.llm_cache WHERE tenant_id = '$TENANT')
                                        + (SELECT coalesce(sum(overflow_hits), 0) FROM saas.llm_cache_daily WHERE tenant_id = '$TENANT')")
ours_overflow=$(bench_psql -At -c "SELECT coalesce(sum(overflow_hits), 0) FROM saas.llm_cache_daily WHERE tenant_id = '$TENANT'")
echo "  of ours: $ours_overflow counted per model while the hit table was full (saas.llm_hit_slots)"
seed_counted=$(bench_psql -At -c "SELECT sum(hit_count) FROM b_llm.seed_cache")
echo "  hits counted: ours $ours_counted of $ours_n lookups (lost $((ours_n - ours_counted))), seed $seed_counted of $seed_n (lost $((seed_n - seed_counted)))"
record "lost hit counts" "$((ours_n - ours_counted))" "seed plpgsql" "$((seed_n - seed_counted))" "lookups" "of $ours_n and $seed_n lookups"

# 2. key cost
for size in 1024 102400; do
  n=$(( size > 10000 ? 200 : 5000 ))
  bench_psql >/dev/null <<SQL
DROP TABLE IF EXISTS b_llm.prompts;
CREATE TABLE b_llm.prompts AS
SELECT i, repeat(md5(i::text), $size / 32) AS prompt,
       jsonb_build_object('model', 'gpt-4o', 'temperature', 0, 'messages',
         jsonb_build_array(jsonb_build_object('role', 'user', 'content', repeat(md5(i::text), $size / 32)))) AS request
FROM generate_series(1, $n) i;
SQL
  ours_ms=$(timed "SELECT count(saas.llm_cache_key(request)) FROM b_llm.prompts")
  seed_ms=$(timed "SELECT count(encode(digest(prompt || 'gpt-4o', 'sha256'), 'hex')) FROM b_llm.prompts")
  report "key of a $((size / 1024)) KB prompt" "$(awk -v t="$ours_ms" -v n="$n" 'BEGIN { print t * 1000 / n }')" \
    "seed digest(concat)" "$(awk -v t="$seed_ms" -v n="$n" 'BEGIN { print t * 1000 / n }')" "us per key" "one pass over $n prompts"
done

# 3. budgets: 64 clients, a budget of 100 worst cases (7500 each).
bench_psql >/dev/null <<SQL
SET client_min_messages = warning;
SELECT saas.llm_price_set('openai', 'gpt-4o-bench', 2500000, 10000000, effective_from => '2020-01-01');
DELETE FROM saas.llm_budgets WHERE tenant_id = '$TENANT';
DELETE FROM saas.llm_budget_windows WHERE tenant_id = '$TENANT';
SELECT saas.llm_budget_set('$TENANT', 750000, period => 'day');
CREATE FUNCTION b_llm.try_reserve() RETURNS boolean LANGUAGE plpgsql AS \$\$
BEGIN
  PERFORM * FROM saas.llm_budget_reserve('openai', 'gpt-4o-bench', 1000, 500);
  RETURN true;
EXCEPTION WHEN SQLSTATE 'PGRST' THEN
  RETURN false;
END
\$\$;
-- (a) check, then insert.
CREATE TABLE b_llm.seed_ledger (id bigint GENERATED ALWAYS AS IDENTITY, cost bigint NOT NULL);
CREATE FUNCTION b_llm.seed_reserve(p_cost bigint, p_limit bigint) RETURNS boolean LANGUAGE plpgsql AS \$\$
BEGIN
  IF (SELECT coalesce(sum(cost), 0) FROM b_llm.seed_ledger) + p_cost > p_limit THEN
    RETURN false;
  END IF;
  INSERT INTO b_llm.seed_ledger (cost) VALUES (p_cost);
  RETURN true;
END
\$\$;
SQL
cat >"$TMP/reserve.sql" <<SQL
BEGIN;
SELECT set_config('request.jwt.claims', '{"role": "postgres", "tenant_id": "$TENANT"}', true);
SELECT b_llm.try_reserve();
COMMIT;
SQL
echo "SELECT b_llm.seed_reserve(7500, 750000);" >"$TMP/seed_reserve.sql"
"$PG_BIN/pgbench" -n -h localhost -f "$TMP/reserve.sql" -t 20 -c 64 -j "$JOBS" >/dev/null 2>&1
"$PG_BIN/pgbench" -n -h localhost -f "$TMP/seed_reserve.sql" -t 20 -c 64 -j "$JOBS" >/dev/null 2>&1
ours_over=$(bench_psql -At -c "SELECT greatest(0, sum(reserved_micros + used_micros) - 750000) FROM saas.llm_budget_windows WHERE tenant_id = '$TENANT'")
seed_over=$(bench_psql -At -c "SELECT greatest(0, sum(cost) - 750000) FROM b_llm.seed_ledger")
echo "  budget of 750000 micro-units, 64 clients x 20 reservations of 7500: overspend ours $ours_over, seed check-then-insert $seed_over"
record "budget overspend, 64 clients" "$ours_over" "seed check-then-insert" "$seed_over" "micro-units" "limit 750000, 1280 attempts of 7500"
# 4. semantic lookup vs exact lookup
SEM_DIMS=${LLM_SEM_DIMS:-1536}
SEM_CONTEXTS=${LLM_SEM_CONTEXTS:-500}
SEM_CANDIDATES=${LLM_SEM_CANDIDATES:-8}
bench_psql >/dev/null <<SQL
SET client_min_messages = warning;
SELECT saas.llm_semantic_set('$TENANT', 'on', 0.95, 'bench-embed', $SEM_DIMS);
CREATE TABLE b_llm.sem_entries AS
SELECT c, k, jsonb_build_object('model', 'gpt-4o', 'temperature', 0, 'messages', jsonb_build_array(
         jsonb_build_object('role', 'system', 'content', 'context ' || c),
         jsonb_build_object('role', 'user', 'content', 'question ' || c || ' ' || k))) AS request,
       (SELECT array_agg((random() - 0.5)::real) FROM generate_series(1, $SEM_DIMS) WHERE c > 0 AND k > 0) AS embedding
FROM generate_series(1, $SEM_CONTEXTS) c, generate_series(1, $SEM_CANDIDATES) k;
DO \$\$
DECLARE
  r record;
BEGIN
  PERFORM set_config('request.jwt.claims', '{"role": "postgres", "tenant_id": "$TENANT"}', true);
  FOR r IN SELECT * FROM b_llm.sem_entries LOOP
    PERFORM saas.llm_cache_put(r.request, '{"choices": [{"finish_reason": "stop", "message": {"content": "a"}}]}',
                               embedding => r.embedding);
  END LOOP;
END
\$\$;
-- Queries: per context, a paraphrase of its first question (an exact miss)
-- with an embedding close to that entry's, and the cached request itself.
CREATE TABLE b_llm.sem_queries AS
SELECT c AS id, jsonb_set(request, '{messages,1,content}', to_jsonb('paraphrase ' || c)) AS paraphrase, request AS exact,
       (SELECT array_agg(x + 0.01::real) FROM unnest(embedding) x) AS embedding
FROM b_llm.sem_entries WHERE k = 1;
ALTER TABLE b_llm.sem_queries ADD PRIMARY KEY (id);
VACUUM ANALYZE saas.llm_cache;
VACUUM ANALYZE b_llm.sem_queries;
SQL
cat >"$TMP/sem.sql" <<SQL
\\set id random(1, $SEM_CONTEXTS)
SELECT saas.llm_cache_lookup(q.paraphrase, q.embedding) ->> 'match'
FROM b_llm.sem_queries q, (SELECT set_config('request.jwt.claims', '{"role": "postgres", "tenant_id": "$TENANT"}', true)) claims
WHERE q.id = :id;
SQL
cat >"$TMP/exact.sql" <<SQL
\\set id random(1, $SEM_CONTEXTS)
SELECT saas.llm_cache_lookup(q.exact, q.embedding) ->> 'match'
FROM b_llm.sem_queries q, (SELECT set_config('request.jwt.claims', '{"role": "postgres", "tenant_id": "$TENANT"}', true)) claims
WHERE q.id = :id;
SQL
served=$(bench_psql -At -c "SELECT set_config('request.jwt.claims', '{\"role\": \"postgres\", \"tenant_id\": \"$TENANT\"}', false) IS NULL" \
                      -c "SELECT count(*) FILTER (WHERE saas.llm_cache_lookup(q.paraphrase, q.embedding) ->> 'match' = 'semantic') FROM b_llm.sem_queries q" | tail -1)
echo "  semantic: $SEM_CONTEXTS contexts x $SEM_CANDIDATES entries of $SEM_DIMS dimensions; paraphrases served semantically: $served of $SEM_CONTEXTS"
: >"$TMP/sem" ; : >"$TMP/exact"
for round in $(seq "$ROUNDS"); do
  bench_psql -c "SELECT saas.llm_hits_flush()" >/dev/null
  read -r l _ < <(run_pgbench "$TMP/sem.sql"); echo "$l" >>"$TMP/sem"
  read -r l _ < <(run_pgbench "$TMP/exact.sql"); echo "$l" >>"$TMP/exact"
  echo "    round $round: semantic $(tail -1 "$TMP/sem") ms, exact $(tail -1 "$TMP/exact") ms"
done
read -r sm smin smax < <(stats "$TMP/sem")
read -r em emin emax < <(stats "$TMP/exact")
report "semantic lookup, $SEM_CANDIDATES candidates x $SEM_DIMS dims" "$sm" "our exact hit (llm_cache_lookup)" "$em" ms \
  "semantic $smin-$smax, exact $emin-$emax ms over $ROUNDS rounds, 8 clients, read-write"
bench_psql -c "SET client_min_messages = warning; DROP SCHEMA b_llm CASCADE" >/dev/null
bench_psql -c "DELETE FROM saas.llm_semantic_settings WHERE tenant_id = '$TENANT'" >/dev/null
