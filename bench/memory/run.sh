#!/usr/bin/env bash
# bench/memory: saas.memory_search against the two ways people search
# memories with decay today, on the same data, in one run.
#
# Data (SQL, fixed seed): MEM_ROWS memories (default 100,000) with
# MEM_DIMS-dimension embeddings (default 384) drawn around MEM_CLUSTERS
# cluster centres (default 100), each at its own spread (some close to
# their centre, some far), over three large tenants (30%, 15% and 10%
# of the rows) and MEM_SMALL_TENANTS small ones (default 150, sharing the
# rest); five kinds, some evergreen; importance in [0, 1]; events over the
# year before a fixed "now" (2026-06-01), skewed recent; a subject (one of
# 50 users) and two entities per memory. MEM_QUERIES queries (default
# 1,000), half on the large tenants, half on small ones, each near a cluster
# centre; one in five names a subject; one in ten has two planted memories,
# an old near-duplicate of the query and a recent, slightly farther one, so
# that decay must flip the top result. k = 10, default weights, half-life
# 30 days, the fixed now.
#
# Indexes: the model's HNSW index with memory_index_model's defaults (m 32,
# ef_construction 200), which every side reads; run_maintenance then gives
# each large tenant an index of its own (saas.memory_tenant_index_rows),
# which only ours reads: the peers' statements name no tenant (RLS does),
# so the planner cannot prove a tenant index's predicate for them.
#
# Ground truth: the exact decayed top-10 of every query by brute force (the
# score written out in SQL, every memory of the tenant scored, no index).
# Sides, each query run as its tenant (role authenticated, tenant claim in
# request.jwt.claims, one transaction per query), so RLS applies to all:
#   (a) ours: saas.memory_search(query, model, 10, subjects, p_now);
#   (b) full scan: the same score in SQL, ORDER BY score LIMIT 10;
#   (c) HNSW over-fetch: the model's HNSW index, nearest 100
#       (hnsw.ef_search = 100), re-ranked by the score, LIMIT 10, the way
#       LangChain's time-weighted retriever and Mem0 do it; (c0) without and
#       (c1) with pgvector's hnsw.iterative_scan = relaxed_order; two
#       statements (fetch, then re-rank the fetched ids), enable_sort off for
#       the fetch so that the planner reads the HNSW index, as it must where
#       no other index narrows the rows to the tenant's.
# Per side: recall@10 and nDCG@10 (binary relevance: in the true top 10,
# ties within 1e-9 of the 10th score counted), the share of queries with
# fewer than min(k, eligible) rows, and p50/p95 of the server-side time of
# each query (clock_timestamp() around it). Sides take turns query by
# query, in MEM_ROUNDS rounds (default 3); figures are the median over the
# rounds with the per-round values.
#
# Isolation: two more tenants, holding 1% and 5% of MEM_ROWS, each asked
# MEM_ISO_QUERIES queries (default 100) near their own memories, with and
# without another tenant's MEM_CROWD_ROWS memories (default 20% of
# MEM_ROWS) clustered right around those query vectors: the tenants'
# embeddings are copied under two more models of the same table, the crowd
# joins only one of them, and both conditions run taking turns query by
# query. p50/p95 both ways and whether any query's result changed.
#
# What each side does not do: (b) and (c) return ids only, no explanation,
# no query log; ours logs a sample (saas.memory_log_sample_rate 0.1) and
# explains every row. (c) never looks beyond its 100 nearest.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/../lib.sh"
ROWS=${MEM_ROWS:-100000}
DIMS=${MEM_DIMS:-384}
QUERIES=${MEM_QUERIES:-1000}
ROUNDS=${MEM_ROUNDS:-3}
CLUSTERS=${MEM_CLUSTERS:-100}
SMALL=${MEM_SMALL_TENANTS:-150}
ISO_QUERIES=${MEM_ISO_QUERIES:-100}
CROWD=${MEM_CROWD_ROWS:-$((ROWS / 5))}
NOW="2026-06-01 00:00+00"
MODEL=bench-$DIMS
FLIPS=$((QUERIES / 10))
BASE=$((ROWS - 2 * FLIPS))
pct() { tr ' ' '\n' | awk 'NF' | sort -g | awk -v p="$1" '{ a[NR] = $1 } END { i = int(NR * p + 0.999); if (i < 1) i = 1; print a[i] }'; }

