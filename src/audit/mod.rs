//! Audit: row-change triggers written in Rust, the chained seals and their
//! verification. Tables, `audit_enable`, the append-only guard and the export
//! are SQL (`sql/audit.sql`); hashing and diffs are pure Rust (`canonical`).
//!
//! Why Rust: the row trigger is the hot path. It reads each row's columns
//! once (`row_image`), hashes the row without a round trip through SQL, and
//! writes it straight into its month's partition (`log_writer`; a kept
//! INSERT plan where it cannot); it caches the request context per
//! transaction and the options per trigger.
//!
//! The triggers write as the owner of `saas.audit_log` (the extension owner),
//! switched the way PostgreSQL's RI triggers switch, so API roles need no
//! privilege on the log and cannot write it directly.

pub mod canonical;
mod canonical_number;
mod diff;
mod json_object;
mod json_scan;
mod log_writer;
mod record;
mod request_context;
mod row_image;

use crate::error::{ErrorKind, OrRaise, SaasError, SaasResult};
use crate::gucs::AUDIT_CLOCK;
use crate::pgutil::{as_owner, clock_override, kept_plan, parse_pg_uuid};
use crate::request::normalize_ip;
use crate::tenancy;
use diff::{change_of, record_key};
use json_object::JsonObject;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use record::{AuditRecord, Hash, RowsDigest, Seal, PG_EPOCH_OFFSET_MICROS};
use request_context::{request_context, RequestContext};
use serde::Deserialize;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

/// Tenant id of rows that belong to no tenant (changes made outside any
/// tenant context, TRUNCATE by an operator): the log's key needs a value.
pub const NO_TENANT: &str = "00000000-0000-0000-0000-000000000000";

/// PostgreSQL's own SQL-callable C functions, called directly (no SPI).
mod builtins {
    use pgrx::pg_sys::{Datum, FunctionCallInfo};
    unsafe extern "C-unwind" {
        pub fn nextval_oid(fcinfo: FunctionCallInfo) -> Datum;
    }
}

/// Records a statement trigger builds (and holds in memory) before it
/// writes them: memory stays bounded whatever the statement's size.
const BULK_CHUNK: usize = 5000;

pub(crate) fn init() {
    // SAFETY: a static callback without argument; it only clears a Cell.
    unsafe {
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            Some(on_pg_class_change),
            pg_sys::Datum::from(0usize),
        )
    };
}

unsafe extern "C-unwind" fn on_pg_class_change(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    LOG_TARGET.with(|t| t.set(None));
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

/// The trigger's options, as `audit_enable` wrote them into its argument.
#[derive(Deserialize, Debug)]
struct TriggerOptions {
    changed_only: bool,
    tenant_column: Option<String>,
    #[serde(default)]
    key: Vec<String>,
    #[serde(default)]
    ignored: Vec<String>,
}

thread_local! {
    static LOG_TARGET: Cell<Option<LogTarget>> = const { Cell::new(None) };
    static OPTIONS: RefCell<HashMap<u32, Rc<TriggerOptions>>> = RefCell::new(HashMap::new());
    /// The fallback INSERT, leaked on purpose: kept for the backend's life
    /// (the plan cache re-plans it when the log's partitions change).
    static INSERT_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
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
        log_writer::COLUMNS.map(|(name, _)| name).join(", ")
    )
});

fn internal(what: &str, e: impl std::fmt::Display) -> SaasError {
    SaasError::new(
        ErrorKind::ObjectNotInPrerequisiteState,
        format!("pg_saas audit could not {what}"),
        "Check that the pg_saas extension is installed completely (saas.audit_log) and that this role may use it.",
    )
    .with_detail(e.to_string())
}

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
            let t = LogTarget { log, owner, id_seq, routable: routable.unwrap_or(false) };
            LOG_TARGET.with(|c| c.set(Some(t)));
            Ok(t)
        }
        _ => Err(internal("find saas.audit_log", "no such table")),
    }
}

/// Microseconds since 2000-01-01 (PostgreSQL's TimestampTz) for new rows.
fn audit_now() -> SaasResult<i64> {
    match clock_override(c"saas.audit_clock", &AUDIT_CLOCK)? {
        Some(fixed) => Ok(fixed),
        // SAFETY: plain read of transaction state.
        None => Ok(unsafe { pg_sys::GetCurrentTransactionStartTimestamp() }),
    }
}

