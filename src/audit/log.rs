//! Where audit records go: the log (found once per backend), their ids,
//! and the write itself, straight into the partitions where the direct
//! writer can and with one INSERT for the rest. Written as the log's owner.

use super::direct_writer::{self, LogRow, LogWriter};
use super::internal;
use super::json_object::JsonObject;
use super::record::{AuditRecord, Hash, PG_EPOCH_OFFSET_MICROS};
use super::xid_base::xid_base;
use crate::error::{ErrorKind, SaasError, SaasResult};
use crate::pgutil::{as_owner, kept_plan, parse_pg_uuid};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use std::cell::Cell;

/// PostgreSQL's own SQL-callable C functions, called directly (no SPI).
mod builtins {
    use pgrx::pg_sys::{Datum, FunctionCallInfo};
    unsafe extern "C-unwind" {
        pub fn nextval_oid(fcinfo: FunctionCallInfo) -> Datum;
    }
}

/// Where the triggers write: the log, the owner they write as, the id
/// sequence, and whether the log is still partitioned the way the direct
/// writer routes rows (by range of its one timestamptz column, logged_at,
/// in the default btree order).
#[derive(Clone, Copy)]
struct LogTarget {
    log: pg_sys::Oid,
    owner: pg_sys::Oid,
    id_seq: pg_sys::Oid,
    routable: bool,
}

thread_local! {
    static LOG_TARGET: Cell<Option<LogTarget>> = const { Cell::new(None) };
    /// The fallback INSERT, leaked on purpose: kept for the backend's life
    /// (the plan cache re-plans it when the log's partitions change).
    static INSERT_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
}

/// Forgets the log's oid and owner on any pg_class change (registered by
/// `audit::init`).
pub(super) extern "C-unwind" fn on_pg_class_change(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    LOG_TARGET.with(|t| t.set(None));
    super::trigger::forget_logical_names();
}

/// The fallback INSERT of any number of records, one array per column
/// (columns named from the direct writer's list). Built once.
static INSERT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO saas.audit_log ({}) OVERRIDING SYSTEM VALUE \
         SELECT u.t::pg_catalog.uuid, u.i, u.l, u.x, u.a::pg_catalog.uuid, u.ar, u.op, u.s, u.tb, \
                u.k::pg_catalog.jsonb, u.o::pg_catalog.jsonb, u.n::pg_catalog.jsonb, u.ip::pg_catalog.inet, \
                u.ua, u.rid, u.m, u.p, u.h \
         FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.int8[]), pg_catalog.unnest($3::pg_catalog.timestamptz[]), pg_catalog.unnest($4::pg_catalog.int8[]), pg_catalog.unnest($5::pg_catalog.text[]), pg_catalog.unnest($6::pg_catalog.text[]), pg_catalog.unnest($7::pg_catalog.text[]), pg_catalog.unnest($8::pg_catalog.text[]), pg_catalog.unnest($9::pg_catalog.text[]), pg_catalog.unnest($10::pg_catalog.text[]), pg_catalog.unnest($11::pg_catalog.text[]), pg_catalog.unnest($12::pg_catalog.text[]), pg_catalog.unnest($13::pg_catalog.text[]), pg_catalog.unnest($14::pg_catalog.text[]), pg_catalog.unnest($15::pg_catalog.text[]), pg_catalog.unnest($16::pg_catalog.text[]), pg_catalog.unnest($17::pg_catalog.text[]), pg_catalog.unnest($18::pg_catalog.bytea[])) \
              AS u(t, i, l, x, a, ar, op, s, tb, k, o, n, ip, ua, rid, m, p, h)",
        direct_writer::COLUMNS.map(|(name, _)| name).join(", ")
    )
});

fn log_target() -> SaasResult<LogTarget> {
    if let Some(t) = LOG_TARGET.with(|t| t.get()) {
        return Ok(t);
    }
    let found = Spi::connect(|client| {
        let rows = client.select(
            "SELECT c.oid, c.relowner, \
                    pg_catalog.pg_get_serial_sequence('saas.audit_log', 'id')::pg_catalog.regclass::pg_catalog.oid, \
                    coalesce(( \
                      SELECT p.partstrat = 'r' AND p.partnatts = 1 AND p.partexprs IS NULL \
                             AND a.attname = 'logged_at' AND a.atttypid = 'pg_catalog.timestamptz'::pg_catalog.regtype \
                             AND p.partclass[0] = (SELECT o.oid FROM pg_catalog.pg_opclass o \
                                                   JOIN pg_catalog.pg_am m ON m.oid = o.opcmethod AND m.amname = 'btree' \
                                                   WHERE o.opcintype = a.atttypid AND o.opcdefault) \
                      FROM pg_catalog.pg_partitioned_table p \
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] \
                      WHERE p.partrelid = c.oid), false) \
             FROM pg_catalog.pg_class c WHERE c.oid = 'saas.audit_log'::pg_catalog.regclass",
            None,
            &[],
        )?;
        let row = rows.first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<pg_sys::Oid>(1)?,
            row.get::<pg_sys::Oid>(2)?,
            row.get::<pg_sys::Oid>(3)?,
            row.get::<bool>(4)?,
        ))
    })
    .map_err(|e| internal("find saas.audit_log", e))?;
    match found {
        (Some(log), Some(owner), Some(id_seq), routable) => {
            let t = LogTarget {
                log,
                owner,
                id_seq,
                routable: routable.unwrap_or(false),
            };
            LOG_TARGET.with(|c| c.set(Some(t)));
            Ok(t)
        }
        _ => Err(internal("find saas.audit_log", "no such table")),
    }
}

