//! The statement trigger of tracked payments tables (`saas._ltv_capture`):
//! appends the statement's changes to `saas.ltv_pending` with one INSERT
//! whose plan is prepared once per trigger and backend and kept (the SQL
//! comes from `saas._ltv_capture_sql`, which names the source's columns).

use crate::error::{ErrorKind, SaasError, SaasResult};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};

thread_local! {
    /// Kept plans by trigger OID, source id and whether the statement is
    /// large enough to be chunked. A source's columns never change
    /// (re-tracking makes a new source and new triggers); table DDL is
    /// handled by the plan cache, which re-plans a kept plan itself.
    static PLANS: RefCell<HashMap<(pg_sys::Oid, i64, bool), pg_sys::SPIPlanPtr>> = RefCell::new(HashMap::new());
}

/// Changes per pending row at most, in statements that large.
const CHUNK_ROWS: i64 = 1_000_000;

fn failed(what: String) -> SaasError {
    SaasError::new(
        ErrorKind::ObjectNotInPrerequisiteState,
        "saas._ltv_capture could not log the statement's changes",
        "Track the table with saas.ltv_track(); the trigger takes the source id as its one argument.",
    )
    .with_detail(what)
}

pub(super) fn capture<'a>(trigger: &'a pgrx::PgTrigger<'a>) -> SaasResult<()> {
    // A rescue moving rows out of a default partition (the partitions
    // module): the rows stay the same payments, so nothing is logged for the
    // DELETE on the default partition (the INSERT goes to a table that is
    // not attached yet, which has no triggers).
    if crate::partitions::moving_rows() {
        return Ok(());
    }
    let td = trigger.trigger_data();
    let op = match td.tg_event & pg_sys::TRIGGER_EVENT_OPMASK {
        pg_sys::TRIGGER_EVENT_INSERT => "INSERT",
        pg_sys::TRIGGER_EVENT_UPDATE => "UPDATE",
        pg_sys::TRIGGER_EVENT_DELETE => "DELETE",
        other => return Err(failed(format!("unexpected trigger event {other}"))),
    };
    let args = trigger
        .extra_args()
        .map_err(|e| failed(format!("trigger arguments: {e}")))?;
    let source: i64 = match args.as_slice() {
        [one] => one
            .parse()
            .map_err(|_| failed(format!("source id {one:?} is not a number")))?,
        _ => return Err(failed(format!("{} arguments", args.len()))),
    };
    // SAFETY: fields of the TriggerData PostgreSQL passed for this call;
    // the transition tables are NULL or this event's tuplestores.
    let (tgoid, relid, rows) = unsafe {
        let count = |t: *mut pg_sys::Tuplestorestate| {
            if t.is_null() {
                0
            } else {
                pg_sys::tuplestore_tuple_count(t)
            }
        };
        (
            (*td.tg_trigger).tgoid,
            (*td.tg_relation).rd_id,
            count(td.tg_oldtable) + count(td.tg_newtable),
        )
    };
    // Over a million changes: one pending row per tenant and million rows,
    // so that no array nears the 1 GB limit of a value.
    let chunked = rows > CHUNK_ROWS;
    let key = (tgoid, source, chunked);
    // SAFETY: SPI is connected here and finished below on every path that
    // returns (an ERROR aborts the transaction, which cleans SPI up); the
    // trigger data is this call's; plans are prepared with the two types
    // the values are of and kept for the backend's life.
    unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            return Err(failed("SPI_connect failed".into()));
        }
        let result = (|| -> SaasResult<()> {
            if pg_sys::SPI_register_trigger_data(std::ptr::from_ref(td).cast_mut())
                != pg_sys::SPI_OK_TD_REGISTER as i32
            {
                return Err(failed(
                    "the transition tables could not be registered".into(),
                ));
            }
            let mut plan = PLANS
                .with(|p| p.borrow().get(&key).copied())
                .unwrap_or(std::ptr::null_mut());
            if plan.is_null() {
                let q = CString::new(format!(
                    "SELECT saas._ltv_capture_sql({source}, '{op}', {chunked})"
                ))
                .map_err(|e| failed(e.to_string()))?;
                if pg_sys::SPI_execute(q.as_ptr(), true, 1) != pg_sys::SPI_OK_SELECT as i32
                    || pg_sys::SPI_processed != 1
                    || pg_sys::SPI_tuptable.is_null()
                {
                    return Err(failed(format!("source {source} is not registered")));
                }
                let table = &*pg_sys::SPI_tuptable;
                let text = pg_sys::SPI_getvalue(*table.vals, table.tupdesc, 1);
                if text.is_null() {
                    return Err(failed(format!("no SQL for source {source}")));
                }
                let sql = CStr::from_ptr(text).to_owned();
                let mut types = [pg_sys::INT8OID, pg_sys::REGCLASSOID];
                plan = pg_sys::SPI_prepare(sql.as_ptr(), types.len() as i32, types.as_mut_ptr());
                if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                    return Err(failed(format!(
                        "could not prepare {}",
                        sql.to_string_lossy()
                    )));
                }
                PLANS.with(|p| p.borrow_mut().insert(key, plan));
            }
            let mut values = [pg_sys::Datum::from(source), pg_sys::Datum::from(relid)];
            let nulls = [b' ' as std::ffi::c_char; 2];
            let rc = pg_sys::SPI_execute_plan(plan, values.as_mut_ptr(), nulls.as_ptr(), false, 0);
            if rc != pg_sys::SPI_OK_INSERT as i32 {
                return Err(failed(format!("SPI code {rc}")));
            }
            Ok(())
        })();
        pg_sys::SPI_finish();
        result
    }
}
