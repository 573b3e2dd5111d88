//! Upgrades: a database created at every released version, filled with data,
//! then upgraded with `ALTER EXTENSION pg_saas UPDATE`, must end exactly as a
//! fresh install of the current version filled the same way: the same member
//! objects, described in full (definitions, privileges, comments, registry
//! rows), the same schema-only dump, and its data intact and verifiable.
//!
//! Released versions are the frozen install scripts `sql/pg_saas--X.Y.Z.sql`;
//! a missing or diverging upgrade script fails here.

mod common;

use common::{connect_to, pg_err, recreate_db};

use std::collections::BTreeSet;
use std::process::Command;
use tokio_postgres::Client;

const FILL: &str = include_str!("upgrade/fill.sql");
/// The llm module's data (0.2.0), written after the upgrade and into the fresh install.
const FILL_LLM: &str = include_str!("upgrade/fill_llm.sql");
/// The ltv module's data (0.2.0 on): run on the upgraded and the fresh
/// database after their schemas are compared, and compared in turn.
const FILL_LTV: &str = include_str!("upgrade/fill_ltv.sql");
/// The memory module's data (0.2.0 on): run like the ltv fill, after the
/// schemas are compared, and compared in turn.
const FILL_MEMORY: &str = include_str!("upgrade/fill_memory.sql");

/// Every released version, from the frozen install scripts in sql/.
fn released_versions() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
    let mut versions: Vec<String> = std::fs::read_dir(dir)
        .expect("read sql/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| {
            let v = f.strip_prefix("pg_saas--")?.strip_suffix(".sql")?;
            (!v.contains("--")).then(|| v.to_string())
        })
        .collect();
    versions.sort();
    versions
}

/// The extension's member objects, each described by everything a user or
/// PostgreSQL sees of it, one line per fact, sorted.
const DESCRIBE_MEMBERS: &str = r#"
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'pg_saas'),
m AS (
  SELECT d.classid, d.objid, d.objsubid FROM pg_depend d, ext
  WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
rels AS (
  SELECT c.oid FROM pg_class c JOIN m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
  UNION
  SELECT t.typrelid FROM pg_type t JOIN m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
  WHERE t.typrelid <> 0
)
SELECT line FROM (
  SELECT 'member ' || pg_describe_object(m.classid, m.objid, m.objsubid) AS line FROM m
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure || E'\n' || pg_get_functiondef(p.oid)
         || E'\nacl ' || coalesce(p.proacl::text, 'default')
         || E'\ncomment ' || coalesce(obj_description(p.oid, 'pg_proc'), '')
  FROM pg_proc p JOIN m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
  WHERE p.prokind IN ('f', 'p')
  UNION ALL
  SELECT format('relation %s kind %s persistence %s rls %s/%s acl %s options %s partkey %s comment %s',
                c.oid::regclass, c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity,
                coalesce(c.relacl::text, 'default'), c.reloptions, pg_get_partkeydef(c.oid),
                obj_description(c.oid, 'pg_class'))
  FROM pg_class c JOIN rels r ON r.oid = c.oid
  UNION ALL
  SELECT format('column %s #%s %s %s notnull %s default %s identity %s generated %s acl %s comment %s',
                a.attrelid::regclass,
                row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
                quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.attnotnull,
                pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, a.attacl,
                col_description(a.attrelid, a.attnum))
  FROM pg_attribute a JOIN rels r ON r.oid = a.attrelid
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
  WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT format('constraint %s %s %s', coalesce(co.conrelid::regclass::text, co.contypid::regtype::text),
                co.conname, pg_get_constraintdef(co.oid))
  FROM pg_constraint co
  WHERE co.conrelid IN (SELECT oid FROM rels)
     OR co.contypid IN (SELECT objid FROM m WHERE classid = 'pg_type'::regclass)
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM rels)
  UNION ALL
  SELECT format('trigger %s enabled %s', pg_get_triggerdef(t.oid), t.tgenabled)
  FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rels) AND NOT t.tgisinternal
  UNION ALL
  SELECT format('policy %s on %s cmd %s permissive %s roles %s using %s check %s', po.polname,
                po.polrelid::regclass, po.polcmd, po.polpermissive, po.polroles::regrole[],
                pg_get_expr(po.polqual, po.polrelid), pg_get_expr(po.polwithcheck, po.polrelid))
  FROM pg_policy po WHERE po.polrelid IN (SELECT oid FROM rels)
  UNION ALL
  SELECT 'view ' || c.oid::regclass || ' ' || pg_get_viewdef(c.oid)
  FROM pg_class c JOIN rels r ON r.oid = c.oid WHERE c.relkind IN ('v', 'm')
  UNION ALL
  SELECT format('sequence %s %s %s %s %s %s %s', s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart,
                s.seqincrement, s.seqmax, s.seqmin, s.seqcycle)
  FROM pg_sequence s WHERE s.seqrelid IN (SELECT oid FROM rels)
  UNION ALL
  SELECT format('type %s kind %s enum %s comment %s', t.oid::regtype, t.typtype,
                (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
                obj_description(t.oid, 'pg_type'))
  FROM pg_type t JOIN m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
  UNION ALL
  SELECT format('event trigger %s on %s runs %s tags %s enabled %s', e.evtname, e.evtevent,
                e.evtfoid::regprocedure, e.evttags, e.evtenabled)
  FROM pg_event_trigger e JOIN m ON m.classid = 'pg_event_trigger'::regclass AND m.objid = e.oid
  UNION ALL
  SELECT format('dumped config %s where %s', c.cfg::regclass, c.cond)
  FROM pg_extension x, unnest(x.extconfig, x.extcondition) AS c(cfg, cond) WHERE x.extname = 'pg_saas'
  UNION ALL
  SELECT format('initial privileges %s %s', pg_describe_object(i.classoid, i.objoid, i.objsubid), i.initprivs)
  FROM pg_init_privs i JOIN m ON m.classid = i.classoid AND m.objid = i.objoid
  UNION ALL
  SELECT format('schema %s acl %s comment %s', n.nspname, n.nspacl, obj_description(n.oid, 'pg_namespace'))
  FROM pg_namespace n WHERE n.nspname = 'saas'
) facts
ORDER BY line
"#;

