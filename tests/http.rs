//! Through the real PostgREST 12 that `make test` starts (common::http):
//! signed HS256 JWTs, `db-pre-request = "saas.pre_request"`, schema
//! `http_api`. Each test makes its own table in `http_api` (named after the
//! test, so rules on its path match nothing else), its own tenants and
//! users, then waits until PostgREST's reloaded schema cache serves it.
//!
//! - tenant isolation as a property: random request sequences by two
//!   tenants' users (and one user of both, switching with X-Tenant-Id) never
//!   see, return or change the other tenant's rows;
//! - X-Tenant-Id switching, anonymous requests, a suspended tenant (403), a
//!   header naming a tenant the user is not a member of (403), tokens with a
//!   bad signature or expired (401);
//! - a rate-limit rule: 429 with Retry-After and PostgREST's JSON error body
//!   (code, message, details, hint), on GET and HEAD, in READ ONLY requests;
//! - a plan's daily quota: 402, while saas_api's usage report stays served;
//! - saas_api through PostgREST: health, the workspace list, a change audited
//!   with the request's actor and headers, the audit export as CSV;
//! - GET runs in a READ ONLY transaction, POST to a VOLATILE function does not;
//! - `Prefer: count=planned` on a tenant table: 400; `count=exact` works.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::http::{Http, HttpResponse};
use common::random_uuid;
use serde_json::{json, Value};
use tokio_postgres::Client;

/// The test database and the server, or return (skipped) outside `make test`.
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