# The score, written out (docs/memory.md): cosine similarity 1 - d/2,
# recency 0.5 ^ (age / 30 days) (1 when evergreen), importance, the share of
# the query's subjects the memory names; weights 1, 0.3, 0.2, 0.3.
# Placeholders: :Q the query vector, :S its subjects (text[]).
SCORE="((greatest(0::float8, least(1::float8, 1 - (e.embedding <=> :Q) / 2))
   + 0.3 * CASE WHEN m.evergreen THEN 1 ELSE power(0.5::float8, greatest(0::float8, extract(epoch FROM timestamptz '$NOW' - m.event_at)::float8) / 2592000) END
   + 0.2 * m.importance
   + 0.3 * CASE WHEN cardinality(:S) = 0 THEN 0 ELSE (SELECT count(*) FROM unnest(:S) x WHERE x = m.subject OR x = ANY (m.entities))::float8 / cardinality(:S) END
  ) / 1.8)"
sub() { local s=${1//:Q/$2}; echo "${s//:S/$3}"; }

echo "  data: $ROWS memories x $DIMS dims, $QUERIES queries, $ROUNDS rounds"
t0=$(date +%s)
bench_psql >/dev/null <<SQL
SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
DROP SCHEMA IF EXISTS b_mem CASCADE;
CREATE SCHEMA b_mem;
-- A re-run on the same database starts over.
DELETE FROM saas.memories WHERE tenant_id::text LIKE '00000000-0000-4000-8000-%';
DELETE FROM saas.memory_embeddings WHERE model IN ('$MODEL', '$MODEL-alone', '$MODEL-crowded');
SELECT format('DROP INDEX saas.%I', index_name) FROM saas.memory_models WHERE model IN ('$MODEL', '$MODEL-alone', '$MODEL-crowded') \gexec
DELETE FROM saas.memory_models WHERE model IN ('$MODEL', '$MODEL-alone', '$MODEL-crowded');
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
END \$\$;
SELECT saas.grant_api('{authenticated}');
GRANT USAGE ON SCHEMA b_mem TO authenticated;
ALTER DEFAULT PRIVILEGES IN SCHEMA b_mem GRANT SELECT ON TABLES TO authenticated;
SELECT setseed(0.19);
CREATE TABLE b_mem.tenants AS
  SELECT n, ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid AS id,
         CASE WHEN n < 3 THEN 'large' WHEN n < 3 + $SMALL THEN 'small' WHEN n = 1000 THEN 'iso1' WHEN n = 1001 THEN 'iso5' ELSE 'crowd' END AS grp
  FROM (SELECT generate_series(0, 2 + $SMALL) UNION ALL VALUES (1000), (1001), (1002)) g(n);
INSERT INTO saas.tenants (id, slug, name) SELECT id, 'bench-mem-' || n, 'bench memory ' || n FROM b_mem.tenants ON CONFLICT DO NOTHING;
SELECT saas.memory_index_model('$MODEL', $DIMS);
CREATE TABLE b_mem.centers AS
  SELECT c, array(SELECT (random() - 0.5 + 0 * c)::float4 FROM generate_series(1, $DIMS)) AS v FROM generate_series(0, $CLUSTERS - 1) c;
-- Memories: tenant by position (30% / 15% / 10% / small tenants round robin).
CREATE TABLE b_mem.src AS
  SELECT i, t.id AS tenant_id, c.c AS cl,
         (ARRAY['note', 'preference', 'event', 'fact', 'chat'])[1 + i % 5] AS kind,
         (i % 5 = 3 AND i % 3 = 0) AS evergreen,
         random() AS importance,
         timestamptz '$NOW' - power(random(), 2) * interval '365 days' AS event_at,
         'user:' || floor(random() * 50)::int AS subject,
         ARRAY['topic:' || c.c, 'e:' || floor(random() * 100)::int] AS entities,
         (SELECT array_agg(x + g.spread * (random() - 0.5) + 0 * i ORDER BY j) FROM unnest(c.v) WITH ORDINALITY u(x, j))::vector AS v
  FROM (SELECT i, (i * 7919 + floor(random() * 3)::int) % $CLUSTERS AS cl, 0.3 + 0.9 * random() AS spread
        FROM generate_series(0, $BASE - 1) i OFFSET 0) g
  JOIN b_mem.tenants t ON t.n = CASE WHEN i < 0.30 * $BASE THEN 0 WHEN i < 0.45 * $BASE THEN 1 WHEN i < 0.55 * $BASE THEN 2
                                     ELSE 3 + i % $SMALL END
  JOIN b_mem.centers c ON c.c = g.cl;
-- Queries: even ones on the large tenants, odd ones on small tenants.
CREATE TABLE b_mem.queries AS
  SELECT q, t.id AS tenant_id, t.grp,
         CASE WHEN q % 5 = 0 THEN ARRAY['user:' || floor(random() * 50)::int] ELSE '{}'::text[] END AS subjects,
         (SELECT array_agg(x + 0.6 * (random() - 0.5) + 0 * q ORDER BY j) FROM unnest(c.v) WITH ORDINALITY u(x, j))::vector AS v
  FROM generate_series(0, $QUERIES - 1) q
  JOIN b_mem.tenants t ON t.n = CASE WHEN q % 2 = 0 THEN (q / 2) % 3 ELSE 3 + (q * 31) % $SMALL END
  JOIN b_mem.centers c ON c.c = (q * 104729) % $CLUSTERS;
-- Decay must flip the top: an old near-duplicate and a recent, farther one.
INSERT INTO b_mem.src
SELECT $BASE + 2 * r.ord + tw.o, q.tenant_id, -1, 'note', false, 0.9,
       timestamptz '$NOW' - CASE tw.o WHEN 0 THEN interval '365 days' ELSE interval '1 day' END,
       'user:flip', '{}',
       (SELECT array_agg(x + CASE tw.o WHEN 0 THEN 0.05 ELSE 0.5 END * (random() - 0.5) + 0 * q.q ORDER BY j)
        FROM unnest(q.v::float4[]) WITH ORDINALITY u(x, j))::vector
FROM (SELECT q, row_number() OVER (ORDER BY q) - 1 AS ord FROM b_mem.queries WHERE q % 10 = 1 LIMIT $FLIPS) r
JOIN b_mem.queries q USING (q) CROSS JOIN (VALUES (0), (1)) tw(o);
-- Isolation tenants: 1% and 5% of the rows, near their own centres.
INSERT INTO b_mem.src
SELECT 10000000 * (t.n - 999) + i, t.id, c.c, 'note', false, random(), timestamptz '$NOW' - power(random(), 2) * interval '365 days',
       'user:' || floor(random() * 50)::int, ARRAY['topic:' || c.c],
       (SELECT array_agg(x + 0.6 * (random() - 0.5) + 0 * i ORDER BY j) FROM unnest(c.v) WITH ORDINALITY u(x, j))::vector
FROM b_mem.tenants t, generate_series(0, CASE t.grp WHEN 'iso1' THEN $ROWS / 100 ELSE $ROWS / 20 END - 1) i
JOIN b_mem.centers c ON c.c = i % 10
WHERE t.grp IN ('iso1', 'iso5');
CREATE TABLE b_mem.iso_queries AS
  SELECT row_number() OVER (ORDER BY t.n, g) AS q, t.id AS tenant_id, t.grp, '{}'::text[] AS subjects,
         (SELECT array_agg(x + 0.6 * (random() - 0.5) + 0 * g ORDER BY j) FROM unnest(c.v) WITH ORDINALITY u(x, j))::vector AS v
  FROM b_mem.tenants t, generate_series(0, $ISO_QUERIES - 1) g JOIN b_mem.centers c ON c.c = g % 10
  WHERE t.grp IN ('iso1', 'iso5');
-- Into the module's tables (ids in src order).
CREATE TABLE b_mem.ids (i bigint PRIMARY KEY, id bigint NOT NULL);
WITH ins AS (
  INSERT INTO saas.memories (tenant_id, subject, kind, content, importance, evergreen, event_at, created_at, entities, metadata)
  SELECT tenant_id, subject, kind, 'memory ' || i, importance, evergreen, event_at, event_at, entities, jsonb_build_object('i', i)
  FROM b_mem.src ORDER BY i
  RETURNING id, (metadata ->> 'i')::bigint AS i)
INSERT INTO b_mem.ids SELECT i, id FROM ins;
INSERT INTO saas.memory_entities (tenant_id, entity, memory_id)
SELECT DISTINCT s.tenant_id, x, d.id FROM b_mem.src s JOIN b_mem.ids d USING (i), unnest(s.entities || s.subject) x;
-- Embeddings first, then the model's HNSW index in one build.
SELECT format('DROP INDEX saas.%I', index_name) FROM saas.memory_models WHERE model = '$MODEL' \gexec
INSERT INTO saas.memory_embeddings (tenant_id, memory_id, model, embedding, embedded_at)
SELECT s.tenant_id, d.id, '$MODEL', s.v, s.event_at FROM b_mem.src s JOIN b_mem.ids d USING (i);
SET maintenance_work_mem = '1GB';
SELECT saas.memory_index_model('$MODEL', $DIMS);
-- Tenants with saas.memory_tenant_index_rows (10,000) embeddings or more,
-- here the three large ones, get an index of their own, as run_maintenance
-- gives them in production.
SELECT count(*) FROM saas.run_maintenance();
-- Vacuumed as autovacuum leaves a table that has settled: the visibility
-- map set, so an entity's memories are read from the index alone.
VACUUM (ANALYZE) saas.memories; VACUUM (ANALYZE) saas.memory_embeddings; VACUUM (ANALYZE) saas.memory_entities;
SQL
echo "  data loaded in $(( $(date +%s) - t0 )) s"

# --- ground truth: brute force, every memory of the tenant scored ----------------
bench_psql >/dev/null <<SQL
SET max_parallel_workers_per_gather = 0;
CREATE TABLE b_mem.truth AS
SELECT q.q, r.rank, r.id, r.score
FROM b_mem.queries q
CROSS JOIN LATERAL (
  SELECT z.id, z.score, row_number() OVER (ORDER BY z.score DESC, z.id) AS rank
  FROM (SELECT m.id, $(sub "$SCORE" q.v q.subjects) AS score
        FROM saas.memories m JOIN saas.memory_embeddings e ON e.tenant_id = m.tenant_id AND e.memory_id = m.id AND e.model = '$MODEL'
        WHERE m.tenant_id = q.tenant_id) z
  ORDER BY z.score DESC, z.id LIMIT 10) r;
CREATE TABLE b_mem.qinfo AS
SELECT q.q, q.grp,
       (SELECT count(*) FROM saas.memory_embeddings e WHERE e.tenant_id = q.tenant_id AND e.model = '$MODEL') AS eligible,
       (SELECT e.memory_id FROM saas.memory_embeddings e WHERE e.tenant_id = q.tenant_id AND e.model = '$MODEL'
        ORDER BY e.embedding <=> q.v, e.memory_id LIMIT 1) AS nearest,
       (SELECT t.id FROM b_mem.truth t WHERE t.q = q.q AND t.rank = 1) AS top1,
       (SELECT min(t.score) FROM b_mem.truth t WHERE t.q = q.q) AS kth,
       (SELECT count(*) FROM b_mem.truth t WHERE t.q = q.q) AS nt
FROM b_mem.queries q;
CREATE TABLE b_mem.res (side text, phase text, round int, q int, ms float8, ids bigint[], exact boolean);
GRANT INSERT ON b_mem.res TO authenticated;
SQL
echo "  ground truth: $(bench_psql -At -c "SELECT count(*) FILTER (WHERE nearest <> top1) FROM b_mem.qinfo") of $QUERIES queries have a top result other than their nearest memory (decay, importance or entities flip it)"
echo "  planted: $(bench_psql -At -c "SELECT count(*) FILTER (WHERE n.event_at < timestamptz '$NOW' - interval '300 days' AND t.event_at > timestamptz '$NOW' - interval '2 days')
  || ' of ' || count(*) FROM b_mem.qinfo i JOIN b_mem.queries q USING (q)
  JOIN saas.memories n ON n.tenant_id = q.tenant_id AND n.id = i.nearest AND n.subject = 'user:flip'
  JOIN saas.memories t ON t.tenant_id = q.tenant_id AND t.id = i.top1") queries with a planted pair have the old near-duplicate nearest and the recent one on top"

# --- the sides, query by query, as the query's tenant -------------------------------
# side_sql SIDE: the statement of a side; \$1 the query vector, \$2 its
# subjects. (c) is two statements, as in LangChain and Mem0: the 100
# nearest from the vector index, then the re-rank of those (\$3, their ids).
side_sql() {
  case $1 in
    a) echo "SELECT array_agg(s.memory_id ORDER BY s.rank), bool_and(s.exact) FROM saas.memory_search(\$1, '${SIDE_MODEL:-$MODEL}', 10, subjects => \$2, p_now => '$NOW') s" ;;
    b) echo "SELECT array_agg(z.id ORDER BY z.score DESC, z.id), NULL::boolean FROM (SELECT m.id, $(sub "$SCORE" "\$1" "\$2") AS score
             FROM saas.memories m JOIN saas.memory_embeddings e ON e.tenant_id = m.tenant_id AND e.memory_id = m.id
             WHERE e.model = '$MODEL' ORDER BY 2 DESC, 1 LIMIT 10) z" ;;
    fetch) echo "SELECT array_agg(e.memory_id) FROM (SELECT e.memory_id FROM saas.memory_embeddings e WHERE e.model = '${SIDE_MODEL:-$MODEL}'
             ORDER BY e.embedding::vector($DIMS) <=> \$1 LIMIT 100) e" ;;
    rerank) echo "SELECT array_agg(z.id ORDER BY z.score DESC, z.id), NULL::boolean FROM (SELECT m.id, $(sub "$SCORE" "\$1" "\$2") AS score
             FROM saas.memories m JOIN saas.memory_embeddings e ON e.tenant_id = m.tenant_id AND e.memory_id = m.id
             WHERE e.model = '${SIDE_MODEL:-$MODEL}' AND e.memory_id = ANY (\$3) ORDER BY 2 DESC, 1 LIMIT 10) z" ;;
  esac
}
# run_sides TABLE PHASE ROUND SIDES...: every query of TABLE on every side,
# sides rotating query by query, one transaction per query.
run_sides() {
  local table=$1 phase=$2 round=$3; shift 3
  local sides=("$@") arr="" s
  local reranks="" m base
  for s in "${sides[@]}"; do
    m=${RUN_MODEL:-$MODEL}; [ "${s%x}" = "$s" ] || m=$MODEL-crowded
    base=${s%x}; case $base in c0 | c1) base=fetch ;; esac
    arr+="${arr:+, }\$s\$$(SIDE_MODEL=$m side_sql "$base")\$s\$"
    reranks+="${reranks:+, }\$s\$$(SIDE_MODEL=$m side_sql rerank)\$s\$"
  done
  bench_psql >/dev/null <<SQL
