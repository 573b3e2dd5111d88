//! The row and statement audit triggers: what changed (row images from the
//! tuple or the transition tables), by whom (`request_context`), turned
//! into records and handed to `log`.

use super::diff::{change_of, record_key};
use super::json_object::JsonObject;
use super::log::write_records;
use super::record::{AuditRecord, PG_EPOCH_OFFSET_MICROS};
use super::request_context::{request_context, RequestContext};
use super::{audit_now, internal, row_image, NO_TENANT};
use crate::error::{ErrorKind, SaasError, SaasResult};
use crate::tenancy;
use pgrx::pg_sys;
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

/// Records a statement trigger builds (and holds in memory) before it
/// writes them: memory stays bounded whatever the statement's size.
const BULK_CHUNK: usize = 5000;

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

/// The first half of a row moved to another partition by an UPDATE: its
/// old image, waiting for the INSERT into the new partition that follows
/// it in the trigger queue, so that the two are logged as the one UPDATE
/// they are.
struct MovedRow {
    table: (String, String),
    old: JsonObject,
    opts: Rc<TriggerOptions>,
    /// The subtransaction that deleted it: if that one aborts, so did the
    /// move.
    subxact: pg_sys::SubTransactionId,
}

thread_local! {
    static OPTIONS: RefCell<HashMap<u32, Rc<TriggerOptions>>> = RefCell::new(HashMap::new());
    static MOVED: RefCell<Option<MovedRow>> = const { RefCell::new(None) };
    /// Tables' logical names by OID (a partition's root's), until pg_class
    /// or pg_namespace changes.
    static LOGICAL_NAMES: RefCell<HashMap<u32, (String, String)>> = RefCell::new(HashMap::new());
}

fn top_xid() -> i64 {
    // SAFETY: assigns the transaction id if the transaction has none yet; the
    // trigger runs inside a writing transaction anyway.
    unsafe { pg_sys::GetTopFullTransactionId().value as i64 }
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

/// The schema and name a change is logged under: the logical table, the
/// root of the partition tree when the trigger fires on a partition (row
/// triggers fire on the leaf; DML may name a partition directly), so one
/// table's changes read alike however they were made.
fn table_names(rel: pg_sys::Relation) -> (String, String) {
    // SAFETY: the trigger's relation is open; names are copied.
    unsafe {
        let relid = (*rel).rd_id;
        let key = relid.to_u32();
        if let Some(n) = LOGICAL_NAMES.with(|m| m.borrow().get(&key).cloned()) {
            return n;
        }
        if !(*(*rel).rd_rel).relispartition {
            let names = own_names(rel);
            LOGICAL_NAMES.with(|m| m.borrow_mut().insert(key, names.clone()));
            return names;
        }
        // pg_partition_root(regclass), the SQL-callable C function.
        let root = pg_sys::DirectFunctionCall1Coll(
            Some(partition_root),
            pg_sys::InvalidOid,
            pg_sys::Datum::from(relid),
        );
        let names = names_of(pg_sys::Oid::from(root.value() as u32));
        LOGICAL_NAMES.with(|m| m.borrow_mut().insert(key, names.clone()));
        names
    }
}

unsafe extern "C-unwind" {
    /// PostgreSQL's `pg_partition_root(regclass)` (partition.h's
    /// get_partition_ancestors is not in pgrx's bindings).
    #[link_name = "pg_partition_root"]
    fn partition_root(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum;
}

/// The open relation's own schema and name (one namespace lookup, the
/// name from the relation).
///
/// # Safety
///
/// `rel` is open.
unsafe fn own_names(rel: pg_sys::Relation) -> (String, String) {
    // SAFETY: the caller keeps `rel` open; names are copied.
    unsafe {
        let name = CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr())
            .to_string_lossy()
            .into_owned();
        let nsp = pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace);
        let schema = if nsp.is_null() {
            String::new()
        } else {
            CStr::from_ptr(nsp).to_string_lossy().into_owned()
        };
        (schema, name)
    }
}

