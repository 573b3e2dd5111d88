//! Memory search (issue 19) as API roles use it:
//!
//! - through the real PostgREST: search as a GET (read-only: touch skipped
//!   and said so), add and search by POST, tenant isolation, erasure, bad
//!   input as 400;
//! - under RLS as PostgREST runs a request (role `authenticated`, claims):
//!   a tenant holding 1% of a model's rows gets k results from the index
//!   stage, the same rows brute force gives;
//! - through PostgREST, by the index stage: that tenant's results, their
//!   stages and exact flags and its query log are the same whether another
//!   tenant's memories are absent, lie far from its query or right around
//!   it (issue 19's isolation; the bench measures timings);
//! - an embed racing an erasure leaves no embedding (two sessions, both
//!   orders).

mod common;

use common::http::Http;
use common::random_uuid;
use serde_json::json;
use tokio_postgres::Client;

/// Two tenants with one member each, a 4-dimension model, and memories:
/// `small` holds 1% of the rows, `big` the rest, clustered near the query.
async fn fixture(admin: &Client, model: &str, small: &str, big: &str, su: &str, bu: &str) {
    let sql = format!(
        "INSERT INTO saas.tenants (id, slug, name) VALUES ('{small}', 'm-{s}', 'mem small'), ('{big}', 'm-{b}', 'mem big');
         INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES ('{small}', '{su}', 'member'), ('{big}', '{bu}', 'member');
         SELECT saas.memory_index_model('{model}', 4);
         INSERT INTO saas.memories (tenant_id, subject, kind, content, importance, event_at, created_at)
         SELECT CASE WHEN g % 100 = 0 THEN '{small}'::uuid ELSE '{big}'::uuid END, 'subject:' || (g % 7), 'note',
                'memory ' || g, (g % 10) / 10.0, timestamptz '2026-01-01' + g * interval '1 hour', timestamptz '2026-01-01'
         FROM generate_series(1, 3000) g;
         INSERT INTO saas.memory_embeddings (tenant_id, memory_id, model, embedding)
         SELECT m.tenant_id, m.id, '{model}',
                CASE WHEN m.tenant_id = '{big}' THEN format('[1,%s,%s,0]', (m.id % 13) / 100.0, (m.id % 7) / 100.0)
                     ELSE format('[%s,1,%s,%s]', (m.id % 11) / 10.0, (m.id % 5) / 10.0, (m.id % 3) / 10.0) END::vector
         FROM saas.memories m WHERE m.tenant_id IN ('{small}', '{big}');",
        s = &small[0..8],
        b = &big[0..8]
    );
    common::shared_setup(admin, &sql)
        .await
        .unwrap_or_else(|e| panic!("memory fixture: {e:?}"));
}