SET max_parallel_workers_per_gather = 0;
SET ROLE authenticated;
DO \$do\$
DECLARE
  names text[] := '{$(IFS=,; echo "${sides[*]}")}';
  stmts text[] := ARRAY[$arr];
  reranks text[] := ARRAY[$reranks];
  cand bigint[];
  r record;
  j int;
  side int;
  t0 timestamptz;
  ids bigint[];
  ex boolean;
BEGIN
  FOR r IN SELECT * FROM b_mem.$table ORDER BY q LOOP
    FOR j IN 0 .. cardinality(names) - 1 LOOP
      side := 1 + (r.q + $round + j) % cardinality(names);
      PERFORM set_config('request.jwt.claims', json_build_object('role', 'authenticated', 'tenant_id', r.tenant_id)::text, true);
      PERFORM set_config('hnsw.ef_search', '100', true);
      PERFORM set_config('hnsw.iterative_scan', CASE WHEN names[side] LIKE 'c1%' THEN 'relaxed_order' ELSE 'off' END, true);
      t0 := clock_timestamp();
      IF names[side] LIKE 'c%' THEN
        -- (c) reads the HNSW index, as it would where no other index
        -- serves the tenant (the planner otherwise sorts the tenant's rows).
        PERFORM set_config('enable_sort', 'off', true);
        EXECUTE stmts[side] INTO cand USING r.v;
        PERFORM set_config('enable_sort', 'on', true);
        EXECUTE reranks[side] INTO ids, ex USING r.v, r.subjects, coalesce(cand, '{}');
      ELSE
        EXECUTE stmts[side] INTO ids, ex USING r.v, r.subjects;
      END IF;
      INSERT INTO b_mem.res VALUES (names[side], '$phase', $round, r.q, extract(epoch FROM clock_timestamp() - t0) * 1000, coalesce(ids, '{}'), ex);
      COMMIT;
    END LOOP;
  END LOOP;
END
\$do\$;
SQL
}

