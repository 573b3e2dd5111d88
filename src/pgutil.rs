//! Small backend helpers shared by the modules' pgrx glue (no logic of
//! their own): reading a setting, running SPI as an object's owner,
//! returning a composite value.

use crate::error::{ErrorKind, SaasError, SaasResult};
use crate::uuid::Uuid;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use pgrx::{GucSetting, PgOid};
use std::ffi::CStr;
use std::ffi::CString;

/// The current value of a setting (`request.headers`, `saas.*`), or None
/// when it is not defined.
pub(crate) fn setting(name: &CStr) -> Option<String> {
    // SAFETY: GetConfigOption returns NULL or a string owned by the GUC
    // machinery; copied at once.
    unsafe {
        let p = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

/// Whether setting `name` currently reads `value` (None: not defined),
/// compared in place: for caches checked on every row.
pub(crate) fn setting_is(name: &CStr, value: Option<&str>) -> bool {
    // SAFETY: as in `setting`; only read.
    unsafe {
        let p = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        match (p.is_null(), value) {
            (true, None) => true,
            (false, Some(v)) => CStr::from_ptr(p).to_bytes() == v.as_bytes(),
            _ => false,
        }
    }
}

/// PostgreSQL's own stack check, as the [`DepthProbe`] of pure code that
/// recurses over user data: true once the stack is deeper than
/// `max_stack_depth` allows (the depth itself is not needed). Raises
/// nothing: the caller turns a refusal into its own 54001 error.
///
/// [`DepthProbe`]: crate::audit::json_scan::DepthProbe
pub(crate) fn stack_too_deep(_depth: usize) -> bool {
    // SAFETY: stack_is_too_deep() compares the address of a local with the
    // backend's stack base and max_stack_depth; it reads no other state and
    // cannot raise an error.
    unsafe { pg_sys::stack_is_too_deep() }
}

/// The backend's local transaction id: what per-transaction caches key on.
pub(crate) fn local_xid() -> u32 {
    // SAFETY: MyProc is set in every backend that runs SQL.
    unsafe { (*pg_sys::MyProc).lxid }
}

/// A uuid of the pure code as pgrx's type.
pub(crate) fn to_pg_uuid(u: Uuid) -> pgrx::Uuid {
    pgrx::Uuid::from_bytes(u.0)
}

/// uuid text, as PostgreSQL accepts it, as pgrx's type.
pub(crate) fn parse_pg_uuid(text: &str) -> Option<pgrx::Uuid> {
    Uuid::parse(text).map(to_pg_uuid)
}

/// Runs `f` as `owner` in a security-restricted context, like PostgreSQL's
/// RI triggers; an error unwinds through here and transaction (or
/// subtransaction) abort restores the caller's identity.
pub(crate) fn as_owner<T>(owner: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0i32;
    // SAFETY: saving and switching the current user id, as ri_triggers.c does.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
    }
    let out = f();
    // SAFETY: restoring what was saved above.
    unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
    out
}

/// Where a prepared statement is kept for the backend's life.
pub(crate) type PlanCell =
    std::thread::LocalKey<std::cell::Cell<Option<&'static OwnedPreparedStatement>>>;

/// The statement kept in `cell`, prepared on first use. Leaked on purpose:
/// the plan cache re-plans it when the tables it reads change.
pub(crate) fn kept_plan(
    cell: &'static PlanCell,
    client: &SpiClient<'_>,
    sql: &str,
    types: &[pg_sys::Oid],
) -> Result<&'static OwnedPreparedStatement, pgrx::spi::SpiError> {
    if let Some(p) = cell.with(|c| c.get()) {
        return Ok(p);
    }
    let args: Vec<PgOid> = types.iter().map(|t| PgOid::from(*t)).collect();
    let stmt = client.prepare_mut(sql, &args)?;
    let kept: &'static OwnedPreparedStatement = Box::leak(Box::new(stmt.keep()));
    cell.with(|c| c.set(Some(kept)));
    Ok(kept)
}

/// The OIDs of tables of the `saas` schema by name (InvalidOid for one that
/// does not exist, e.g. before ALTER EXTENSION UPDATE created it): what the
/// per-backend caches compare relcache invalidations against.
pub(crate) fn saas_relids<const N: usize>(names: [&CStr; N]) -> [pg_sys::Oid; N] {
    // SAFETY: catalog lookups by name with NUL-terminated names; missing
    // objects give InvalidOid, never an error.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"saas".as_ptr(), true);
        names.map(|n| pg_sys::get_relname_relid(n.as_ptr(), namespace))
    }
}

/// Where a statement for [`select_latest`] is kept for the backend's life.
pub(crate) type RawPlanCell = std::thread::LocalKey<std::cell::Cell<pg_sys::SPIPlanPtr>>;

/// The first row of a kept SELECT, as text columns, read with a snapshot
/// taken now: neither the statement's nor a repeatable-read transaction's.
/// What a per-backend cache fills itself from, so that every change
/// committed before the read is seen and every later one invalidates it.
/// Must run inside an SPI connection (`Spi::connect`).
pub(crate) fn select_latest(
    cell: &'static RawPlanCell,
    sql: &CStr,
    types: &[pg_sys::Oid],
    args: &[Option<pg_sys::Datum>],
) -> SaasResult<Option<Vec<Option<String>>>> {
    Ok(select_latest_rows(cell, sql, types, args, 1)?
        .into_iter()
        .next())
}

