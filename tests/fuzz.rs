//! Bad input on every public function: each function of schemas `saas` and
//! `saas_api` (but the internal `_` ones, triggers and event triggers) is
//! called with NULLs, extremes, wrong shapes and odd identifiers, one
//! argument at a time, each call in a transaction rolled back afterwards.
//! A call may succeed or fail; it fails this test when it answers XX000
//! (an internal error), an error without a HINT, a timeout (a hang), or
//! takes the server down, or sends a Rust backtrace to the client.

mod common;

use std::fmt::Write as _;
use tokio_postgres::{Client, NoTls};

const DB: &str = "pg_saas_fuzz";

/// Values to try for an argument of `type_name`: SQL literals, the
/// ordinary one first (the others are tried one argument at a time, with
/// the rest ordinary).
fn values(type_name: &str) -> Vec<String> {
    let lit = |v: &str| format!("'{}'::{type_name}", v.replace('\'', "''"));
    let mut out: Vec<String> = match type_name {
        "text" | "character varying" => [
            "fuzz",
            "",
            "fuzz_t.plain",
            "fuzz_t.\"Weird Name\"",
            "app.Weird Name",
            "999999",
            "no_such_schema.no_such_table",
            "/rpc/*",
            "a\"b'c\\d",
            "csv",
            "jsonl",
            "drop",
            "detach",
            "statement",
            "user",
            "tenant",
            "-1",
        ]
        .iter()
        .map(|v| lit(v))
        .chain([format!("repeat('x', 10000)::{type_name}")])
        .collect(),
        "name" => ["tenant_id", "", "no_such_column", "at", "Weird Name"]
            .iter()
            .map(|v| lit(v))
            .collect(),
        "regclass" => [
            "fuzz_t.plain",
            "fuzz_t.parted",
            "fuzz_t.a_view",
            "pg_catalog.pg_class",
            "saas.tenants",
            "saas.audit_log",
            "fuzz_t.\"Weird Name\"",
            "999999",
            "pg_temp.fuzz_temp",
        ]
        .iter()
        .map(|v| lit(v))
        .collect(),
        "integer" | "smallint" => ["1", "0", "-1", "2147483647", "-2147483648", "500"]
            .iter()
            .map(|v| lit(v))
            .collect(),
        "bigint" => [
            "1",
            "0",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
        ]
        .iter()
        .map(|v| lit(v))
        .collect(),
        "interval" => [
            "1 hour",
            "0",
            "-1 day",
            "100000 years",
            "1 microsecond",
            "1 month",
            "178000000 years",
        ]
        .iter()
        .map(|v| lit(v))
        .collect(),
        "timestamp with time zone" => [
            "2026-11-15 00:00+00",
            "infinity",
            "-infinity",
            "294276-12-31 00:00+00",
            "4713-01-01 00:00+00 BC",
        ]
        .iter()
        .map(|v| lit(v))
        .collect(),
        "timestamp without time zone" => ["2026-11-15 00:00", "infinity", "-infinity"]
            .iter()
            .map(|v| lit(v))
            .collect(),
        "date" => [
            "2026-11-15",
            "infinity",
            "-infinity",
            "5874897-12-31",
            "4713-01-01 BC",
        ]
        .iter()
        .map(|v| lit(v))
        .collect(),
        "boolean" => ["true", "false"].iter().map(|v| lit(v)).collect(),
        "uuid" => [
            "00000001-0000-4000-8000-00000000f022",
            "00000000-0000-0000-0000-000000000000",
        ]
        .iter()
        .map(|v| lit(v))
        .collect(),
        "text[]" => [
            "{}",
            "{tenant_id}",
            "{NULL}",
            "{{a,b},{c,d}}",
            "{\"\"}",
            "{no_such}",
        ]
        .iter()
        .map(|v| lit(v))
        .collect(),
        "name[]" => [
            "{fuzz_api}",
            "{}",
            "{NULL}",
            "{no_such_role}",
            "{{fuzz_api}}",
        ]
        .iter()
        .map(|v| lit(v))
        .collect(),
        "jsonb" | "json" => ["{}", "null", "[]", "{\"a\": 1}", "\"x\""]
            .iter()
            .map(|v| lit(v))
            .collect(),
        other => vec![format!("NULL::{other}")],
    };
    out.push(format!("NULL::{type_name}"));
    out
}

async fn setup(url: &str) -> Client {
    let (admin, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    common::recreate_db(&admin, DB).await;
    let client = connect_db(url).await;
    client
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE EXTENSION pg_saas CASCADE;
             DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fuzz_api') THEN CREATE ROLE fuzz_api NOLOGIN; END IF;
             END $$;
             CREATE SCHEMA fuzz_t;
             CREATE TABLE fuzz_t.plain (tenant_id uuid NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz NOT NULL DEFAULT now(), body text, PRIMARY KEY (tenant_id, id));
             CREATE TABLE fuzz_t.parted (tenant_id uuid NOT NULL, at timestamptz NOT NULL, body text) PARTITION BY RANGE (at);
             CREATE TABLE fuzz_t.\"Weird Name\" (tenant_id uuid NOT NULL, at timestamptz, v int);
             CREATE VIEW fuzz_t.a_view AS SELECT * FROM fuzz_t.plain;
             CREATE TEMP TABLE fuzz_temp (tenant_id uuid NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at);
             INSERT INTO saas.tenants (id, slug, name) VALUES ('00000001-0000-4000-8000-00000000f022', 'fuzz', 'Fuzz');",
        )
        .await
        .expect("fuzz fixture");
    client
}

