//! Audit through PostgREST-shaped requests, under tampering and under
//! concurrency: the request's actor, client and request id are recorded; the
//! log is readable only by a tenant's admins; every kind of after-the-fact
//! change is found by audit_verify; seals taken while transactions are in
//! flight never raise a false alarm.

mod common;

use common::{claims, random_uuid, Api};
use pg_saas::audit::canonical::{AuditRecord, JsonObject};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_postgres::{Client, GenericClient};

/// A day of its own for a test's rows (pinned with saas.audit_clock), so
/// verifying that window sees only this run's rows: (day, next day, noon).
fn random_day() -> (String, String, String) {
    let n = u32::from_str_radix(&random_uuid()[0..6], 16).unwrap();
    let (y, m, d) = (2006 + n % 14, 1 + (n / 14) % 12, 1 + (n / 168) % 27);
    (
        format!("{y}-{m:02}-{d:02} 00:00+00"),
        format!("{y}-{m:02}-{:02} 00:00+00", d + 1),
        format!("{y}-{m:02}-{d:02} 12:00+00"),
    )
}

async fn fixture(
    admin: &Client,
    schema: &str,
    tenants: &[(&str, &str)],
    members: &[(&str, &str, &str)],
) {
    // All of it under the shared-setup lock: tests run in parallel and DDL on
    // shared objects would otherwise collide.
    let mut sql = format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             tenant_id uuid NOT NULL, body text, updated_at timestamptz);
         SELECT saas.enable_tenancy('{schema}.notes');
         SELECT saas.audit_enable('{schema}.notes', '{{updated_at}}');
         GRANT USAGE ON SCHEMA {schema} TO anon, authenticated;
         GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.notes TO authenticated;"
    );
    for (id, slug) in tenants {
        let slug = format!("{slug}-{}", &id[0..8]);
        sql.push_str(&format!(
            "INSERT INTO saas.tenants (id, slug, name) VALUES ('{id}', '{slug}', '{slug}');"
        ));
    }
    for (tenant, user, role) in members {
        sql.push_str(&format!(
            "INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES ('{tenant}', '{user}', '{role}');"
        ));
    }
    common::shared_setup(admin, &sql)
        .await
        .unwrap_or_else(|e| panic!("fixture {schema}: {e:?}"));
}