for r in $(seq 1 "$ROUNDS"); do
  t0=$(date +%s)
  run_sides queries main "$r" a b c0 c1
  echo "  round $r: $(( $(date +%s) - t0 )) s"
done

# --- figures ---------------------------------------------------------------------------
bench_psql >/dev/null <<SQL
CREATE TABLE b_mem.scored AS
SELECT r.side, r.round, r.q, i.grp, r.ms, r.exact, cardinality(r.ids) AS n, i.eligible,
       least(h.hits, i.nt)::float8 / i.nt AS recall,
       h.dcg / (SELECT sum(1 / log(2::numeric, (g + 1)::numeric)) FROM generate_series(1, i.nt) g)::float8 AS ndcg,
       cardinality(r.ids) < least(10, i.eligible) AS short, h.foreign_rows
FROM b_mem.res r JOIN b_mem.qinfo i USING (q) JOIN b_mem.queries qq USING (q)
CROSS JOIN LATERAL (
  SELECT count(*) FILTER (WHERE s.sc >= i.kth - 1e-9) AS hits,
         coalesce(sum(CASE WHEN s.sc >= i.kth - 1e-9 THEN 1 / log(2::numeric, (u.pos + 1)::numeric) END), 0)::float8 AS dcg,
         count(*) FILTER (WHERE s.sc IS NULL) AS foreign_rows
  FROM unnest(r.ids) WITH ORDINALITY u(id, pos)
  LEFT JOIN LATERAL (SELECT $(sub "$SCORE" qq.v qq.subjects) AS sc
                     FROM saas.memories m JOIN saas.memory_embeddings e ON e.tenant_id = m.tenant_id AND e.memory_id = m.id AND e.model = '$MODEL'
                     WHERE m.tenant_id = qq.tenant_id AND m.id = u.id) s ON true) h
