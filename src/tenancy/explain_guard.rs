//! No EXPLAIN inside an API request for roles that RLS binds: a plan's row
//! estimates come from statistics of every tenant's rows. PostgREST
//! computes `Prefer: count=planned` (and `count=estimated` past its
//! threshold) and the plan media type with EXPLAIN; `pre_request` refuses
//! such preferences when it sees them, but PostgREST applies every
//! `Prefer` header while `request.headers` keeps only the last one, so the
//! refusal must also hold where the estimate is made.

use crate::error::{ErrorKind, SaasError};
use crate::pgutil::setting;
use pgrx::pg_sys;

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Installs the hook in this backend (from `_PG_init`).
pub(crate) fn init() {
    // SAFETY: chaining the hook once per backend, at library load, the way
    // every extension does; nothing else writes these statics.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// Whether this statement is an EXPLAIN inside an API request (PostgREST
/// set `request.method` for the transaction) by a role that cannot bypass
/// row-level security.
///
/// # Safety
///
/// `pstmt` is the utility statement PostgreSQL is about to run.
unsafe fn refused(pstmt: *mut pg_sys::PlannedStmt) -> bool {
    // SAFETY: the caller passes PostgreSQL's statement; catalog reads only.
    unsafe {
        let stmt = (*pstmt).utilityStmt;
        if stmt.is_null() || (*stmt).type_ != pg_sys::NodeTag::T_ExplainStmt {
            return false;
        }
        if setting(c"request.method").is_none_or(|m| m.is_empty()) {
            return false;
        }
        let user = pg_sys::GetUserId();
        !pg_sys::superuser_arg(user) && !pg_sys::has_bypassrls_privilege(user)
    }
}

/// # Safety
///
/// Called by PostgreSQL as its ProcessUtility hook, with its arguments
/// (PostgreSQL's signature, hence the argument count).
#[allow(clippy::too_many_arguments)]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: PostgreSQL's arguments, passed on unchanged to the next hook
    // or the standard implementation.
    unsafe {
        if refused(pstmt) {
            SaasError::new(
                ErrorKind::InsufficientPrivilege,
                "EXPLAIN is not served in API requests: planner estimates (Prefer: count=planned or count=estimated, the plan media type) come from statistics of every tenant's rows",
                "Ask for Prefer: count=exact, which counts only the rows you can see, or leave the count out.",
            )
            .report();
        }
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    }
}
