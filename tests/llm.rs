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
//!   cannot be settled, its usage is not in the other's status.

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