WHERE r.phase = 'main' AND i.nt > 0;
CREATE TABLE b_mem.per_round AS
SELECT side, coalesce(grp, 'all') AS grp, round,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY ms) AS p50, percentile_disc(0.95) WITHIN GROUP (ORDER BY ms) AS p95,
       avg(recall) AS recall, avg(ndcg) AS ndcg, avg(short::int) AS short,
       count(*) FILTER (WHERE exact AND recall < 1) AS exact_wrong, sum(foreign_rows) AS foreign_rows
FROM b_mem.scored GROUP BY GROUPING SETS ((side, grp, round), (side, round));
CREATE TABLE b_mem.summary AS
SELECT side, grp, percentile_disc(0.5) WITHIN GROUP (ORDER BY p50) AS p50, percentile_disc(0.5) WITHIN GROUP (ORDER BY p95) AS p95,
       string_agg(round(p50::numeric, 2)::text, '/' ORDER BY round) AS p50_rounds,
       string_agg(round(p95::numeric, 2)::text, '/' ORDER BY round) AS p95_rounds,
       avg(recall) AS recall, avg(ndcg) AS ndcg, avg(short) AS short, max(exact_wrong) AS exact_wrong, max(foreign_rows) AS foreign_rows
FROM b_mem.per_round GROUP BY side, grp;
SQL
bench_psql -c "SELECT side, grp, round(p50::numeric, 2) AS p50_ms, round(p95::numeric, 2) AS p95_ms, p50_rounds, p95_rounds,
  round(recall::numeric, 4) AS recall10, round(ndcg::numeric, 4) AS ndcg10, round(short::numeric, 3) AS short_share,
  exact_wrong, foreign_rows FROM b_mem.summary ORDER BY grp, side"
