//! The llm module through the real PostgREST 12 that `make test` starts
//! (common::http), as a front end calls `saas_api`:
//!
//! - the cache is tenant-scoped: the same request in two tenants never hits
//!   across, a put in one is invisible to the other;
//! - hit counts are exact under concurrent GETs (READ ONLY transactions,
//!   counted in shared memory, flushed by llm_hits_flush);
//! - single flight: of concurrent misses of one key exactly one caller gets
//!   the lease, the others are told to wait; after the put they hit;
//! - 64 concurrent reservations against a small budget never overspend: as
//!   many succeed as fit, the rest get 402 (PT402) with JSON details and
//!   Retry-After;
//! - the ledger and budgets are tenant-scoped: another tenant's reservation
//!   cannot be settled, its usage is not in the other's status;
//! - the semantic cache serves a paraphrase of the same context with its
//!   similarity, never across a different system prompt, never another
//!   tenant's entry (not even at similarity 0.91 under a 0.9 threshold);
//!   shadow mode records would-be hits and serves misses; bad embeddings
//!   are 400s with their SQLSTATE;
//! - the shared scope: written only by the role an operator granted, read
//!   only through llm_shared_get; a tenant cannot write (poison) it and its
//!   own entries never show there;
//! - a full hit table (a cluster of its own with saas.llm_hit_slots = 64)
//!   never refuses a read-only lookup, and a flush writes exact totals.

mod common;

use common::http::{Http, HttpRequest, HttpResponse};
use common::random_uuid;
use serde_json::{json, Value};
use tokio_postgres::Client;

macro_rules! http_or_skip {
    ($name:expr) => {{
        let Some(http) = Http::from_env($name) else {
            return;
        };
        let Some(admin) = common::connect($name).await else {
            return;
        };
        (http, admin)
    }};
}

/// A tenant with one member; returns (tenant, user).
async fn tenant(admin: &Client) -> (String, String) {
    let (t, u) = (random_uuid(), random_uuid());
    common::shared_setup(
        admin,
        &format!(
            "INSERT INTO saas.tenants (id, slug, name) VALUES ('{t}', 'llm-{s}', 'llm {s}');
             INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES ('{t}', '{u}', 'member');",
            s = &t[0..8]
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("tenant {t}: {e:?}"));
    (t, u)
}

fn user(sub: &str, tenant: &str) -> Value {
    json!({"sub": sub, "role": "authenticated", "tenant_id": tenant})
}

fn get(http: &Http, path: &str, claims: &Value) -> HttpRequest {
    http.get(path)
        .header("Accept-Profile", "saas_api")
        .claims(claims)
}

fn post(http: &Http, path: &str, body: &Value, claims: &Value) -> HttpRequest {
    http.post(path, body)
        .header("Content-Profile", "saas_api")
        .claims(claims)
}

/// Sends every request at once; the responses in order.
async fn all(requests: Vec<HttpRequest>) -> Vec<HttpResponse> {
    let handles: Vec<_> = requests
        .into_iter()
        .map(|r| tokio::spawn(r.send()))
        .collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("request task"));
    }
    out
}