#[tokio::test]
async fn requests_are_recorded_with_actor_client_and_request_id() {
    let admin = db_or_skip!("requests_are_recorded_with_actor_client_and_request_id");
    let (tenant_a, tenant_b) = (random_uuid(), random_uuid());
    let (admin_a, member_a, owner_b) = (random_uuid(), random_uuid(), random_uuid());
    let (tenant_a, tenant_b) = (tenant_a.as_str(), tenant_b.as_str());
    let (admin_a, member_a, owner_b) = (admin_a.as_str(), member_a.as_str(), owner_b.as_str());
    fixture(
        &admin,
        "it_audit_req",
        &[(tenant_a, "it-audit-a"), (tenant_b, "it-audit-b")],
        &[
            (tenant_a, admin_a, "admin"),
            (tenant_a, member_a, "member"),
            (tenant_b, owner_b, "owner"),
        ],
    )
    .await;
    let api_client = db_or_skip!("requests_are_recorded_with_actor_client_and_request_id");
    let api = Api::for_schema(api_client, "it_audit_req");

    api.insert("notes", json!([{"body": "first"}]))
        .claims(claims(member_a, tenant_a))
        .header("X-Forwarded-For", "198.51.100.23, 10.1.2.3")
        .header("User-Agent", "it-audit/2.0")
        .header("X-Request-Id", "req-insert-1")
        .send()
        .await
        .expect_ok();
    api.update("notes", json!({"body": "second"}))
        .eq("body", "first")
        .claims(claims(member_a, tenant_a))
        .header("X-Real-IP", "2001:db8::7")
        .header("X-Request-Id", "req-update-1")
        .send()
        .await
        .expect_ok();
    api.insert("notes", json!([{"body": "b's"}]))
        .claims(claims(owner_b, tenant_b))
        .send()
        .await
        .expect_ok();

    let rows = admin
        .query(
            "SELECT operation, tenant_id::text, actor_id::text, actor_role, host(client_ip), user_agent, request_id,
                    request_method, request_path, new_values
             FROM saas.audit_log WHERE tenant_id IN ($1::text::uuid, $2::text::uuid) ORDER BY id",
            &[&tenant_a, &tenant_b],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let get = |i: usize, c: usize| -> Option<String> { rows[i].get(c) };
    assert_eq!(get(0, 0).as_deref(), Some("INSERT"));
    assert_eq!(get(0, 1).as_deref(), Some(tenant_a));
    assert_eq!(get(0, 2).as_deref(), Some(member_a), "actor is the JWT sub");
    assert_eq!(get(0, 3).as_deref(), Some("authenticated"));
    assert_eq!(
        get(0, 4).as_deref(),
        Some("198.51.100.23"),
        "first hop of X-Forwarded-For"
    );
    assert_eq!(get(0, 5).as_deref(), Some("it-audit/2.0"));
    assert_eq!(get(0, 6).as_deref(), Some("req-insert-1"));
    assert_eq!(get(0, 7).as_deref(), Some("POST"));
    assert_eq!(get(0, 8).as_deref(), Some("/notes"));
    assert_eq!(get(1, 0).as_deref(), Some("UPDATE"));
    assert_eq!(
        get(1, 4).as_deref(),
        Some("2001:db8::7"),
        "X-Real-IP when there is no X-Forwarded-For"
    );
    assert_eq!(get(1, 6).as_deref(), Some("req-update-1"));
    assert_eq!(get(1, 7).as_deref(), Some("PATCH"));
    let new_values: Value = rows[1].get(9);
    assert_eq!(
        new_values,
        json!({"body": "second"}),
        "changed columns only"
    );
    assert_eq!(get(2, 1).as_deref(), Some(tenant_b));

    // The log through the API: a tenant's admins read its rows, nobody else any.
    let log = Api::for_schema(db_or_skip!("requests_are_recorded"), "saas");
    let seen = |r: &common::Response| -> Vec<String> {
        r.body
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["tenant_id"].as_str().unwrap().to_string())
            .collect()
    };
    let as_admin = log
        .get("audit_log")
        .eq("schema_name", "it_audit_req")
        .claims(claims(admin_a, tenant_a))
        .send()
        .await;
    as_admin.expect_ok();
    assert!(as_admin.body.is_array(), "{:?}", as_admin.body);
    assert_eq!(seen(&as_admin), vec![tenant_a.to_string(); 2]);
    let as_owner_b = log
        .get("audit_log")
        .eq("schema_name", "it_audit_req")
        .claims(claims(owner_b, tenant_b))
        .send()
        .await;
    assert_eq!(seen(&as_owner_b), vec![tenant_b.to_string()]);
    let as_member = log
        .get("audit_log")
        .claims(claims(member_a, tenant_a))
        .send()
        .await;
    as_member.expect_ok();
    assert_eq!(
        seen(&as_member),
        Vec::<String>::new(),
        "members read no audit rows"
    );
    let anonymous = log.get("audit_log").send().await;
    assert!(
        anonymous.body.as_array().is_none_or(|a| a.is_empty()),
        "anon reads nothing: {:?}",
        anonymous.body
    );
    // Changing the log through the API is refused.
    let forged = log
        .update("audit_log", json!({"actor_role": "forged"}))
        .claims(claims(admin_a, tenant_a))
        .send()
        .await;
    assert!(
        !forged.is_success(),
        "update of the log must fail: {:?}",
        forged.body
    );

    // Export as an RPC (GET: a read-only transaction).
    let export = log
        .rpc_get(
            "audit_export",
            json!({"p_from": "2000-01-01T00:00:00Z", "p_to": "2100-01-01T00:00:00Z"}),
        )
        .claims(claims(admin_a, tenant_a))
        .send()
        .await;
    export.expect_ok();
    let lines: Vec<Value> = export
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l.as_str().unwrap()).unwrap())
        .filter(|l: &Value| l["schema_name"] == "it_audit_req")
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["request_id"], "req-insert-1");
    let member_export = log
        .rpc_get(
            "audit_export",
            json!({"p_from": "2000-01-01T00:00:00Z", "p_to": "2100-01-01T00:00:00Z"}),
        )
        .claims(claims(member_a, tenant_a))
        .send()
        .await;
    assert_eq!(member_export.status, 403, "{:?}", member_export.error);
}

/// One row of verify's verdict.
#[derive(Debug)]
struct Verdict {
    ok: bool,
    kind: Option<String>,
    log_id: Option<i64>,
    detail: String,
}