fn top_xid() -> i64 {
    // SAFETY: assigns the transaction id if the transaction has none yet; the
    // trigger runs inside a writing transaction anyway.
    unsafe { pg_sys::GetTopFullTransactionId().value as i64 }
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

fn options_of(trigger: &pg_sys::Trigger) -> SaasResult<Rc<TriggerOptions>> {
    let key = trigger.tgoid.to_u32();
    if let Some(o) = OPTIONS.with(|m| m.borrow().get(&key).cloned()) {
        return Ok(o);
    }
    let bad = |why: String| {
        SaasError::new(
            ErrorKind::ObjectNotInPrerequisiteState,
            "a pg_saas audit trigger has unusable arguments",
            "Create audit triggers with saas.audit_enable(table), not by hand; run it again to repair this one.",
        )
        .with_detail(why)
    };
    if trigger.tgnargs != 1 || trigger.tgargs.is_null() {
        return Err(bad(format!("{} arguments", trigger.tgnargs)));
    }
    // SAFETY: tgargs holds tgnargs C strings.
    let raw = unsafe { CStr::from_ptr(*trigger.tgargs) }.to_string_lossy();
    let opts: TriggerOptions = serde_json::from_str(&raw).map_err(|e| bad(e.to_string()))?;
    let opts = Rc::new(opts);
    OPTIONS.with(|m| m.borrow_mut().insert(key, opts.clone()));
    Ok(opts)
}

fn table_names(rel: pg_sys::Relation) -> (String, String) {
    // SAFETY: the trigger's relation is open; names are copied.
    unsafe {
        let name =
            CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_string_lossy().into_owned();
        let nsp = pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace);
        let schema = if nsp.is_null() {
            String::new()
        } else {
            CStr::from_ptr(nsp).to_string_lossy().into_owned()
        };
        (schema, name)
    }
}

/// The tenant a change belongs to: the row's tenant column, else the
/// request's tenant, else [`NO_TENANT`].
fn tenant_of(row: Option<&JsonObject>, opts: &TriggerOptions) -> SaasResult<String> {
    if let (Some(row), Some(col)) = (row, opts.tenant_column.as_deref()) {
        if let Some(t) = row.get(col).and_then(|m| m.as_string()) {
            return Ok(t);
        }
    }
    Ok(tenancy::resolved_tenant()?.map_or_else(|| NO_TENANT.to_string(), |t| t.to_string()))
}

/// Builds the record for one change, or `None` when nothing audited changed.
fn record_for(
    operation: &str,
    old: Option<JsonObject>,
    new: Option<JsonObject>,
    opts: &TriggerOptions,
    table: &(String, String),
    ctx: &RequestContext,
    now: i64,
    txid: i64,
) -> SaasResult<Option<AuditRecord>> {
    let key_row = old.as_ref().or(new.as_ref());
    let tenant_id = tenant_of(new.as_ref().or(old.as_ref()), opts)?;
    let key = key_row.map(|r| record_key(r, &opts.key));
    let Some(change) = change_of(old, new, &opts.ignored, opts.changed_only) else {
        return Ok(None);
    };
    Ok(Some(AuditRecord {
        id: 0,
        tenant_id,
        logged_at_unix_micros: now + PG_EPOCH_OFFSET_MICROS,
        actor_id: ctx.actor_id.clone(),
        actor_role: ctx.actor_role.clone(),
        operation: operation.to_string(),
        schema_name: table.0.clone(),
        table_name: table.1.clone(),
        record_key: key,
        old_values: change.old_values,
        new_values: change.new_values,
        client_ip: ctx.client_ip.clone(),
        user_agent: ctx.user_agent.clone(),
        request_id: ctx.request_id.clone(),
        request_method: ctx.method.clone(),
        request_path: ctx.path.clone(),
        txid,
    }))
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

/// Assigns ids, hashes and writes `records` (as the log's owner): straight
/// into their partitions where [`log_writer`] can, the rest with an INSERT.
fn write_records(mut records: Vec<AuditRecord>) -> SaasResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    let target = log_target()?;
    as_owner(target.owner, || {
        for r in records.iter_mut() {
            r.id = next_id(target.id_seq);
        }
        let mut writer = log_writer::LogWriter::open(target.log, target.routable, records.len());
        let mut rest = Vec::new();
        for r in records {
            let tenant_id = pg_uuid(&r.tenant_id)?;
            let actor_id = r.actor_id.as_deref().map(pg_uuid).transpose()?;
            let hash = r.hash();
            let row = log_writer::LogRow {
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
            records.iter().map(|(r, _)| r.id).collect::<Vec<i64>>().into(),
            ts.into(),
            records.iter().map(|(r, _)| r.txid).collect::<Vec<i64>>().into(),
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
            records.iter().map(|(_, h)| h.to_vec()).collect::<Vec<Vec<u8>>>().into(),
        ];
        client.update(stmt, None, &args).map_err(|e| internal("write audit rows", e))?;
        Ok(())
    })
}

/// What both audit triggers read first: the event's operation bits, the
/// relation, its tuple descriptor and the trigger's options.
struct Firing<'a> {
    td: &'a pg_sys::TriggerData,
    op: u32,
    rel: pg_sys::Relation,
    desc: pg_sys::TupleDesc,
    opts: Rc<TriggerOptions>,
}

