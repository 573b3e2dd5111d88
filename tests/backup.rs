//! Backups: a database using every module, dumped with pg_dump in each
//! format and restored with pg_restore (or psql) into a fresh database of
//! another cluster, comes back whole and with zero errors, and then behaves
//! as the original did.
//!
//! Two clusters of their own (pg_cron can only live in the database its
//! cluster names, so the restore target has the source's name): the source
//! cluster has run more transactions than the target, as a production
//! server has next to a new one, so the audit log's transaction ids must
//! keep growing across the restore.

mod common;

use common::pg_err;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tokio_postgres::{Client, NoTls};

const DB: &str = "pg_saas_backup";
const FILL: &str = include_str!("upgrade/fill.sql");
/// The llm module's state: cache, ledger partitions, prices, budgets.
const FILL_LLM: &str = include_str!("upgrade/fill_llm.sql");
const FILL_LTV: &str = include_str!("upgrade/fill_ltv.sql");
/// The memory module's state: models (their HNSW indexes are not dumped:
/// the restore builds them again), memories, embeddings, entities, the log.
const FILL_MEMORY: &str = include_str!("upgrade/fill_memory.sql");

/// The rest of the state a backup must carry, beyond what the upgrade fill
/// makes (which has a user's partition hook): usage counters, storage, a
/// refusal, a pg_cron job and a seal.
const MORE_STATE: &str = r#"
INSERT INTO saas.usage_daily (tenant_id, metric, day, count)
VALUES ('00000001-0000-4000-8000-0000000000aa', 'api_calls', '2026-10-15', 42);
INSERT INTO saas.tenant_storage (tenant_id, used_bytes) VALUES ('00000001-0000-4000-8000-0000000000aa', 4096);
INSERT INTO saas.rate_limit_refusals (day, rule_id, tenant_id, refusals)
SELECT '2026-10-15', min(id), '00000001-0000-4000-8000-0000000000aa', 3 FROM saas.rate_limit_rules;
-- 31 February: never runs while the test compares.
SELECT saas.schedule_maintenance('0 0 31 2 *');
"#;

/// One cluster of the test, removed when dropped.
struct Cluster {
    name: String,
    port: u16,
}

impl Cluster {
    fn start(name: &str, port: u16) -> Cluster {
        let out = Command::new(root().join("scripts/cluster.sh"))
            .args(["start", name, &port.to_string(), "fresh"])
            .env("CRON_DB", DB)
            .output()
            .expect("run scripts/cluster.sh");
        check(&out, &format!("start cluster {name}"));
        Cluster {
            name: name.to_string(),
            port,
        }
    }

    fn url(&self, db: &str) -> String {
        format!(
            "host=localhost port={} user=postgres dbname={db}",
            self.port
        )
    }

