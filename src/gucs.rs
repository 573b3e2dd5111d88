//! Every `saas.*` setting, registered in one place when the library loads,
//! and the `saas` prefix reserved: a misspelt `SET saas.tenant_clam = 'x'`
//! is an error instead of a placeholder nobody reads.
//!
//! Modules read the values through the statics below; what a value means
//! stays with the module that uses it.

use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::{CStr, CString};

/// `saas.tenant_claim`: the JWT claim naming the tenant (tenancy).
/// Superuser-only, so a session cannot point it at a claim it controls.
pub(crate) static TENANT_CLAIM: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"tenant_id"));

/// `saas.audit_clock`: test hook, the timestamp every audit row and seal
/// gets instead of the transaction's start. Superuser-only.
pub(crate) static AUDIT_CLOCK: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

/// `saas.audit_direct_writer`: whether the audit triggers write rows
/// straight into the log's partitions (`audit/direct_writer.rs`); off sends
/// every row through the ordinary INSERT. Superuser-only.
pub(crate) static AUDIT_DIRECT_WRITER: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Which state `rate_limit()` and the rules use (`saas.rate_limit_backend`).
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum RateLimitBackend {
    /// Shared memory when preloaded, else the table.
    #[name = c"auto"]
    Auto,
    #[name = c"shmem"]
    Shmem,
    #[name = c"table"]
    Table,
}

/// `saas.rate_limit_backend`. Superuser-only.
pub(crate) static RATE_LIMIT_BACKEND: GucSetting<RateLimitBackend> =
    GucSetting::<RateLimitBackend>::new(RateLimitBackend::Auto);

/// `saas.rate_limit_clock`: test hook, the time rate limits and usage
/// counters use instead of the clock. Superuser-only.
pub(crate) static RATE_LIMIT_CLOCK: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

/// `saas.rate_limit_slots`: keys the shared-memory rate limiter holds
/// (read once, at server start).
pub(crate) static RATE_LIMIT_SLOTS: GucSetting<i32> = GucSetting::<i32>::new(65_536);

/// `saas.usage_counter_slots`: daily counters held in shared memory between
/// flushes (read once, at server start).
pub(crate) static USAGE_COUNTER_SLOTS: GucSetting<i32> = GucSetting::<i32>::new(16_384);

/// Registers every `saas.*` setting, then reserves the prefix. Runs first
/// in `_PG_init`: the shared-memory request reads the slot counts.
pub(crate) fn init() {
    // Tenancy.
    GucRegistry::define_string_guc(
        c"saas.tenant_claim",
        c"JWT claim that names the tenant of a request.",
        c"Looked up at the top level of request.jwt.claims, then under app_metadata.",
        &TENANT_CLAIM,
        GucContext::Suset,
        GucFlags::default(),
    );
    // Audit.
    GucRegistry::define_string_guc(
        c"saas.audit_clock",
        c"Test hook: timestamp given to audit rows and seals instead of the transaction start.",
        c"Empty means the transaction start time. For deterministic regression tests only.",
        &AUDIT_CLOCK,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"saas.audit_direct_writer",
        c"Whether audit triggers write rows straight into the audit log's partitions.",
        c"On (the default), rows bypass the executor where PostgreSQL would check nothing more; \
off writes every row with an ordinary INSERT (slower, same rows and hashes). An operator's \
escape hatch should a PostgreSQL minor release break the direct writer's assumptions.",
        &AUDIT_DIRECT_WRITER,
        GucContext::Suset,
        GucFlags::default(),
    );
    // Rate limits.
    GucRegistry::define_enum_guc(
        c"saas.rate_limit_backend",
        c"Where rate-limit state lives: auto (shared memory when pg_saas is preloaded, else a table), shmem or table.",
        c"The table backend is transactional and fails in READ ONLY transactions; shared memory is not and does not.",
        &RATE_LIMIT_BACKEND,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"saas.rate_limit_clock",
        c"Test hook: the time rate limits and usage counters use instead of the clock.",
        c"Empty means the real clock. For deterministic regression tests only.",
        &RATE_LIMIT_CLOCK,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"saas.rate_limit_slots",
        c"Keys the shared-memory rate limiter holds (pg_saas in shared_preload_libraries).",
        c"24 bytes each. When every slot a key may use holds a live key, the key nearest to its empty state is evicted.",
        &RATE_LIMIT_SLOTS,
        1_024,
        16 * 1024 * 1024,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"saas.usage_counter_slots",
        c"Daily usage and refusal counters held in shared memory between flushes.",
        c"72 bytes each; run_maintenance() writes them to tables and frees the slots.",
        &USAGE_COUNTER_SLOTS,
        256,
        4 * 1024 * 1024,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    // SAFETY: called once per backend from _PG_init, after every saas.*
    // setting above is defined, with a NUL-terminated static name; it only
    // drops unknown placeholders under the prefix (with a WARNING) and marks
    // the prefix reserved.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"saas".as_ptr()) };
}

/// Whether string `setting` currently reads `value` (an unset value reads
/// as `default`), compared in place: a cache check per row must not copy
/// the value as [`GucSetting::get`] does.
pub(crate) fn string_setting_is(
    setting: &GucSetting<Option<CString>>,
    default: &str,
    value: &str,
) -> bool {
    // SAFETY: the setting's variable holds NULL or the NUL-terminated value
    // the GUC machinery assigned, which stays allocated until the setting is
    // assigned again; it is only read here, before anything can assign it.
    let current = unsafe {
        let raw = *setting.as_ptr();
        (!raw.is_null()).then(|| CStr::from_ptr(raw))
    };
    current.map_or(default.as_bytes(), CStr::to_bytes) == value.as_bytes()
}
