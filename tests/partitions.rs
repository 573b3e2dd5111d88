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
            let mut refused = Vec::new();
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
                        // Inserts wait for maintenance and go where their
                        // month now is; none may be refused (before 0.2.0 a
                        // row routed to the default partition during a
                        // rescue failed its new constraint, 23514). Counted,
                        // and retried so the tally below still holds.
                        Ok(k) => {
                            refused.push(format!("{k} rows inserted"));
                            break;
                        }
                        Err(e) => {
                            refused.push(common::pg_err(&e));
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            }
            (committed, refused)
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
    let mut refused = Vec::new();
    for h in handles {
        let (c, r) = h.await.unwrap();
        committed += c;
        refused.extend(r);
    }
    assert!(
        refused.is_empty(),
        "inserts refused while maintenance ran: {refused:?}"
    );
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

/// Waits until backend `pid` is waiting for a lock; panics after 10 s.
async fn wait_until_blocked(admin: &Client, pid: i32, what: &str) {
    for _ in 0..1000 {
        let waiting: bool = admin
            .query_one(
                "SELECT coalesce((SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1), false)",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} never waited for a lock");
}

async fn backend_pid(client: &Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Issue 15 item 9: an INSERT into the parent while a rescue (rows moved
/// from the default partition into their new month) is still open waits,
/// then lands in the new month. It used to be routed to the default
/// partition, wait there, and fail its new partition constraint (23514).
#[tokio::test]
async fn inserts_wait_for_an_open_rescue_then_land_in_the_new_month() {
    let admin = db_or_skip!("inserts_wait_for_an_open_rescue_then_land_in_the_new_month");
    fresh_schema(
        &admin,
        "it_rescue_wait",
        "CREATE TABLE it_rescue_wait.ev (at timestamptz NOT NULL, v int) PARTITION BY RANGE (at);
         SELECT count(*) FROM saas.create_monthly_partitions('it_rescue_wait.ev', 'at', 0, p_now => '2026-11-15');
         INSERT INTO it_rescue_wait.ev VALUES ('2027-02-10', 1);",
    )
    .await;
    // Session 1: the rescue, its transaction left open.
    let rescuer = common::connect("rescuer").await.unwrap();
    rescuer.batch_execute("BEGIN").await.unwrap();
    let actions: Vec<String> = rescuer
        .query(
            "SELECT action FROM saas.run_maintenance('it_rescue_wait.ev', p_now => '2026-11-15')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actions, ["rescue"]);
    // Session 2: an ordinary insert of a row of the rescued month.
    let writer = common::connect("writer").await.unwrap();
    let writer_pid = backend_pid(&writer).await;
    let insert = tokio::spawn(async move {
        writer
            .execute(
                "INSERT INTO it_rescue_wait.ev VALUES ('2027-02-11', 2)",
                &[],
            )
            .await
            .map_err(|e| common::pg_err(&e))
    });
    wait_until_blocked(&admin, writer_pid, "the insert").await;
    assert!(!insert.is_finished(), "the insert did not wait");
    rescuer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        insert.await.unwrap(),
        Ok(1),
        "the insert waited, then succeeded"
    );
    let rows = admin
        .query(
            "SELECT tableoid::regclass::text, v FROM it_rescue_wait.ev ORDER BY v",
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        rows,
        [
            ("it_rescue_wait.ev_p2027_02".to_string(), 1),
            ("it_rescue_wait.ev_p2027_02".to_string(), 2)
        ]
    );
    drop_schema(&admin, "it_rescue_wait").await;
}

/// The SQLSTATE of every error a statement gave or a maintenance pass
/// reported in an `error` row (its detail starts with it, after the task's
/// name for a task).
fn error_codes(rows: &Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>) -> Vec<String> {
    match rows {
        Err(e) => vec![common::pg_err(e)],
        Ok(rows) => rows
            .iter()
            .filter(|r| r.get::<_, String>(0) == "error")
            .map(|r| r.get::<_, String>(1))
            .collect(),
    }
}

/// Issue 15 item 9: audit_seal and run_maintenance running together used to
/// deadlock (40P01): maintenance changed the log's partitions (holding its
/// parent), then sealed (the seal lock); a concurrent seal held the seal
/// lock and waited for the log. The seal now locks the log's parent first,
/// and maintenance takes the log after every user parent. In a database of
/// its own, since full passes touch every managed parent.
#[tokio::test]
async fn sealing_and_maintenance_never_deadlock() {
    let admin = db_or_skip!("sealing_and_maintenance_never_deadlock");
    let url = std::env::var(common::URL_ENV).unwrap();
    let db = "pg_saas_it_seal_locks";
    common::recreate_db(&admin, db).await;
    let setup = common::connect_to(&url, db).await;
    // A user hook that takes its time widens the window in which
    // maintenance holds a new month of the log and has not sealed yet.
    setup
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE EXTENSION pg_saas CASCADE;
             CREATE SCHEMA z_app;
             CREATE TABLE z_app.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text);
             SELECT saas.audit_enable('z_app.notes');
             CREATE TABLE z_app.ev (at timestamptz NOT NULL, v int) PARTITION BY RANGE (at);
             SELECT count(*) FROM saas.create_monthly_partitions('z_app.ev', 'at', 0, p_now => '2030-01-15');
             CREATE FUNCTION z_app.slow_hook(regclass, regclass) RETURNS void LANGUAGE sql
               AS 'SELECT pg_sleep(0.02)';
             INSERT INTO saas.partition_hooks (hook_name, hook) VALUES ('z_slow', 'z_app.slow_hook(regclass, regclass)');
             INSERT INTO z_app.notes (body) VALUES ('first');",
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {}", common::pg_err(&e)));

    // Deterministic: maintenance has made a month of the log in an open
    // transaction; a seal starts and waits; maintenance's full pass seals.
    let maint = common::connect_to(&url, db).await;
    let sealer = common::connect_to(&url, db).await;
    let sealer_pid = backend_pid(&sealer).await;
    maint.batch_execute("BEGIN").await.unwrap();
    let made = maint
        .query(
            "SELECT action, coalesce(detail, '') FROM saas.run_maintenance('saas.audit_log', p_now => '2030-01-15')",
            &[],
        )
        .await;
    assert_eq!(error_codes(&made), Vec::<String>::new());
    let seal = tokio::spawn(async move {
        let r = sealer.query("SELECT * FROM saas.audit_seal()", &[]).await;
        (
            sealer,
            r.map_err(|e| common::pg_err(&e)).map(|rows| rows.len()),
        )
    });
    wait_until_blocked(&admin, sealer_pid, "the seal").await;
    let pass = maint
        .query(
            "SELECT action, coalesce(detail, '') FROM saas.run_maintenance(p_now => '2030-01-15')",
            &[],
        )
        .await;
    let pass_errors = error_codes(&pass);
    maint.batch_execute("COMMIT").await.unwrap();
    let (mut sealer, sealed) = seal.await.unwrap();
    assert_eq!(pass_errors, Vec::<String>::new(), "maintenance's full pass");
    assert!(sealed.is_ok(), "the concurrent seal: {sealed:?}");

    // Many times over: full passes (each making a month of the log and of
    // z_app.ev) and seals at once, with audited writes in between.
    let mut errors = Vec::new();
    for i in 1..=25i32 {
        setup
            .batch_execute(&format!(
                "INSERT INTO z_app.notes (body) VALUES ('pass {i}')"
            ))
            .await
            .unwrap();
        let delay = Duration::from_millis(u64::try_from(i % 5).unwrap() * 10);
        let seal = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let r = sealer.query("SELECT * FROM saas.audit_seal()", &[]).await;
            (sealer, r)
        });
        let pass = maint
            .query(
                "SELECT action, coalesce(detail, ''), parent_table::text FROM saas.run_maintenance( \
                 p_now => '2030-01-15'::timestamptz + make_interval(months => $1))",
                &[&i],
            )
            .await;
        errors.extend(
            error_codes(&pass)
                .into_iter()
                .map(|e| format!("pass {i}: {e}")),
        );
        // The documented order: user parents (z_app.ev, though it sorts
        // after saas) before the log, which their triggers write to.
        if let Ok(rows) = &pass {
            let parents: Vec<String> = rows.iter().map(|r| r.get(2)).collect();
            let last_user = parents.iter().rposition(|p| p == "z_app.ev");
            let first_log = parents.iter().position(|p| p == "saas.audit_log");
            assert!(
                last_user.is_some() && first_log.is_some() && last_user < first_log,
                "pass {i} order: {parents:?}"
            );
        }
        let (s, r) = seal.await.unwrap();
        sealer = s;
        if let Err(e) = r {
            errors.push(format!("seal {i}: {}", common::pg_err(&e)));
        }
    }
    assert_eq!(errors, Vec::<String>::new());
    drop((setup, maint, sealer));
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}