/// Rows the extension's scripts write into its own tables (registries),
/// which a fresh install and an upgrade must both hold.
async fn registry_rows(client: &Client) -> Vec<String> {
    let tables: Vec<String> = client
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c
             JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
             JOIN pg_extension x ON x.oid = d.refobjid AND x.extname = 'pg_saas'
             WHERE c.relkind = 'r' AND c.oid <> ALL (x.extconfig)
               -- runtime state, not registry: rate-limit keys, and the audit
               -- xid base with the time it was fixed
               AND c.relname NOT IN ('rate_limit_state', 'audit_xid_base')
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut rows = Vec::new();
    for t in tables
        .iter()
        .map(String::as_str)
        .chain(["saas.partition_hooks"])
    {
        let filter = if t == "saas.partition_hooks" {
            "WHERE builtin"
        } else {
            ""
        };
        for r in client
            .query(
                &format!("SELECT row_to_json(x)::text FROM {t} x {filter} ORDER BY 1"),
                &[],
            )
            .await
            .unwrap()
        {
            rows.push(format!("{t}: {}", r.get::<_, String>(0)));
        }
    }
    rows
}

/// Runs the ltv fill, then what the module reports: the ledger, the daily
/// series, reconcile, the summary, metrics, cohorts and a risk score.
async fn ltv_state(client: &Client, what: &str) -> Vec<String> {
    client
        .batch_execute(FILL_LTV)
        .await
        .unwrap_or_else(|e| panic!("ltv fill {what}: {}", pg_err(&e)));
    // One transaction: the tenant set_tenant() chose lasts until its end.
    client
        .batch_execute("BEGIN; SELECT saas.set_tenant('00000001-0000-4000-8000-0000000000aa')")
        .await
        .unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT format('ledger %s %s %s %s %s %s %s %s %s', tenant_id, customer_id, currency, gross, refunds, net, payments, first_payment_on, last_payment_on) FROM saas.ltv_ledger ORDER BY 1",
        "SELECT format('daily %s', count(*)) || ' ' || md5(string_agg(format('%s %s %s %s %s %s', tenant_id, customer_id, day, gross, refunds, payments), ',' ORDER BY tenant_id, customer_id, day)) FROM saas.ltv_daily",
        "SELECT format('reconcile %s', count(*)) FROM saas.ltv_reconcile('app.payments')",
        "SELECT format('summary %s', s) FROM saas.ltv_summary('1 day', '2026-11-30') s ORDER BY 1",
        "SELECT format('metrics %s', m) FROM saas.revenue_metrics('2026-08-01', '2026-12-01') m ORDER BY 1",
        "SELECT format('cohorts %s', c) FROM saas.cohorts() c ORDER BY 1",
        "SELECT format('risk %s', saas.retention_risk('{\"motivational_drivers_match\": 45, \"working_preferences_match\": 45, \"role_skill_fit\": 70, \"last_assessment_days\": 10, \"performance_trend\": \"up\"}'))",
    ] {
        for r in client
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{what}: {sql}: {}", pg_err(&e)))
        {
            out.push(r.get::<_, Option<String>>(0).unwrap_or_default());
        }
    }
    client.batch_execute("COMMIT").await.unwrap();
    out
}