# fig SIDE GRP COLUMN
fig() { bench_psql -At -c "SELECT $3 FROM b_mem.summary WHERE side = '$1' AND grp = '$2'"; }
label() { case $1 in b) echo "full scan ORDER BY score" ;; c0) echo "HNSW top-100 re-rank" ;; c1) echo "HNSW iterative top-100" ;; esac; }
for grp in all large small; do
  for peer in b c0 c1; do
    report "memory_search p50, $grp tenants, vs $peer" "$(fig a "$grp" p50)" "$(label "$peer")" "$(fig "$peer" "$grp" p50)" ms \
      "p95 ours $(fig a "$grp" "round(p95::numeric, 2)") ms, peer $(fig "$peer" "$grp" "round(p95::numeric, 2)") ms; p50 per round ours $(fig a "$grp" p50_rounds), peer $(fig "$peer" "$grp" p50_rounds)"
    record "recall@10, $grp tenants, vs $peer" "$(fig a "$grp" "round(recall::numeric, 4)")" "$(label "$peer")" "$(fig "$peer" "$grp" "round(recall::numeric, 4)")" "recall (higher is better)" \
      "nDCG@10 ours $(fig a "$grp" "round(ndcg::numeric, 4)"), peer $(fig "$peer" "$grp" "round(ndcg::numeric, 4)"); short results ours $(fig a "$grp" "round(short::numeric, 3)"), peer $(fig "$peer" "$grp" "round(short::numeric, 3)")"
  done