async fn verify<C: GenericClient + Sync>(client: &C, from: &str, to: &str) -> Verdict {
    let r = client
        .query_one(
            "SELECT ok, kind, log_id, detail FROM saas.audit_verify($1::text::timestamptz, $2::text::timestamptz)",
            &[&from, &to],
        )
        .await
        .unwrap();
    Verdict {
        ok: r.get(0),
        kind: r.get(1),
        log_id: r.get(2),
        detail: r.get(3),
    }
}

/// Runs `tamper` as a superuser with triggers off, checks what verify says,
/// and rolls back.
async fn tampered(client: &mut Client, tamper: &str, window: (&str, &str)) -> Verdict {
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .unwrap();
    tx.batch_execute(tamper)
        .await
        .unwrap_or_else(|e| panic!("{tamper}: {e}"));
    let verdict = verify(&tx, window.0, window.1).await;
    tx.rollback().await.unwrap();
    verdict
}

/// Seals until no row of `window` is left unsealed (another test's open
/// transaction can hold the horizon back for a moment), trying for about a
/// minute; returns the last count of unsealed rows.
async fn seal_until_covered(client: &Client, window: (&str, &str)) -> i64 {
    let mut unsealed = -1i64;
    for _ in 0..600 {
        client
            .query("SELECT * FROM saas.audit_seal()", &[])
            .await
            .unwrap();
        unsealed = client
            .query_one("SELECT unsealed_rows FROM saas.audit_verify($1::text::timestamptz, $2::text::timestamptz)", &[&window.0, &window.1])
            .await
            .unwrap()
            .get(0);
        if unsealed == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unsealed
}

#[tokio::test]
async fn verify_finds_edited_deleted_and_inserted_rows() {
    let mut admin = db_or_skip!("verify_finds_edited_deleted_and_inserted_rows");
    let tenant = random_uuid();
    let tenant = tenant.as_str();
    fixture(
        &admin,
        "it_audit_tamper",
        &[(tenant, "it-audit-tamper")],
        &[],
    )
    .await;
    // This test's rows live in their own (past) window, so verification of
    // the window sees only them, whatever other tests write meanwhile.
    let (day, next_day, noon) = random_day();
    let window = (day.as_str(), next_day.as_str());
    for i in 0..5 {
        admin
            .batch_execute(&format!(
                "BEGIN; SELECT set_config('saas.audit_clock', ('{noon}'::timestamptz + interval '{i} minutes')::text, true);
                 INSERT INTO it_audit_tamper.notes (tenant_id, body) VALUES ('{tenant}', 'note {i}'); COMMIT;"
            ))
            .await
            .unwrap();
    }
    // Seal until this tenant's rows are covered.
    seal_until_covered(&admin, window).await;
    let clean = verify(&admin, window.0, window.1).await;
    assert!(clean.ok, "{clean:?}");
    assert!(clean.detail.contains("5 rows"), "{clean:?}");

    let ids: Vec<i64> = admin
        .query(
            "SELECT id FROM saas.audit_log WHERE tenant_id = $1::text::uuid ORDER BY id",
            &[&tenant],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 5);

    // Edited: the row's hash no longer matches its content.
    let edit = tampered(
        &mut admin,
        &format!(
            "UPDATE saas.audit_log SET new_values = '{{\"body\": \"forged\"}}' WHERE id = {}",
            ids[2]
        ),
        window,
    )
    .await;
    assert!(
        !edit.ok && edit.kind.as_deref() == Some("row") && edit.log_id == Some(ids[2]),
        "{edit:?}"
    );

    // Edited with a recomputed row hash: the seal's digest catches it.
    let row = admin
        .query_one(
            "SELECT tenant_id::text, (extract(epoch FROM logged_at) * 1000000)::int8, txid, actor_role, operation,
                    schema_name, table_name, record_key::text
             FROM saas.audit_log WHERE id = $1",
            &[&ids[2]],
        )
        .await
        .unwrap();
    let forged = |id: i64, body: &str| AuditRecord {
        id,
        tenant_id: row.get(0),
        logged_at_unix_micros: row.get(1),
        txid: row.get(2),
        actor_id: None,
        actor_role: row.get(3),
        operation: row.get(4),
        schema_name: row.get(5),
        table_name: row.get(6),
        record_key: Some(JsonObject::parse(&row.get::<_, String>(7)).unwrap()),
        old_values: None,
        new_values: Some(JsonObject::parse(&json!({"body": body}).to_string()).unwrap()),
        client_ip: None,
        user_agent: None,
        request_id: None,
        request_method: None,
        request_path: None,
    };
    let rewrite = forged(ids[2], "rewritten");
    let rehashed = tampered(
        &mut admin,
        &format!(
            "UPDATE saas.audit_log SET actor_id = NULL, client_ip = NULL, user_agent = NULL, request_id = NULL,
                 request_method = NULL, request_path = NULL, old_values = NULL,
                 new_values = '{{\"body\": \"rewritten\"}}', row_hash = '\\x{}' WHERE id = {}",
            hex(&rewrite.hash()),
            ids[2]
        ),
        window,
    )
    .await;
    assert!(
        !rehashed.ok && rehashed.kind.as_deref() == Some("seal"),
        "{rehashed:?}"
    );
    assert!(rehashed.detail.contains("no longer digest"), "{rehashed:?}");

    // Deleted: the seal counts one row less.
    let deleted = tampered(
        &mut admin,
        &format!("DELETE FROM saas.audit_log WHERE id = {}", ids[1]),
        window,
    )
    .await;
    assert!(
        !deleted.ok && deleted.kind.as_deref() == Some("seal"),
        "{deleted:?}"
    );
    assert!(deleted.detail.contains("missing"), "{deleted:?}");

    // Inserted with a valid hash and a sealed transaction id: one row too many.
    let extra = forged(990_000_000 + ids[0], "inserted later");
    let inserted = tampered(
        &mut admin,
        &format!(
            "INSERT INTO saas.audit_log (tenant_id, id, logged_at, txid, actor_role, operation, schema_name, table_name,
                 record_key, new_values, row_hash) OVERRIDING SYSTEM VALUE
             VALUES ('{}', {}, 'epoch'::timestamptz + {} * interval '1 microsecond', {}, {}, '{}', '{}', '{}',
                 '{}', '{{\"body\": \"inserted later\"}}', '\\x{}')",
            extra.tenant_id,
            extra.id,
            extra.logged_at_unix_micros,
            extra.txid,
            extra.actor_role.as_deref().map_or("NULL".to_string(), |r| format!("'{r}'")),
            extra.operation,
            extra.schema_name,
            extra.table_name,
            extra.record_key.as_ref().unwrap().text(),
            hex(&extra.hash())
        ),
        window,
    )
    .await;
    assert!(
        !inserted.ok && inserted.kind.as_deref() == Some("seal"),
        "{inserted:?}"
    );
    assert!(
        inserted.detail.contains("inserted after sealing"),
        "{inserted:?}"
    );

    // Nothing stuck: the log is whole again.
    let after = verify(&admin, window.0, window.1).await;
    assert!(after.ok, "{after:?}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The INSERT of a forged log row `r` (its hash recomputed), whose
/// `new_values` is `{"body": r's body}`, as a superuser with triggers off
/// would write it.
fn forged_insert(r: &AuditRecord) -> String {
    format!(
        "INSERT INTO saas.audit_log (tenant_id, id, logged_at, txid, actor_role, operation, schema_name, table_name,
             record_key, new_values, row_hash) OVERRIDING SYSTEM VALUE
         VALUES ('{}', {}, 'epoch'::timestamptz + {} * interval '1 microsecond', {}, {}, '{}', '{}', '{}',
             '{}', '{}', '\\x{}')",
        r.tenant_id,
        r.id,
        r.logged_at_unix_micros,
        r.txid,
        r.actor_role.as_deref().map_or("NULL".to_string(), |v| format!("'{v}'")),
        r.operation,
        r.schema_name,
        r.table_name,
        r.record_key.as_ref().unwrap().text(),
        r.new_values.as_ref().unwrap().text(),
        hex(&r.hash())
    )
}

/// Seals are cut at month boundaries (issue 15, item 7): rows of two months
/// sealed together get a seal each. A row is checked against the seal of its
/// own transaction and month, whatever range is verified: one forged with a
/// sealed transaction id in a month that transaction's seals do not cover is
/// found, and so is one forged into a sealed month outside the range its
/// seal's rows were logged in (before, that seal was not checked at all).
#[tokio::test]
async fn every_row_is_checked_against_the_seal_of_its_month() {
    let mut admin = db_or_skip!("every_row_is_checked_against_the_seal_of_its_month");
    let tenant = random_uuid();
    let tenant = tenant.as_str();
    fixture(
        &admin,
        "it_audit_months",
        &[(tenant, "it-audit-months")],
        &[],
    )
    .await;
    // A random month of this test's own, and the two after it.
    let n = u32::from_str_radix(&random_uuid()[0..6], 16).unwrap();
    let (y, m, day) = (2006 + n % 14, (n / 14) % 12, 1 + (n / 168) % 20);
    let at = |k: u32, d: u32, hour: u32| {
        let mm = m + k;
        format!("{}-{:02}-{d:02} {hour:02}:00+00", y + mm / 12, 1 + mm % 12)
    };
    let window = |k: u32, d: u32| (at(k, d, 0), at(k, d + 1, 0));
    for (k, body) in [(0, "this month"), (1, "next month")] {
        admin
            .batch_execute(&format!(
                "BEGIN; SELECT set_config('saas.audit_clock', '{}', true);
                 INSERT INTO it_audit_months.notes (tenant_id, body) VALUES ('{tenant}', '{body}'); COMMIT;",
                at(k, day, 12)
            ))
            .await
            .unwrap();
    }
    let (w0, w1) = (window(0, day), window(1, day));
    for w in [&w0, &w1] {
        assert_eq!(seal_until_covered(&admin, (&w.0, &w.1)).await, 0);
        let clean = verify(&admin, &w.0, &w.1).await;
        assert!(clean.ok, "{clean:?}");
    }
    // Forgeries of this month's row: same transaction, another time.
    let row = admin
        .query_one(
            "SELECT id, tenant_id::text, txid, actor_role, operation, schema_name, table_name, record_key::text
             FROM saas.audit_log WHERE tenant_id = $1::text::uuid AND new_values ->> 'body' = 'this month'",
            &[&tenant],
        )
        .await
        .unwrap();
    let micros = |t: String| {
        let admin = &admin;
        async move {
            admin
                .query_one(
                    "SELECT (extract(epoch FROM $1::text::timestamptz) * 1000000)::int8",
                    &[&t],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let (two_months_on, five_days_on) = (
        micros(at(2, day, 12)).await,
        micros(at(0, day + 5, 12)).await,
    );
    let forged = |id_offset: i64, logged_at: i64| AuditRecord {
        id: 990_000_000 + row.get::<_, i64>(0) + id_offset,
        tenant_id: row.get(1),
        logged_at_unix_micros: logged_at,
        txid: row.get(2),
        actor_id: None,
        actor_role: row.get(3),
        operation: row.get(4),
        schema_name: row.get(5),
        table_name: row.get(6),
        record_key: Some(JsonObject::parse(&row.get::<_, String>(7)).unwrap()),
        old_values: None,
        new_values: Some(JsonObject::parse(&json!({"body": "forged"}).to_string()).unwrap()),
        client_ip: None,
        user_agent: None,
        request_id: None,
        request_method: None,
        request_path: None,
    };
    // Two months on: no seal of that transaction covers that month.
    let w2 = window(2, day);
    let elsewhere = forged(0, two_months_on);
    let found = tampered(&mut admin, &forged_insert(&elsewhere), (&w2.0, &w2.1)).await;
    assert!(
        !found.ok && found.kind.as_deref() == Some("row") && found.log_id == Some(elsewhere.id),
        "{found:?}"
    );
    assert!(found.detail.contains("inserted after sealing"), "{found:?}");
    // Five days later in the same month: the month's seal has one row too
    // many, though its own rows lie outside the verified range.
    let w5 = window(0, day + 5);
    let later = forged(1, five_days_on);
    let found = tampered(&mut admin, &forged_insert(&later), (&w5.0, &w5.1)).await;
    assert!(
        !found.ok && found.kind.as_deref() == Some("seal"),
        "{found:?}"
    );
    assert!(found.detail.contains("inserted after sealing"), "{found:?}");

    for w in [&w0, &w1, &w2, &w5] {
        let after = verify(&admin, &w.0, &w.1).await;
        assert!(after.ok, "{after:?}");
    }
    let r = admin
        .query_one(
            "SELECT count(*), count(month_from), sum(row_count)::int8,
                    bool_and(first_logged_at >= month_from AND last_logged_at < month_to)
             FROM saas.audit_seals WHERE tenant_id = $1::text::uuid",
            &[&tenant],
        )
        .await
        .unwrap();
    let (seals, with_month, rows, within): (i64, i64, i64, bool) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    assert_eq!(
        (seals, with_month, rows, within),
        (2, 2, 2, true),
        "one seal per month, each within its month"
    );
}

/// Long and short transactions write audited rows while another session
/// seals every few milliseconds. A seal must cover only finished
/// transactions, so verification never fails, and once all have committed
/// every row is sealed exactly once.
#[tokio::test]
async fn seals_taken_during_open_transactions_never_raise_a_false_alarm() {
    let admin = db_or_skip!("seals_taken_during_open_transactions_never_raise_a_false_alarm");
    let tenant = random_uuid();
    fixture(
        &admin,
        "it_audit_seal",
        &[(tenant.as_str(), "it-audit-seal")],
        &[],
    )
    .await;
    let (day, next_day, noon) = random_day();
    let window = (day.as_str(), next_day.as_str());
    let clock = format!("SET saas.audit_clock = '{noon}'");

    let mut writers = Vec::new();
    // Long transactions: write, stay open across several seals, write again.
    for w in 0..3 {
        let c = db_or_skip!("seals_long_writer");
        let (clock, tenant) = (clock.clone(), tenant.clone());
        writers.push(tokio::spawn(async move {
            c.batch_execute(&clock).await.unwrap();
            for round in 0..4 {
                c.batch_execute("BEGIN").await.unwrap();
                c.batch_execute(&format!("INSERT INTO it_audit_seal.notes (tenant_id, body) VALUES ('{tenant}', 'long {w}.{round}.a')"))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(150 + 50 * w as u64)).await;
                c.batch_execute(&format!("INSERT INTO it_audit_seal.notes (tenant_id, body) VALUES ('{tenant}', 'long {w}.{round}.b')"))
                    .await
                    .unwrap();
                c.batch_execute("COMMIT").await.unwrap();
            }
            8
        }));
    }
    // Short transactions, one row each.
    for w in 0..3 {
        let c = db_or_skip!("seals_short_writer");
        let (clock, tenant) = (clock.clone(), tenant.clone());
        writers.push(tokio::spawn(async move {
            c.batch_execute(&clock).await.unwrap();
            for n in 0..150 {
                c.batch_execute(&format!("INSERT INTO it_audit_seal.notes (tenant_id, body) VALUES ('{tenant}', 'short {w}.{n}')"))
                    .await
                    .unwrap();
                if n % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            150
        }));
    }
    // The sealer, checking as it goes.
    let sealer = db_or_skip!("seals_sealer");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sealer_done = done.clone();
    let (w_from, w_to) = (day.clone(), next_day.clone());
    let sealing = tokio::spawn(async move {
        let mut seals = 0usize;
        let mut checks = 0usize;
        while !sealer_done.load(std::sync::atomic::Ordering::Relaxed) {
            seals += sealer
                .query("SELECT * FROM saas.audit_seal()", &[])
                .await
                .unwrap()
                .len();
            let v = verify(&sealer, &w_from, &w_to).await;
            assert!(v.ok, "false alarm while transactions were in flight: {v:?}");
            checks += 1;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        (seals, checks)
    });
    let mut written = 0i64;
    for w in writers {
        written += w.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (seals, checks) = sealing.await.unwrap();
    assert!(
        seals >= 3 && checks >= 3,
        "the sealer ran during the writes: {seals} seals, {checks} checks"
    );

    // Everything committed: seal until the horizon passes the last writer.
    let unsealed = seal_until_covered(&admin, window).await;
    assert_eq!(unsealed, 0);
    let v = verify(&admin, window.0, window.1).await;
    assert!(v.ok, "{v:?}");
    // Each row sealed exactly once: the seals' counts add up to the rows.
    let r = admin
        .query_one(
            "SELECT (SELECT count(*) FROM saas.audit_log WHERE tenant_id = $1::text::uuid),
                    (SELECT sum(row_count)::int8 FROM saas.audit_seals WHERE tenant_id = $1::text::uuid),
                    (SELECT count(*) FROM saas.audit_seals WHERE tenant_id = $1::text::uuid)",
            &[&tenant],
        )
        .await
        .unwrap();
    let (rows, sealed, chain): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(rows, written);
    assert_eq!(sealed, written, "every row in exactly one seal");
    assert!(
        chain >= 2,
        "the chain grew while writers ran ({chain} seals)"
    );
}