/// A relation's schema and name (empty strings for a relation that is gone).
fn names_of(relid: pg_sys::Oid) -> (String, String) {
    let copy = |p: *mut std::ffi::c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: a palloc'd C string from the catalog lookups below.
            unsafe { CStr::from_ptr(p).to_string_lossy().into_owned() }
        }
    };
    // SAFETY: catalog lookups by OID; NULL when missing.
    unsafe {
        (
            copy(pg_sys::get_namespace_name(pg_sys::get_rel_namespace(relid))),
            copy(pg_sys::get_rel_name(relid)),
        )
    }
}

/// Forgets the logical names of partitions (any pg_class change: an attach
/// or detach changes them).
pub(super) fn forget_logical_names() {
    LOGICAL_NAMES.with(|m| m.borrow_mut().clear());
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

/// What every record of one trigger call shares.
#[derive(Clone, Copy)]
struct Common<'a> {
    opts: &'a TriggerOptions,
    table: &'a (String, String),
    ctx: &'a RequestContext,
    now: i64,
    txid: i64,
}

/// Builds the record for one change, or `None` when nothing audited changed.
fn record_for(
    operation: &str,
    old: Option<JsonObject>,
    new: Option<JsonObject>,
    common: &Common<'_>,
) -> SaasResult<Option<AuditRecord>> {
    let Common {
        opts,
        table,
        ctx,
        now,
        txid,
    } = *common;
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

/// Whether the deleted tuple was moved to another partition by an UPDATE
/// (PostgreSQL marks its ctid so: `ItemPointerIndicatesMovedPartitions`).
///
/// # Safety
///
/// `tuple` is the old tuple of an AFTER ROW DELETE event, read from its
/// page (its header is the stored one).
unsafe fn moved_to_another_partition(tuple: pg_sys::HeapTuple) -> bool {
    // SAFETY: the caller passes a valid heap tuple with its header.
    unsafe {
        if tuple.is_null() || (*tuple).t_data.is_null() {
            return false;
        }
        let ctid = &(*(*tuple).t_data).t_ctid;
        // MovedPartitionsBlockNumber (InvalidBlockNumber) and
        // MovedPartitionsOffsetNumber (0xfffd).
        ctid.ip_blkid.bi_hi == 0xFFFF && ctid.ip_blkid.bi_lo == 0xFFFF && ctid.ip_posid == 0xFFFD
    }
}

pub(super) fn audit_row<'a>(trigger: &'a pgrx::PgTrigger<'a>) -> SaasResult<()> {
    let Firing {
        td,
        op,
        rel,
        desc,
        opts,
    } = firing(trigger)?;
    // The row trigger fires for INSERT, UPDATE and DELETE only (TRUNCATE has
    // no row trigger; audit_enable gives it a statement trigger).
    // SAFETY: the relation's descriptor; tuples are valid for the event
    // kind they are read for.
    let (operation, old, new, moved) = unsafe {
        row_image::with_kept((*rel).rd_id, desc, |encoder| -> SaasResult<_> {
            let images = if op == pg_sys::TRIGGER_EVENT_INSERT {
                (
                    "INSERT",
                    None,
                    Some(encoder.encode(td.tg_trigtuple)?),
                    false,
                )
            } else if op == pg_sys::TRIGGER_EVENT_UPDATE {
                (
                    "UPDATE",
                    Some(encoder.encode(td.tg_trigtuple)?),
                    Some(encoder.encode(td.tg_newtuple)?),
                    false,
                )
            } else {
                (
                    "DELETE",
                    Some(encoder.encode(td.tg_trigtuple)?),
                    None,
                    moved_to_another_partition(td.tg_trigtuple),
                )
            };
            Ok(images)
        })?
    };
    let table = table_names(rel);
    // A row an UPDATE moved to another partition fires DELETE on the old
    // partition, then INSERT on the new one (PostgreSQL queues no UPDATE
    // for it): the DELETE waits for its INSERT and both are logged as one
    // UPDATE of the logical table.
    let waiting = MOVED.with(|m| m.borrow_mut().take());
    let (operation, old) = match waiting {
        Some(w) if operation == "INSERT" && w.table == table => ("UPDATE", Some(w.old)),
        Some(w) => {
            // Its INSERT never came (a BEFORE trigger of the new partition
            // dropped the row): it was a DELETE.
            write_moved_as_delete(w)?;
            (operation, old)
        }
        None => (operation, old),
    };
    if moved {
        if let Some(old) = old {
            MOVED.with(|m| {
                *m.borrow_mut() = Some(MovedRow {
                    table,
                    old,
                    opts: opts.clone(),
                    // SAFETY: plain read of transaction state.
                    subxact: unsafe { pg_sys::GetCurrentSubTransactionId() },
                })
            });
        }
        return Ok(());
    }
    let ctx = request_context()?;
    if let Some(r) = record_for(
        operation,
        old,
        new,
        &Common {
            opts: &opts,
            table: &table,
            ctx: &ctx,
            now: audit_now()?,
            txid: top_xid(),
        },
    )? {
        write_records(vec![r])?;
    }
    Ok(())
}

