//! Rate limits and quotas through PostgREST-shaped requests and under
//! concurrency: GET requests (READ ONLY transactions) are limited through
//! shared memory and refused with 429 + Retry-After; a plan's daily quota
//! gives 402; 64 clients on one key never get more than the limit through,
//! with either backend; usage counted in shared memory survives a flush and
//! is reported per tenant.

mod common;

use common::{claims, random_uuid, Api};
use serde_json::json;
use tokio_postgres::Client;

/// A schema with one tenant table (named after the schema, so that rules
/// for its path never match another test's requests), the API roles, and
/// tenants with members.
async fn fixture(admin: &Client, schema: &str, tenants: &[(&str, &str)], members: &[(&str, &str)]) {
    let mut sql = format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.{schema}_items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             tenant_id uuid NOT NULL, body text);
         SELECT saas.enable_tenancy('{schema}.{schema}_items');
         GRANT USAGE ON SCHEMA {schema} TO anon, authenticated;
         GRANT SELECT, INSERT ON {schema}.{schema}_items TO authenticated;"
    );
    for (id, plan) in tenants {
        sql.push_str(&format!(
            "INSERT INTO saas.tenants (id, slug, name, plan) VALUES ('{id}', 'rl-{s}', 'rl-{s}', '{plan}');",
            s = &id[0..8]
        ));
    }
    for (tenant, user) in members {
        sql.push_str(&format!(
            "INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES ('{tenant}', '{user}', 'member');"
        ));
    }
    common::shared_setup(admin, &sql)
        .await
        .unwrap_or_else(|e| panic!("fixture {schema}: {e:?}"));
}

#[tokio::test]
async fn get_requests_are_limited_in_shared_memory() {
    let admin = db_or_skip!("get_requests_are_limited_in_shared_memory");
    let preloaded: bool = admin
        .query_one("SELECT preloaded FROM saas.rate_limit_stats()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(preloaded, "the test cluster preloads pg_saas");
    let (tenant, user, other) = (random_uuid(), random_uuid(), random_uuid());
    fixture(
        &admin,
        "it_rl_get",
        &[(&tenant, "it-rl-free")],
        &[(&tenant, &user), (&tenant, &other)],
    )
    .await;
    admin
        .batch_execute("SELECT saas.rate_limit_rule_set('/it_rl_get_items', 3, '1 hour', scope => 'user', method => 'GET')")
        .await
        .unwrap();
    let Some(client) = common::connect("get_requests_are_limited_in_shared_memory").await else {
        return;
    };
    let api = Api::with_pre_request(client, "it_rl_get");

    for expected_remaining in ["2", "1", "0"] {
        let r = api
            .get("it_rl_get_items")
            .claims(claims(&user, &tenant))
            .send()
            .await;
        r.expect_ok();
        assert_eq!(r.header("RateLimit-Limit"), Some("3"));
        assert_eq!(r.header("RateLimit-Remaining"), Some(expected_remaining));
    }
    let refused = api
        .get("it_rl_get_items")
        .claims(claims(&user, &tenant))
        .send()
        .await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.code(), Some("PT429"));
    let retry: i64 = refused
        .header("Retry-After")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(
        (1..=1200).contains(&retry),
        "one more every 20 minutes: Retry-After {retry}"
    );
    assert_eq!(refused.header("RateLimit-Remaining"), Some("0"));
    // Another user has a counter of their own; POST is not limited by a GET rule.
    api.get("it_rl_get_items")
        .claims(claims(&other, &tenant))
        .send()
        .await
        .expect_ok();
    api.insert("it_rl_get_items", json!([{"body": "x"}]))
        .claims(claims(&user, &tenant))
        .send()
        .await
        .expect_ok();
    // The refusal was counted although the request rolled back.
    let refusals: i64 = admin
        .query_one(
            "SELECT coalesce(sum(refusals), 0)::bigint FROM saas.rate_limit_refusals_report
             WHERE path_pattern = '/it_rl_get_items' AND tenant_id = $1::text::uuid",
            &[&tenant],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refusals, 1);
    admin
        .batch_execute("SELECT saas.rate_limit_rule_drop('/it_rl_get_items', 'user', 'GET')")
        .await
        .unwrap();
}