fn firing<'a>(trigger: &'a pgrx::PgTrigger<'a>) -> SaasResult<Firing<'a>> {
    let td = trigger.trigger_data();
    // SAFETY: fields of the TriggerData PostgreSQL passed for this call.
    let (rel, tg) = (td.tg_relation, unsafe { &*td.tg_trigger });
    Ok(Firing {
        td,
        op: td.tg_event & pg_sys::TRIGGER_EVENT_OPMASK,
        rel,
        // SAFETY: the trigger's relation is open.
        desc: unsafe { (*rel).rd_att },
        opts: options_of(tg)?,
    })
}

/// Row-level audit trigger (AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW).
#[pg_trigger]
fn audit_row_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, SaasError> {
    audit_row(trigger).or_raise();
    Ok(None)
}

fn audit_row<'a>(trigger: &'a pgrx::PgTrigger<'a>) -> SaasResult<()> {
    let Firing { td, op, rel, desc, opts } = firing(trigger)?;
    // The row trigger fires for INSERT, UPDATE and DELETE only (TRUNCATE has
    // no row trigger; audit_enable gives it a statement trigger).
    // SAFETY: the relation's descriptor; tuples are valid for the event
    // kind they are read for.
    let (operation, old, new) = unsafe {
        let mut encoder = row_image::RowEncoder::new(desc);
        let images = if op == pg_sys::TRIGGER_EVENT_INSERT {
            ("INSERT", None, Some(encoder.encode(td.tg_trigtuple)?))
        } else if op == pg_sys::TRIGGER_EVENT_UPDATE {
            (
                "UPDATE",
                Some(encoder.encode(td.tg_trigtuple)?),
                Some(encoder.encode(td.tg_newtuple)?),
            )
        } else {
            ("DELETE", Some(encoder.encode(td.tg_trigtuple)?), None)
        };
        encoder.finish();
        images
    };
    let ctx = request_context();
    let table = table_names(rel);
    if let Some(r) = record_for(operation, old, new, &opts, &table, &ctx, audit_now()?, top_xid())?
    {
        write_records(vec![r])?;
    }
    Ok(())
}

fn audit_truncate(rel: pg_sys::Relation, opts: &TriggerOptions) -> SaasResult<()> {
    // No row images: the record carries the request's tenant and no key.
    let ctx = request_context();
    let r =
        record_for("TRUNCATE", None, None, opts, &table_names(rel), &ctx, audit_now()?, top_xid())?;
    write_records(r.into_iter().collect())
}

/// Reads a transition table's tuples as JSON, in insertion order, without
/// holding more than one tuple at a time.
struct TransitionReader {
    store: *mut pg_sys::Tuplestorestate,
    slot: *mut pg_sys::TupleTableSlot,
    encoder: row_image::RowEncoder,
}

impl TransitionReader {
    /// SAFETY: `store` is NULL or a transition table of the current trigger
    /// event with tuples of `desc`.
    unsafe fn new(
        store: *mut pg_sys::Tuplestorestate,
        desc: pg_sys::TupleDesc,
    ) -> Option<TransitionReader> {
        if store.is_null() {
            return None;
        }
        pg_sys::tuplestore_select_read_pointer(store, 0);
        pg_sys::tuplestore_rescan(store);
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
        Some(TransitionReader { store, slot, encoder: row_image::RowEncoder::new(desc) })
    }

    fn next_row(&mut self) -> SaasResult<Option<JsonObject>> {
        // SAFETY: the store and slot are valid for the trigger call.
        unsafe {
            if !pg_sys::tuplestore_gettupleslot(self.store, true, false, self.slot) {
                return Ok(None);
            }
            self.encoder.encode_slot(self.slot).map(Some)
        }
    }

    /// Leaves the store rewound for any other trigger reading it. Not a Drop:
    /// after an ERROR the trigger's memory goes with its context, and nothing
    /// should call back into PostgreSQL while the error unwinds.
    fn finish(self) {
        // SAFETY: the store and slot are valid for the trigger call.
        unsafe {
            pg_sys::tuplestore_rescan(self.store);
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
        }
        self.encoder.finish();
    }
}

/// Statement-level audit trigger with transition tables (audit_enable's
/// `mode => 'statement'`), and the TRUNCATE trigger of both modes.
#[pg_trigger]
fn audit_statement_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, SaasError> {
    audit_statement(trigger).or_raise();
    Ok(None)
}