    async fn connect(&self, db: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.url(db), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {db} on {}: {e}", self.name));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// Drops and creates `DB` empty. Roles are the cluster's, not the
    /// database's (pg_dumpall --roles-only carries them): the API role the
    /// source granted is made here as it would be on a new server.
    async fn fresh_db(&self) {
        let admin = self.connect("postgres").await;
        for sql in [
            format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
            format!("CREATE DATABASE {DB}"),
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'upgrade_api') THEN CREATE ROLE upgrade_api NOLOGIN; END IF; END $$".to_string(),
        ] {
            admin.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {}", pg_err(&e)));
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(bindir().join(program));
        if args.contains(&"--data-only") && program == "pg_restore" {
            cmd.env("PGOPTIONS", "-c session_replication_role=replica");
        }
        cmd.args([
            "-h",
            "localhost",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/cluster.sh"))
            .args(["remove", &self.name])
            .output();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bindir() -> PathBuf {
    let out = Command::new(std::env::var("PG_CONFIG").unwrap_or_else(|_| "pg_config".into()))
        .arg("--bindir")
        .output()
        .expect("pg_config --bindir");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Succeeded with nothing on stderr: no error, no warning.
fn check_quiet(out: &Output, what: &str) {
    check(out, what);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.trim().is_empty(),
        "{what} printed on stderr:\n{stderr}"
    );
}

async fn lines(client: &Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", pg_err(&e)))
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect()
}

/// Everything a restore must bring back, one line per fact, sorted.
async fn snapshot(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    // Every table's rows (runtime state and the per-database xid base aside;
    // installations gains the restore's own row and is checked apart).
    let tables = lines(
        client,
        "SELECT c.oid::regclass::text FROM pg_class c
         WHERE c.relnamespace IN ('saas'::regnamespace, 'app'::regnamespace) AND c.relkind = 'r'
           AND c.oid NOT IN ('saas.rate_limit_state'::regclass, 'saas.audit_xid_base'::regclass,
                             'saas.installations'::regclass)
         ORDER BY 1",
    )
    .await;
    for t in tables {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*)::text || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"
                ),
                &[],
            )
            .await
            .unwrap();
        out.push(format!("rows {t}: {}", row.get::<_, String>(0)));
    }
    let facts = [
        // pg_cron's jobs.
        "SELECT format('cron job %s %s %s %s %s', jobname, schedule, command, database, active) FROM cron.job",
        // The extension's member objects.
        "SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d
         JOIN pg_extension x ON x.oid = d.refobjid AND x.extname = 'pg_saas'
         WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'",
        // Row level security and policies on every table and partition.
        "SELECT format('rls %s %s/%s', c.oid::regclass, c.relrowsecurity, c.relforcerowsecurity) FROM pg_class c
         WHERE c.relnamespace IN ('saas'::regnamespace, 'app'::regnamespace) AND c.relkind IN ('r', 'p')",
        "SELECT format('policy %s on %s %s %s %s using %s check %s', p.polname, p.polrelid::regclass, p.polcmd,
                       p.polpermissive, p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid),
                       pg_get_expr(p.polwithcheck, p.polrelid))
         FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
         WHERE c.relnamespace IN ('saas'::regnamespace, 'app'::regnamespace)",
        // Keys, indexes and triggers of every table and partition.
        "SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
         WHERE c.relnamespace IN ('saas'::regnamespace, 'app'::regnamespace)",
        "SELECT format('constraint %s %s %s', co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid))
         FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid
         WHERE c.relnamespace IN ('saas'::regnamespace, 'app'::regnamespace)",
        "SELECT format('trigger %s %s', pg_get_triggerdef(t.oid), t.tgenabled) FROM pg_trigger t
         JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace IN ('saas'::regnamespace, 'app'::regnamespace) AND NOT t.tgisinternal",
        // Where the sequences stand (the log's ids and the tables' identities).
        "SELECT format('sequence %s %s', c.oid::regclass, pg_sequence_last_value(c.oid)) FROM pg_class c
         WHERE c.relnamespace IN ('saas'::regnamespace, 'app'::regnamespace) AND c.relkind = 'S'",
        // What the modules report.
        "SELECT format('verify %s %s %s %s %s %s %s', ok, kind, tenant_id, log_id, seal_no, detail, rows_checked)
         FROM saas.audit_verify('2026-01-01', '2027-01-01')",
        "SELECT 'tenancy ' || r::text FROM saas.tenancy_report('{app}') r",
        "SELECT 'runway ' || r::text FROM saas.partition_runway() r",
        "SELECT 'ltv source ' || relid::text || ' ' || source_id FROM saas.ltv_sources",
        "SELECT 'ltv reconcile ' || r::text FROM saas.ltv_reconcile('app.payments') r",
    ];
    for sql in facts {
        out.extend(lines(client, sql).await);
    }
    out.sort();
    out
}