#[tokio::test]
async fn rule_changes_reach_a_running_backend() {
    let admin = db_or_skip!("rule_changes_reach_a_running_backend");
    let (tenant, user) = (random_uuid(), random_uuid());
    fixture(
        &admin,
        "it_rl_rules",
        &[(&tenant, "it-rl-free")],
        &[(&tenant, &user)],
    )
    .await;
    let Some(client) = common::connect("rule_changes_reach_a_running_backend").await else {
        return;
    };
    // One API connection throughout: its backend keeps the rules it read.
    let api = Api::with_pre_request(client, "it_rl_rules");
    let limit = || async {
        api.get("it_rl_rules_items")
            .claims(claims(&user, &tenant))
            .send()
            .await
    };

    let r = limit().await;
    r.expect_ok();
    assert_eq!(r.header("RateLimit-Limit"), None, "no rule yet");
    admin
        .batch_execute(
            "SELECT saas.rate_limit_rule_set('/it_rl_rules_items', 2, '1 hour', method => 'GET')",
        )
        .await
        .unwrap();
    let r = limit().await;
    assert_eq!(
        (r.header("RateLimit-Limit"), r.header("RateLimit-Remaining")),
        (Some("2"), Some("1")),
        "a new rule applies"
    );
    admin
        .batch_execute("UPDATE saas.rate_limit_rules SET count = 7, max_burst = 7 WHERE path_pattern = '/it_rl_rules_items'")
        .await
        .unwrap();
    let r = limit().await;
    assert_eq!(
        r.header("RateLimit-Limit"),
        Some("7"),
        "a rule changed by hand applies"
    );
    admin
        .batch_execute("SELECT saas.rate_limit_rule_drop('/it_rl_rules_items', 'user', 'GET')")
        .await
        .unwrap();
    let r = limit().await;
    r.expect_ok();
    assert_eq!(
        r.header("RateLimit-Limit"),
        None,
        "a dropped rule no longer applies"
    );
}