/// Runs the memory fill, then what the module reports: models and their
/// indexes, memories, embeddings, entity links, a search with its
/// explanations (index stage and brute force) and the query log.
async fn memory_state(client: &Client, what: &str) -> Vec<String> {
    client
        .batch_execute(FILL_MEMORY)
        .await
        .unwrap_or_else(|e| panic!("memory fill {what}: {}", pg_err(&e)));
    let mut out = Vec::new();
    for sql in [
        "SELECT format('model %s %s %s %s %s %s', model, dims, distance, index_name, hnsw_m, hnsw_ef_construction) FROM saas.memory_models ORDER BY 1",
        "SELECT 'index ' || pg_get_indexdef(to_regclass('saas.' || index_name)) FROM saas.memory_models ORDER BY 1",
        "SELECT format('tenant index %s %s %s', model, tenant_id, pg_get_indexdef(to_regclass('saas.' || index_name))) FROM saas.memory_tenant_indexes ORDER BY 1",
        "SELECT format('memory %s %s %s %s %s %s %s %s %s %s %s %s', tenant_id, id, subject, kind, content, metadata, importance, evergreen, event_at, last_accessed_at, access_count, entities) FROM saas.memories ORDER BY 1",
        "SELECT format('embedding %s %s %s %s %s', tenant_id, memory_id, model, embedding, embedded_at) FROM saas.memory_embeddings ORDER BY 1",
        "SELECT format('entity %s %s %s', tenant_id, entity, memory_id) FROM saas.memory_entities ORDER BY 1",
        "SELECT format('log %s %s %s %s %s %s %s %s %s %s %s', tenant_id, model, k, stage, exact, candidates, returned, top_score, subjects, entities, result_ids) FROM saas.memory_query_log ORDER BY 1",
        "BEGIN",
        "SET LOCAL saas.memory_log_sample_rate = 0",
        "SELECT saas.set_tenant('00000001-0000-4000-8000-0000000000aa')::text",
        "SELECT format('search %s %s %s %s', rank, memory_id, score, explanation) FROM saas.memory_search('[1,0,0]', 'fill-3', k => 3, subjects => '{patient:1}', p_now => '2026-10-20 00:00+00') ORDER BY rank",
        "SET LOCAL saas.memory_exact_below = 0",
        "SELECT format('search by index %s %s %s %s', rank, memory_id, score, explanation) FROM saas.memory_search('[0,1]', 'fill-2', k => 2, p_now => '2026-10-20 00:00+00') ORDER BY rank",
        "COMMIT",
    ] {
        for r in client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{what}: {sql}: {}", pg_err(&e)))
        {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = r {
                out.push(r.get(0).unwrap_or_default().to_string());
            }
        }
    }
    out
}