/// `http_api.<table>`: a tenant table isolated with `enable_tenancy`, with
/// full DML for `authenticated` (and SELECT for `anon` when `anon_reads`),
/// plus `extra` SQL; then waits until PostgREST serves `/<table>`.
async fn table_fixture(admin: &Client, http: &Http, table: &str, anon_reads: bool, extra: &str) {
    let anon = if anon_reads {
        format!("GRANT SELECT ON http_api.{table} TO anon;")
    } else {
        String::new()
    };
    common::shared_setup(
        admin,
        &format!(
            "DROP TABLE IF EXISTS http_api.{table};
             CREATE TABLE http_api.{table} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 tenant_id uuid NOT NULL, label text NOT NULL);
             SELECT saas.enable_tenancy('http_api.{table}');
             GRANT SELECT, INSERT, UPDATE, DELETE ON http_api.{table} TO authenticated;
             {anon}
             {extra}"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("fixture http_api.{table}: {e:?}"));
    http.wait_until_served(admin, &format!("/{table}")).await;
}

/// A tenant with `plan` and `status`, and its members (role `member`).
async fn tenant(admin: &Client, id: &str, plan: &str, status: &str, members: &[&str]) {
    let members: Vec<(&str, &str)> = members.iter().map(|u| (*u, "member")).collect();
    tenant_with_roles(admin, id, plan, status, &members).await;
}

/// A tenant with `plan` and `status`, and its members as `(user, role)`.
async fn tenant_with_roles(
    admin: &Client,
    id: &str,
    plan: &str,
    status: &str,
    members: &[(&str, &str)],
) {
    let mut sql = format!(
        "INSERT INTO saas.tenants (id, slug, name, plan, status) VALUES ('{id}', 'h-{s}', 'http {s}', '{plan}', '{status}');",
        s = &id[0..8]
    );
    for (user, role) in members {
        sql.push_str(&format!(
            "INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES ('{id}', '{user}', '{role}');"
        ));
    }
    common::shared_setup(admin, &sql)
        .await
        .unwrap_or_else(|e| panic!("tenant {id}: {e:?}"));
}

/// A signed-in user's claims: with a tenant claim, or without (X-Tenant-Id picks).
fn user(sub: &str, tenant: Option<&str>) -> Value {
    match tenant {
        Some(t) => json!({"sub": sub, "role": "authenticated", "tenant_id": t}),
        None => json!({"sub": sub, "role": "authenticated"}),
    }
}

/// The labels of a response's rows, sorted.
fn labels(r: &HttpResponse) -> Vec<String> {
    let mut v: Vec<String> = r
        .rows()
        .iter()
        .map(|row| row["label"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// splitmix64: the property test's sequences are a function of their seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Who sends a request in the property test.
#[derive(Clone, Copy, Debug)]
enum Actor {
    /// a member of tenant 0 whose token names tenant 0
    Claim0,
    /// a member of tenant 1 whose token names tenant 1
    Claim1,
    /// a member of both, no tenant claim, `X-Tenant-Id` of tenant 0 / 1
    Header0,
    Header1,
}

impl Actor {
    fn tenant(self) -> usize {
        match self {
            Actor::Claim0 | Actor::Header0 => 0,
            Actor::Claim1 | Actor::Header1 => 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tenant_isolation_holds_for_random_request_sequences() {
    let (http, admin) = http_or_skip!("http_tenant_isolation_holds_for_random_request_sequences");
    let table = "http_iso_items";
    table_fixture(&admin, &http, table, false, "").await;
    let tenants = [random_uuid(), random_uuid()];
    let (u0, u1, both) = (random_uuid(), random_uuid(), random_uuid());
    // Plans without a row are unlimited: no quota interferes.
    tenant(
        &admin,
        &tenants[0],
        "http-unlimited",
        "active",
        &[&u0, &both],
    )
    .await;
    tenant(
        &admin,
        &tenants[1],
        "http-unlimited",
        "active",
        &[&u1, &both],
    )
    .await;
    let tokens = [
        http.token(&user(&u0, Some(&tenants[0]))),
        http.token(&user(&u1, Some(&tenants[1]))),
        http.token(&user(&both, None)),
    ];

    // What the table holds: id -> (tenant index, label).
    let mut model: BTreeMap<i64, (usize, String)> = BTreeMap::new();
    let budget = Duration::from_secs(
        std::env::var("PG_SAAS_HTTP_PROPERTY_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(50),
    );
    const MAX_SEQUENCES: u64 = 5000;
    const STEPS: usize = 12;
    let start = Instant::now();
    let mut sequences = 0;
    let mut requests = 0;
    while sequences < MAX_SEQUENCES && start.elapsed() < budget {
        let seed = 0x5eed_0000 + sequences;
        let mut rng = Rng(seed);
        for step in 0..STEPS {
            let actor =
                [Actor::Claim0, Actor::Claim1, Actor::Header0, Actor::Header1][rng.below(4)];
            let me = actor.tenant();
            let other = 1 - me;
            let req = |method: &str, path: &str| {
                let r = http.request(method, path);
                match actor {
                    Actor::Claim0 => r.bearer(&tokens[0]),
                    Actor::Claim1 => r.bearer(&tokens[1]),
                    Actor::Header0 => r.bearer(&tokens[2]).tenant(&tenants[0]),
                    Actor::Header1 => r.bearer(&tokens[2]).tenant(&tenants[1]),
                }
            };
            // Any row id (either tenant's, or one that does not exist).
            let any_id = {
                let ids: Vec<i64> = model.keys().copied().collect();
                if ids.is_empty() || rng.below(8) == 0 {
                    1_000_000_000 + rng.below(1000) as i64
                } else {
                    ids[rng.below(ids.len())]
                }
            };
            let mine = |m: &BTreeMap<i64, (usize, String)>| -> Vec<String> {
                let mut v: Vec<String> = m
                    .values()
                    .filter(|(t, _)| *t == me)
                    .map(|(_, l)| l.clone())
                    .collect();
                v.sort();
                v
            };
            let label = format!("s{sequences}-{step}");
            let op = rng.below(9);
            let ctx = format!("seed {seed:#x} step {step} {actor:?} op {op}");
            let r = match op {
                // list: exactly my tenant's rows
                0 | 1 => {
                    let r = req("GET", &format!("/{table}?order=id")).send().await;
                    r.expect_status(200);
                    assert_eq!(labels(&r), mine(&model), "{ctx}: list");
                    r
                }
                // insert into my tenant (the tenant default fills tenant_id)
                2 => {
                    let r = req("POST", &format!("/{table}"))
                        .json(&json!({"label": label}))
                        .prefer("return=representation")
                        .send()
                        .await;
                    r.expect_status(201);
                    let rows = r.rows();
                    assert_eq!(rows.len(), 1, "{ctx}: insert");
                    assert_eq!(rows[0]["tenant_id"], json!(tenants[me]), "{ctx}: insert");
                    model.insert(rows[0]["id"].as_i64().unwrap(), (me, label));
                    r
                }
                // insert naming the other tenant: refused by the policy's WITH CHECK
                3 => {
                    let r = req("POST", &format!("/{table}"))
                        .json(&json!({"label": label, "tenant_id": tenants[other]}))
                        .send()
                        .await;
                    r.expect_status(403);
                    assert_eq!(r.error().code, "42501", "{ctx}: foreign insert");
                    r
                }
                // update one row by id: only when it is mine
                4 => {
                    let r = req("PATCH", &format!("/{table}?id=eq.{any_id}"))
                        .json(&json!({"label": label}))
                        .prefer("return=representation")
                        .send()
                        .await;
                    r.expect_status(200);
                    let hit = matches!(model.get(&any_id), Some((t, _)) if *t == me);
                    assert_eq!(r.rows().len(), usize::from(hit), "{ctx}: patch {any_id}");
                    if hit {
                        model.insert(any_id, (me, label));
                    }
                    r
                }
                // move one of my rows to the other tenant: refused
                5 => {
                    let r = req("PATCH", &format!("/{table}?id=eq.{any_id}"))
                        .json(&json!({"tenant_id": tenants[other]}))
                        .send()
                        .await;
                    let hit = matches!(model.get(&any_id), Some((t, _)) if *t == me);
                    if hit {
                        r.expect_status(403);
                        assert_eq!(r.error().code, "42501", "{ctx}: move");
                    } else {
                        // nothing of mine matched: nothing to check, nothing changed
                        r.expect_status(204);
                    }
                    r
                }
                // delete one row by id: only when it is mine
                6 => {
                    let r = req("DELETE", &format!("/{table}?id=eq.{any_id}"))
                        .prefer("return=representation")
                        .send()
                        .await;
                    r.expect_status(200);
                    let hit = matches!(model.get(&any_id), Some((t, _)) if *t == me);
                    assert_eq!(r.rows().len(), usize::from(hit), "{ctx}: delete {any_id}");
                    if hit {
                        model.remove(&any_id);
                    }
                    r
                }
                // read one row by id: empty unless mine
                7 => {
                    let r = req("GET", &format!("/{table}?id=eq.{any_id}")).send().await;
                    r.expect_status(200);
                    let hit = matches!(model.get(&any_id), Some((t, _)) if *t == me);
                    assert_eq!(r.rows().len(), usize::from(hit), "{ctx}: get {any_id}");
                    r
                }
                // update without a filter: every row of mine, none of the other's
                _ => {
                    let r = req("PATCH", &format!("/{table}"))
                        .json(&json!({"label": label}))
                        .prefer("return=representation")
                        .send()
                        .await;
                    r.expect_status(200);
                    let n = model.values().filter(|(t, _)| *t == me).count();
                    assert_eq!(r.rows().len(), n, "{ctx}: bulk patch");
                    for (t, l) in model.values_mut() {
                        if *t == me {
                            *l = label.clone();
                        }
                    }
                    r
                }
            };
            requests += 1;
            assert!(
                !r.body.contains(&tenants[other]),
                "{ctx}: the response names the other tenant: {}",
                r.body
            );
        }
        // The table as it is (read as superuser, past RLS) is the model:
        // no request changed a row it should not have.
        let rows = admin
            .query(
                &format!("SELECT id, tenant_id::text, label FROM http_api.{table} ORDER BY id"),
                &[],
            )
            .await
            .unwrap();
        let actual: BTreeMap<i64, (usize, String)> = rows
            .iter()
            .map(|row| {
                let t: String = row.get(1);
                let idx = tenants
                    .iter()
                    .position(|x| *x == t)
                    .expect("a known tenant");
                (row.get(0), (idx, row.get(2)))
            })
            .collect();
        assert_eq!(actual, model, "after sequence seed {seed:#x}");
        sequences += 1;
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "http tenant isolation: {sequences} sequences, {requests} requests in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(sequences >= 5, "too few sequences ran: {sequences}");
}

#[tokio::test]
async fn http_tenant_header_anonymous_suspended_and_non_members() {
    let (http, admin) = http_or_skip!("http_tenant_header_anonymous_suspended_and_non_members");
    let table = "http_hdr_items";
    table_fixture(&admin, &http, table, true, "").await;
    let (a, b, s) = (random_uuid(), random_uuid(), random_uuid());
    let (both, only_a) = (random_uuid(), random_uuid());
    tenant(&admin, &a, "http-unlimited", "active", &[&both, &only_a]).await;
    tenant(&admin, &b, "http-unlimited", "active", &[&both]).await;
    tenant(&admin, &s, "http-unlimited", "suspended", &[&both]).await;
    admin
        .batch_execute(&format!(
            "INSERT INTO http_api.{table} (tenant_id, label) VALUES
               ('{a}', 'a1'), ('{a}', 'a2'), ('{b}', 'b1'), ('{s}', 's1')"
        ))
        .await
        .unwrap();
    let path = format!("/{table}?order=id");
    let token = http.token(&user(&both, None));

    // One user, two tenants: the header picks the tenant.
    let r = http.get(&path).bearer(&token).tenant(&a).send().await;
    assert_eq!(labels(r.expect_status(200)), ["a1", "a2"]);
    let r = http.get(&path).bearer(&token).tenant(&b).send().await;
    assert_eq!(labels(r.expect_status(200)), ["b1"]);
    // No claim and no header: no tenant, and the policy shows nothing.
    let r = http.get(&path).bearer(&token).send().await;
    assert_eq!(labels(r.expect_status(200)), Vec::<String>::new());

    // Anonymous (no token): PostgREST's anon role, no tenant, no rows.
    let r = http.get(&path).send().await;
    assert_eq!(labels(r.expect_status(200)), Vec::<String>::new());
    // Anonymous with a header: only signed-in users may pick a tenant
    // (42501, which PostgREST answers 401 for anonymous requests).
    let r = http.get(&path).tenant(&a).send().await;
    r.expect_status(401);
    assert_eq!(r.error().code, "42501");

    // A suspended tenant: 403, whether by header or by claim.
    let r = http.get(&path).bearer(&token).tenant(&s).send().await;
    r.expect_status(403);
    assert_eq!(r.error().code, "42501");
    let r = http.get(&path).claims(&user(&both, Some(&s))).send().await;
    r.expect_status(403);
    // A header naming a tenant the user is not a member of: 403.
    let r = http
        .get(&path)
        .claims(&user(&only_a, None))
        .tenant(&b)
        .send()
        .await;
    r.expect_status(403);
    assert_eq!(r.error().code, "42501");
    // No row of B's: its label as a JSON string (the message names the
    // tenant's random uuid, which may hold the letters "b1").
    assert!(!r.body.contains("\"b1\""), "{}", r.body);
    // A token naming a tenant its user has no membership in: 403.
    let r = http
        .get(&path)
        .claims(&user(&only_a, Some(&b)))
        .send()
        .await;
    r.expect_status(403);

    // PostgREST checks the signature and the expiry before any SQL runs.
    let forged =
        common::http::sign_hs256(b"not-the-secret-not-the-secret-00", &user(&both, Some(&a)));
    let r = http.get(&path).bearer(&forged).send().await;
    r.expect_status(401);
    assert!(r.error().code.starts_with("PGRST"), "{}", r.body);
    let expired =
        json!({"sub": both, "role": "authenticated", "tenant_id": a, "exp": 1_000_000_000});
    let r = http.get(&path).claims(&expired).send().await;
    r.expect_status(401);
}

#[tokio::test]
async fn http_rate_limit_answers_429_with_retry_after_and_a_json_error() {
    let (http, admin) =
        http_or_skip!("http_rate_limit_answers_429_with_retry_after_and_a_json_error");
    let table = "http_rl_items";
    table_fixture(&admin, &http, table, false, "").await;
    let (t, u, other) = (random_uuid(), random_uuid(), random_uuid());
    tenant(&admin, &t, "http-unlimited", "active", &[&u, &other]).await;
    // Set after the schema wait, whose anonymous requests would match it.
    let rule: i64 = admin
        .query_one(
            &format!("SELECT saas.rate_limit_rule_set('/{table}', 2, '1 hour', scope => 'user', method => 'GET')"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let token = http.token(&user(&u, Some(&t)));
    let path = format!("/{table}");

    // GET runs READ ONLY; the limit still counts (shared memory).
    for remaining in ["1", "0"] {
        let r = http.get(&path).bearer(&token).send().await;
        r.expect_status(200);
        assert_eq!(r.header("RateLimit-Limit"), Some("2"));
        assert_eq!(r.header("RateLimit-Remaining"), Some(remaining));
    }
    let r = http.get(&path).bearer(&token).send().await;
    r.expect_status(429);
    let retry: u64 = r
        .header("Retry-After")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    // 2 per hour: the next one fits half an hour after the first.
    assert!((1700..=1800).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.header("RateLimit-Remaining"), Some("0"));
    assert_eq!(
        r.header("Content-Type")
            .map(|c| c.starts_with("application/json")),
        Some(true)
    );
    let e = r.error();
    assert_eq!(e.code, "PT429");
    assert!(e.message.starts_with("rate limit exceeded"), "{}", r.body);
    // details names the rule: a JSON object, or (before 0.2.0's JSON
    // details) a sentence.
    let details = e.details.expect("details");
    match serde_json::from_str::<Value>(&details) {
        Ok(d) => {
            assert_eq!(d["rule_id"].as_i64(), Some(rule), "{details}");
            assert_eq!(d["limit"].as_i64(), Some(2), "{details}");
            assert_eq!(d["remaining"].as_i64(), Some(0), "{details}");
        }
        Err(_) => assert!(
            details.contains(&format!("rule {rule}")) && details.contains("2 per 1 hour"),
            "{details}"
        ),
    }
    let hint = e.hint.expect("hint");
    assert!(hint.contains(&format!("{retry} seconds")), "{hint}");

    // HEAD is the same read: the GET rule refuses it too.
    http.head(&path)
        .bearer(&token)
        .send()
        .await
        .expect_status(429);
    // The rule is per user and per GET: another user reads, a POST writes.
    http.get(&path)
        .claims(&user(&other, Some(&t)))
        .send()
        .await
        .expect_status(200);
    http.post(&path, &json!({"label": "x"}))
        .bearer(&token)
        .send()
        .await
        .expect_status(201);
}

#[tokio::test]
async fn http_daily_quota_answers_402() {
    let (http, admin) = http_or_skip!("http_daily_quota_answers_402");
    let table = "http_quota_items";
    table_fixture(&admin, &http, table, false, "").await;
    let (t, u) = (random_uuid(), random_uuid());
    let plan = format!("http-tiny-{}", &t[0..8]);
    admin
        .execute(
            "INSERT INTO saas.plans (plan, api_calls_per_day) VALUES ($1, 3)",
            &[&plan],
        )
        .await
        .unwrap();
    tenant(&admin, &t, &plan, "active", &[&u]).await;
    let token = http.token(&user(&u, Some(&t)));
    let path = format!("/{table}");

    // Three calls a day, reads and writes alike.
    http.get(&path)
        .bearer(&token)
        .send()
        .await
        .expect_status(200);
    http.post(&path, &json!({"label": "x"}))
        .bearer(&token)
        .send()
        .await
        .expect_status(201);
    http.get(&path)
        .bearer(&token)
        .send()
        .await
        .expect_status(200);
    let r = http.get(&path).bearer(&token).send().await;
    r.expect_status(402);
    assert_eq!(r.error().code, "PT402");
    let retry: u64 = r
        .header("Retry-After")
        .expect("Retry-After until midnight UTC")
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry), "Retry-After {retry}");
    let details = r.error().details.unwrap_or_default();
    assert!(details.contains(&plan), "the plan in details: {details}");
    // Refused writes are refused too, and write nothing.
    http.post(&path, &json!({"label": "y"}))
        .bearer(&token)
        .send()
        .await
        .expect_status(402);
    let n: i64 = admin
        .query_one(&format!("SELECT count(*) FROM http_api.{table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // The usage report stays served over the quota (a built-in quota
    // exemption) and shows the calls against the plan's limit.
    let r = http
        .get("/rpc/usage_report")
        .header("Accept-Profile", "saas_api")
        .bearer(&token)
        .send()
        .await;
    let rows = r.expect_status(200).rows();
    let calls = rows
        .iter()
        .find(|row| row["metric"] == json!("api_calls"))
        .unwrap_or_else(|| panic!("api_calls in {}", r.body));
    assert_eq!(calls["daily_limit"].as_i64(), Some(3), "{}", r.body);
    assert!(calls["used"].as_i64().unwrap() >= 3, "{}", r.body);
}

#[tokio::test]
async fn http_saas_api_serves_health_memberships_and_the_audit_export() {
    let (http, admin) =
        http_or_skip!("http_saas_api_serves_health_memberships_and_the_audit_export");
    let table = "http_audit_items";
    table_fixture(
        &admin,
        &http,
        table,
        false,
        "SELECT saas.audit_enable('http_api.http_audit_items');",
    )
    .await;
    let (a, b) = (random_uuid(), random_uuid());
    let (owner, member) = (random_uuid(), random_uuid());
    tenant_with_roles(
        &admin,
        &a,
        "http-unlimited",
        "active",
        &[(&owner, "owner"), (&member, "member")],
    )
    .await;
    tenant_with_roles(
        &admin,
        &b,
        "http-unlimited",
        "active",
        &[(&member, "viewer")],
    )
    .await;
    let saas_api = |r: common::http::HttpRequest| r.header("Accept-Profile", "saas_api");

    // GET /rpc/health, anonymous.
    let r = saas_api(http.get("/rpc/health")).send().await;
    assert_eq!(
        r.expect_status(200).json()["status"],
        json!("ok"),
        "{}",
        r.body
    );

    // The workspace list of a user of two tenants, with roles; no claim needed.
    let r = saas_api(http.get("/rpc/my_memberships?order=slug"))
        .claims(&user(&member, None))
        .send()
        .await;
    let mut got: Vec<(String, String)> = r
        .expect_status(200)
        .rows()
        .iter()
        .map(|m| {
            (
                m["tenant_id"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        (a.clone(), "member".to_string()),
        (b.clone(), "viewer".to_string()),
    ];
    want.sort();
    assert_eq!(got, want);

    // A change through PostgREST is audited with the request's actor and
    // headers, as PostgREST set them.
    let request_id = random_uuid();
    http.post(&format!("/{table}"), &json!({"label": "audited"}))
        .claims(&user(&owner, Some(&a)))
        .header("User-Agent", "pg_saas-http-test/1")
        .header("X-Request-Id", &request_id)
        .send()
        .await
        .expect_status(201);
    let row = admin
        .query_one(
            "SELECT actor_id::text, actor_role, operation, user_agent, request_method, request_path, tenant_id::text
             FROM saas.audit_log WHERE request_id = $1",
            &[&request_id],
        )
        .await
        .expect("one audit row for the request");
    let got: (String, String, String, String, String, String, String) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    );
    assert_eq!(
        got,
        (
            owner.clone(),
            "authenticated".into(),
            "INSERT".into(),
            "pg_saas-http-test/1".into(),
            "POST".into(),
            format!("/{table}"),
            a.clone()
        )
    );

    // The export, as a CSV file, for the tenant's owner.
    let export = "/rpc/audit_export?p_from=2000-01-01T00:00:00Z&p_to=3000-01-01T00:00:00Z";
    let r = saas_api(http.get(export))
        .claims(&user(&owner, Some(&a)))
        .header("Accept", "text/csv")
        .send()
        .await;
    r.expect_status(200);
    assert!(
        r.header("Content-Type")
            .unwrap_or_default()
            .starts_with("text/csv"),
        "{:?}",
        r.headers
    );
    let mut lines = r.body.lines();
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("id,logged_at,tenant_id,"),
        "{}",
        r.body
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{}", r.body);
    assert!(
        rows[0].contains(&request_id) && !r.body.contains(&b),
        "{}",
        r.body
    );
    // Not for a member: 403.
    let r = saas_api(http.get(export))
        .claims(&user(&member, Some(&a)))
        .header("Accept", "text/csv")
        .send()
        .await;
    r.expect_status(403);
    assert_eq!(r.error().code, "42501");
}

#[tokio::test]
async fn http_get_runs_read_only_and_post_to_volatile_does_not() {
    let (http, admin) = http_or_skip!("http_get_runs_read_only_and_post_to_volatile_does_not");
    let table = "http_ro_items";
    table_fixture(
        &admin,
        &http,
        table,
        false,
        "CREATE OR REPLACE FUNCTION http_api.http_ro_mode() RETURNS text
           LANGUAGE sql STABLE AS $$ SELECT current_setting('transaction_read_only') $$;
         CREATE OR REPLACE FUNCTION http_api.http_ro_touch() RETURNS text
           LANGUAGE sql VOLATILE AS $$ SELECT current_setting('transaction_read_only') $$;
         GRANT EXECUTE ON FUNCTION http_api.http_ro_mode(), http_api.http_ro_touch() TO authenticated;",
    )
    .await;
    http.wait_until_served(&admin, "/rpc/http_ro_touch").await;
    let (t, u) = (random_uuid(), random_uuid());
    tenant(&admin, &t, "http-unlimited", "active", &[&u]).await;
    let token = http.token(&user(&u, Some(&t)));

    let r = http.get("/rpc/http_ro_mode").bearer(&token).send().await;
    assert_eq!(r.expect_status(200).json(), json!("on"), "GET: READ ONLY");
    let r = http
        .post("/rpc/http_ro_mode", &json!({}))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(
        r.expect_status(200).json(),
        json!("on"),
        "POST to STABLE: READ ONLY"
    );
    let r = http
        .post("/rpc/http_ro_touch", &json!({}))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(
        r.expect_status(200).json(),
        json!("off"),
        "POST to VOLATILE: READ WRITE"
    );
    // A GET on a table cannot write through it either: the usage counter of a
    // read lives in shared memory, and the read itself is served.
    http.get(&format!("/{table}"))
        .bearer(&token)
        .send()
        .await
        .expect_status(200);
}

#[tokio::test]
async fn http_prefer_count_planned_is_refused_on_tenant_tables() {
    let (http, admin) = http_or_skip!("http_prefer_count_planned_is_refused_on_tenant_tables");
    let table = "http_count_items";
    table_fixture(&admin, &http, table, false, "").await;
    let (t, other, u) = (random_uuid(), random_uuid(), random_uuid());
    tenant(&admin, &t, "http-unlimited", "active", &[&u]).await;
    tenant(&admin, &other, "http-unlimited", "active", &[]).await;
    admin
        .batch_execute(&format!(
            "INSERT INTO http_api.{table} (tenant_id, label)
               SELECT '{t}'::uuid, 'mine' || g FROM generate_series(1, 2) g
               UNION ALL SELECT '{other}'::uuid, 'theirs' || g FROM generate_series(1, 50) g;
             ANALYZE http_api.{table};"
        ))
        .await
        .unwrap();
    let token = http.token(&user(&u, Some(&t)));
    let path = format!("/{table}");

    for count in ["planned", "estimated"] {
        let r = http
            .get(&path)
            .bearer(&token)
            .prefer(&format!("count={count}"))
            .send()
            .await;
        r.expect_status(400);
        let e = r.error();
        assert_eq!(e.code, "PT400", "{}", r.body);
        assert!(e.hint.unwrap_or_default().contains("count=exact"));
    }
    // count=exact counts the rows the tenant sees.
    let r = http
        .get(&path)
        .bearer(&token)
        .prefer("count=exact")
        .send()
        .await;
    r.expect_status(200);
    assert_eq!(r.header("Content-Range"), Some("0-1/2"));
}