/// Every row (at most `max_rows`; 0 for all) of a kept SELECT, as text
/// columns, read with a snapshot taken now, as [`select_latest`] reads.
pub(crate) fn select_latest_rows(
    cell: &'static RawPlanCell,
    sql: &CStr,
    types: &[pg_sys::Oid],
    args: &[Option<pg_sys::Datum>],
    max_rows: i64,
) -> SaasResult<Vec<Vec<Option<String>>>> {
    let failed = |what: String| {
        SaasError::new(
            ErrorKind::ObjectNotInPrerequisiteState,
            "pg_saas could not read its own tables",
            "Check that the extension is installed completely.",
        )
        .with_detail(what)
    };
    assert_eq!(types.len(), args.len(), "one type per argument");
    // SAFETY: SPI is connected (the caller's Spi::connect); the plan is
    // prepared with `types` and kept for the backend's life; the datums
    // are of those types; the text results are copied before SPI finishes.
    unsafe {
        let mut plan = cell.with(|c| c.get());
        if plan.is_null() {
            let mut t = types.to_vec();
            plan = pg_sys::SPI_prepare(sql.as_ptr(), t.len() as i32, t.as_mut_ptr());
            if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                return Err(failed(format!(
                    "could not prepare {}",
                    sql.to_string_lossy()
                )));
            }
            cell.with(|c| c.set(plan));
        }
        let mut values: Vec<pg_sys::Datum> = args
            .iter()
            .map(|a| a.unwrap_or(pg_sys::Datum::from(0usize)))
            .collect();
        let nulls: Vec<std::ffi::c_char> = args
            .iter()
            .map(|a| if a.is_some() { b' ' } else { b'n' } as std::ffi::c_char)
            .collect();
        let rc = pg_sys::SPI_execute_snapshot(
            plan,
            values.as_mut_ptr(),
            nulls.as_ptr(),
            pg_sys::GetLatestSnapshot(),
            std::ptr::null_mut(),
            true,
            false,
            max_rows,
        );
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            return Err(failed(format!("SPI code {rc}")));
        }
        if pg_sys::SPI_tuptable.is_null() {
            return Ok(Vec::new());
        }
        let table = &*pg_sys::SPI_tuptable;
        let columns = (*table.tupdesc).natts;
        let rows = (0..pg_sys::SPI_processed as usize)
            .map(|r| {
                let tuple = *table.vals.add(r);
                (1..=columns)
                    .map(|i| {
                        let v = pg_sys::SPI_getvalue(tuple, table.tupdesc, i);
                        (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
                    })
                    .collect()
            })
            .collect();
        Ok(rows)
    }
}

/// The timestamp a test-hook clock setting (`saas.audit_clock`,
/// `saas.rate_limit_clock`) pins, as PostgreSQL microseconds; None when it
/// is empty, which means the real clock.
pub(crate) fn clock_override(
    name: &CStr,
    setting: &GucSetting<Option<CString>>,
) -> SaasResult<Option<pg_sys::TimestampTz>> {
    let Some(fixed) = setting.get() else {
        return Ok(None);
    };
    let text = fixed.to_string_lossy();
    if text.trim().is_empty() {
        return Ok(None);
    }
    let ts: TimestampWithTimeZone = text.parse().map_err(|_| {
        SaasError::new(
            ErrorKind::ConfigFile,
            format!("{} is not a timestamp: \"{text}\"", name.to_string_lossy()),
            "Set it to a timestamptz such as '2026-01-15 10:00:00+00', or RESET it.",
        )
    })?;
    Ok(Some(pg_sys::TimestampTz::from(ts)))
}

/// Returns one value of the called function's composite result type, made
/// of `values` and `nulls`, one per attribute of type `types`. The row
/// descriptor is looked up (and checked against `types`) once per call site
/// and kept in its `fn_extra`: a plain composite return costs one
/// `heap_form_tuple`, where a `RETURNS TABLE` function rebuilds its
/// descriptor from `pg_proc` on every call.
///
/// # Safety
/// `fcinfo` is the current call's, each value is a datum of its type in
/// `types`, and nothing else uses the call site's `fn_extra`.
pub(crate) unsafe fn return_composite<'fcx>(
    fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    types: &[pg_sys::Oid],
    values: &mut [pg_sys::Datum],
    nulls: &mut [bool],
) -> pgrx::datum::Datum<'fcx> {
    // SAFETY: the caller's contract above; the descriptor is read from the
    // call's own flinfo and checked against `types` before any datum is
    // formed into a tuple with it.
    unsafe {
        let raw = fcinfo.as_mut_ptr();
        let flinfo = (*raw).flinfo;
        let mut desc = (*flinfo).fn_extra as pg_sys::TupleDesc;
        if desc.is_null() {
            // Allocated where the call site lives, so it lasts as long.
            let old = pg_sys::MemoryContextSwitchTo((*flinfo).fn_mcxt);
            let kind = pg_sys::get_call_result_type(raw, std::ptr::null_mut(), &mut desc);
            pg_sys::MemoryContextSwitchTo(old);
            // The type is the extension's, but a superuser can ALTER it: a
            // datum built for another column type would crash the backend.
            let matches = kind == pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE
                && (*desc).natts as usize == types.len()
                && types.iter().enumerate().all(|(i, t)| {
                    let attr = &*(*desc).attrs.as_ptr().add(i);
                    !attr.attisdropped && attr.atttypid == *t
                });
            if !matches {
                SaasError::new(
                    ErrorKind::ObjectNotInPrerequisiteState,
                    "pg_saas: the result type of this function was altered",
                    "Restore the type as the extension created it (DROP EXTENSION pg_saas and CREATE it again).",
                )
                .report();
            }
            (*flinfo).fn_extra = pg_sys::BlessTupleDesc(desc).cast();
        }
        let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        fcinfo.return_raw_datum(pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data))
    }
}
