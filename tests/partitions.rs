//! Partitions under faults and concurrency: a backend killed in the middle of
//! maintenance or conversion leaves a consistent state that the next run
//! completes; writers inserting while maintenance runs lose nothing.

mod common;

use std::time::Duration;
use tokio_postgres::Client;

async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Drops `schema` if a previous run left it, creates it again and runs `sql`
/// (the test's tables and rows) in the same batch.
async fn fresh_schema(admin: &Client, schema: &str, sql: &str) {
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};\n{sql}"
        ))
        .await
        .unwrap();
}

/// Drops `schema`; its tables leave partition_config with it (the
/// extension's sql_drop trigger).
async fn drop_schema(admin: &Client, schema: &str) {
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// Says (past the test harness's capture) whether the kill landed mid-run.
fn report(what: &str, killed: bool) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "partitions fault test: {what} backend killed mid-run: {killed}"
    );
}

/// Kills the backend running a statement that matches `pattern` once it has
/// run for `after`; returns whether one was killed.
async fn kill_when_running(admin: &Client, pattern: &str, after: Duration) -> bool {
    for _ in 0..200 {
        let running: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
                &[&pattern],
            )
            .await
            .unwrap()
            .get(0);
        if running > 0 {
            tokio::time::sleep(after).await;
            let killed: i64 = admin
                .query_one(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()) k",
                    &[&pattern],
                )
                .await
                .unwrap()
                .get(0);
            return killed > 0;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn killed_conversion_rolls_back_and_the_next_run_completes() {
    let admin = db_or_skip!("killed_conversion_rolls_back_and_the_next_run_completes");
    fresh_schema(
        &admin,
        "it_conv",
        "CREATE TABLE it_conv.hits (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL, PRIMARY KEY (id, at));
         INSERT INTO it_conv.hits (at) SELECT '2025-01-01'::timestamptz + g * interval '3 minutes' FROM generate_series(1, 400000) g;",
    )
    .await;
    let victim = common::connect("conversion victim").await.unwrap();
    let run = tokio::spawn(async move {
        victim
            .query("SELECT * FROM saas.convert_to_monthly('it_conv.hits', 'at', 1, p_now => '2026-11-15')", &[])
            .await
    });
    let killed = kill_when_running(
        &admin,
        "%convert_to_monthly('it_conv.hits'%",
        Duration::from_millis(300),
    )
    .await;
    let outcome = run.await.unwrap();
    report("conversion", killed);
    if killed {
        assert!(
            outcome.is_err(),
            "the killed conversion must not report success"
        );
        // Nothing half-done: still the plain table with every row, no config.
        assert_eq!(
            count(&admin, "SELECT count(*) FROM it_conv.hits").await,
            400000
        );
        let plain: bool = admin
            .query_one(
                "SELECT relkind = 'r' FROM pg_class WHERE oid = 'it_conv.hits'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(plain, "still a plain table");
        assert_eq!(
            count(
                &admin,
                "SELECT count(*) FROM saas.partition_config WHERE parent::text = 'it_conv.hits'"
            )
            .await,
            0
        );
        assert_eq!(
            count(&admin, "SELECT count(*) FROM pg_class WHERE relname LIKE 'hits%' AND relnamespace = 'it_conv'::regnamespace").await,
            3,
            "only the table, its primary key index and its identity sequence"
        );
        // The next run completes the work.
        admin
            .query("SELECT * FROM saas.convert_to_monthly('it_conv.hits', 'at', 1, p_now => '2026-11-15')", &[])
            .await
            .unwrap();
    } else {
        outcome.unwrap();
    }
    assert_eq!(
        count(&admin, "SELECT count(*) FROM it_conv.hits").await,
        400000
    );
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM pg_partitioned_table WHERE partrelid = 'it_conv.hits'::regclass"
        )
        .await,
        1
    );
    assert_eq!(
        count(&admin, "SELECT count(*) FROM it_conv.hits_default").await,
        0
    );
    drop_schema(&admin, "it_conv").await;
}

#[tokio::test]
async fn killed_rescue_keeps_every_row_and_the_next_run_completes() {
    let admin = db_or_skip!("killed_rescue_keeps_every_row_and_the_next_run_completes");
    fresh_schema(
        &admin,
        "it_rescue",
        "CREATE TABLE it_rescue.log (at timestamptz NOT NULL, v int) PARTITION BY RANGE (at);
         SELECT count(*) FROM saas.create_monthly_partitions('it_rescue.log', 'at', 0, p_now => '2026-11-15');
         -- 24 future months of rows stranded in the default partition.
         INSERT INTO it_rescue.log SELECT '2027-01-01'::timestamptz + g * interval '1 minute', g FROM generate_series(1, 24 * 43000) g;",
    )
    .await;
    let total = count(&admin, "SELECT count(*) FROM it_rescue.log").await;
    let victim = common::connect("rescue victim").await.unwrap();
    let run = tokio::spawn(async move {
        victim
            .query(
                "SELECT * FROM saas.run_maintenance('it_rescue.log', p_now => '2026-11-15')",
                &[],
            )
            .await
    });
    let killed = kill_when_running(
        &admin,
        "%run_maintenance('it_rescue.log'%",
        Duration::from_millis(400),
    )
    .await;
    let _ = run.await.unwrap();
    report("rescue", killed);
    // Whatever was done is whole: every row is still there, nothing doubled.
    assert_eq!(
        count(&admin, "SELECT count(*) FROM it_rescue.log").await,
        total,
        "killed={killed}"
    );
    // The next run finishes the rescue.
    admin
        .query(
            "SELECT * FROM saas.run_maintenance('it_rescue.log', p_now => '2026-11-15')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        count(&admin, "SELECT count(*) FROM it_rescue.log").await,
        total
    );
    assert_eq!(
        count(&admin, "SELECT count(*) FROM it_rescue.log_default").await,
        0,
        "nothing stranded"
    );
    drop_schema(&admin, "it_rescue").await;
}