fn audit_statement<'a>(trigger: &'a pgrx::PgTrigger<'a>) -> SaasResult<()> {
    let Firing { td, op, rel, desc, opts } = firing(trigger)?;
    if op == pg_sys::TRIGGER_EVENT_TRUNCATE {
        return audit_truncate(rel, &opts);
    }
    let operation = if op == pg_sys::TRIGGER_EVENT_INSERT {
        "INSERT"
    } else if op == pg_sys::TRIGGER_EVENT_UPDATE {
        "UPDATE"
    } else {
        "DELETE"
    };
    // SAFETY: the transition tables of this event, NULL when not captured.
    let (mut olds, mut news) = unsafe {
        (TransitionReader::new(td.tg_oldtable, desc), TransitionReader::new(td.tg_newtable, desc))
    };
    let ctx = request_context();
    let table = table_names(rel);
    let (now, txid) = (audit_now()?, top_xid());
    // In chunks: memory stays bounded whatever the statement's size.
    loop {
        let mut records = Vec::with_capacity(BULK_CHUNK);
        while records.len() < BULK_CHUNK {
            let old = match olds.as_mut() {
                Some(r) => r.next_row()?,
                None => None,
            };
            let new = match news.as_mut() {
                Some(r) => r.next_row()?,
                None => None,
            };
            if old.is_none() && new.is_none() {
                break;
            }
            if operation == "UPDATE" && (old.is_none() || new.is_none()) {
                return Err(internal(
                    "pair old and new rows",
                    "transition tables differ in length",
                ));
            }
            records.extend(record_for(operation, old, new, &opts, &table, &ctx, now, txid)?);
        }
        if records.is_empty() {
            olds.into_iter().chain(news).for_each(TransitionReader::finish);
            return Ok(());
        }
        write_records(records)?;
    }
}

// ---------------------------------------------------------------------------
// Seals
// ---------------------------------------------------------------------------

fn spi_err(what: &'static str) -> impl Fn(pgrx::spi::Error) -> SaasError {
    move |e| internal(what, e)
}

fn to_hash(bytes: Option<Vec<u8>>) -> Hash {
    let mut h = [0u8; 32];
    if let Some(b) = bytes {
        if b.len() == 32 {
            h.copy_from_slice(&b);
        }
    }
    h
}

/// Appends one chained seal per tenant covering the tenant's rows written by
/// transactions that had finished when the seal was taken. One row per new
/// seal.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn audit_seal() -> TableIterator<
    'static,
    (
        name!(tenant_id, pgrx::Uuid),
        name!(seal_no, i64),
        name!(row_count, i64),
        name!(xid_from, i64),
        name!(xid_to, i64),
    ),
> {
    TableIterator::new(seal_impl().or_raise())
}

struct TenantRows {
    digest: RowsDigest,
    first: i64,
    last: i64,
}