/// The ids a search returns as PostgREST would run it for `user` of `tenant`.
async fn search_as(
    admin: &Client,
    tenant: &str,
    user: &str,
    model: &str,
    exact_below: i64,
    k: i32,
) -> Vec<i64> {
    let claims = json!({"sub": user, "role": "authenticated", "tenant_id": tenant}).to_string();
    admin
        .batch_execute(&format!(
            "BEGIN; SET LOCAL ROLE authenticated;
             SELECT set_config('request.jwt.claims', '{claims}', true);
             SET LOCAL saas.memory_exact_below = {exact_below};"
        ))
        .await
        .unwrap();
    let rows = admin
        .query(
            "SELECT memory_id FROM saas.memory_search('[1,0,0,0]'::vector, $1, k => $2, p_now => '2026-06-01') ORDER BY rank",
            &[&model, &k],
        )
        .await
        .unwrap_or_else(|e| panic!("search as {tenant}: {e:?}"));
    admin.batch_execute("COMMIT").await.unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn memory_a_one_percent_tenant_gets_k_results_under_rls() {
    let Some(admin) = common::connect("memory_a_one_percent_tenant_gets_k_results_under_rls").await
    else {
        return;
    };
    let (small, big, su, bu) = (random_uuid(), random_uuid(), random_uuid(), random_uuid());
    let model = format!("onepct-{}", &small[0..8]);
    fixture(&admin, &model, &small, &big, &su, &bu).await;
    // The index stage (forced), then brute force: the same k rows, all the small tenant's.
    let by_index = search_as(&admin, &small, &su, &model, 0, 10).await;
    let by_brute = search_as(&admin, &small, &su, &model, 1_000_000, 10).await;
    assert_eq!(by_index.len(), 10, "fewer than k rows from the index stage");
    assert_eq!(
        by_index, by_brute,
        "the index stage disagrees with brute force"
    );
    let owners: i64 = admin
        .query_one(
            "SELECT count(*) FROM saas.memories WHERE id = ANY ($1) AND tenant_id = $2::text::uuid",
            &[&by_index, &small],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owners, 10, "rows of another tenant were returned");
    // k over the tenant's rows: min(k, eligible), never fewer.
    let all = search_as(&admin, &small, &su, &model, 0, 1000).await;
    assert_eq!(all.len(), 30);
}

#[tokio::test]
async fn memory_http_search_by_get_and_tenant_isolation() {
    let Some(http) = Http::from_env("memory_http_search_by_get_and_tenant_isolation") else {
        return;
    };
    let Some(admin) = common::connect("memory_http_search_by_get_and_tenant_isolation").await
    else {
        return;
    };
    let (small, big, su, bu) = (random_uuid(), random_uuid(), random_uuid(), random_uuid());
    let model = format!("http-{}", &small[0..8]);
    fixture(&admin, &model, &small, &big, &su, &bu).await;
    let api = |r: common::http::HttpRequest| {
        r.header("Accept-Profile", "saas_api")
            .header("Content-Profile", "saas_api")
    };
    // saas_api.memory_search was in PostgREST's schema cache from its start.
    let st = http.token(&json!({"sub": su, "role": "authenticated", "tenant_id": small}));
    let bt = http.token(&json!({"sub": bu, "role": "authenticated", "tenant_id": big}));

    // GET: read-only; k rows, explanations, touch skipped and said so.
    let r = api(http.get(&format!(
        "/rpc/memory_search?query=[1,0,0,0]&model={model}&k=5&touch=true"
    )))
    .bearer(&st)
    .send()
    .await;
    r.expect_status(200);
    let rows = r.rows();
    assert_eq!(rows.len(), 5, "{rows:?}");
    for row in &rows {
        assert!(
            row["explanation"]["terms"]["similarity"]["contribution"].is_number(),
            "{row}"
        );
        assert!(
            row["explanation"]["touch"]
                .as_str()
                .unwrap()
                .starts_with("skipped"),
            "{row}"
        );
    }
    // POST: add a memory with its embedding, then search (read-write: touched).
    let r = api(http.post(
        "/rpc/memory_add",
        &json!({"content": "prefers email", "subject": "subject:x", "model": model, "embedding": "[1,0,0,0]"}),
    ))
    .bearer(&st)
    .send()
    .await;
    r.expect_status(200);
    let new_id = r.json().as_i64().expect("the new id");
    let r = api(http.post(
        "/rpc/memory_search",
        &json!({"query": "[1,0,0,0]", "model": model, "k": 3, "touch": true}),
    ))
    .bearer(&st)
    .send()
    .await;
    r.expect_status(200);
    let rows = r.rows();
    assert_eq!(rows[0]["memory_id"].as_i64(), Some(new_id), "{rows:?}");
    assert_eq!(rows[0]["explanation"]["touch"], "refreshed");

    // The other tenant sees none of it: memories, embeddings, log.
    let r = api(http.post(
        "/rpc/memory_search",
        &json!({"query": "[1,0,0,0]", "model": model, "k": 1000}),
    ))
    .bearer(&bt)
    .send()
    .await;
    let ids: Vec<i64> = r
        .rows()
        .iter()
        .map(|x| x["memory_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1000, "k rows of the big tenant's 2,970");
    assert!(!ids.contains(&new_id));
    for (table, col) in [
        ("memories", "id"),
        ("memory_embeddings", "memory_id"),
        ("memory_entities", "memory_id"),
    ] {
        let r = http
            .get(&format!("/{table}?select={col}&{col}=eq.{new_id}"))
            .header("Accept-Profile", "saas")
            .bearer(&bt)
            .send()
            .await;
        if r.is_success() {
            assert!(
                r.rows().is_empty(),
                "{table} leaks to the other tenant: {:?}",
                r.rows()
            );
        }
    }
    let logged: i64 = admin
        .query_one(
            "SELECT count(*) FROM saas.memory_query_log WHERE tenant_id = $1::text::uuid AND $2 = ANY (result_ids)",
            &[&big, &new_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 0, "the other tenant's log names our memory");
    // Erasure through the API leaves nothing of the subject.
    let r = api(http.post("/rpc/memory_forget", &json!({"subject": "subject:x"})))
        .bearer(&st)
        .send()
        .await;
    r.expect_status(200);
    let left: i64 = admin
        .query_one(
            "SELECT (SELECT count(*) FROM saas.memories WHERE id = $1) + (SELECT count(*) FROM saas.memory_embeddings WHERE memory_id = $1)
                  + (SELECT count(*) FROM saas.memory_query_log WHERE $1 = ANY (result_ids))",
            &[&new_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // Bad input answers 400 with a hint.
    let r = api(http.get(&format!("/rpc/memory_search?query=[1,0]&model={model}")))
        .bearer(&st)
        .send()
        .await;
    r.expect_status(400);
}

/// A role whose searches use the index stage (its `saas.memory_exact_below`
/// is 0, applied by PostgREST as an impersonated role's setting), so that a
/// small fixture exercises the shared HNSW index.
const INDEX_STAGE_ROLE: &str = "memory_index_stage";

/// The ids and stages of a GET search as `token`'s tenant, k rows asked, and
/// what each row tells the caller about how it was found: its stage, its
/// `exact` flag and the explanation's `exact` and `result`.
async fn http_search(
    http: &Http,
    token: &str,
    model: &str,
    k: i32,
) -> (Vec<i64>, Vec<String>, Vec<String>) {
    let r = http
        .get(&format!(
            "/rpc/memory_search?query=[1,0,0,0]&model={model}&k={k}"
        ))
        .header("Accept-Profile", "saas_api")
        .bearer(token)
        .send()
        .await;
    r.expect_status(200);
    let rows = r.rows();
    (
        rows.iter()
            .map(|x| x["memory_id"].as_i64().unwrap())
            .collect(),
        rows.iter()
            .map(|x| x["explanation"]["stage"].as_str().unwrap().to_string())
            .collect(),
        rows.iter()
            .map(|x| {
                format!(
                    "stage {} exact {} explanation.exact {} result {}",
                    x["explanation"]["stage"],
                    x["exact"],
                    x["explanation"]["exact"],
                    x["explanation"]["result"]
                )
            })
            .collect(),
    )
}

/// One logged search (sample rate 1 for the transaction) by the index stage
/// (read from the HNSW index, as [`INDEX_STAGE_ROLE`]'s searches) as `user` of `tenant`, and the query-log row the tenant reads back: the
/// fields it can read, but the latency.
async fn logged_search(admin: &Client, tenant: &str, user: &str, model: &str, k: i32) -> String {
    let claims = json!({"sub": user, "role": "authenticated", "tenant_id": tenant}).to_string();
    admin
        .batch_execute(&format!(
            "BEGIN; SET LOCAL saas.memory_log_sample_rate = 1; SET LOCAL ROLE authenticated;
             SELECT set_config('request.jwt.claims', '{claims}', true);
             SET LOCAL saas.memory_exact_below = 0; SET LOCAL enable_sort = off;"
        ))
        .await
        .unwrap();
    admin
        .query(
            "SELECT memory_id FROM saas.memory_search('[1,0,0,0]'::vector, $1, k => $2, p_now => '2026-06-01')",
            &[&model, &k],
        )
        .await
        .unwrap_or_else(|e| panic!("logged search as {tenant}: {e:?}"));
    let row = admin
        .query_one(
            "SELECT format('k %s stage %s exact %s candidates %s returned %s top %s subjects %s entities %s ids %s',
                           k, stage, exact, candidates, returned, top_score, subjects, entities, result_ids)
             FROM saas.memory_query_log ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("the query log as {tenant}: {e:?}"));
    admin.batch_execute("COMMIT").await.unwrap();
    row.get(0)
}

/// Issue 19: one tenant's results must not depend on other tenants' data
/// near its query, nor what it is told about them. A tenant holding 1% of a
/// model's rows searches through PostgREST by the index stage, alone in the
/// index, then with the other tenant's memories far from the query, then
/// clustered right around it: k rows every time, the same rows, all its
/// own, with the same stages and exact flags, and the same query-log rows
/// (the other tenant's rows fill the index stream's cap, which must not
/// show). (Timings are the bench's business.)
#[tokio::test]
async fn memory_http_results_do_not_depend_on_another_tenants_nearby_data() {
    let Some(http) =
        Http::from_env("memory_http_results_do_not_depend_on_another_tenants_nearby_data")
    else {
        return;
    };
    let Some(admin) =
        common::connect("memory_http_results_do_not_depend_on_another_tenants_nearby_data").await
    else {
        return;
    };
    let (small, big, su, bu) = (random_uuid(), random_uuid(), random_uuid(), random_uuid());
    let model = format!("crowd-{}", &small[0..8]);
    fixture(&admin, &model, &small, &big, &su, &bu).await;
    common::shared_setup(
        &admin,
        &format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{INDEX_STAGE_ROLE}') THEN
                 CREATE ROLE {INDEX_STAGE_ROLE} NOLOGIN;
               END IF;
             END $$;
             GRANT {INDEX_STAGE_ROLE} TO authenticator;
             SELECT saas.grant_api('{{{INDEX_STAGE_ROLE}}}');
             ALTER ROLE {INDEX_STAGE_ROLE} SET saas.memory_exact_below = 0;
             -- The planner reads the HNSW index (not the tenant's 30 rows
             -- sorted), as it does for a large tenant: the crowd below then
             -- ends the index stream early (hnsw.max_scan_tuples).
             ALTER ROLE {INDEX_STAGE_ROLE} SET enable_sort = off;
             -- Alone: the small tenant's embeddings copied under a model of
             -- their own (its index holds nothing else).
             SELECT saas.memory_index_model('{model}-alone', 4);
             INSERT INTO saas.memory_embeddings (tenant_id, memory_id, model, embedding)
             SELECT tenant_id, memory_id, '{model}-alone', embedding FROM saas.memory_embeddings
             WHERE tenant_id = '{small}' AND model = '{model}';"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("role and fixture: {e:?}"));
    let token = http.token(&json!({"sub": su, "role": INDEX_STAGE_ROLE, "tenant_id": small}));
    // PostgREST applies the role's settings once it reloaded its configuration.
    let started = std::time::Instant::now();
    let alone_model = format!("{model}-alone");
    let (alone, alone_stages, alone_how) = loop {
        let (ids, stages, how) = http_search(&http, &token, &alone_model, 10).await;
        if stages.iter().all(|s| s != "brute_force") {
            break (ids, stages, how);
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let logged = logged_search(&admin, &small, &su, &alone_model, 10).await;
            panic!("PostgREST did not apply {INDEX_STAGE_ROLE}'s settings, or the stream ended early: {stages:?}; logged: {logged}");
        }
        admin
            .batch_execute("NOTIFY pgrst, 'reload config'")
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!(alone.len(), 10, "alone: {alone:?} {alone_stages:?}");
    let (alone_all, _, alone_all_how) = http_search(&http, &token, &alone_model, 1000).await;
    assert_eq!(alone_all.len(), 30, "alone: min(k, eligible) rows");
    let alone_log = logged_search(&admin, &small, &su, &alone_model, 10).await;
    let alone_all_log = logged_search(&admin, &small, &su, &alone_model, 1000).await;

    // The other tenant's 2,970 memories back, first far from the query, then
    // right around it. Either way the results, and what the caller is told
    // about how they were found (stages, exact flags, its query log), are
    // what they were alone: the other tenant's rows, far or crowding the
    // query, are index tuples the stream reads towards its cap of 1,000,
    // and ending the stream early there must not show.
    for (phase, vector) in [("far", "[0,%s,%s,1]"), ("crowded", "[1,%s,%s,0]")] {
        admin
            .batch_execute(&format!(
                "DELETE FROM saas.memory_embeddings WHERE tenant_id = '{big}' AND model = '{model}';
                 INSERT INTO saas.memory_embeddings (tenant_id, memory_id, model, embedding)
                 SELECT m.tenant_id, m.id, '{model}', format('{vector}', (m.id % 13) / 100.0, (m.id % 7) / 100.0)::vector
                 FROM saas.memories m WHERE m.tenant_id = '{big}'"
            ))
            .await
            .unwrap();
        let (ids, stages, how) = http_search(&http, &token, &model, 10).await;
        assert_eq!(
            ids, alone,
            "{phase}: the other tenant's data changed the results ({stages:?})"
        );
        let (all, _, all_how) = http_search(&http, &token, &model, 1000).await;
        assert_eq!(all, alone_all, "{phase}: min(k, eligible) rows, the same");
        assert_eq!(
            how, alone_how,
            "{phase}: the other tenant's data shows in the explanations"
        );
        assert_eq!(
            all_how, alone_all_how,
            "{phase}: the other tenant's data shows in the explanations (k 1000)"
        );
        let log = logged_search(&admin, &small, &su, &model, 10).await;
        let all_log = logged_search(&admin, &small, &su, &model, 1000).await;
        assert_eq!(
            log, alone_log,
            "{phase}: the other tenant's data shows in the query log"
        );
        assert_eq!(
            all_log, alone_all_log,
            "{phase}: the other tenant's data shows in the query log (k 1000)"
        );
    }
    let near_all = alone_all;
    let owners: i64 = admin
        .query_one(
            "SELECT count(*) FROM saas.memories WHERE id = ANY ($1) AND tenant_id = $2::text::uuid",
            &[&near_all, &small],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owners, 30, "rows of another tenant were returned");
}

/// Begins a transaction on `client` as PostgREST runs a request of `user` of `tenant`.
async fn begin_as(client: &Client, tenant: &str, user: &str) {
    let claims = json!({"sub": user, "role": "authenticated", "tenant_id": tenant}).to_string();
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL ROLE authenticated;
             SELECT set_config('request.jwt.claims', '{claims}', true);"
        ))
        .await
        .unwrap();
}

/// Embeddings of memory `id`, counted as the owner.
async fn embeddings_of(admin: &Client, id: i64) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM saas.memory_embeddings WHERE memory_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

/// Without foreign keys between memory's tables, an embedding written while
/// its memory is being erased must not outlive it (privacy). memory_embed
/// locks the memory's row first: racing a forget in progress it waits, then
/// fails (22023, unknown memory); a forget racing an embed in progress waits
/// for it, then erases the embedding too. Both orders, two sessions.
#[tokio::test]
async fn memory_embed_and_forget_racing_leave_no_embedding() {
    let Some(a) = common::connect("memory_embed_and_forget_racing_leave_no_embedding").await else {
        return;
    };
    let b = common::connect("memory_embed_and_forget_racing_leave_no_embedding")
        .await
        .unwrap();
    let (tenant, user) = (random_uuid(), random_uuid());
    let model = format!("race-{}", &tenant[0..8]);
    common::shared_setup(
        &a,
        &format!(
            "INSERT INTO saas.tenants (id, slug, name) VALUES ('{tenant}', 'race-{t}', 'mem race');
             INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES ('{tenant}', '{user}', 'member');
             SELECT saas.memory_index_model('{model}', 4);",
            t = &tenant[0..8]
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("race fixture: {e:?}"));
    let ids: Vec<i64> = a
        .query(
            "INSERT INTO saas.memories (tenant_id, subject, kind, content, event_at, created_at)
             SELECT $1::text::uuid, s, 'note', 'about ' || s, '2026-01-01', '2026-01-01'
             FROM unnest(ARRAY['race:1', 'race:2']) s RETURNING id",
            &[&tenant],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (m1, m2) = (ids[0], ids[1]);
    let pause = std::time::Duration::from_millis(500);

    // 1. A forgets the subject in an open transaction; B embeds its memory:
    //    B waits for A, then finds the memory gone.
    begin_as(&a, &tenant, &user).await;
    a.query_one("SELECT saas.memory_forget('race:1')", &[])
        .await
        .unwrap();
    begin_as(&b, &tenant, &user).await;
    let embed_model = model.clone();
    let embed = tokio::spawn(async move {
        let r = b
            .execute(
                "SELECT saas.memory_embed($1, $2, '[1,0,0,0]')",
                &[&m1, &embed_model],
            )
            .await;
        (b, r)
    });
    tokio::time::sleep(pause).await;
    assert!(
        !embed.is_finished(),
        "memory_embed did not wait for the forget in progress"
    );
    a.batch_execute("COMMIT").await.unwrap();
    let (b, r) = embed.await.unwrap();
    let err = r.expect_err("memory_embed of a memory forgotten meanwhile succeeded");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE),
        "{err:?}"
    );
    b.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(embeddings_of(&a, m1).await, 0, "an orphan embedding");

    // 2. B embeds in an open transaction; A forgets: A waits for B, then
    //    erases the embedding B committed (and counts it).
    begin_as(&b, &tenant, &user).await;
    b.execute(
        "SELECT saas.memory_embed($1, $2, '[1,0,0,0]')",
        &[&m2, &model],
    )
    .await
    .unwrap();
    begin_as(&a, &tenant, &user).await;
    let forget = tokio::spawn(async move {
        let r = a
            .query_one("SELECT saas.memory_forget('race:2')::text", &[])
            .await
            .map(|row| row.get::<_, String>(0));
        (a, r)
    });
    tokio::time::sleep(pause).await;
    assert!(
        !forget.is_finished(),
        "memory_forget did not wait for the embed in progress"
    );
    b.batch_execute("COMMIT").await.unwrap();
    let (a, r) = forget.await.unwrap();
    let counts: serde_json::Value = serde_json::from_str(&r.unwrap()).unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(counts["memories"], 1, "{counts}");
    assert_eq!(counts["embeddings"], 1, "{counts}");
    assert_eq!(embeddings_of(&a, m2).await, 0, "an orphan embedding");
}