done
wrong=$(fig a all exact_wrong)
[ "$wrong" = 0 ] || echo "  BUG: $wrong queries answered exact = true with recall < 1"

# --- isolation: another tenant's memories crowd the query vectors --------------------
# Both conditions at once, taking turns query by query: the isolation
# tenants' embeddings are copied under two more models of the same table,
# $MODEL-alone and $MODEL-crowded, and only the second gets the crowd
# tenant's memories right around their query vectors. Sides ending in x
# search the crowded model, the others the one without the crowd.
t0=$(date +%s)
bench_psql >/dev/null <<SQL
SET max_parallel_workers_per_gather = 0;
SET client_min_messages = warning;
-- The models first, their indexes after the rows (one build each).
SELECT saas.memory_index_model(m, $DIMS) FROM unnest(ARRAY['$MODEL-alone', '$MODEL-crowded']) m;
SELECT format('DROP INDEX saas.%I', index_name) FROM saas.memory_models WHERE model IN ('$MODEL-alone', '$MODEL-crowded') \gexec
INSERT INTO saas.memory_embeddings (tenant_id, memory_id, model, embedding, embedded_at)
SELECT e.tenant_id, e.memory_id, m, e.embedding, e.embedded_at
FROM saas.memory_embeddings e JOIN b_mem.tenants t ON t.id = e.tenant_id AND t.grp IN ('iso1', 'iso5'),
     unnest(ARRAY['$MODEL-alone', '$MODEL-crowded']) m
WHERE e.model = '$MODEL';
WITH src AS (
  SELECT g, t.id AS tenant_id,
         (SELECT array_agg(x + 0.1 * (random() - 0.5) + 0 * g ORDER BY j) FROM unnest(q.v::float4[]) WITH ORDINALITY u(x, j))::vector AS v
  FROM generate_series(0, $CROWD - 1) g
  JOIN b_mem.iso_queries q ON q.q = 1 + g % (SELECT count(*) FROM b_mem.iso_queries)
  CROSS JOIN b_mem.tenants t WHERE t.grp = 'crowd'),
ins AS (
  INSERT INTO saas.memories (tenant_id, subject, kind, content, importance, event_at, created_at, metadata)
  SELECT tenant_id, 'user:0', 'note', 'crowd ' || g, 1, timestamptz '$NOW', timestamptz '$NOW', jsonb_build_object('g', g) FROM src
  RETURNING tenant_id, id, (metadata ->> 'g')::int AS g)