fn seal_impl() -> SaasResult<Vec<(pgrx::Uuid, i64, i64, i64, i64)>> {
    let sealed_at = audit_now()?;
    Spi::connect_mut(|client| {
        // One sealer at a time: each extends every chain from where the last ended.
        client
            .update(
                "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('saas.audit_seal'))",
                None,
                &[],
            )
            .map_err(spi_err("take the seal lock"))?;
        // Every transaction below the snapshot's xmin has finished: its rows
        // are all visible now and no row with such an id can still arrive.
        let horizon: i64 = client
            .select(
                "SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::int8",
                None,
                &[],
            )
            .map_err(spi_err("read the snapshot horizon"))?
            .first()
            .get_one::<i64>()
            .map_err(spi_err("read the snapshot horizon"))?
            .unwrap_or(0);
        let from: i64 = client
            .select("SELECT coalesce(max(xid_to), 0) FROM saas.audit_seals", None, &[])
            .map_err(spi_err("read the last seal"))?
            .first()
            .get_one::<i64>()
            .map_err(spi_err("read the last seal"))?
            .unwrap_or(0);
        if horizon <= from {
            return Ok(Vec::new());
        }
        let rows = client
            .select(
                "SELECT tenant_id::text, id, row_hash, \
                        ((extract(epoch FROM logged_at) * 1000000)::int8) AS at \
                 FROM saas.audit_log WHERE txid >= $1 AND txid < $2 ORDER BY tenant_id, id",
                None,
                &[from.into(), horizon.into()],
            )
            .map_err(spi_err("read rows to seal"))?;
        let mut per_tenant: Vec<(String, TenantRows)> = Vec::new();
        for row in rows {
            let tenant: String =
                row.get(1).map_err(spi_err("read rows to seal"))?.unwrap_or_default();
            let id: i64 = row.get(2).map_err(spi_err("read rows to seal"))?.unwrap_or_default();
            let hash: Option<Vec<u8>> = row.get(3).map_err(spi_err("read rows to seal"))?;
            let at: i64 = row.get(4).map_err(spi_err("read rows to seal"))?.unwrap_or_default();
            if per_tenant.last().map(|(t, _)| t != &tenant).unwrap_or(true) {
                per_tenant.push((
                    tenant,
                    TenantRows { digest: RowsDigest::default(), first: at, last: at },
                ));
            }
            let entry = &mut per_tenant.last_mut().expect("pushed above").1;
            entry.digest.push(id, &to_hash(hash));
            entry.first = entry.first.min(at);
            entry.last = entry.last.max(at);
        }
        let mut out = Vec::new();
        for (tenant, rows) in per_tenant {
            let prev = client
                .select(
                    "SELECT seal_no, seal_hash, xid_to FROM saas.audit_seals \
                     WHERE tenant_id = $1::uuid ORDER BY seal_no DESC LIMIT 1",
                    None,
                    &[tenant.clone().into()],
                )
                .map_err(spi_err("read the previous seal"))?;
            let (prev_no, prev_hash, prev_to) = if prev.is_empty() {
                (0i64, [0u8; 32], from)
            } else {
                let r = prev.first();
                (
                    r.get::<i64>(1).map_err(spi_err("read the previous seal"))?.unwrap_or(0),
                    to_hash(r.get::<Vec<u8>>(2).map_err(spi_err("read the previous seal"))?),
                    r.get::<i64>(3).map_err(spi_err("read the previous seal"))?.unwrap_or(from),
                )
            };
            let seal = Seal {
                tenant_id: tenant.clone(),
                seal_no: prev_no + 1,
                xid_from: prev_to,
                xid_to: horizon,
                row_count: rows.digest.count,
                rows_digest: rows.digest.digest,
                prev_hash,
                sealed_at_unix_micros: sealed_at + PG_EPOCH_OFFSET_MICROS,
                first_logged_at: rows.first,
                last_logged_at: rows.last,
            };
            client
                .update(
                    "INSERT INTO saas.audit_seals (tenant_id, seal_no, sealed_at, xid_from, xid_to, row_count, \
                         first_logged_at, last_logged_at, rows_digest, prev_hash, seal_hash) \
                     VALUES ($1::uuid, $2, 'epoch'::timestamptz + $3 * interval '1 microsecond', $4, $5, $6, \
                         'epoch'::timestamptz + $7 * interval '1 microsecond', \
                         'epoch'::timestamptz + $8 * interval '1 microsecond', $9, $10, $11)",
                    None,
                    &[
                        tenant.clone().into(),
                        seal.seal_no.into(),
                        seal.sealed_at_unix_micros.into(),
                        seal.xid_from.into(),
                        seal.xid_to.into(),
                        seal.row_count.into(),
                        seal.first_logged_at.into(),
                        seal.last_logged_at.into(),
                        seal.rows_digest.to_vec().into(),
                        seal.prev_hash.to_vec().into(),
                        seal.hash().to_vec().into(),
                    ],
                )
                .map_err(spi_err("write a seal"))?;
            let uuid = parse_pg_uuid(&tenant)
                .ok_or_else(|| internal("read a tenant id", tenant.clone()))?;
            out.push((uuid, seal.seal_no, seal.row_count, seal.xid_from, seal.xid_to));
        }
        Ok(out)
    })
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

/// The outcome of `audit_verify`.
#[derive(Default)]
struct Verdict {
    ok: bool,
    kind: Option<String>,
    tenant_id: Option<String>,
    log_id: Option<i64>,
    seal_no: Option<i64>,
    detail: String,
    rows_checked: i64,
    seals_checked: i64,
    unsealed_rows: i64,
    retired_seals: i64,
}

/// Recomputes the hash of every row logged in `[p_from, p_to)` and every seal
/// covering such rows (its chain link, its hash, its rows' count and digest).
/// One row: the first row or seal that does not match, or ok with counts.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn audit_verify(
    p_from: Option<TimestampWithTimeZone>,
    p_to: Option<TimestampWithTimeZone>,
) -> TableIterator<
    'static,
    (
        name!(ok, bool),
        name!(kind, Option<String>),
        name!(tenant_id, Option<pgrx::Uuid>),
        name!(log_id, Option<i64>),
        name!(seal_no, Option<i64>),
        name!(detail, String),
        name!(rows_checked, i64),
        name!(seals_checked, i64),
        name!(unsealed_rows, i64),
        name!(retired_seals, i64),
    ),