#[tokio::test]
async fn plan_quota_gives_402_and_usage_survives_a_flush() {
    let admin = db_or_skip!("plan_quota_gives_402_and_usage_survives_a_flush");
    let plan = format!("it-rl-{}", &random_uuid()[0..8]);
    let (tenant_a, tenant_b, user) = (random_uuid(), random_uuid(), random_uuid());
    fixture(
        &admin,
        "it_rl_quota",
        &[(&tenant_a, &plan), (&tenant_b, "it-rl-unlimited")],
        &[(&tenant_a, &user), (&tenant_b, &user)],
    )
    .await;
    admin
        .execute(
            "INSERT INTO saas.plans (plan, api_calls_per_day) VALUES ($1, 4)",
            &[&plan],
        )
        .await
        .unwrap();
    let Some(client) = common::connect("plan_quota_gives_402_and_usage_survives_a_flush").await
    else {
        return;
    };
    let api = Api::with_pre_request(client, "it_rl_quota");
    // Two read-only and two read-write requests: the quota counts both kinds.
    api.get("it_rl_quota_items")
        .claims(claims(&user, &tenant_a))
        .send()
        .await
        .expect_ok();
    api.insert("it_rl_quota_items", json!([{"body": "1"}]))
        .claims(claims(&user, &tenant_a))
        .send()
        .await
        .expect_ok();
    api.get("it_rl_quota_items")
        .claims(claims(&user, &tenant_a))
        .send()
        .await
        .expect_ok();
    api.insert("it_rl_quota_items", json!([{"body": "2"}]))
        .claims(claims(&user, &tenant_a))
        .send()
        .await
        .expect_ok();
    for refused in [
        api.get("it_rl_quota_items")
            .claims(claims(&user, &tenant_a))
            .send()
            .await,
        api.insert("it_rl_quota_items", json!([{"body": "3"}]))
            .claims(claims(&user, &tenant_a))
            .send()
            .await,
    ] {
        assert_eq!(refused.status, 402, "{refused:?}");
        assert_eq!(refused.code(), Some("PT402"));
        let error = refused.error.as_ref().unwrap();
        assert!(
            error.message.contains("allows 4 API calls per day"),
            "{error:?}"
        );
        // The details are machine-readable: JSON text a client parses.
        let details: serde_json::Value =
            serde_json::from_str(error.details.as_deref().unwrap_or("")).expect("details are JSON");
        assert_eq!(details["reason"], "quota_exhausted", "{details}");
        assert_eq!(details["limit"].as_i64(), Some(4), "{details}");
        assert_eq!(details["used"].as_i64(), Some(4), "{details}");
        assert!(
            details["retry_after_seconds"]
                .as_i64()
                .is_some_and(|s| (1..=86_400).contains(&s)),
            "{details}"
        );
        let retry: i64 = refused.header("Retry-After").unwrap().parse().unwrap();
        assert!((1..=86_400).contains(&retry), "until midnight UTC: {retry}");
    }
    let rows: i64 = admin
        .query_one(
            "SELECT count(*) FROM it_rl_quota.it_rl_quota_items WHERE tenant_id = $1::text::uuid",
            &[&tenant_a],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "the refused insert wrote nothing");
    // Tenant B's plan has no limits row: unlimited, and still counted.
    for _ in 0..6 {
        api.get("it_rl_quota_items")
            .claims(claims(&user, &tenant_b))
            .send()
            .await
            .expect_ok();
    }

    let report = |tenant: String| {
        let admin = &admin;
        async move {
            admin
                .query_one(
                    "SELECT (SELECT saas.set_tenant($1::text::uuid)) IS NOT NULL,
                            (SELECT used FROM saas.usage_report(current_date - 1, current_date + 1) WHERE metric = 'api_calls')",
                    &[&tenant],
                )
                .await
                .unwrap()
                .get::<_, Option<i64>>(1)
        }
    };
    let pending = |tenant: String| {
        let admin = &admin;
        async move {
            admin
                .query_one(
                    "SELECT coalesce(sum(pending), 0)::bigint FROM saas._usage_pending() WHERE tenant_id = $1::text::uuid",
                    &[&tenant],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    admin
        .batch_execute("SET client_min_messages = error")
        .await
        .unwrap();
    // Every call, read-only or not, waits in shared memory for a flush
    // (another test's run_maintenance may have flushed them already: the
    // report counts both).
    assert_eq!(report(tenant_a.clone()).await, Some(4));
    assert_eq!(report(tenant_b.clone()).await, Some(6));
    admin
        .batch_execute("SELECT count(*) FROM saas.run_maintenance()")
        .await
        .unwrap();
    assert_eq!(pending(tenant_a.clone()).await, 0, "flushed");
    let stored: i64 = admin
        .query_one(
            "SELECT count FROM saas.usage_daily WHERE tenant_id = $1::text::uuid AND metric = 'api_calls'",
            &[&tenant_a],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored, 4,
        "every counted call is in the table after the flush"
    );
    assert_eq!(
        report(tenant_a.clone()).await,
        Some(4),
        "the report is unchanged by the flush"
    );
    assert_eq!(report(tenant_b.clone()).await, Some(6));
    admin
        .execute("DELETE FROM saas.plans WHERE plan = $1", &[&plan])
        .await
        .unwrap();
}

/// 64 clients call rate_limit on one key 5 times each as fast as they can;
/// exactly `limit` calls are admitted (the period is long enough that no
/// new one is earned during the test).
async fn hammer(backend: &str) {
    const CLIENTS: usize = 64;
    const CALLS: usize = 5;
    const LIMIT: i32 = 37;
    let key = format!("it-hammer-{backend}-{}", random_uuid());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let Some(c) = common::connect("concurrent_clients_admit_exactly_the_limit").await else {
            return;
        };
        c.batch_execute(&format!("SET saas.rate_limit_backend = '{backend}'"))
            .await
            .unwrap();
        clients.push(c);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut tasks = Vec::new();
    for c in clients {
        let (key, start) = (key.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut admitted = 0;
            for _ in 0..CALLS {
                let row = c
                    .query_one(
                        "SELECT allowed FROM saas.rate_limit($1, $2, $2, '1 day')",
                        &[&key, &LIMIT],
                    )
                    .await
                    .unwrap();
                admitted += row.get::<_, bool>(0) as i32;
            }
            admitted
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(
        total, LIMIT,
        "{backend}: {CLIENTS} clients x {CALLS} calls admitted {total}, limit {LIMIT}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_admit_exactly_the_limit() {
    let _ = db_or_skip!("concurrent_clients_admit_exactly_the_limit");
    hammer("shmem").await;
    hammer("table").await;
}

/// 8 clients mix read-only GETs and read-write POSTs of one tenant while a
/// ninth flushes the usage counters over and over: a plan of 10 calls a
/// day admits exactly 10 (issue: 11-13 were admitted when GETs counted in
/// shared memory and POSTs in the table), and the day's usage, written
/// plus pending, is exactly what was admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_reads_and_writes_spend_the_daily_quota_exactly() {
    const CLIENTS: usize = 8;
    const CALLS: usize = 6;
    const QUOTA: i64 = 10;
    let test = "mixed_reads_and_writes_spend_the_daily_quota_exactly";
    let admin = db_or_skip!(test);
    let preloaded: bool = admin
        .query_one(
            "SELECT 'pg_saas' = ANY(string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if !preloaded {
        eprintln!("skipped {test}: read-only requests need pg_saas preloaded");
        return;
    }
    let plan = format!("it-rl-mix-{}", &random_uuid()[0..8]);
    let (tenant, user) = (random_uuid(), random_uuid());
    admin
        .execute(
            "INSERT INTO saas.plans (plan, api_calls_per_day) VALUES ($1, $2)",
            &[&plan, &QUOTA],
        )
        .await
        .unwrap();
    fixture(
        &admin,
        "it_rl_mix",
        &[(&tenant, &plan)],
        &[(&tenant, &user)],
    )
    .await;
    for round in 0..3 {
        // A new tenant each round: the first requests also race the load
        // of its counter from the table.
        let tenant = if round == 0 {
            tenant.clone()
        } else {
            let t = random_uuid();
            admin
                .batch_execute(&format!(
                    "INSERT INTO saas.tenants (id, slug, name, plan) VALUES ('{t}', 'mix-{s}', 'mix-{s}', '{plan}');
                     INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES ('{t}', '{user}', 'member');",
                    s = &t[0..8]
                ))
                .await
                .unwrap();
            t
        };
        let mut apis = Vec::new();
        for _ in 0..CLIENTS {
            let Some(c) = common::connect(test).await else {
                return;
            };
            apis.push(Api::with_pre_request(c, "it_rl_mix"));
        }
        let Some(flusher) = common::connect(test).await else {
            return;
        };
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flushing = {
            let done = done.clone();
            tokio::spawn(async move {
                let mut flushes = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    flusher
                        .execute("SELECT saas.usage_flush()", &[])
                        .await
                        .unwrap();
                    flushes += 1;
                }
                flushes
            })
        };
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
        let mut tasks = Vec::new();
        for (i, api) in apis.into_iter().enumerate() {
            let (tenant, user, start) = (tenant.clone(), user.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let mut admitted = 0i64;
                for call in 0..CALLS {
                    let response = if (i + call) % 2 == 0 {
                        api.get("it_rl_mix_items")
                            .claims(claims(&user, &tenant))
                            .send()
                            .await
                    } else {
                        api.insert("it_rl_mix_items", json!([{"body": "x"}]))
                            .claims(claims(&user, &tenant))
                            .send()
                            .await
                    };
                    match response.status {
                        200 | 201 => admitted += 1,
                        402 => {}
                        other => panic!("unexpected status {other}: {response:?}"),
                    }
                }
                admitted
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let flushes = flushing.await.unwrap();
        assert_eq!(
            total, QUOTA,
            "round {round}: {CLIENTS} clients x {CALLS} mixed calls admitted {total} of a quota of {QUOTA} ({flushes} flushes ran meanwhile)"
        );
        let counted: i64 = admin
            .query_one(
                "SELECT coalesce(sum(n), 0)::int8 FROM (
                   SELECT count AS n FROM saas.usage_daily WHERE tenant_id = $1::text::uuid AND metric = 'api_calls'
                   UNION ALL
                   SELECT pending FROM saas._usage_pending() WHERE kind = 'usage' AND tenant_id = $1::text::uuid AND metric = 'api_calls') s",
                &[&tenant],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(counted, QUOTA, "round {round}: usage written plus pending");
    }
    admin
        .batch_execute("DROP SCHEMA it_rl_mix CASCADE")
        .await
        .unwrap();
}

/// `usage_report` while flushes move the tenant's counts from shared memory
/// to `usage_daily`: a report never shows fewer calls than one before it.
/// It read the table with its statement's snapshot and shared memory after,
/// so a flush that committed in between was missed on both sides (the
/// counts had left shared memory, their rows were not in the snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_report_never_misses_counts_a_flush_is_moving() {
    let admin = db_or_skip!("usage_report_never_misses_counts_a_flush_is_moving");
    let (tenant, user) = (random_uuid(), random_uuid());
    fixture(
        &admin,
        "it_rl_report",
        &[(&tenant, "it-rl-unlimited")],
        &[(&tenant, &user)],
    )
    .await;
    let Some(writer) = common::connect("usage_report_never_misses_counts_a_flush_is_moving").await
    else {
        return;
    };
    let Some(flusher) = common::connect("usage_report_never_misses_counts_a_flush_is_moving").await
    else {
        return;
    };
    flusher
        .batch_execute("SET client_min_messages = error")
        .await
        .unwrap();
    let calls = 150;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // One request, then one flush, over and over: the tenant always has a
    // count in shared memory when a flush begins.
    let moving = {
        let (tenant, user, done) = (tenant.clone(), user.clone(), done.clone());
        tokio::spawn(async move {
            let api = Api::with_pre_request(writer, "it_rl_report");
            for _ in 0..calls {
                api.get("it_rl_report_items")
                    .claims(claims(&user, &tenant))
                    .send()
                    .await
                    .expect_ok();
                flusher
                    .batch_execute("SELECT saas.usage_flush()")
                    .await
                    .unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let report = format!(
        "SELECT (SELECT saas.set_tenant('{tenant}')) IS NOT NULL,
                coalesce((SELECT used FROM saas.usage_report(current_date - 1, current_date + 1) WHERE metric = 'api_calls'), 0)"
    );
    let (mut last, mut reads) = (0i64, 0);
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let used: i64 = admin.query_one(&report, &[]).await.unwrap().get(1);
        assert!(
            used >= last,
            "read {reads}: the report fell from {last} to {used} calls while a flush moved them"
        );
        (last, reads) = (used, reads + 1);
    }
    moving.await.unwrap();
    let used: i64 = admin.query_one(&report, &[]).await.unwrap().get(1);
    assert_eq!(used, calls, "every call reported after {reads} reads");
}