/// What the modules do next, from the same state: maintenance, an audited
/// write sealed and verified, a request through pre_request, the tenancy
/// report. Run once on the source after its dumps, once on each restore.
async fn behaviour(client: &Client) -> Vec<String> {
    let mut out = lines(
        client,
        "SELECT format('maintenance %s %s %s %s', parent_table, action, partition_name, detail)
         FROM saas.run_maintenance(p_now => '2026-12-20 00:00+00') ORDER BY 1",
    )
    .await;
    client
        .batch_execute(
            "SET saas.audit_clock = '2026-11-20 10:00:00+00';
             INSERT INTO app.notes (tenant_id, body) VALUES ('00000001-0000-4000-8000-0000000000aa', 'after the restore');
             RESET saas.audit_clock;",
        )
        .await
        .unwrap_or_else(|e| panic!("audited write: {}", pg_err(&e)));
    out.extend(
        lines(
            client,
            "SELECT format('seal %s %s %s', tenant_id, seal_no, row_count) FROM saas.audit_seal() ORDER BY 1",
        )
        .await,
    );
    out.extend(
        lines(
            client,
            "SELECT format('verify %s %s %s %s', ok, kind, detail, rows_checked)
             FROM saas.audit_verify('2026-01-01', '2027-01-01') ORDER BY 1",
        )
        .await,
    );
    // A request as PostgREST makes it: settings, then pre_request, in one
    // transaction. The limiter's counters live in the cluster's shared
    // memory, so only which headers it sets is compared, not their values.
    client
        .batch_execute(
            r#"BEGIN;
               SELECT set_config('request.jwt.claims', '{"role": "upgrade_api", "sub": "0000000a-0000-4000-8000-0000000000aa", "tenant_id": "00000001-0000-4000-8000-0000000000aa"}', true),
                      set_config('request.method', 'GET', true),
                      set_config('request.path', '/notes', true),
                      set_config('request.headers', '{}', true);
               SELECT saas.pre_request();"#,
        )
        .await
        .unwrap_or_else(|e| panic!("pre_request: {}", pg_err(&e)));
    out.extend(
        lines(
            client,
            "SELECT 'request admitted for ' || saas.current_tenant() || ', headers '
                    || (SELECT string_agg(k, ',' ORDER BY k)
                        FROM jsonb_array_elements(current_setting('response.headers')::jsonb) e,
                             jsonb_object_keys(e) k)",
        )
        .await,
    );
    client.batch_execute("COMMIT").await.unwrap();
    // The llm cache answers, budgets and the ledger's cost as before.
    client
        .batch_execute("BEGIN; SET LOCAL client_min_messages = error; SELECT saas.set_tenant('00000001-0000-4000-8000-0000000000aa');")
        .await
        .unwrap_or_else(|e| panic!("llm: {}", pg_err(&e)));
    out.extend(
        lines(
            client,
            "SELECT 'llm ' || x FROM (
               SELECT saas.llm_cache_get('{\"model\": \"gpt-4o\", \"temperature\": 0, \"messages\": [{\"role\": \"user\", \"content\": \"hello\"}]}')::text AS x
               UNION ALL SELECT format('%s %s', b.period, b.max_cost_micros) FROM saas.llm_budget_status() b
               UNION ALL SELECT saas.llm_cost('openai', 'gpt-4o', 1000, 300, 800, 0, 0, '2026-10-15')::text
               -- the semantic entry still hits (and says how similar); the shared one too
               UNION ALL SELECT saas.llm_cache_lookup('{\"model\": \"gpt-4o\", \"temperature\": 0, \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"France capital?\"}]}', '{0.99, 0.05, 0}')::text
               UNION ALL SELECT saas.llm_shared_get('{\"model\": \"gpt-4o\", \"temperature\": 0, \"messages\": [{\"role\": \"user\", \"content\": \"Name a project\"}]}')::text
               UNION ALL SELECT format('semantic hits %s', count(*)) FROM saas.llm_semantic_hits) q ORDER BY 1",
        )
        .await,
    );
    client.batch_execute("COMMIT").await.unwrap();
    out.extend(
        lines(
            client,
            "SELECT 'tenancy ' || r::text FROM saas.tenancy_report('{app}') r ORDER BY 1",
        )
        .await,
    );
    // The ledger triggers still fire on the restored table, under the
    // restored source id, and the summary reads the restored series.
    client
        .batch_execute(
            "INSERT INTO app.payments (tenant_id, customer_id, amount, paid_at)
             VALUES ('00000001-0000-4000-8000-0000000000aa', 'c1', 99.99, '2026-11-02 10:00+00');
             UPDATE app.payments SET amount = amount + 1 WHERE customer_id = 'c4';",
        )
        .await
        .unwrap_or_else(|e| panic!("ltv write: {}", pg_err(&e)));
    out.extend(
        lines(
            client,
            "SELECT format('ltv ledger %s %s %s %s %s', tenant_id, customer_id, net, payments, last_payment_on)
             FROM saas.ltv_ledger ORDER BY 1",
        )
        .await,
    );
    out.extend(
        lines(
            client,
            "SELECT 'ltv reconcile after write ' || count(*) FROM saas.ltv_reconcile('app.payments')",
        )
        .await,
    );
    client
        .batch_execute("BEGIN; SELECT saas.set_tenant('00000001-0000-4000-8000-0000000000aa')")
        .await
        .unwrap();
    out.extend(
        lines(
            client,
            "SELECT 'ltv summary ' || s::text FROM saas.ltv_summary('1 day', '2026-11-30') s ORDER BY 1",
        )
        .await,
    );
    client.batch_execute("COMMIT").await.unwrap();
    // Memory search works on the restored data: each model's HNSW index is
    // there (built again by the restore), the index stage and brute force
    // answer as before, with the same explanations.
    out.extend(
        lines(
            client,
            "SELECT format('memory model %s %s %s index %s', model, hnsw_m, hnsw_ef_construction,
                           pg_get_indexdef(to_regclass('saas.' || index_name)))
             FROM saas.memory_models ORDER BY 1",
        )
        .await,
    );
    out.extend(
        lines(
            client,
            "SELECT format('memory tenant index %s %s %s', model, tenant_id,
                           pg_get_indexdef(to_regclass('saas.' || index_name)))
             FROM saas.memory_tenant_indexes ORDER BY 1",
        )
        .await,
    );
    client
        .batch_execute("BEGIN; SET LOCAL saas.memory_log_sample_rate = 0; SELECT saas.set_tenant('00000001-0000-4000-8000-0000000000aa');")
        .await
        .unwrap_or_else(|e| panic!("memory: {}", pg_err(&e)));
    out.extend(
        lines(
            client,
            "SELECT format('memory search %s %s %s', rank, memory_id, explanation)
             FROM saas.memory_search('[1,0,0]', 'fill-3', k => 3, subjects => '{patient:1}', p_now => '2026-11-20 00:00+00')",
        )
        .await,
    );
    client
        .batch_execute("SET LOCAL saas.memory_exact_below = 0")
        .await
        .unwrap();
    out.extend(
        lines(
            client,
            "SELECT format('memory search by index %s %s %s', rank, memory_id, explanation)
             FROM saas.memory_search('[0,1]', 'fill-2', k => 2, p_now => '2026-11-20 00:00+00')",
        )
        .await,
    );
    client.batch_execute("COMMIT").await.unwrap();
    out
}