INSERT INTO saas.memory_embeddings (tenant_id, memory_id, model, embedding, embedded_at)
SELECT ins.tenant_id, ins.id, '$MODEL-crowded', src.v, timestamptz '$NOW' FROM ins JOIN src USING (g);
SET maintenance_work_mem = '1GB';
SELECT saas.memory_index_model(m, $DIMS) FROM unnest(ARRAY['$MODEL-alone', '$MODEL-crowded']) m;
VACUUM (ANALYZE) saas.memories; VACUUM (ANALYZE) saas.memory_embeddings;
SQL
echo "  crowd of $CROWD memories added in $(( $(date +%s) - t0 )) s"
for r in $(seq 1 "$ROUNDS"); do RUN_MODEL=$MODEL-alone run_sides iso_queries iso "$r" a ax c0 c0x c1 c1x; done
bench_psql >/dev/null <<SQL
CREATE TABLE b_mem.iso AS
SELECT rtrim(r.side, 'x') AS side, q.grp, CASE WHEN r.side LIKE '%x' THEN 'crowded' ELSE 'not crowded' END AS phase, r.round,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY r.ms) AS p50, percentile_disc(0.95) WITHIN GROUP (ORDER BY r.ms) AS p95,
       avg((cardinality(r.ids) < 10)::int) AS short
FROM b_mem.res r JOIN b_mem.iso_queries q USING (q) WHERE r.phase = 'iso'
GROUP BY 1, 2, 3, 4;
CREATE TABLE b_mem.iso_changed AS
SELECT b.side, q.grp, count(*) FILTER (WHERE b.ids IS DISTINCT FROM a.ids) AS changed, count(*) AS queries
FROM b_mem.res b JOIN b_mem.res a ON a.side = b.side || 'x' AND a.q = b.q AND a.round = b.round AND a.phase = 'iso'
JOIN b_mem.iso_queries q ON q.q = b.q WHERE b.phase = 'iso' AND b.round = 1 GROUP BY 1, 2;
SQL
bench_psql -c "SELECT i.side, i.grp, i.phase, round(percentile_disc(0.5) WITHIN GROUP (ORDER BY i.p50)::numeric, 2) AS p50_ms,
  round(percentile_disc(0.5) WITHIN GROUP (ORDER BY i.p95)::numeric, 2) AS p95_ms, round(avg(i.short)::numeric, 3) AS short_share,
  max(c.changed) || ' of ' || max(c.queries) AS results_changed
  FROM b_mem.iso i JOIN b_mem.iso_changed c USING (side, grp) GROUP BY 1, 2, 3 ORDER BY 2, 1, 3 DESC"
isofig() { bench_psql -At -c "SELECT round(percentile_disc(0.5) WITHIN GROUP (ORDER BY $4)::numeric, 3) FROM b_mem.iso WHERE side = '$1' AND grp = '$2' AND phase = '$3'"; }
for grp in iso1 iso5; do
  share=$([ "$grp" = iso1 ] && echo "1%" || echo "5%")
  changed=$(bench_psql -At -c "SELECT changed || ' of ' || queries FROM b_mem.iso_changed WHERE side = 'a' AND grp = '$grp'")
  report "memory_search p50, $share tenant, crowded vs not" "$(isofig a "$grp" crowded p50)" "not crowded" "$(isofig a "$grp" 'not crowded' p50)" ms \
    "p95 crowded $(isofig a "$grp" crowded p95) ms, not $(isofig a "$grp" 'not crowded' p95) ms; results changed: $changed queries"
  for peer in c0 c1; do
    record "short results, $share tenant crowded, $peer" "$(isofig "$peer" "$grp" crowded short)" "not crowded" "$(isofig "$peer" "$grp" 'not crowded' short)" "share of queries" \
      "ours: $(isofig a "$grp" crowded short) crowded, $(isofig a "$grp" 'not crowded' short) not; $(label "$peer") p50 crowded $(isofig "$peer" "$grp" crowded p50) ms, not $(isofig "$peer" "$grp" 'not crowded' p50) ms"
  done
done
