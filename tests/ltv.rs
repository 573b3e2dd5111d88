//! ltv against a live cluster:
//!
//! - random mixed DML (bulk inserts, refunds, updates moving payments to
//!   other customers and days across partitions, deletes) by concurrent
//!   writers on a partitioned payments table leaves the ledger and the daily
//!   series equal to a full recomputation (`ltv_reconcile` finds nothing and
//!   an independent GROUP BY agrees);
//! - the same, with two compactions (`ltv_compact`) racing the writers and
//!   each other, and some statements naming a partition directly;
//! - writers never wait on each other (they only append to the pending
//!   log), not even for one customer, nor for a compaction;
//! - `ltv_summary` equals `lifetimes.utils.summary_data_from_transaction_data`
//!   on the CDNOW sample lifetimes ships (fixture tests/ltv/cdnow_summary.csv,
//!   written by tests/ltv/lifetimes_fixture.py);
//! - a rescue (rows moved out of a default partition) run by a maintenance
//!   role that is not a superuser leaves the ledger exact;
//! - tenant isolation of the ledger, the metrics and the cohorts through the
//!   real PostgREST (saas_api), admins only.

mod common;

use common::http::Http;
use common::random_uuid;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// splitmix64: each writer's statements are a function of its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn connect(test: &str) -> Option<Client> {
    common::connect(test).await
}

fn pg_err(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {} ({:?})", d.code().code(), d.message(), d.hint()),
        None => e.to_string(),
    }
}

/// A partitioned payments table in its own schema, tracked.
async fn payments_fixture(admin: &Client, schema: &str, tenants: &[&str]) {
    let mut sql = format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE;
         CREATE SCHEMA {schema};
         CREATE TABLE {schema}.payments (
           id bigint GENERATED ALWAYS AS IDENTITY,
           tenant_id uuid NOT NULL,
           customer_id text NOT NULL,
           amount numeric(12, 2) NOT NULL,
           kind text NOT NULL DEFAULT 'payment',
           paid_at timestamptz NOT NULL,
           PRIMARY KEY (tenant_id, id, paid_at)
         ) PARTITION BY RANGE (paid_at);
         CREATE TABLE {schema}.payments_01 PARTITION OF {schema}.payments FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
         CREATE TABLE {schema}.payments_02 PARTITION OF {schema}.payments FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
         CREATE TABLE {schema}.payments_03 PARTITION OF {schema}.payments FOR VALUES FROM ('2026-03-01') TO ('2026-04-01');
         CREATE TABLE {schema}.payments_rest PARTITION OF {schema}.payments DEFAULT;
         SELECT saas.ltv_track('{schema}.payments', kind_column => 'kind', occurred_at_column => 'paid_at');"
    );
    for t in tenants {
        sql.push_str(&format!(
            "INSERT INTO saas.tenants (id, slug, name) VALUES ('{t}', 'ltv-{s}', 'ltv {s}');",
            s = &t[0..8]
        ));
    }
    common::shared_setup(admin, &sql)
        .await
        .unwrap_or_else(|e| panic!("fixture {schema}: {}", pg_err(&e)));
}

/// One random statement of a writer.
fn random_statement(rng: &mut Rng, schema: &str, tenants: &[String], customers: u64) -> String {
    let t = &tenants[rng.below(tenants.len() as u64) as usize];
    let c = rng.below(customers);
    let day = rng.below(100);
    match rng.below(10) {
        // a bulk insert of 1-40 rows, a few refunds among them
        0..=4 => {
            let n = 1 + rng.below(40);
            let seed = rng.next() % 1_000_000;
            format!(
                "INSERT INTO {schema}.payments (tenant_id, customer_id, amount, kind, paid_at)
                 SELECT '{t}', 'c' || ((g * 7 + {seed}) % {customers}), ((g * 13 + {seed}) % 5000) / 100.0 + 1,
                        CASE WHEN (g + {seed}) % 9 = 0 THEN 'refund' ELSE 'payment' END,
                        timestamptz '2026-01-01 00:00+00' + ((g * 31 + {seed}) % 2400) * interval '1 hour'
                 FROM generate_series(1, {n}) g"
            )
        }
        // move payments to another customer and day (maybe another month)
        5 | 6 => format!(
            "UPDATE {schema}.payments SET customer_id = 'c{}', paid_at = paid_at + interval '{} days'
             WHERE tenant_id = '{t}' AND customer_id = 'c{c}' AND paid_at < timestamptz '2026-01-01' + interval '{day} days'",
            rng.below(customers),
            rng.below(45)
        ),
        // change amounts, turn payments into refunds; on a partition
        // directly at times (its own statement triggers count it)
        7 => format!(
            "UPDATE {schema}.{} SET amount = amount + 1, kind = CASE WHEN id % 4 = 0 THEN 'refund' ELSE kind END
             WHERE tenant_id = '{t}' AND customer_id = 'c{c}'",
            ["payments", "payments_01", "payments_02"][rng.below(3) as usize]
        ),
        // delete some, through the parent or a partition
        _ => format!(
            "DELETE FROM {schema}.{} WHERE tenant_id = '{t}' AND customer_id = 'c{c}' AND id % 3 = {}",
            ["payments", "payments_01", "payments_rest"][rng.below(3) as usize],
            rng.below(3)
        ),
    }
}