> {
    let (Some(from), Some(to)) = (p_from, p_to) else {
        SaasError::new(
            ErrorKind::InvalidParameter,
            "audit_verify needs both ends of the range",
            "Pass timestamps, e.g. saas.audit_verify(now() - interval '1 month', now()).",
        )
        .report()
    };
    let v = verify_impl(from, to).or_raise();
    let uuid = v.tenant_id.as_deref().and_then(parse_pg_uuid);
    TableIterator::once((
        v.ok,
        v.kind,
        uuid,
        v.log_id,
        v.seal_no,
        v.detail,
        v.rows_checked,
        v.seals_checked,
        v.unsealed_rows,
        v.retired_seals,
    ))
}

#[derive(Clone)]
struct StoredSeal {
    seal: Seal,
    stored_hash: Hash,
}

fn read_seal(row: &pgrx::spi::SpiHeapTupleData<'_>) -> Result<StoredSeal, pgrx::spi::Error> {
    let seal = Seal {
        tenant_id: row.get::<String>(1)?.unwrap_or_default(),
        seal_no: row.get::<i64>(2)?.unwrap_or_default(),
        xid_from: row.get::<i64>(3)?.unwrap_or_default(),
        xid_to: row.get::<i64>(4)?.unwrap_or_default(),
        row_count: row.get::<i64>(5)?.unwrap_or_default(),
        first_logged_at: row.get::<i64>(6)?.unwrap_or_default(),
        last_logged_at: row.get::<i64>(7)?.unwrap_or_default(),
        rows_digest: to_hash(row.get::<Vec<u8>>(8)?),
        prev_hash: to_hash(row.get::<Vec<u8>>(9)?),
        sealed_at_unix_micros: row.get::<i64>(11)?.unwrap_or_default(),
    };
    Ok(StoredSeal { seal, stored_hash: to_hash(row.get::<Vec<u8>>(10)?) })
}

const SEAL_COLUMNS: &str = "tenant_id::text, seal_no, xid_from, xid_to, row_count, \
     (extract(epoch FROM first_logged_at) * 1000000)::int8, (extract(epoch FROM last_logged_at) * 1000000)::int8, \
     rows_digest, prev_hash, seal_hash, (extract(epoch FROM sealed_at) * 1000000)::int8";

fn parse_json(text: Option<String>) -> SaasResult<Option<JsonObject>> {
    text.map(|t| JsonObject::parse(&t).map_err(|e| internal("read a logged JSON value", e)))
        .transpose()
}