/// Fills a database and seals its audit log (in a transaction of its own).
async fn fill(client: &Client, what: &str) {
    client
        .batch_execute(FILL)
        .await
        .unwrap_or_else(|e| panic!("fill {what}: {}", pg_err(&e)));
    // A seal covers transactions below the cluster's snapshot horizon: a
    // transaction of a test running in parallel (another database of the
    // same cluster) can hold it below the fill's for a moment; wait for it.
    let mut sealed: i64 = 0;
    for _ in 0..100 {
        sealed = client
            .query_one("SELECT count(*) FROM saas.audit_seal()", &[])
            .await
            .unwrap_or_else(|e| panic!("seal {what}: {}", pg_err(&e)))
            .get(0);
        if sealed > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(sealed > 0, "{what}: the fill left nothing to seal");
}

/// The llm module in use (it came with 0.2.0): cache (exact, semantic, shared), ledger, prices, budgets.
async fn fill_llm(client: &Client, what: &str) {
    client
        .batch_execute(FILL_LLM)
        .await
        .unwrap_or_else(|e| panic!("llm fill {what}: {}", pg_err(&e)));
    let (hits, cost): (i64, i64) = client
        .query_one(
            "SELECT (SELECT sum(hit_count)::bigint FROM saas.llm_cache) + (SELECT sum(hit_count)::bigint FROM saas.llm_cache_shared),
                    (SELECT sum(cost_micros)::bigint FROM saas.llm_usage)",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or_else(|e| panic!("llm fill {what}: {}", pg_err(&e)));
    // 200 x 2 + 800 x 1 + 300 x 8 = 3600 (openai, the October price); 100 x 3 +
    // 2000 x 0.3 + 500 x 3.75 + 50 x 15 = 3525 (anthropic, cache apart).
    // Hits: the exact one, the semantic one (counted on its entry), the shared one.
    assert_eq!((hits, cost), (3, 7125), "llm fill {what}");
}

async fn describe(client: &Client) -> Vec<String> {
    let mut lines: Vec<String> = client
        .query(DESCRIBE_MEMBERS, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    lines.extend(registry_rows(client).await);
    lines
}

/// `pg_dump --schema-only` of `db`, without comments, blank lines and the
/// version-dependent header.
fn schema_dump(url: &str, db: &str) -> Vec<String> {
    let port = url
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .unwrap_or("5432");
    let bindir = Command::new(std::env::var("PG_CONFIG").unwrap_or_else(|_| "pg_config".into()))
        .arg("--bindir")
        .output()
        .expect("pg_config --bindir");
    let bindir = String::from_utf8(bindir.stdout).unwrap().trim().to_string();
    let out = Command::new(format!("{bindir}/pg_dump"))
        .args([
            "--schema-only",
            "--no-owner",
            "-h",
            "localhost",
            "-p",
            port,
            "-U",
            "postgres",
            db,
        ])
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump {db}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        // \\restrict lines carry a random key per dump.
        .filter(|l| !l.is_empty() && !l.starts_with("--") && !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .map(str::to_string)
        .collect()
}

/// The differences of two descriptions, for a readable failure.
fn differences(fresh: &[String], upgraded: &[String]) -> String {
    let a: BTreeSet<&String> = fresh.iter().collect();
    let b: BTreeSet<&String> = upgraded.iter().collect();
    let mut out = String::new();
    for l in a.difference(&b) {
        out.push_str(&format!("only in the fresh install:\n  {l}\n"));
    }
    for l in b.difference(&a) {
        out.push_str(&format!("only after the upgrade:\n  {l}\n"));
    }
    if out.is_empty() && fresh != upgraded {
        out.push_str("same lines in a different order or number\n");
    }
    out
}

/// The contents of every table in schema saas (partitions of the log
/// included), as a digest per table: what an upgrade must not touch.
async fn data_digest(client: &Client) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = client
        .query(
            // partition_hooks changes form (regprocedure became text in
            // 0.2.0): compared by the function each hook resolves to.
            "SELECT c.oid::regclass::text FROM pg_class c
             WHERE c.relnamespace = 'saas'::regnamespace AND c.relkind = 'r'
               AND c.oid <> 'saas.partition_hooks'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Built-in hooks of modules new in 0.2.0 are the upgrade's own rows.
    let hooks = client
        .query_one(
            "SELECT count(*)::text || ' ' || string_agg(format('%s %s %s', hook_name,
                    pg_catalog.to_regprocedure(hook::text)::oid, builtin), ', ' ORDER BY hook_name)
             FROM saas.partition_hooks
             WHERE hook_name NOT IN ('llm', 'ltv')",
            &[],
        )
        .await
        .unwrap();
    let mut out = vec![("partition hooks".to_string(), 0, hooks.get::<_, String>(0))];
    for t in tables {
        let row = client
            .query_one(
                // Columns an upgrade adds are NULL in the rows it found
                // (0.2.0's months of audit_seals): left out of the text.
                &format!("SELECT count(*), coalesce(md5(string_agg(j, '|' ORDER BY j)), '') FROM (SELECT jsonb_strip_nulls(to_jsonb(x))::text AS j FROM {t} x) x"),
                &[],
            )
            .await
            .unwrap();
        out.push((t, row.get(0), row.get(1)));
    }
    out
}

#[tokio::test]
async fn upgrade_from_every_release_equals_a_fresh_install() {
    let Some(admin) = common::connect("upgrade_from_every_release_equals_a_fresh_install").await
    else {
        return;
    };
    let url = std::env::var(common::URL_ENV).unwrap();
    let current: String = admin
        .query_one(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_saas'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let released = released_versions();
    assert!(
        released.contains(&"0.1.0".to_string()),
        "the frozen 0.1.0 install script is missing: {released:?}"
    );

    recreate_db(&admin, "pg_saas_upgrade_fresh").await;
    let fresh = connect_to(&url, "pg_saas_upgrade_fresh").await;
    fresh
        .batch_execute("SET client_min_messages = warning; CREATE EXTENSION pg_saas CASCADE")
        .await
        .unwrap();
    fill(&fresh, "the fresh install").await;
    fill_llm(&fresh, "the fresh install").await;
    let fresh_members = describe(&fresh).await;
    let fresh_dump = schema_dump(&url, "pg_saas_upgrade_fresh");
    let fresh_ltv = ltv_state(&fresh, "the fresh install").await;
    let fresh_memory = memory_state(&fresh, "the fresh install").await;
    assert!(
        fresh_memory
            .iter()
            .any(|l| l.starts_with("search by index 1 "))
            && fresh_memory.iter().any(|l| l.starts_with("log ")),
        "the memory fill searched nothing: {fresh_memory:?}"
    );

    for old in released.iter().filter(|v| **v != current) {
        let db = format!("pg_saas_upgrade_{}", old.replace('.', "_"));
        recreate_db(&admin, &db).await;
        let client = connect_to(&url, &db).await;
        client
            .batch_execute(&format!("SET client_min_messages = warning; CREATE EXTENSION pg_saas VERSION '{old}' CASCADE"))
            .await
            .unwrap_or_else(|e| panic!("install {old} with the current library (a C symbol it names is gone?): {}", pg_err(&e)));
        fill(&client, &format!("at {old}")).await;
        let before = data_digest(&client).await;

        client
            .batch_execute("ALTER EXTENSION pg_saas UPDATE")
            .await
            .unwrap_or_else(|e| {
                panic!("ALTER EXTENSION pg_saas UPDATE from {old}: {}", pg_err(&e))
            });
        let version: String = client
            .query_one(
                "SELECT extversion FROM pg_extension WHERE extname = 'pg_saas'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            version, current,
            "from {old}: no upgrade path reaches {current} (sql/pg_saas--A--B.sql missing?)"
        );

        // The data as the upgrade left it, before the llm fill adds to it.
        let mut after = data_digest(&client).await;
        fill_llm(&client, &format!("from {old}")).await;
        let upgraded_members = describe(&client).await;
        assert!(
            upgraded_members == fresh_members,
            "from {old}: the upgraded extension differs from a fresh install of {current}:\n{}",
            differences(&fresh_members, &upgraded_members)
        );
        let upgraded_dump = schema_dump(&url, &db);
        assert!(
            upgraded_dump == fresh_dump,
            "from {old}: pg_dump --schema-only differs from a fresh install of {current}:\n{}",
            differences(&fresh_dump, &upgraded_dump)
        );

        // The data is untouched (tables the upgrade added aside), and the
        // audit trail still verifies.
        after.retain(|(t, _, _)| before.iter().any(|(b, _, _)| b == t));
        assert_eq!(
            before, after,
            "from {old}: the upgrade changed data in schema saas"
        );
        let bad: i64 = client
            .query_one(
                "SELECT count(*) FROM saas.audit_verify('2026-01-01', '2027-01-01') WHERE NOT ok",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            bad, 0,
            "from {old}: audit_verify finds problems after the upgrade"
        );
        let checked: i64 = client
            .query_one("SELECT coalesce(sum(rows_checked), 0)::bigint FROM saas.audit_verify('2026-01-01', '2027-01-01')", &[])
            .await
            .unwrap()
            .get(0);
        assert!(checked > 0, "from {old}: audit_verify checked no rows");
        // And the upgraded database keeps working: a full maintenance pass
        // runs every module's task without an error row.
        let errors: i64 = client
            .query_one(
                "SELECT count(*) FROM saas.run_maintenance(p_now => '2026-10-20 00:00+00') WHERE action = 'error'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            errors, 0,
            "from {old}: run_maintenance reports errors after the upgrade"
        );
        // The ltv module works on the upgraded database as on a fresh one.
        assert_eq!(
            ltv_state(&client, &format!("upgraded from {old}")).await,
            fresh_ltv,
            "from {old}: the ltv module behaves differently after the upgrade"
        );
        let upgraded_memory = memory_state(&client, &format!("upgraded from {old}")).await;
        assert!(
            upgraded_memory == fresh_memory,
            "from {old}: the memory module behaves differently after the upgrade:\n{}",
            differences(&fresh_memory, &upgraded_memory)
        );

        drop(client);
        admin
            .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .await
            .unwrap();
    }
    drop(fresh);
    admin
        .batch_execute("DROP DATABASE pg_saas_upgrade_fresh WITH (FORCE)")
        .await
        .unwrap();
}

/// A seal made by 0.1.0 covers its transaction range in every month; one
/// taken across a month boundary lost the checks of the newer month's rows
/// when retention retired the older month (issue 15, item 7). The upgrade
/// seals such a seal again month by month, so after retirement a deleted row
/// of the newer month is still found. Where 0.1.0's retention retired the
/// older month already, nothing can check the newer month's rows against that
/// seal any more, and audit_verify says so instead of answering ok.
#[tokio::test]
async fn a_0_1_0_seal_across_months_keeps_the_newer_month_checked() {
    let Some(admin) =
        common::connect("a_0_1_0_seal_across_months_keeps_the_newer_month_checked").await
    else {
        return;
    };
    let url = std::env::var(common::URL_ENV).unwrap();
    const SETUP: &str = "SET client_min_messages = warning;
        CREATE EXTENSION pg_saas VERSION '0.1.0' CASCADE;
        CREATE TABLE public.settings (key text PRIMARY KEY, value text);
        SELECT saas.audit_enable('public.settings');
        UPDATE saas.partition_config SET retention = '12 months' WHERE parent = 'saas.audit_log'::regclass;
        -- One transaction (the clock is read per row): whenever the
        -- horizon passes it, one 0.1.0 seal covers both months.
        BEGIN; SET LOCAL saas.audit_clock = '2025-12-31 23:59:00+00';
        INSERT INTO settings VALUES ('december', 'row');
        SET LOCAL saas.audit_clock = '2026-01-01 00:01:00+00';
        INSERT INTO settings VALUES ('january 1', 'row'), ('january 2', 'row'); COMMIT;
        SELECT count(*) FROM saas.run_maintenance('saas.audit_log', p_now => '2026-11-15');";
    // Retention at a time when December is past the 12 months and January is not.
    const RETIRE: &str =
        "SELECT count(*) FROM saas.run_maintenance('saas.audit_log', p_now => '2027-01-15')";
    const VERIFY: &str =
        "SELECT ok, kind, detail, retired_seals FROM saas.audit_verify('-infinity', 'infinity')";
    const DELETE_JANUARY_ROW: &str = "BEGIN; SET LOCAL session_replication_role = replica;
        DELETE FROM saas.audit_log WHERE new_values ->> 'key' = 'january 1'";
    let verdict = |r: tokio_postgres::Row| -> (bool, Option<String>, String, i64) {
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };

    for retire_first in [false, true] {
        let db = format!("pg_saas_upgrade_months_{retire_first}");
        recreate_db(&admin, &db).await;
        let client = connect_to(&url, &db).await;
        client
            .batch_execute(SETUP)
            .await
            .unwrap_or_else(|e| panic!("{db}: set up at 0.1.0: {}", pg_err(&e)));
        // Sealed once the horizon passes the transaction (other tests' open
        // transactions, in any database, can hold it back for a moment).
        let mut seals = 0i64;
        for _ in 0..600 {
            client
                .batch_execute("SELECT count(*) FROM saas.audit_seal()")
                .await
                .unwrap();
            seals = client
                .query_one(
                    "SELECT count(*) FROM saas.audit_seals
                     WHERE first_logged_at < '2026-01-01 00:00+00' AND last_logged_at >= '2026-01-01 00:00+00'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if seals > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(seals, 1, "{db}: 0.1.0 sealed December and January together");
        if retire_first {
            client.batch_execute(RETIRE).await.unwrap();
        }
        client
            .batch_execute("ALTER EXTENSION pg_saas UPDATE")
            .await
            .unwrap_or_else(|e| panic!("{db}: upgrade: {}", pg_err(&e)));
        let reseals: Vec<(i64, String)> = client
            .query(
                "SELECT row_count, to_char(month_from AT TIME ZONE 'UTC', 'YYYY-MM') FROM saas.audit_seals
                 WHERE reseals IS NOT NULL ORDER BY month_from",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if retire_first {
            assert!(
                reseals.is_empty(),
                "{db}: December's rows are gone: {reseals:?}"
            );
        } else {
            assert_eq!(
                reseals,
                vec![(1, "2025-12".to_string()), (2, "2026-01".to_string())],
                "{db}: the upgrade re-sealed the 0.1.0 seal month by month"
            );
            let v = verdict(client.query_one(VERIFY, &[]).await.unwrap());
            assert!(v.0, "{db}: before retention: {v:?}");
            client.batch_execute(RETIRE).await.unwrap();
        }
        let retired: i64 = client
            .query_one("SELECT count(*) FROM saas.audit_retired", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(retired, 1, "{db}: December retired");

        let v = verdict(client.query_one(VERIFY, &[]).await.unwrap());
        if retire_first {
            assert!(
                !v.0 && v.1.as_deref() == Some("unverifiable") && v.2.contains("cannot be checked"),
                "{db}: {v:?}"
            );
        } else {
            assert!(
                v.0 && v.3 == 2,
                "{db}: the 0.1.0 seal and December's re-seal retired: {v:?}"
            );
        }
        client.batch_execute(DELETE_JANUARY_ROW).await.unwrap();
        let v = verdict(client.query_one(VERIFY, &[]).await.unwrap());
        client.batch_execute("ROLLBACK").await.unwrap();
        if retire_first {
            assert!(
                !v.0 && v.1.as_deref() == Some("unverifiable"),
                "{db}: {v:?}"
            );
        } else {
            assert!(
                !v.0 && v.1.as_deref() == Some("seal")
                    && v.2.contains("1 of its 2 rows are missing"),
                "{db}: the deleted January row is found: {v:?}"
            );
        }
        // New rows after the upgrade are sealed by month and verify.
        client
            .batch_execute(
                "INSERT INTO settings VALUES ('later', 'row');
                 SELECT count(*) FROM saas.run_maintenance(p_now => '2027-01-15');",
            )
            .await
            .unwrap();
        let v = verdict(
            client
                .query_one(
                    "SELECT ok, kind, detail, retired_seals FROM saas.audit_verify(now() - interval '1 day', 'infinity')",
                    &[],
                )
                .await
                .unwrap(),
        );
        assert!(v.0, "{db}: rows written after the upgrade: {v:?}");
        drop(client);
        admin
            .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_release_has_an_update_path_to_the_current_version() {
    let Some(admin) =
        common::connect("every_release_has_an_update_path_to_the_current_version").await
    else {
        return;
    };
    let current: String = admin
        .query_one(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_saas'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for old in released_versions().iter().filter(|v| **v != current) {
        let path: Option<String> = admin
            .query_one(
                "SELECT path FROM pg_extension_update_paths('pg_saas') WHERE source = $1 AND target = $2",
                &[old, &current],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            path.is_some(),
            "no ALTER EXTENSION UPDATE path from {old} to {current}"
        );
    }
}