#[tokio::test]
async fn writers_lose_nothing_while_maintenance_runs() {
    let admin = db_or_skip!("writers_lose_nothing_while_maintenance_runs");
    fresh_schema(
        &admin,
        "it_conc",
        "CREATE TABLE it_conc.ev (at timestamptz NOT NULL, writer int, n int) PARTITION BY RANGE (at);
         SELECT count(*) FROM saas.create_monthly_partitions('it_conc.ev', 'at', 1, p_now => '2026-11-15');",
    )
    .await;
    const WRITERS: usize = 3;
    const ROWS: i32 = 600;
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let c = common::connect("writer").await.unwrap();
        handles.push(tokio::spawn(async move {
            let mut committed = 0i64;
            for n in 0..ROWS {
                // Across month boundaries, the near future and the far future.
                let offset_days = match n % 4 {
                    0 => (n % 60) - 30,
                    1 => 15 + n % 30,
                    2 => 400 + n % 300,
                    _ => 90 + n % 120,
                };
                loop {
                    let r = c
                        .execute(
                            "INSERT INTO it_conc.ev VALUES ('2026-11-30 23:30+00'::timestamptz + make_interval(days => $1), $2, $3)",
                            &[&offset_days, &(w as i32), &n],
                        )
                        .await;
                    match r {
                        Ok(1) => {
                            committed += 1;
                            break;
                        }
                        // A row routed while its month was being attached is refused,
                        // never lost: the writer retries, as an application would.
                        Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            }
            committed
        }));
    }
    // Maintenance runs meanwhile, its clock advancing a month per pass.
    let maint = common::connect("maintenance").await.unwrap();
    let mut errors = Vec::new();
    for month in 0..8i32 {
        for row in maint
            .query(
                "SELECT action, coalesce(detail, '') FROM saas.run_maintenance('it_conc.ev', \
                 p_now => '2026-11-15 00:00+00'::timestamptz + make_interval(months => $1))",
                &[&month],
            )
            .await
            .unwrap()
        {
            let action: String = row.get(0);
            if action == "error" {
                errors.push(row.get::<_, String>(1));
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut committed = 0;
    for h in handles {
        committed += h.await.unwrap();
    }
    // A final pass with the writers gone rescues whatever arrived last.
    maint
        .query(
            "SELECT * FROM saas.run_maintenance('it_conc.ev', p_now => '2027-06-15')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(committed, (WRITERS as i64) * i64::from(ROWS));
    let stored = count(&admin, "SELECT count(*) FROM it_conc.ev").await;
    assert_eq!(
        stored, committed,
        "rows lost or doubled; maintenance errors: {errors:?}"
    );
    let distinct = count(
        &admin,
        "SELECT count(*) FROM (SELECT DISTINCT writer, n FROM it_conc.ev) d",
    )
    .await;
    assert_eq!(distinct, committed, "every (writer, n) exactly once");
    assert_eq!(
        count(&admin, "SELECT count(*) FROM it_conc.ev_default").await,
        0,
        "nothing stranded"
    );
    drop_schema(&admin, "it_conc").await;
}

#[tokio::test]
async fn maintenance_is_scheduled_with_pg_cron() {
    let admin = db_or_skip!("maintenance_is_scheduled_with_pg_cron");
    // make test installs pg_cron in this database (cron.database_name).
    let job: i64 = admin
        .query_one("SELECT saas.schedule_maintenance('*/5 * * * *')", &[])
        .await
        .unwrap()
        .get(0);
    let row = admin
        .query_one(
            "SELECT schedule, command FROM cron.job WHERE jobid = $1",
            &[&job],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "*/5 * * * *");
    assert!(row.get::<_, String>(1).contains("saas.run_maintenance()"));
    // Scheduling again replaces the job of the same name rather than adding one.
    admin
        .query_one("SELECT saas.schedule_maintenance()", &[])
        .await
        .unwrap();
    assert_eq!(
        count(
            &admin,
            "SELECT count(*) FROM cron.job WHERE jobname = 'pg_saas maintenance'"
        )
        .await,
        1
    );
    let removed: bool = admin
        .query_one("SELECT saas.unschedule_maintenance()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(removed);
    let again: bool = admin
        .query_one("SELECT saas.unschedule_maintenance()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!again, "nothing left to unschedule");
}