async fn connect_db(url: &str) -> Client {
    common::connect_to(url, DB).await
}

/// A public function and its argument types (as format_type writes them).
struct Function {
    name: String,
    args: Vec<String>,
}

async fn functions(client: &Client) -> Vec<Function> {
    client
        .query(
            "SELECT n.nspname || '.' || quote_ident(p.proname),
                    coalesce(array_agg(format_type(t.typ, NULL) ORDER BY t.n) FILTER (WHERE t.typ IS NOT NULL), '{}')
             FROM pg_proc p
             JOIN pg_namespace n ON n.oid = p.pronamespace
             LEFT JOIN LATERAL unnest(p.proargtypes::oid[]) WITH ORDINALITY AS t(typ, n) ON true
             WHERE n.nspname IN ('saas', 'saas_api') AND p.prokind = 'f' AND p.proname NOT LIKE '\\_%'
               AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
             GROUP BY n.nspname, p.proname, p.oid
             ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Function { name: r.get(0), args: r.get(1) })
        .collect()
}

#[tokio::test]
async fn every_public_function_answers_bad_input_properly() {
    let url = match std::env::var(common::URL_ENV) {
        Ok(u) if !u.is_empty() => u,
        _ => {
            eprintln!(
                "SKIPPED every_public_function_answers_bad_input_properly: {} is not set",
                common::URL_ENV
            );
            return;
        }
    };
    let mut client = setup(&url).await;
    let funcs = functions(&client).await;
    assert!(
        funcs.len() >= 25,
        "found only {} public functions",
        funcs.len()
    );
    let mut problems = String::new();
    let mut calls = 0usize;
    for f in &funcs {
        let ordinary: Vec<String> = f.args.iter().map(|t| values(t)[0].clone()).collect();
        // The ordinary call, every argument NULL, then one argument at a time.
        let mut cases = vec![
            ordinary.clone(),
            f.args.iter().map(|t| format!("NULL::{t}")).collect(),
        ];
        for (i, t) in f.args.iter().enumerate() {
            for v in values(t).into_iter().skip(1) {
                let mut case = ordinary.clone();
                case[i] = v;
                cases.push(case);
            }
        }
        for case in cases {
            calls += 1;
            let call = format!("SELECT * FROM {}({})", f.name, case.join(", "));
            let sql = format!("BEGIN; SET LOCAL statement_timeout = '10s'; {call};");
            let outcome = client.batch_execute(&sql).await;
            if let Err(e) = outcome {
                match e.as_db_error() {
                    None => {
                        let _ = writeln!(problems, "{call}\n    -> the connection failed: {e}");
                        client = connect_db(&url).await;
                    }
                    Some(d) => {
                        let code = d.code().code();
                        // A Rust backtrace (pgrx adds one when the server
                        // runs with RUST_BACKTRACE set, as the test clusters do).
                        if d.detail().is_some_and(|t| {
                            t.contains("\n   0: ") || t.contains("stack backtrace")
                        }) {
                            let _ = writeln!(
                                problems,
                                "{call}\n    -> {code} with a Rust backtrace in its DETAIL"
                            );
                        }
                        if code == "XX000" {
                            let _ = writeln!(
                                problems,
                                "{call}\n    -> XX000 (internal error): {}",
                                d.message()
                            );
                        } else if code == "57014" {
                            let _ = writeln!(problems, "{call}\n    -> took longer than 10 s");
                        } else if d.hint().is_none_or(|h| h.trim().is_empty()) {
                            let _ = writeln!(
                                problems,
                                "{call}\n    -> {code} without a HINT: {}",
                                d.message()
                            );
                        }
                    }
                }
            }
            // Whatever happened, roll back; and the server must still answer.
            let _ = client.batch_execute("ROLLBACK").await;
            if client.simple_query("SELECT 1").await.is_err() {
                let _ = writeln!(problems, "{call}\n    -> the server stopped answering");
                client = connect_db(&url).await;
            }
        }
    }
    drop(client);
    let (admin, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        .await
        .unwrap();
    assert!(
        problems.is_empty(),
        "{calls} calls of {} functions; these answered badly:\n{problems}",
        funcs.len()
    );
}

/// An error PostgreSQL raises inside pg_saas's Rust code (here: a column
/// its kept query names, renamed under it) comes back without the Rust
/// backtrace pgrx would add when the server runs with RUST_BACKTRACE set,
/// as the test clusters do (scripts/cluster.sh).
#[tokio::test]
async fn rust_backtraces_never_reach_clients() {
    let Some(client) = common::connect("rust_backtraces_never_reach_clients").await else {
        return;
    };
    let set: Option<String> = client
        .query_one("SELECT current_setting('saas.tenant_claim', true)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(set.is_some(), "pg_saas is loaded");
    client
        .batch_execute(
            "BEGIN; ALTER TABLE saas.rate_limit_rules RENAME COLUMN cost TO cost_renamed",
        )
        .await
        .unwrap();
    let err = client
        .batch_execute("SELECT saas.rate_limit_rule_set('/rpc/fuzz_backtrace', 1, '1 hour')")
        .await
        .expect_err("the renamed column makes the rule's upsert fail");
    client.batch_execute("ROLLBACK").await.unwrap();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "42703", "{db:?}");
    let detail = db.detail().unwrap_or("");
    assert!(
        !detail.contains("   0: ") && !detail.contains("panic"),
        "a Rust backtrace reached the client:\n{detail}"
    );
}