fn differences(want: &[String], got: &[String]) -> String {
    let a: BTreeSet<&String> = want.iter().collect();
    let b: BTreeSet<&String> = got.iter().collect();
    let mut out = String::new();
    for l in a.difference(&b) {
        out.push_str(&format!("only before the dump:\n  {l}\n"));
    }
    for l in b.difference(&a) {
        out.push_str(&format!("only after the restore:\n  {l}\n"));
    }
    if out.is_empty() && want != got {
        out.push_str("same lines in a different order or number\n");
    }
    out
}

/// The restored database equals the source and behaves as it did.
async fn compare(
    target: &Cluster,
    how: &str,
    before: &[String],
    installs: &[String],
    next: &[String],
) {
    let client = target.connect(DB).await;
    let after = snapshot(&client).await;
    assert!(
        after == before,
        "{how}: the restore differs from the source:\n{}",
        differences(before, &after)
    );
    // The source's installations come back, with the restore's own on top.
    let restored = lines(
        &client,
        "SELECT format('%s %s', installed_at, version) FROM saas.installations",
    )
    .await;
    for row in installs {
        assert!(
            restored.contains(row),
            "{how}: installation {row} is missing after the restore: {restored:?}"
        );
    }
    assert_eq!(
        restored.len(),
        installs.len() + 1,
        "{how}: installations {restored:?}"
    );
    let behaved = behaviour(&client).await;
    assert!(
        behaved == next,
        "{how}: the restored database behaves differently from the source:\n{}",
        differences(next, &behaved)
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn dump_and_restore_in_every_format_bring_everything_back() {
    if std::env::var(common::URL_ENV)
        .map(|u| u.is_empty())
        .unwrap_or(true)
    {
        eprintln!(
            "SKIPPED dump_and_restore: {} is not set; `make test` runs it",
            common::URL_ENV
        );
        return;
    }
    let port: u16 = std::env::var("BACKUP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(54334);
    let source = Cluster::start("backup-source", port);
    let target = Cluster::start("backup-target", port + 1);
    let dir = tempdir();

    // The source: a busy server (its transaction ids well ahead of the new
    // target's), with state in every module.
    source.fresh_db().await;
    let src = source.connect(DB).await;
    src.batch_execute(
        "DO $$ BEGIN FOR i IN 1..5000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$;",
    )
    .await
    .unwrap();
    src.batch_execute("SET client_min_messages = warning; CREATE EXTENSION pg_saas CASCADE; CREATE EXTENSION pg_cron;")
        .await
        .unwrap_or_else(|e| panic!("install: {}", pg_err(&e)));
    src.batch_execute(FILL)
        .await
        .unwrap_or_else(|e| panic!("fill: {}", pg_err(&e)));
    src.batch_execute(FILL_LTV)
        .await
        .unwrap_or_else(|e| panic!("ltv fill: {}", pg_err(&e)));
    src.batch_execute(MORE_STATE)
        .await
        .unwrap_or_else(|e| panic!("more state: {}", pg_err(&e)));
    src.batch_execute(FILL_LLM)
        .await
        .unwrap_or_else(|e| panic!("llm fill: {}", pg_err(&e)));
    src.batch_execute(FILL_MEMORY)
        .await
        .unwrap_or_else(|e| panic!("memory fill: {}", pg_err(&e)));
    src.batch_execute("SELECT saas.audit_seal(); SELECT saas.usage_flush();")
        .await
        .unwrap();
    let before = snapshot(&src).await;
    let installs = lines(
        &src,
        "SELECT format('%s %s', installed_at, version) FROM saas.installations",
    )
    .await;
    assert_eq!(installs.len(), 1);

    // Every format, taken before the source changes again.
    let custom = dir.join("db.dump");
    let plain = dir.join("db.sql");
    let directory = dir.join("db.dir");
    let schema = dir.join("schema.dump");
    let data = dir.join("data.dump");
    for (file, args) in [
        (&custom, vec!["-Fc"]),
        (&plain, vec!["-Fp"]),
        (&directory, vec!["-Fd", "--jobs", "2"]),
        (&schema, vec!["-Fc", "--schema-only"]),
        (&data, vec!["-Fc", "--data-only"]),
    ] {
        let mut a: Vec<&str> = args.clone();
        a.extend(["-f", path_str(file), DB]);
        check_quiet(&source.run("pg_dump", &a), &format!("pg_dump {args:?}"));
    }
    // What the source does next, to hold every restore against.
    let next = behaviour(&src).await;
    assert!(
        next.iter().any(|l| l.starts_with("seal ")),
        "the source sealed nothing new: {next:?}"
    );
    drop(src);

    let restores: [(&str, Vec<Vec<String>>); 4] = [
        (
            "custom format",
            vec![pg_restore(&[
                "--exit-on-error",
                "-d",
                DB,
                path_str(&custom),
            ])],
        ),
        (
            "plain format",
            vec![psql(&[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                DB,
                "-f",
                path_str(&plain),
            ])],
        ),
        (
            "directory format, 2 jobs",
            vec![pg_restore(&[
                "--exit-on-error",
                "--jobs",
                "2",
                "-d",
                DB,
                path_str(&directory),
            ])],
        ),
        (
            "schema only, then data only",
            vec![
                pg_restore(&["--exit-on-error", "-d", DB, path_str(&schema)]),
                // In replica mode (Cluster::run): the audit triggers the
                // schema restore made must not log the restored rows again.
                pg_restore(&["--exit-on-error", "--data-only", "-d", DB, path_str(&data)]),
            ],
        ),
    ];
    for (how, steps) in restores {
        target.fresh_db().await;
        for step in steps {
            let (program, args) = step.split_first().unwrap();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = target.run(program, &args);
            check(&out, &format!("{how}: {program}"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.contains("ERROR") && !stderr.contains("WARNING"),
                "{how}: {program} reported:\n{stderr}"
            );
        }
        compare(&target, how, &before, &installs, &next).await;
    }

    // A database where pg_saas was created before the restore: one clear error.
    target.fresh_db().await;
    let pre = target.connect(DB).await;
    pre.batch_execute("SET client_min_messages = warning; CREATE EXTENSION pg_saas CASCADE")
        .await
        .unwrap();
    drop(pre);
    let out = target.run(
        "pg_restore",
        &["--exit-on-error", "-d", DB, path_str(&custom)],
    );
    assert!(
        !out.status.success(),
        "a restore over an existing pg_saas succeeded"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pg_saas was installed in this database before the restore began")
            && stderr.contains("Restore into an empty database"),
        "the restore over an existing pg_saas did not say why:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("ERROR").count(),
        1,
        "more than one error:\n{stderr}"
    );
}

fn pg_restore(args: &[&str]) -> Vec<String> {
    std::iter::once("pg_restore")
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

fn psql(args: &[&str]) -> Vec<String> {
    std::iter::once("psql")
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

/// A fresh directory under target/ that the postgres user cannot need:
/// dumps are written and read by the client tools, which run as us.
fn tempdir() -> PathBuf {
    let dir = root().join("target/backup-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