#[tokio::test]
async fn concurrent_mixed_dml_leaves_the_ledger_equal_to_a_recomputation() {
    let Some(admin) =
        connect("concurrent_mixed_dml_leaves_the_ledger_equal_to_a_recomputation").await
    else {
        return;
    };
    let schema = "ltv_it_mixed";
    let tenants: Vec<String> = (0..2).map(|_| random_uuid()).collect();
    payments_fixture(
        &admin,
        schema,
        &tenants.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;

    let mut writers = Vec::new();
    for w in 0..4u64 {
        let tenants = tenants.clone();
        writers.push(tokio::spawn(async move {
            let client = connect("writer").await.unwrap();
            let mut rng = Rng(0x5eed_0000 + w);
            let mut done = 0;
            let mut retried = 0;
            while done < 60 {
                let sql = random_statement(&mut rng, schema, &tenants, 25);
                match client.batch_execute(&sql).await {
                    Ok(()) => done += 1,
                    // Two writers updating the same payments rows in another
                    // order (40P01), or one moving a row to another partition
                    // under the other (40001): the statement rolls back
                    // whole, as a client would retry it; try another.
                    Err(e)
                        if e.code()
                            .is_some_and(|c| matches!(c.code(), "40P01" | "40001")) =>
                    {
                        retried += 1
                    }
                    Err(e) => panic!("writer {w}: {sql}: {}", pg_err(&e)),
                }
            }
            retried
        }));
    }
    for w in writers {
        w.await.unwrap();
    }

    // ltv_reconcile finds nothing, and a GROUP BY of the payments agrees.
    assert_ledger_exact(&admin, schema).await;
    let rows: i64 = admin
        .query_one(&format!("SELECT count(*) FROM {schema}.payments"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        rows > 100,
        "the writers left too few rows ({rows}) to prove much"
    );

    // A rebuild of a correct ledger changes nothing; untrack removes it.
    admin
        .batch_execute(&format!("CALL saas.ltv_rebuild('{schema}.payments', 7)"))
        .await
        .unwrap();
    let after: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM saas.ltv_reconcile('{schema}.payments')"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, 0);
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM saas.ltv_ledger WHERE tenant_id = ANY ($1::text[]::uuid[])",
            &[&tenants],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "dropping the tracked table left ledger rows");
}

/// The ledger of `schema`.payments equals a recomputation: ltv_reconcile
/// finds nothing, and a GROUP BY of the payments agrees.
async fn assert_ledger_exact(admin: &Client, schema: &str) {
    let mismatches = admin
        .query(
            &format!("SELECT r::text FROM saas.ltv_reconcile('{schema}.payments') r"),
            &[],
        )
        .await
        .unwrap();
    assert!(
        mismatches.is_empty(),
        "ledger differs from the recomputation: {:?}",
        mismatches
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    );
    let diff: i64 = admin
        .query_one(
            &format!(
                "WITH want AS (
                   SELECT tenant_id, customer_id, 'XXX'::text AS currency,
                          sum(amount) FILTER (WHERE kind <> 'refund') AS gross,
                          coalesce(sum(abs(amount)) FILTER (WHERE kind = 'refund'), 0) AS refunds,
                          count(*) FILTER (WHERE kind <> 'refund') AS payments,
                          min((paid_at AT TIME ZONE 'UTC')::date) FILTER (WHERE kind <> 'refund') AS f,
                          max((paid_at AT TIME ZONE 'UTC')::date) FILTER (WHERE kind <> 'refund') AS l
                   FROM {schema}.payments GROUP BY 1, 2),
                 have AS (SELECT l.tenant_id, l.customer_id, l.currency, nullif(l.gross, 0) AS gross, l.refunds, l.payments,
                                 l.first_payment_on AS f, l.last_payment_on AS l
                          FROM saas.ltv_ledger l JOIN saas.ltv_sources s USING (source_id)
                          WHERE s.relid = '{schema}.payments'::regclass)
                 SELECT count(*) FROM want w FULL JOIN have h USING (tenant_id, customer_id, currency)
                 WHERE (w.gross, w.refunds, w.payments, w.f, w.l) IS DISTINCT FROM (h.gross, h.refunds, h.payments, h.f, h.l)"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("compare: {}", pg_err(&e)))
        .get(0);
    assert_eq!(
        diff, 0,
        "ledger rows differ from a GROUP BY of the payments"
    );
}

#[tokio::test]
async fn compactions_racing_writers_and_each_other_leave_the_ledger_exact() {
    let Some(admin) =
        connect("compactions_racing_writers_and_each_other_leave_the_ledger_exact").await
    else {
        return;
    };
    let schema = "ltv_it_compact";
    let tenants: Vec<String> = (0..2).map(|_| random_uuid()).collect();
    payments_fixture(
        &admin,
        schema,
        &tenants.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut compactors = Vec::new();
    // Three compactions at once: each folds a part of the log, in any order
    // (a deletion may be folded before the insertion it undoes).
    for _ in 0..3 {
        let done = done.clone();
        compactors.push(tokio::spawn(async move {
            let client = connect("compactor").await.unwrap();
            let (mut folded, mut runs) = (0i64, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) || runs < 3 {
                match client
                    .query_one(
                        &format!("SELECT saas.ltv_compact('{schema}.payments')"),
                        &[],
                    )
                    .await
                {
                    Ok(r) => folded += r.get::<_, i64>(0),
                    // A deadlock with the other compaction rolls this one
                    // back whole (its pending rows stay); try again.
                    Err(e) if e.code().is_some_and(|c| c.code() == "40P01") => {}
                    Err(e) => panic!("compaction: {}", pg_err(&e)),
                }
                runs += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            folded
        }));
    }
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let tenants = tenants.clone();
        writers.push(tokio::spawn(async move {
            let client = connect("writer").await.unwrap();
            let mut rng = Rng(0xc0_0000 + w);
            let mut done = 0;
            while done < 100 {
                let sql = random_statement(&mut rng, schema, &tenants, 25);
                match client.batch_execute(&sql).await {
                    Ok(()) => done += 1,
                    Err(e)
                        if e.code()
                            .is_some_and(|c| matches!(c.code(), "40P01" | "40001")) => {}
                    Err(e) => panic!("writer {w}: {sql}: {}", pg_err(&e)),
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    // Exact with whatever is still pending, then after the last compactions.
    assert_ledger_exact(&admin, schema).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut folded = 0;
    for c in compactors {
        folded += c.await.unwrap();
    }
    assert!(folded > 0, "the compactions folded nothing");
    admin
        .query_one(
            &format!("SELECT saas.ltv_compact('{schema}.payments')"),
            &[],
        )
        .await
        .unwrap();
    let pending: i64 = admin
        .query_one(
            &format!("SELECT count(*) FROM saas.ltv_pending p JOIN saas.ltv_sources s USING (source_id) WHERE s.relid = '{schema}.payments'::regclass"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        pending, 0,
        "a compaction after the writers left pending rows"
    );
    assert_ledger_exact(&admin, schema).await;
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn writers_never_wait_on_each_other_nor_on_compaction() {
    let Some(admin) = connect("writers_never_wait_on_each_other_nor_on_compaction").await else {
        return;
    };
    let schema = "ltv_it_wait";
    let tenant = random_uuid();
    payments_fixture(&admin, schema, &[&tenant]).await;
    let insert = |c: &str| {
        format!(
            "INSERT INTO {schema}.payments (tenant_id, customer_id, amount, paid_at) VALUES ('{tenant}', '{c}', 10, '2026-01-05 10:00+00')"
        )
    };
    admin.batch_execute(&insert("x")).await.unwrap();
    admin.batch_execute(&insert("y")).await.unwrap();

    let a = connect("writer a").await.unwrap();
    let b = connect("writer b").await.unwrap();
    a.batch_execute(&format!("BEGIN; {}", insert("x")))
        .await
        .unwrap();
    // Another customer, and the same customer and day: no wait at all
    // (each statement appends its own pending row).
    for c in ["y", "x"] {
        let start = Instant::now();
        b.batch_execute(&format!(
            "SET lock_timeout = '2s'; BEGIN; {}; COMMIT;",
            insert(c)
        ))
        .await
        .unwrap_or_else(|e| panic!("a writer to customer {c} waited: {}", pg_err(&e)));
        assert!(start.elapsed() < Duration::from_secs(1));
    }
    // A compaction folds what has committed, without waiting for writer a.
    let start = Instant::now();
    b.batch_execute(&format!(
        "SET lock_timeout = '2s'; SELECT saas.ltv_compact('{schema}.payments');"
    ))
    .await
    .unwrap_or_else(|e| panic!("a compaction waited for a writer: {}", pg_err(&e)));
    assert!(start.elapsed() < Duration::from_secs(1));
    a.batch_execute("COMMIT").await.unwrap();
    let n: i64 = admin
        .query_one(
            "SELECT payments FROM saas.ltv_ledger WHERE tenant_id = $1::text::uuid AND customer_id = 'x'",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    assert_ledger_exact(&admin, schema).await;
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test]
async fn summary_equals_lifetimes_on_the_cdnow_sample() {
    let Some(admin) = connect("summary_equals_lifetimes_on_the_cdnow_sample").await else {
        return;
    };
    let tenant = random_uuid();
    common::shared_setup(
        &admin,
        &format!(
            "DROP SCHEMA IF EXISTS ltv_it_cdnow CASCADE;
             CREATE SCHEMA ltv_it_cdnow;
             CREATE TABLE ltv_it_cdnow.orders (tenant_id uuid NOT NULL, customer text NOT NULL,
                                               day date NOT NULL, cds int, spent numeric NOT NULL);
             SELECT saas.ltv_track('ltv_it_cdnow.orders', 'customer', 'spent', 'day');
             INSERT INTO saas.tenants (id, slug, name) VALUES ('{tenant}', 'ltv-cdnow-{s}', 'cdnow');",
            s = &tenant[0..8]
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("fixture: {}", pg_err(&e)));
    // The transactions file lifetimes ships, in batches of 1000 rows.
    let data = include_str!("ltv/CDNOW_sample.txt");
    let rows: Vec<String> = data
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("('{tenant}', '{}', '{}', {}, {})", f[0], f[2], f[3], f[4])
        })
        .collect();
    for chunk in rows.chunks(1000) {
        admin
            .batch_execute(&format!(
                "INSERT INTO ltv_it_cdnow.orders VALUES {}",
                chunk.join(",")
            ))
            .await
            .unwrap();
    }
    let want = include_str!("ltv/cdnow_summary.csv");
    let mut checked = 0;
    for period in [1, 7] {
        // set_tenant() scopes the rest of the transaction.
        admin
            .batch_execute(&format!("BEGIN; SELECT saas.set_tenant('{tenant}')"))
            .await
            .unwrap();
        let got = admin
            .query(
                &format!(
                    "SELECT customer_id, frequency, recency::float8, \"T\"::float8, monetary_value::float8
                     FROM saas.ltv_summary('{period} days', '1998-06-30 12:00+00')
                     ORDER BY customer_id"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("summary: {}", pg_err(&e)));
        admin.batch_execute("COMMIT").await.unwrap();
        let expected: Vec<Vec<&str>> = want
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f[0] == period.to_string())
            .collect();
        assert_eq!(got.len(), expected.len(), "customers with period {period}");
        for (row, e) in got.iter().zip(&expected) {
            let close = |a: f64, b: &str| {
                let b: f64 = b.parse().unwrap();
                (a - b).abs() <= 1e-9 * b.abs().max(1.0)
            };
            let id: String = row.get(0);
            assert_eq!(id, e[1]);
            assert_eq!(
                row.get::<_, i64>(1),
                e[2].parse::<i64>().unwrap(),
                "frequency of {id}"
            );
            assert!(
                close(row.get(2), e[3]),
                "recency of {id}: {} vs {}",
                row.get::<_, f64>(2),
                e[3]
            );
            assert!(
                close(row.get(3), e[4]),
                "T of {id}: {} vs {}",
                row.get::<_, f64>(3),
                e[4]
            );
            assert!(
                close(row.get(4), e[5]),
                "monetary value of {id}: {} vs {}",
                row.get::<_, f64>(4),
                e[5]
            );
            checked += 1;
        }
    }
    assert!(checked > 4000, "checked {checked} rows");
    admin
        .batch_execute("DROP SCHEMA ltv_it_cdnow CASCADE")
        .await
        .unwrap();
}

/// Through the real PostgREST: each tenant's admin reads its own ledger,
/// metrics and cohorts only; a member reads no ledger; GET works (STABLE
/// functions run READ ONLY).
#[tokio::test]
async fn http_tenant_isolation_of_ledger_metrics_and_cohorts() {
    let Some(http) = Http::from_env("http_tenant_isolation_of_ledger_metrics_and_cohorts") else {
        return;
    };
    let Some(admin) = connect("http_tenant_isolation_of_ledger_metrics_and_cohorts").await else {
        return;
    };
    let (ta, tb) = (random_uuid(), random_uuid());
    let (admin_a, admin_b, member_a) = (random_uuid(), random_uuid(), random_uuid());
    let schema = "ltv_it_http";
    payments_fixture(&admin, schema, &[&ta, &tb]).await;
    common::shared_setup(
        &admin,
        &format!(
            "INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES
               ('{ta}', '{admin_a}', 'admin'), ('{ta}', '{member_a}', 'member'), ('{tb}', '{admin_b}', 'owner');
             INSERT INTO {schema}.payments (tenant_id, customer_id, amount, paid_at) VALUES
               ('{ta}', 'a1', 10, '2026-01-03 10:00+00'), ('{ta}', 'a1', 15, '2026-02-03 10:00+00'),
               ('{ta}', 'a2', 20, '2026-01-20 10:00+00'), ('{tb}', 'b1', 99, '2026-01-03 10:00+00');
             CREATE TABLE {schema}.subscriptions (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               tenant_id uuid NOT NULL, customer_id text NOT NULL, mrr numeric NOT NULL,
               started_at timestamptz NOT NULL, ended_at timestamptz);
             SELECT saas.enable_tenancy('{schema}.subscriptions');
             GRANT USAGE ON SCHEMA {schema} TO authenticated;
             GRANT SELECT ON {schema}.subscriptions TO authenticated;
             SELECT saas.ltv_track_subscriptions('{schema}.subscriptions');
             INSERT INTO {schema}.subscriptions (tenant_id, customer_id, mrr, started_at) VALUES
               ('{ta}', 'a1', 100, '2026-01-05'), ('{tb}', 'b1', 700, '2026-01-05');"
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("fixture: {}", pg_err(&e)));
    // saas_api is in PostgREST's schema cache since the extension exists.
    let api = |r: common::http::HttpRequest| r.header("Accept-Profile", "saas_api");
    let user = |sub: &str, t: &str| json!({"sub": sub, "role": "authenticated", "tenant_id": t});

    for (who, t, customers, mrr) in [
        (&admin_a, &ta, vec!["a1", "a2"], 100),
        (&admin_b, &tb, vec!["b1"], 700),
    ] {
        let r = api(http.get("/rpc/ltv_ledger"))
            .claims(&user(who, t))
            .send()
            .await;
        let rows = r.expect_status(200).rows();
        let mut got: Vec<&str> = rows
            .iter()
            .map(|x| x["customer_id"].as_str().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, customers, "{}", r.body);
        assert!(
            rows.iter().all(|x| x["tenant_id"] == json!(t)),
            "{}",
            r.body
        );

        let r = api(http.get("/rpc/revenue_metrics?from=2026-01-01&to=2026-03-01"))
            .claims(&user(who, t))
            .send()
            .await;
        let rows = r.expect_status(200).rows();
        assert_eq!(rows.len(), 2, "{}", r.body);
        for row in &rows {
            assert_eq!(row["mrr"].as_f64(), Some(mrr as f64), "{}", r.body);
            assert_eq!(row["customers"], json!(1), "{}", r.body);
        }

        let r = api(http.get("/rpc/cohorts"))
            .claims(&user(who, t))
            .send()
            .await;
        let rows = r.expect_status(200).rows();
        let total: i64 = rows
            .iter()
            .filter(|x| x["months_since"] == json!(0))
            .map(|x| x["customers"].as_i64().unwrap())
            .sum();
        assert_eq!(total as usize, customers.len(), "{}", r.body);

        let r = api(http.get("/rpc/ltv_summary?observation_end=2026-03-01T00:00:00Z"))
            .claims(&user(who, t))
            .send()
            .await;
        assert_eq!(
            r.expect_status(200).rows().len(),
            customers.len(),
            "{}",
            r.body
        );
    }
    // A member of tenant A reads no ledger; asking for tenant B is refused.
    let r = api(http.get("/rpc/ltv_ledger"))
        .claims(&user(&member_a, &ta))
        .send()
        .await;
    assert_eq!(r.expect_status(200).rows(), Vec::<Value>::new());
    let r = api(http.get("/rpc/ltv_ledger"))
        .claims(&user(&admin_a, &tb))
        .send()
        .await;
    r.expect_status(403);
    // Retention risk as GET, with the tenant's rules.
    let r = api(http.get(
        "/rpc/retention_risk?motivational_drivers_match=45&working_preferences_match=80&role_skill_fit=70&last_assessment_days=200&performance_trend=down",
    ))
    .claims(&user(&member_a, &ta))
    .send()
    .await;
    let v = r.expect_status(200).json();
    assert_eq!(v["score"], json!(60), "{}", r.body);
    assert_eq!(v["level"], json!("high"), "{}", r.body);
    // Bad input reaches the client as 400 with PostgREST's error body.
    let r = api(http.get("/rpc/revenue_metrics?from=2026-03-01&to=2026-01-01"))
        .claims(&user(&admin_a, &ta))
        .send()
        .await;
    assert_eq!(r.expect_status(400).error().code, "22023");

    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// A rescue run by a maintenance role that is not a superuser (it moves rows
/// out of the default partition with triggers on) leaves the ledger exact:
/// the move's DELETE on the default partition logs nothing, like the
/// INSERT into the month's table, which is not attached yet. Before, the
/// DELETE logged the moved payments as deleted and nothing added them back.
#[tokio::test]
async fn rescue_by_a_non_superuser_leaves_the_ledger_exact() {
    let Some(admin) = connect("rescue_by_a_non_superuser_leaves_the_ledger_exact").await else {
        return;
    };
    let schema = "ltv_it_rescue";
    let role = "ltv_it_maint";
    let tenant = random_uuid();
    // What a maintenance role that is not a superuser needs for a parent's
    // pass (docs/partitions.md): BYPASSRLS (the registries have RLS without
    // policies), the functions, the registries the partition hooks read, and
    // ownership of the table and its partitions (and CREATE in its schema).
    common::shared_setup(
        &admin,
        &format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE;
             DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                 CREATE ROLE {role} NOLOGIN NOSUPERUSER BYPASSRLS;
               END IF;
             END $$;
             CREATE SCHEMA {schema} AUTHORIZATION {role};
             GRANT USAGE ON SCHEMA saas TO {role};
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA saas TO {role};
             GRANT SELECT ON saas.partition_config, saas.partition_hooks, saas.audit_tables,
                             saas.ltv_sources, saas.tenant_tables TO {role};
             SET LOCAL ROLE {role};
             CREATE TABLE {schema}.payments (
               id bigint GENERATED ALWAYS AS IDENTITY,
               tenant_id uuid NOT NULL,
               customer_id text NOT NULL,
               amount numeric(12, 2) NOT NULL,
               kind text NOT NULL DEFAULT 'payment',
               paid_at timestamptz NOT NULL,
               PRIMARY KEY (tenant_id, id, paid_at)
             ) PARTITION BY RANGE (paid_at);
             RESET ROLE;
             SELECT count(*) FROM saas.create_monthly_partitions('{schema}.payments', 'paid_at', 0, p_now => '2026-11-15');
             ALTER TABLE {schema}.payments_default OWNER TO {role};
             ALTER TABLE {schema}.payments_p2026_11 OWNER TO {role};
             SELECT saas.ltv_track('{schema}.payments', kind_column => 'kind', occurred_at_column => 'paid_at');
             INSERT INTO saas.tenants (id, slug, name) VALUES ('{tenant}', 'ltv-rescue-{s}', 'ltv rescue');",
            s = &tenant[0..8]
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("fixture {schema}: {}", pg_err(&e)));
    // Payments of two months no partition holds yet (the default partition
    // takes them), a refund among them, and one of the current month.
    admin
        .batch_execute(&format!(
            "INSERT INTO {schema}.payments (tenant_id, customer_id, amount, kind, paid_at) VALUES
               ('{tenant}', 'a', 10, 'payment', '2026-11-20 10:00+00'),
               ('{tenant}', 'a', 20, 'payment', '2027-02-03 10:00+00'),
               ('{tenant}', 'b', 30, 'payment', '2027-02-04 10:00+00'),
               ('{tenant}', 'b', -5, 'refund', '2027-02-05 10:00+00'),
               ('{tenant}', 'c', 40, 'payment', '2027-03-01 00:00+00');
             SELECT saas.ltv_compact('{schema}.payments');"
        ))
        .await
        .unwrap();
    assert_ledger_exact(&admin, schema).await;

    // The role's pass over this parent (a full pass would also visit the
    // other tests' parents), then, in the same transaction, a payment of a
    // rescued month: it is counted (the move's exemption ended with it).
    admin
        .batch_execute(&format!("BEGIN; SET LOCAL ROLE {role}"))
        .await
        .unwrap();
    let actions: Vec<String> = admin
        .query(
            &format!(
                "SELECT action || ' ' || partition_name FROM saas.run_maintenance('{schema}.payments', p_now => '2026-11-15')
                 ORDER BY partition_name"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("run_maintenance: {}", pg_err(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        actions,
        [
            format!("rescue {schema}.payments_p2027_02"),
            format!("rescue {schema}.payments_p2027_03")
        ]
    );
    admin.batch_execute("RESET ROLE").await.unwrap();
    assert_ledger_exact(&admin, schema).await;
    admin
        .batch_execute(&format!(
            "INSERT INTO {schema}.payments (tenant_id, customer_id, amount, kind, paid_at)
             VALUES ('{tenant}', 'b', 7, 'payment', '2027-02-20 10:00+00');
             COMMIT;"
        ))
        .await
        .unwrap();
    assert_ledger_exact(&admin, schema).await;
    let b: i64 = admin
        .query_one(
            "SELECT payments FROM saas.ltv_ledger WHERE tenant_id = $1::text::uuid AND customer_id = 'b'",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(b, 2);
    admin
        .batch_execute(&format!("SELECT saas.ltv_compact('{schema}.payments')"))
        .await
        .unwrap();
    assert_ledger_exact(&admin, schema).await;
    // The rescued months carry the ledger's triggers.
    let triggers: i64 = admin
        .query_one(
            &format!(
                "SELECT count(*) FROM saas._ltv_triggers() t
                 WHERE t.rel IN ('{schema}.payments_p2027_02'::regclass, '{schema}.payments_p2027_03'::regclass)"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(triggers, 6);
    // Under the shared setup lock: the REVOKEs update the ACLs of every
    // function of saas, as grant_api in another test's fixture does
    // ("tuple concurrently updated" otherwise).
    admin
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({lock});
             DROP SCHEMA {schema} CASCADE;
             REVOKE SELECT ON saas.partition_config, saas.partition_hooks, saas.audit_tables,
                              saas.ltv_sources, saas.tenant_tables FROM {role};
             REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA saas FROM {role};
             REVOKE USAGE ON SCHEMA saas FROM {role};
             DROP ROLE {role};
             COMMIT;",
            lock = common::SHARED_SETUP_LOCK
        ))
        .await
        .unwrap_or_else(|e| panic!("clean-up: {}", pg_err(&e)));
}