async fn wait_served(http: &Http, claims: &Value) {
    for _ in 0..100 {
        let r = get(http, "/rpc/llm_budget_status", claims).send().await;
        if r.status == 200 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("PostgREST does not serve saas_api.llm_budget_status");
}

fn request(prompt: &str) -> Value {
    json!({"model": "gpt-4o", "temperature": 0,
           "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]})
}

fn answer(text: &str) -> Value {
    json!({"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
           "usage": {"prompt_tokens": 20, "completion_tokens": 5}})
}

#[tokio::test]
async fn llm_cache_is_tenant_scoped_and_counts_concurrent_gets_exactly() {
    let (http, admin) =
        http_or_skip!("llm_cache_is_tenant_scoped_and_counts_concurrent_gets_exactly");
    let (ta, ua) = tenant(&admin).await;
    let (tb, ub) = tenant(&admin).await;
    let (a, b) = (user(&ua, &ta), user(&ub, &tb));
    wait_served(&http, &a).await;
    let req = request(&format!("roadmap {ta}"));

    // A miss in both tenants, then A stores its answer.
    let path = format!("/rpc/llm_cache_get?request={}", urlencode(&req.to_string()));
    let r = get(&http, &path, &a).send().await;
    assert_eq!(r.expect_status(200).json(), Value::Null, "{}", r.body);
    let r = post(
        &http,
        "/rpc/llm_cache_put",
        &json!({"request": req, "response": answer("A's answer")}),
        &a,
    )
    .send()
    .await;
    assert_eq!(
        r.expect_status(200).json()["cached"],
        json!(true),
        "{}",
        r.body
    );

    // The same request in tenant B never hits A's answer.
    let r = get(&http, &path, &b).send().await;
    assert_eq!(
        r.expect_status(200).json(),
        Value::Null,
        "cross-tenant hit: {}",
        r.body
    );

    // 48 concurrent GETs (READ ONLY transactions) all hit, and all count.
    let n = 48;
    let rs = all((0..n).map(|_| get(&http, &path, &a)).collect()).await;
    for r in &rs {
        assert_eq!(
            r.expect_status(200).json()["choices"][0]["message"]["content"],
            json!("A's answer"),
            "{}",
            r.body
        );
    }
    admin
        .batch_execute("SELECT saas.llm_hits_flush()")
        .await
        .unwrap();
    let hits: i64 = admin
        .query_one(
            "SELECT hit_count FROM saas.llm_cache WHERE tenant_id = $1::text::uuid",
            &[&ta],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hits, n as i64, "hits lost or counted twice");
    // B's lookups were misses of its own; B has no cache rows.
    let rows_b: i64 = admin
        .query_one(
            "SELECT count(*) FROM saas.llm_cache WHERE tenant_id = $1::text::uuid",
            &[&tb],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows_b, 0);
    // Stats through the API: A sees its hits; B sees only its miss.
    let r = get(&http, "/rpc/llm_cache_stats", &a).send().await;
    let rows = r.expect_status(200).rows();
    assert_eq!(rows.len(), 1, "{}", r.body);
    assert_eq!(rows[0]["hits"], json!(n), "{}", r.body);
    assert_eq!(rows[0]["misses"], json!(1), "{}", r.body);
    let r = get(&http, "/rpc/llm_cache_stats", &b).send().await;
    let rows = r.expect_status(200).rows();
    assert_eq!(rows[0]["hits"], json!(0), "{}", r.body);
    assert_eq!(rows[0]["misses"], json!(1), "{}", r.body);
    // The tables themselves are not the API's.
    let r = http
        .get("/llm_cache")
        .header("Accept-Profile", "saas")
        .claims(&a)
        .send()
        .await;
    assert!(!r.is_success(), "saas.llm_cache served: {}", r.body);
}

#[tokio::test]
async fn llm_concurrent_misses_are_single_flighted() {
    let (http, admin) = http_or_skip!("llm_concurrent_misses_are_single_flighted");
    let (t, u) = tenant(&admin).await;
    let a = user(&u, &t);
    wait_served(&http, &a).await;
    let req = request(&format!("single flight {t}"));
    let rs = all((0..16)
        .map(|_| post(&http, "/rpc/llm_cache_lease", &json!({"request": req}), &a))
        .collect())
    .await;
    let statuses: Vec<String> = rs
        .iter()
        .map(|r| {
            r.expect_status(200).json()["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let leases: Vec<&HttpResponse> = rs
        .iter()
        .filter(|r| r.json()["status"] == json!("lease"))
        .collect();
    assert_eq!(leases.len(), 1, "exactly one lease: {statuses:?}");
    assert!(
        statuses.iter().all(|s| s == "lease" || s == "wait"),
        "{statuses:?}"
    );
    let lease_id = leases[0].json()["lease_id"].clone();
    let r = post(
        &http,
        "/rpc/llm_cache_put",
        &json!({"request": req, "response": answer("computed once"), "lease_id": lease_id}),
        &a,
    )
    .send()
    .await;
    assert_eq!(
        r.expect_status(200).json()["cached"],
        json!(true),
        "{}",
        r.body
    );
    let rs = all((0..8)
        .map(|_| post(&http, "/rpc/llm_cache_lease", &json!({"request": req}), &a))
        .collect())
    .await;
    for r in rs {
        assert_eq!(
            r.expect_status(200).json()["status"],
            json!("hit"),
            "{}",
            r.body
        );
    }
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM saas.llm_cache_leases WHERE tenant_id = $1::text::uuid",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the put released the lease");
}

#[tokio::test]
async fn llm_64_concurrent_reservations_never_overspend() {
    let (http, admin) = http_or_skip!("llm_64_concurrent_reservations_never_overspend");
    let (t, u) = tenant(&admin).await;
    let (t2, u2) = tenant(&admin).await;
    let a = user(&u, &t);
    let other = user(&u2, &t2);
    // Worst case of one call: 1000 x 2.5 + 500 x 10 = 7500 micro-units;
    // the budget holds 10 of them and a bit.
    common::shared_setup(
        &admin,
        &format!(
            "SELECT saas.llm_price_set('openai', 'gpt-4o-llm-it', 2500000, 10000000, 1250000, effective_from => '2020-01-01');
             SELECT saas.llm_budget_set('{t}', 78000, period => 'day');"
        ),
    )
    .await
    .unwrap();
    wait_served(&http, &a).await;
    let body = json!({"provider": "openai", "model": "gpt-4o-llm-it", "prompt_tokens": 1000, "max_output_tokens": 500});
    let rs = all((0..64)
        .map(|_| post(&http, "/rpc/llm_budget_reserve", &body, &a))
        .collect())
    .await;
    let ok: Vec<&HttpResponse> = rs.iter().filter(|r| r.status == 200).collect();
    let refused: Vec<&HttpResponse> = rs.iter().filter(|r| r.status == 402).collect();
    assert_eq!(
        ok.len() + refused.len(),
        64,
        "{:?}",
        rs.iter().map(|r| (r.status, &r.body)).collect::<Vec<_>>()
    );
    assert_eq!(ok.len(), 10, "10 x 7500 fit in 78000, an 11th does not");
    let e = refused[0].error();
    assert_eq!(e.code, "PT402");
    let details: Value = serde_json::from_str(&e.details.clone().unwrap()).unwrap();
    assert_eq!(details["reason"], json!("llm_budget_exceeded"));
    assert_eq!(details["limit_micros"], json!(78000));
    assert_eq!(details["requested_micros"], json!(7500));
    assert_eq!(
        details["used_micros"].as_i64().unwrap() + details["reserved_micros"].as_i64().unwrap(),
        75000
    );
    assert!(details["resets_at"].is_string(), "{details}");
    let retry: i64 = refused[0]
        .header("Retry-After")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=86_400 + 3600).contains(&retry), "Retry-After {retry}");
    let reserved: i64 = admin
        .query_one(
            "SELECT sum(reserved_micros)::bigint FROM saas.llm_budget_windows WHERE tenant_id = $1::text::uuid",
            &[&t],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reserved, 75000, "never above the budget");

    // Settling: through the API, idempotent; the other tenant cannot.
    let rid = ok[0].rows()[0]["reservation_id"].clone();
    let settle = json!({"reservation_id": rid, "actual_micros": 2500, "actual_tokens": 1100});
    let r = post(&http, "/rpc/llm_budget_settle", &settle, &other)
        .send()
        .await;
    r.expect_status(400);
    assert_eq!(r.error().code, "22023", "{}", r.body);
    let r = post(&http, "/rpc/llm_budget_settle", &settle, &a)
        .send()
        .await;
    assert_eq!(r.expect_status(200).json(), json!(true));
    let r = post(&http, "/rpc/llm_budget_settle", &settle, &a)
        .send()
        .await;
    assert_eq!(r.expect_status(200).json(), json!(false), "settled once");
    // Usage recorded by A is A's alone.
    let r = post(
        &http,
        "/rpc/llm_record_usage",
        &json!({"provider": "openai", "model": "gpt-4o-llm-it", "prompt_tokens": 100, "completion_tokens": 10,
                "idempotency_key": format!("call-{t}")}),
        &a,
    )
    .send()
    .await;
    r.expect_status(200);
    let r = get(&http, "/rpc/llm_budget_status", &a).send().await;
    let rows = r.expect_status(200).rows();
    assert_eq!(rows.len(), 1, "{}", r.body);
    assert_eq!(rows[0]["used_micros"], json!(2500 + 350), "{}", r.body);
    assert_eq!(rows[0]["reserved_micros"], json!(67500), "{}", r.body);
    let r = get(&http, "/rpc/llm_budget_status", &other).send().await;
    assert_eq!(r.expect_status(200).rows().len(), 0, "{}", r.body);
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM saas.llm_usage WHERE tenant_id = $1::text::uuid",
            &[&t2],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn llm_semantic_cache_same_context_same_tenant_only() {
    let (http, admin) = http_or_skip!("llm_semantic_cache_same_context_same_tenant_only");
    let (ta, ua) = tenant(&admin).await;
    let (tb, ub) = tenant(&admin).await;
    let (tc, uc) = tenant(&admin).await;
    let (a, b, c) = (user(&ua, &ta), user(&ub, &tb), user(&uc, &tc));
    common::shared_setup(
        &admin,
        &format!(
            "SELECT saas.llm_semantic_set('{ta}', 'on', embedding_model => 'e4', dims => 4);
             SELECT saas.llm_semantic_set('{tb}', 'on', 0.9, 'e4', 4);
             SELECT saas.llm_semantic_set('{tc}', 'shadow', 0.9, 'e4', 4);"
        ),
    )
    .await
    .unwrap();
    wait_served(&http, &a).await;
    let ask = |system: &str, q: &str| {
        json!({"model": "gpt-4o", "temperature": 0,
               "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}]})
    };
    let q1 = ask("Be brief.", &format!("What is the capital of France? {ta}"));
    let q2 = ask("Be brief.", "France capital?");
    let e1 = json!([1.0, 0.0, 0.0, 0.0]);
    let near = json!([0.99, 0.05, 0.0, 0.0]);
    // cosine 0.9117 with e1
    let at_091 = json!([0.91, 0.41, 0.0, 0.0]);
    let r = post(
        &http,
        "/rpc/llm_cache_put",
        &json!({"request": q1, "response": answer("Paris"), "embedding": e1}),
        &a,
    )
    .send()
    .await;
    assert_eq!(
        r.expect_status(200).json()["semantic"],
        json!(true),
        "{}",
        r.body
    );
    // A paraphrase of the same context hits, with its similarity.
    let r = post(
        &http,
        "/rpc/llm_cache_lookup",
        &json!({"request": q2, "embedding": near}),
        &a,
    )
    .send()
    .await;
    let hit = r.expect_status(200).json();
    assert_eq!(hit["match"], json!("semantic"), "{}", r.body);
    assert_eq!(
        hit["response"]["choices"][0]["message"]["content"],
        json!("Paris")
    );
    let sim = hit["similarity"].as_f64().unwrap();
    assert!(sim > 0.99 && sim <= 1.0, "{sim}");
    // Another system prompt never hits, even with the identical embedding.
    let r = post(
        &http,
        "/rpc/llm_cache_lookup",
        &json!({"request": ask("Answer in French.", "France capital?"), "embedding": e1}),
        &a,
    )
    .send()
    .await;
    assert_eq!(r.expect_status(200).json(), Value::Null, "{}", r.body);
    // Tenant B (threshold 0.9): A's entry is never a candidate, neither at
    // similarity 1 nor at 0.91.
    for e in [&e1, &at_091] {
        for q in [&q1, &q2] {
            let r = post(
                &http,
                "/rpc/llm_cache_lookup",
                &json!({"request": q, "embedding": e}),
                &b,
            )
            .send()
            .await;
            assert_eq!(
                r.expect_status(200).json(),
                Value::Null,
                "cross-tenant semantic hit: {}",
                r.body
            );
        }
    }
    // Tenant C, shadow: its own entry would be served at 0.91; it records
    // that and serves a miss.
    let r = post(
        &http,
        "/rpc/llm_cache_put",
        &json!({"request": q1, "response": answer("Paris (C)"), "embedding": e1}),
        &c,
    )
    .send()
    .await;
    r.expect_status(200);
    let r = post(
        &http,
        "/rpc/llm_cache_lookup",
        &json!({"request": q2, "embedding": at_091}),
        &c,
    )
    .send()
    .await;
    assert_eq!(r.expect_status(200).json(), Value::Null, "{}", r.body);
    let r = get(&http, "/rpc/llm_semantic_stats", &c).send().await;
    let rows = r.expect_status(200).rows();
    assert_eq!(rows.len(), 1, "{}", r.body);
    assert_eq!(rows[0]["served"], json!(false));
    assert_eq!(rows[0]["hits"], json!(1));
    assert_eq!(rows[0]["similarity_from"], json!(0.91));
    let r = get(&http, "/rpc/llm_cache_stats", &c).send().await;
    let rows = r.expect_status(200).rows();
    assert_eq!(rows[0]["shadow_hits"], json!(1), "{}", r.body);
    assert_eq!(rows[0]["semantic_hits"], json!(0), "{}", r.body);
    // B sees nothing of C's shadow hits; A sees its served hit.
    let r = get(&http, "/rpc/llm_semantic_stats", &b).send().await;
    assert_eq!(r.expect_status(200).rows().len(), 0, "{}", r.body);
    let r = get(&http, "/rpc/llm_cache_stats", &a).send().await;
    assert_eq!(
        r.expect_status(200).rows()[0]["semantic_hits"],
        json!(1),
        "{}",
        r.body
    );
    // Bad input: a 400 with its SQLSTATE and hint.
    for embedding in [json!([1.0, 0.0, 0.0]), json!([0.0, 0.0, 0.0, 0.0])] {
        let r = post(
            &http,
            "/rpc/llm_cache_lookup",
            &json!({"request": q2, "embedding": embedding}),
            &a,
        )
        .send()
        .await;
        r.expect_status(400);
        let e = r.error();
        assert_eq!(e.code, "22023", "{}", r.body);
        assert!(e.hint.is_some(), "{}", r.body);
    }
    // A GET runs read-only: a semantic lookup (which records its hit) says so.
    let path = format!(
        "/rpc/llm_cache_lookup?request={}&embedding={}",
        urlencode(&q2.to_string()),
        urlencode("{0.99,0.05,0,0}")
    );
    let r = get(&http, &path, &a).send().await;
    assert_eq!(r.error().code, "25006", "{}", r.body);
}

#[tokio::test]
async fn llm_shared_scope_only_for_its_writer() {
    let (http, admin) = http_or_skip!("llm_shared_scope_only_for_its_writer");
    let (ta, ua) = tenant(&admin).await;
    let (tb, ub) = tenant(&admin).await;
    let (a, b) = (user(&ua, &ta), user(&ub, &tb));
    // The deployment's service role: PostgREST may switch to it; an
    // operator let it write the shared scope.
    common::shared_setup(
        &admin,
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'llm_it_service') THEN
             CREATE ROLE llm_it_service NOLOGIN;
           END IF;
         END $$;
         GRANT llm_it_service TO authenticator;
         SELECT saas.grant_api('{llm_it_service}');
         SELECT saas.llm_shared_grant('{llm_it_service}');",
    )
    .await
    .unwrap();
    let service = json!({"role": "llm_it_service"});
    wait_served(&http, &a).await;
    let tpl = json!({"model": "gpt-4o", "temperature": 0,
                     "messages": [{"role": "user", "content": format!("Name a project {ta}")}]});
    // A tenant cannot write the shared scope: the poisoning attempt is a 403.
    let r = post(
        &http,
        "/rpc/llm_shared_put",
        &json!({"request": tpl, "response": answer("poison")}),
        &a,
    )
    .send()
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.error().code, "42501", "{}", r.body);
    // Its own put stays its own: not shared.
    let r = post(
        &http,
        "/rpc/llm_cache_put",
        &json!({"request": tpl, "response": answer("A's own")}),
        &a,
    )
    .send()
    .await;
    r.expect_status(200);
    let path = format!(
        "/rpc/llm_shared_get?request={}",
        urlencode(&tpl.to_string())
    );
    let r = get(&http, &path, &b).send().await;
    assert_eq!(
        r.expect_status(200).json(),
        Value::Null,
        "a tenant's entry in the shared scope: {}",
        r.body
    );
    // The service role writes it; every tenant reads it when it asks for
    // the shared scope, and only then.
    let r = post(
        &http,
        "/rpc/llm_shared_put",
        &json!({"request": tpl, "response": answer("Atlas")}),
        &service,
    )
    .send()
    .await;
    assert_eq!(
        r.expect_status(200).json()["scope"],
        json!("shared"),
        "{}",
        r.body
    );
    let exact = format!("/rpc/llm_cache_get?request={}", urlencode(&tpl.to_string()));
    for (who, own) in [(&a, Some("A's own")), (&b, None)] {
        let r = get(&http, &path, who).send().await;
        assert_eq!(
            r.expect_status(200).json()["choices"][0]["message"]["content"],
            json!("Atlas"),
            "{}",
            r.body
        );
        let r = get(&http, &exact, who).send().await;
        let body = r.expect_status(200).json();
        match own {
            Some(text) => assert_eq!(body["choices"][0]["message"]["content"], json!(text)),
            None => assert_eq!(body, Value::Null, "the tenant scope read the shared one"),
        }
    }
    // B's shared hit is in B's stats.
    let r = get(&http, "/rpc/llm_cache_stats", &b).send().await;
    assert_eq!(
        r.expect_status(200).rows()[0]["shared_hits"],
        json!(1),
        "{}",
        r.body
    );
    // The table is no API's to read.
    let r = http
        .get("/llm_cache_shared")
        .header("Accept-Profile", "saas")
        .claims(&a)
        .send()
        .await;
    assert!(!r.is_success(), "saas.llm_cache_shared served: {}", r.body);
}

/// A cluster of the test's own (saas.llm_hit_slots is a postmaster
/// setting), removed when dropped.
struct SmallSlotsCluster {
    port: u16,
}

impl SmallSlotsCluster {
    const NAME: &'static str = "llm-slots";

    fn script() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh")
    }

    fn start(port: u16) -> SmallSlotsCluster {
        let out = std::process::Command::new(Self::script())
            .args(["start", Self::NAME, &port.to_string(), "fresh"])
            .env("PG_EXTRA_CONF", "saas.llm_hit_slots = 64")
            .output()
            .expect("run scripts/cluster.sh");
        assert!(
            out.status.success(),
            "start cluster: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallSlotsCluster { port }
    }

    async fn connect(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=localhost port={} user=postgres dbname=postgres",
                self.port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the small-slots cluster");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl Drop for SmallSlotsCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script())
            .args(["remove", Self::NAME])
            .output();
    }
}

/// The current tenant's lookups, hits, misses and overflow hits (all models).
async fn slot_stats(admin: &Client, tenant: &str) -> (i64, i64, i64, i64) {
    admin
        .batch_execute(&format!(
            "BEGIN; SET LOCAL client_min_messages = error; SELECT saas.set_tenant('{tenant}')"
        ))
        .await
        .unwrap();
    let r = admin
        .query_one(
            "SELECT sum(lookups)::bigint, sum(hits)::bigint, sum(misses)::bigint, sum(overflow_hits)::bigint
             FROM saas.llm_cache_stats()",
            &[],
        )
        .await
        .unwrap();
    admin.batch_execute("COMMIT").await.unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

#[tokio::test]
async fn llm_full_hit_table_never_refuses_a_get_and_totals_stay_exact() {
    if std::env::var(common::URL_ENV).map_or(true, |u| u.is_empty()) {
        eprintln!("SKIPPED llm_full_hit_table_never_refuses_a_get: `make test` runs it");
        return;
    }
    // tests/backup.rs uses BACKUP_PORT and the next; this one the port after.
    let port: u16 = std::env::var("BACKUP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(54334)
        + 2;
    let cluster = SmallSlotsCluster::start(port);
    let admin = cluster.connect().await;
    let t = "0000000c-0000-4000-8000-0000000000c1";
    let keys = 200;
    // 200 cached answers over two models: far more keys than 64 slots.
    admin
        .batch_execute(&format!(
            "SET client_min_messages = warning; CREATE EXTENSION pg_saas CASCADE;
             CREATE ROLE llm_slots_api NOLOGIN; SELECT saas.grant_api('{{llm_slots_api}}');
             INSERT INTO saas.tenants (id, slug, name) VALUES ('{t}', 'slots', 'slots');
             INSERT INTO saas.llm_cache (tenant_id, cache_key, model, request, response, prompt_tokens, completion_tokens,
                                         created_at, expires_at)
             SELECT '{t}', saas.llm_cache_key(r), r ->> 'model', r, '{{\"choices\": []}}', 1, 1, now(), now() + interval '1 day'
             FROM generate_series(1, {keys}) i,
                  LATERAL (SELECT jsonb_build_object('model', CASE WHEN i % 2 = 0 THEN 'm-even' ELSE 'm-odd' END,
                                                     'messages', jsonb_build_array(i)) AS r) q;"
        ))
        .await
        .unwrap_or_else(|e| panic!("setup: {}", common::pg_err(&e)));
    let slots: String = admin
        .query_one("SELECT current_setting('saas.llm_hit_slots')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, "64");
    // 8 clients, each 3 rounds over every key plus 10 misses; each lookup a
    // READ ONLY transaction, as PostgREST runs a GET.
    let (clients, rounds, misses_each) = (8, 3, 10);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = cluster.connect().await;
        tasks.push(tokio::spawn(async move {
            let claims = format!(r#"{{"role": "llm_slots_api", "tenant_id": "{t}"}}"#);
            for round in 0..rounds {
                for i in 1..=keys + misses_each {
                    let model = if i % 2 == 0 { "m-even" } else { "m-odd" };
                    let req = if i <= keys {
                        format!(r#"{{"model": "{model}", "messages": [{i}]}}"#)
                    } else {
                        format!(r#"{{"model": "{model}", "messages": ["miss {c} {round} {i}"]}}"#)
                    };
                    client
                        .batch_execute(&format!(
                            "BEGIN READ ONLY; SET LOCAL ROLE llm_slots_api;
                             SELECT set_config('request.jwt.claims', '{claims}', true);
                             SELECT saas.llm_cache_get('{req}'); COMMIT;"
                        ))
                        .await
                        .unwrap_or_else(|e| panic!("lookup {i}: {}", common::pg_err(&e)));
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    let total = (clients * rounds * (keys + misses_each)) as i64;
    let hits_made = (clients * rounds * keys) as i64;
    // Before the flush: the stats count every lookup; some hits per model only.
    let (lookups, hits, misses, overflow) = slot_stats(&admin, t).await;
    assert_eq!(
        (lookups, hits, misses),
        (total, hits_made, total - hits_made)
    );
    assert!(overflow > 0, "the table never overflowed");
    let flushed: i64 = admin
        .query_one("SELECT saas.llm_hits_flush()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(flushed, total, "flushed lookups");
    let after = slot_stats(&admin, t).await;
    assert_eq!(after, (total, hits_made, total - hits_made, overflow));
    // The entries' own counts plus those counted per model: every hit.
    let kept: i64 = admin
        .query_one("SELECT sum(hit_count)::bigint FROM saas.llm_cache", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept + overflow, hits_made);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