fn next_id(seq: pg_sys::Oid) -> i64 {
    // SAFETY: nextval on the log's own sequence, as its owner.
    unsafe {
        pg_sys::DirectFunctionCall1Coll(
            Some(builtins::nextval_oid),
            pg_sys::InvalidOid,
            pg_sys::Datum::from(seq),
        )
        .value() as i64
    }
}

fn pg_uuid(text: &str) -> SaasResult<pgrx::Uuid> {
    parse_pg_uuid(text).ok_or_else(|| {
        SaasError::new(
            ErrorKind::InvalidParameter,
            format!("tenant column value \"{text}\" is not a uuid"),
            "The audited table's tenant column must hold uuids.",
        )
    })
}

fn json_text(v: &Option<JsonObject>) -> Option<String> {
    v.as_ref().map(JsonObject::text)
}

/// The base the log adds to this cluster's transaction ids (see
/// [`xid_base`]), read as the log's owner: for the seal horizon.
pub(super) fn log_xid_base() -> SaasResult<i64> {
    let target = log_target()?;
    as_owner(target.owner, || xid_base(target.log))
}

/// Assigns ids, hashes and writes `records` (as the log's owner): straight
/// into their partitions where [`direct_writer`] can, the rest with an INSERT.
pub(super) fn write_records(mut records: Vec<AuditRecord>) -> SaasResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    let target = log_target()?;
    as_owner(target.owner, || {
        let base = xid_base(target.log)?;
        for r in records.iter_mut() {
            r.id = next_id(target.id_seq);
            r.txid += base;
        }
        let mut writer = LogWriter::open(target.log, target.routable, records.len());
        let mut rest = Vec::new();
        for r in records {
            let tenant_id = pg_uuid(&r.tenant_id)?;
            let actor_id = r.actor_id.as_deref().map(pg_uuid).transpose()?;
            let hash = r.hash();
            let row = LogRow {
                record: &r,
                tenant_id: *tenant_id.as_bytes(),
                actor_id: actor_id.map(|u| *u.as_bytes()),
                logged_at: r.logged_at_unix_micros - PG_EPOCH_OFFSET_MICROS,
                row_hash: &hash,
            };
            if !writer.write(&row) {
                rest.push((r, hash));
            }
        }
        writer.close();
        insert_records(&rest)
    })
}

/// Writes records (with their hashes) with an INSERT into the partitioned
/// log: tuple routing, constraints and triggers as for any INSERT.
fn insert_records(records: &[(AuditRecord, Hash)]) -> SaasResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    Spi::connect_mut(|client| -> SaasResult<()> {
        use pg_sys::BuiltinOid as B;
        let types = [
            B::TEXTARRAYOID,
            B::INT8ARRAYOID,
            B::TIMESTAMPTZARRAYOID,
            B::INT8ARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::TEXTARRAYOID,
            B::BYTEAARRAYOID,
        ]
        .map(|b| b.value());
        let stmt = kept_plan(&INSERT_PLAN, client, &INSERT_SQL, &types)
            .map_err(|e| internal("prepare its INSERT", e))?;
        let col = |f: &dyn Fn(&AuditRecord) -> Option<String>| -> Vec<Option<String>> {
            records.iter().map(|(r, _)| f(r)).collect()
        };
        let ts: Vec<TimestampWithTimeZone> = records
            .iter()
            .map(|(r, _)| {
                TimestampWithTimeZone::try_from(r.logged_at_unix_micros - PG_EPOCH_OFFSET_MICROS)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| internal("convert a timestamp", e))?;
        let args = [
            col(&|r| Some(r.tenant_id.clone())).into(),
            records
                .iter()
                .map(|(r, _)| r.id)
                .collect::<Vec<i64>>()
                .into(),
            ts.into(),
            records
                .iter()
                .map(|(r, _)| r.txid)
                .collect::<Vec<i64>>()
                .into(),
            col(&|r| r.actor_id.clone()).into(),
            col(&|r| r.actor_role.clone()).into(),
            col(&|r| Some(r.operation.clone())).into(),
            col(&|r| Some(r.schema_name.clone())).into(),
            col(&|r| Some(r.table_name.clone())).into(),
            col(&|r| json_text(&r.record_key)).into(),
            col(&|r| json_text(&r.old_values)).into(),
            col(&|r| json_text(&r.new_values)).into(),
            col(&|r| r.client_ip.clone()).into(),
            col(&|r| r.user_agent.clone()).into(),
            col(&|r| r.request_id.clone()).into(),
            col(&|r| r.request_method.clone()).into(),
            col(&|r| r.request_path.clone()).into(),
            records
                .iter()
                .map(|(_, h)| h.to_vec())
                .collect::<Vec<Vec<u8>>>()
                .into(),
        ];
        client
            .update(stmt, None, &args)
            .map_err(|e| internal("write audit rows", e))?;
        Ok(())
    })
}
