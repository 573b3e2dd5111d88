//! Audit: row-change triggers written in Rust, the chained seals and their
//! verification. Tables, `audit_enable`, the append-only guard and the export
//! are SQL (`sql/audit.sql`). This file is the SQL-facing glue; the work is
//! in files named for what they hold:
//!
//! - `trigger`: the row and statement triggers; `request_context`: who and
//!   which request, per transaction; `row_image`: columns as JSON from the
//!   tuple; `log`: ids and the write, through `direct_writer` (rows straight
//!   into their partition, datums from `jsonb`) or one INSERT.
//! - `seal` and `verify`: `audit_seal()` and `audit_verify()`.
//! - Pure Rust: `canonical` (canonical JSON), `canonical_number`,
//!   `json_scan`, `json_object` (row images), `record` (row and seal
//!   hashes), `coverage` (which seal holds a row, which seals retention
//!   retired), `diff` (changed columns).
//!
//! Why Rust: the row trigger is the hot path. It reads each row's columns
//! once, hashes the row without a round trip through SQL, and writes it
//! straight into its month's partition (a kept INSERT plan where it cannot,
//! or for every row with `saas.audit_direct_writer` off); it caches the
//! request context per transaction and the options per trigger.
//!
//! The triggers write as the owner of `saas.audit_log` (the extension owner),
//! switched the way PostgreSQL's RI triggers switch, so API roles need no
//! privilege on the log and cannot write it directly.
//!
//! The `#[pg_extern]`/`#[pg_trigger]` functions stay in this file: the
//! `requires` of the `extension_sql_file!` below find them by module path.

pub mod canonical;
mod canonical_number;
mod coverage;
mod diff;
mod direct_writer;
mod json_object;
pub(crate) mod json_scan;
mod jsonb;
mod log;
mod record;
mod request_context;
mod row_image;
mod seal;
mod trigger;
mod verify;
mod xid_base;

use crate::error::{ErrorKind, OrRaise, SaasError, SaasResult};
use crate::gucs::AUDIT_CLOCK;
use crate::pgutil::{clock_override, parse_pg_uuid};
use pgrx::prelude::*;
use record::Hash;

/// Tenant id of rows that belong to no tenant (changes made outside any
/// tenant context, TRUNCATE by an operator): the log's key needs a value.
pub const NO_TENANT: &str = "00000000-0000-0000-0000-000000000000";

pub(crate) fn init() {
    // SAFETY: static callbacks without argument: the cache callbacks only
    // clear thread-locals; the transaction callback is guarded (it may
    // write the log and raise an ERROR).
    unsafe {
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            Some(log::on_pg_class_change),
            pg_sys::Datum::from(0usize),
        );
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::NAMESPACEOID as i32,
            Some(log::on_pg_class_change),
            pg_sys::Datum::from(0usize),
        );
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::AUTHOID as i32,
            Some(request_context::on_role_change),
            pg_sys::Datum::from(0usize),
        );
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_change),
            pg_sys::Datum::from(0usize),
        );
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

/// A relation's relcache entry was invalidated (InvalidOid: all): its
/// kept column plan goes.
extern "C-unwind" fn on_relcache_change(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    row_image::forget_kept(relid);
}

extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        trigger::forget_moved_row_of(my_subid);
    }
}

/// At pre-commit, logs what the row trigger still holds (a moved row whose
/// INSERT never came); on abort, forgets it.
///
/// # Safety
///
/// Called by PostgreSQL's transaction machinery only.
#[pg_guard]
unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent as E;
    if !trigger::has_moved_row() {
        return;
    }
    if event == E::XACT_EVENT_PRE_COMMIT {
        // SAFETY: the transaction is still in progress; the log's writers
        // need an active snapshot, pushed and popped around them.
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
        let done = trigger::finish_moved_rows(true);
        // SAFETY: pops what was pushed above.
        unsafe { pg_sys::PopActiveSnapshot() };
        done.or_raise();
    } else if event == E::XACT_EVENT_ABORT || event == E::XACT_EVENT_PARALLEL_ABORT {
        let _ = trigger::finish_moved_rows(false);
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> SaasError {
    SaasError::new(
        ErrorKind::ObjectNotInPrerequisiteState,
        format!("pg_saas audit could not {what}"),
        "Check that the pg_saas extension is installed completely (saas.audit_log) and that this role may use it.",
    )
    .with_detail(e.to_string())
}

/// A JSON value nested deeper than the stack allows the audit log to walk
/// (`where_` says which value: a column of the audited row, a logged
/// image): 54001, as PostgreSQL's own "stack depth limit exceeded".
fn too_deep(where_: &str, e: &json_scan::JsonError) -> SaasError {
    SaasError::new(
        ErrorKind::StatementTooComplex,
        format!("{where_} holds a JSON value nested too deeply for the pg_saas audit log"),
        "The value is nested deeper than PostgreSQL's max_stack_depth allows the audit log to record: \
raise max_stack_depth (up to the operating system's stack limit less a safety margin) or store the value less deeply nested.",
    )
    .with_detail(e.to_string())
}

/// An error of reading JSON text: [`too_deep`] for depth, else `internal`.
fn json_err(what: &str, where_: &str, e: json_scan::JsonError) -> SaasError {
    match e {
        json_scan::JsonError::TooDeep { .. } => too_deep(where_, &e),
        json_scan::JsonError::Invalid(_) => internal(what, e),
    }
}

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

/// Microseconds since 2000-01-01 (PostgreSQL's TimestampTz) for new rows.
fn audit_now() -> SaasResult<i64> {
    match clock_override(c"saas.audit_clock", &AUDIT_CLOCK)? {
        Some(fixed) => Ok(fixed),
        // SAFETY: plain read of transaction state.
        None => Ok(unsafe { pg_sys::GetCurrentTransactionStartTimestamp() }),
    }
}

/// Row-level audit trigger (AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW).
#[pg_trigger]
fn audit_row_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, SaasError> {
    trigger::audit_row(trigger).or_raise();
    Ok(None)
}

/// Statement-level audit trigger with transition tables (audit_enable's
/// `mode => 'statement'`), and the TRUNCATE trigger of both modes.
#[pg_trigger]
fn audit_statement_trigger<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, SaasError> {
    trigger::audit_statement(trigger).or_raise();
    Ok(None)
}

/// Appends one chained seal per tenant covering the tenant's rows written by
/// transactions that had finished when the seal was taken. One row per new
/// seal.
// pgrx reads the column names from this signature: no type alias.
#[allow(clippy::type_complexity)]
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
    TableIterator::new(seal::seal_impl().or_raise())
}

/// Recomputes the hash of every row logged in `[p_from, p_to)` and every seal
/// covering such rows (its chain link, its hash, its rows' count and digest).
/// One row: the first row or seal that does not match, or ok with counts.
// pgrx reads the column names from this signature: no type alias.
#[allow(clippy::type_complexity)]
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
    let v = verify::verify_impl(from, to).or_raise();
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

// Audit trail: its log is a monthly partitioned table, so partitions first;
// its policies read the tenant context.
extension_sql_file!(
    "../../sql/audit.sql",
    name = "audit",
    requires = [
        "registry",
        "tenancy",
        "partitions",
        audit_row_trigger,
        audit_statement_trigger,
        audit_seal,
        audit_verify
    ]
);