fn write_moved_as_delete(w: MovedRow) -> SaasResult<()> {
    let ctx = request_context()?;
    if let Some(r) = record_for(
        "DELETE",
        Some(w.old),
        None,
        &Common {
            opts: &w.opts,
            table: &w.table,
            ctx: &ctx,
            now: audit_now()?,
            txid: top_xid(),
        },
    )? {
        write_records(vec![r])?;
    }
    Ok(())
}

/// Whether a moved row waits for its INSERT.
pub(super) fn has_moved_row() -> bool {
    MOVED.with(|m| m.borrow().is_some())
}

/// Subtransaction `subxact` aborted: a row it moved was not moved.
pub(super) fn forget_moved_row_of(subxact: pg_sys::SubTransactionId) {
    MOVED.with(|m| {
        let mut m = m.borrow_mut();
        if m.as_ref().is_some_and(|w| w.subxact >= subxact) {
            *m = None;
        }
    });
}

/// Before the transaction commits: a moved row whose INSERT never came
/// (the last of its statement) is logged as the DELETE it was. On abort
/// it is forgotten with everything else.
pub(super) fn finish_moved_rows(commit: bool) -> SaasResult<()> {
    let Some(w) = MOVED.with(|m| m.borrow_mut().take()) else {
        return Ok(());
    };
    if commit {
        write_moved_as_delete(w)?;
    }
    Ok(())
}

fn audit_truncate(rel: pg_sys::Relation, opts: &TriggerOptions) -> SaasResult<()> {
    // No row images: the record carries the request's tenant and no key.
    // Under the relation's own name: TRUNCATE of a partitioned table fires
    // on the table and on each partition, each a record of what it emptied.
    let ctx = request_context()?;
    let r = record_for(
        "TRUNCATE",
        None,
        None,
        &Common {
            opts,
            // SAFETY: the trigger's relation is open while it fires.
            table: &unsafe { own_names(rel) },
            ctx: &ctx,
            now: audit_now()?,
            txid: top_xid(),
        },
    )?;
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
    ///
    /// # Safety
    ///
    /// `store` is NULL or a transition table of the current trigger
    /// event with tuples of `desc`.
    unsafe fn new(
        store: *mut pg_sys::Tuplestorestate,
        desc: pg_sys::TupleDesc,
    ) -> Option<TransitionReader> {
        // SAFETY: the caller upholds the contract under # Safety above.
        unsafe {
            if store.is_null() {
                return None;
            }
            pg_sys::tuplestore_select_read_pointer(store, 0);
            pg_sys::tuplestore_rescan(store);
            let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
            Some(TransitionReader {
                store,
                slot,
                encoder: row_image::RowEncoder::new(desc),
            })
        }
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

pub(super) fn audit_statement<'a>(trigger: &'a pgrx::PgTrigger<'a>) -> SaasResult<()> {
    let Firing {
        td,
        op,
        rel,
        desc,
        opts,
    } = firing(trigger)?;
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
        (
            TransitionReader::new(td.tg_oldtable, desc),
            TransitionReader::new(td.tg_newtable, desc),
        )
    };
    let ctx = request_context()?;
    let table = table_names(rel);
    let common = Common {
        opts: &opts,
        table: &table,
        ctx: &ctx,
        now: audit_now()?,
        txid: top_xid(),
    };
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
            records.extend(record_for(operation, old, new, &common)?);
        }
        if records.is_empty() {
            olds.into_iter()
                .chain(news)
                .for_each(TransitionReader::finish);
            return Ok(());
        }
        write_records(records)?;
    }
}