fn verify_impl(from: TimestampWithTimeZone, to: TimestampWithTimeZone) -> SaasResult<Verdict> {
    if pg_sys::TimestampTz::from(from) > pg_sys::TimestampTz::from(to) {
        return Err(SaasError::new(
            ErrorKind::InvalidParameter,
            "audit_verify: the range ends before it starts",
            "Pass the earlier timestamp first.",
        ));
    }
    Spi::connect(|client| {
        let mut v = Verdict { ok: true, ..Default::default() };
        let fail = |v: &mut Verdict,
                    kind: &str,
                    tenant: &str,
                    log_id: Option<i64>,
                    seal_no: Option<i64>,
                    detail: String| {
            v.ok = false;
            v.kind = Some(kind.into());
            v.tenant_id = Some(tenant.into());
            v.log_id = log_id;
            v.seal_no = seal_no;
            v.detail = detail;
        };
        // Where sealing has reached, and each tenant's sealed xid range.
        let mut sealed_to: HashMap<String, (i64, i64)> = HashMap::new();
        let mut global_horizon = 0i64;
        for row in client
            .select(
                "SELECT tenant_id::text, min(xid_from), max(xid_to) FROM saas.audit_seals GROUP BY 1",
                None,
                &[],
            )
            .map_err(spi_err("read seals"))?
        {
            let t: String = row.get(1).map_err(spi_err("read seals"))?.unwrap_or_default();
            let lo: i64 = row.get(2).map_err(spi_err("read seals"))?.unwrap_or_default();
            let hi: i64 = row.get(3).map_err(spi_err("read seals"))?.unwrap_or_default();
            global_horizon = global_horizon.max(hi);
            sealed_to.insert(t, (lo, hi));
        }
        // 1. Rows: their hash against their content; rows older than the
        //    seal horizon must lie in their tenant's sealed range.
        let rows = client
            .select(
                "SELECT id, tenant_id::text, (extract(epoch FROM logged_at) * 1000000)::int8, txid, \
                        actor_id::text, actor_role, operation, schema_name, table_name, record_key::text, \
                        old_values::text, new_values::text, host(client_ip), user_agent, request_id, \
                        request_method, request_path, row_hash \
                 FROM saas.audit_log \
                 WHERE logged_at >= $1 AND logged_at < $2 ORDER BY id",
                None,
                &[from.into(), to.into()],
            )
            .map_err(spi_err("read the log"))?;
        for row in rows {
            let e = spi_err("read the log");
            let rec = AuditRecord {
                id: row.get::<i64>(1).map_err(&e)?.unwrap_or_default(),
                tenant_id: row.get::<String>(2).map_err(&e)?.unwrap_or_default(),
                logged_at_unix_micros: row.get::<i64>(3).map_err(&e)?.unwrap_or_default(),
                txid: row.get::<i64>(4).map_err(&e)?.unwrap_or_default(),
                actor_id: row.get::<String>(5).map_err(&e)?,
                actor_role: row.get::<String>(6).map_err(&e)?,
                operation: row.get::<String>(7).map_err(&e)?.unwrap_or_default(),
                schema_name: row.get::<String>(8).map_err(&e)?.unwrap_or_default(),
                table_name: row.get::<String>(9).map_err(&e)?.unwrap_or_default(),
                record_key: parse_json(row.get::<String>(10).map_err(&e)?)?,
                old_values: parse_json(row.get::<String>(11).map_err(&e)?)?,
                new_values: parse_json(row.get::<String>(12).map_err(&e)?)?,
                client_ip: row.get::<String>(13).map_err(&e)?.as_deref().and_then(normalize_ip),
                user_agent: row.get::<String>(14).map_err(&e)?,
                request_id: row.get::<String>(15).map_err(&e)?,
                request_method: row.get::<String>(16).map_err(&e)?,
                request_path: row.get::<String>(17).map_err(&e)?,
            };
            let stored = row.get::<Vec<u8>>(18).map_err(&e)?;
            v.rows_checked += 1;
            if stored.as_deref() != Some(&rec.hash()[..]) {
                fail(
                    &mut v,
                    "row",
                    &rec.tenant_id,
                    Some(rec.id),
                    None,
                    format!(
                        "row {} does not match its hash: it was changed after it was written",
                        rec.id
                    ),
                );
                return Ok(v);
            }
            if rec.txid >= global_horizon {
                v.unsealed_rows += 1;
                continue;
            }
            let covered = sealed_to
                .get(&rec.tenant_id)
                .is_some_and(|(lo, hi)| rec.txid >= *lo && rec.txid < *hi);
            if !covered {
                fail(&mut v, "row", &rec.tenant_id, Some(rec.id), None, format!(
                    "row {} carries transaction {}, older than the seal horizon, which its tenant's seals do not cover: the row was inserted after sealing or a seal was deleted",
                    rec.id, rec.txid));
                return Ok(v);
            }
        }
        // 2. Seals whose rows overlap the range, plus their predecessors for
        //    the chain link.
        // Months retention retired: their seals' rows are gone on purpose.
        let mut retired: Vec<(i64, i64)> = Vec::new();
        for row in client
            .select(
                "SELECT (extract(epoch FROM range_from) * 1000000)::int8, (extract(epoch FROM range_to) * 1000000)::int8 \
                 FROM saas.audit_retired",
                None,
                &[],
            )
            .map_err(spi_err("read retired months"))?
        {
            let e = spi_err("read retired months");
            retired.push((row.get::<i64>(1).map_err(&e)?.unwrap_or(0), row.get::<i64>(2).map_err(&e)?.unwrap_or(0)));
        }
        let seals = client
            .select(
                &format!(
                    "SELECT {SEAL_COLUMNS} FROM saas.audit_seals \
                     WHERE first_logged_at < $2 AND last_logged_at >= $1 ORDER BY tenant_id, seal_no"
                ),
                None,
                &[from.into(), to.into()],
            )
            .map_err(spi_err("read seals"))?;
        let mut in_scope: Vec<StoredSeal> = Vec::new();
        for row in seals {
            in_scope.push(read_seal(&row).map_err(spi_err("read seals"))?);
        }
        let mut by_tenant: Vec<(String, Vec<StoredSeal>)> = Vec::new();
        for s in in_scope {
            if by_tenant.last().map(|(t, _)| t != &s.seal.tenant_id).unwrap_or(true) {
                by_tenant.push((s.seal.tenant_id.clone(), Vec::new()));
            }
            by_tenant.last_mut().expect("pushed above").1.push(s);
        }
        let predecessor_sql = format!("SELECT {SEAL_COLUMNS} FROM saas.audit_seals WHERE tenant_id = $1::uuid AND seal_no = $2");
        for (tenant, seals) in by_tenant {
            // Chain: each seal's hash, and its link to the one before.
            for (i, s) in seals.iter().enumerate() {
                v.seals_checked += 1;
                if s.seal.hash() != s.stored_hash {
                    fail(
                        &mut v,
                        "seal",
                        &tenant,
                        None,
                        Some(s.seal.seal_no),
                        format!("seal {} does not match its hash: it was changed", s.seal.seal_no),
                    );
                    return Ok(v);
                }
                // The predecessor is usually the seal just checked; read it
                // only when it lies outside the range.
                let read;
                let prev = match i.checked_sub(1).map(|j| &seals[j]) {
                    Some(p) if p.seal.seal_no == s.seal.seal_no - 1 => Some(p),
                    _ if s.seal.seal_no > 1 => {
                        let mut r = client
                            .select(
                                &predecessor_sql,
                                None,
                                &[tenant.clone().into(), (s.seal.seal_no - 1).into()],
                            )
                            .map_err(spi_err("read seals"))?;
                        let Some(row) = r.next() else {
                            fail(
                                &mut v,
                                "seal",
                                &tenant,
                                None,
                                Some(s.seal.seal_no),
                                format!(
                                    "seal {} follows a seal that is missing: seal {} was deleted",
                                    s.seal.seal_no,
                                    s.seal.seal_no - 1
                                ),
                            );
                            return Ok(v);
                        };
                        read = read_seal(&row).map_err(spi_err("read seals"))?;
                        Some(&read)
                    }
                    _ => None,
                };
                let (want_prev, want_from) = match prev {
                    Some(p) => (p.stored_hash, Some(p.seal.xid_to)),
                    None => ([0u8; 32], None),
                };
                if s.seal.prev_hash != want_prev || want_from.is_some_and(|f| f != s.seal.xid_from)
                {
                    fail(
                        &mut v,
                        "seal",
                        &tenant,
                        None,
                        Some(s.seal.seal_no),
                        format!(
                            "seal {} does not continue the chain of seal {}",
                            s.seal.seal_no,
                            s.seal.seal_no - 1
                        ),
                    );
                    return Ok(v);
                }
            }
            // Rows: recount and re-digest each seal's rows, unless retention
            // retired the months they were in.
            let live: Vec<&StoredSeal> = seals
                .iter()
                .filter(|s| {
                    !retired.iter().any(|(lo, hi)| {
                        s.seal.first_logged_at >= *lo && s.seal.first_logged_at < *hi
                    })
                })
                .collect();
            v.retired_seals += (seals.len() - live.len()) as i64;
            if live.is_empty() {
                continue;
            }
            let lo = live.iter().map(|s| s.seal.xid_from).min().unwrap_or(0);
            let hi = live.iter().map(|s| s.seal.xid_to).max().unwrap_or(0);
            let mut digests: Vec<RowsDigest> = vec![RowsDigest::default(); live.len()];
            let rows = client
                .select(
                    "SELECT id, txid, row_hash FROM saas.audit_log \
                     WHERE tenant_id = $1::uuid AND txid >= $2 AND txid < $3 ORDER BY id",
                    None,
                    &[tenant.clone().into(), lo.into(), hi.into()],
                )
                .map_err(spi_err("read sealed rows"))?;
            for row in rows {
                let e = spi_err("read sealed rows");
                let id = row.get::<i64>(1).map_err(&e)?.unwrap_or_default();
                let txid = row.get::<i64>(2).map_err(&e)?.unwrap_or_default();
                let hash = to_hash(row.get::<Vec<u8>>(3).map_err(&e)?);
                if let Some(i) =
                    live.iter().position(|s| txid >= s.seal.xid_from && txid < s.seal.xid_to)
                {
                    digests[i].push(id, &hash);
                }
            }
            for (s, d) in live.iter().zip(digests) {
                if d.count != s.seal.row_count || d.digest != s.seal.rows_digest {
                    let how = if d.count < s.seal.row_count {
                        format!(
                            "{} of its {} rows are missing: deleted after sealing",
                            s.seal.row_count - d.count,
                            s.seal.row_count
                        )
                    } else if d.count > s.seal.row_count {
                        format!(
                            "{} rows more than the {} it sealed: inserted after sealing",
                            d.count - s.seal.row_count,
                            s.seal.row_count
                        )
                    } else {
                        format!("its {} rows no longer digest to the sealed value: a row or its hash was replaced", d.count)
                    };
                    fail(
                        &mut v,
                        "seal",
                        &tenant,
                        None,
                        Some(s.seal.seal_no),
                        format!("seal {}: {how}", s.seal.seal_no),
                    );
                    return Ok(v);
                }
            }
        }
        v.detail = if v.retired_seals > 0 {
            format!(
                "ok: {} rows and {} seals verified; {} seals cover months already retired by retention (their chain verifies, their rows are gone); {} rows not sealed yet",
                v.rows_checked, v.seals_checked, v.retired_seals, v.unsealed_rows
            )
        } else {
            format!(
                "ok: {} rows and {} seals verified; {} rows not sealed yet",
                v.rows_checked, v.seals_checked, v.unsealed_rows
            )
        };
        Ok(v)
    })
}
