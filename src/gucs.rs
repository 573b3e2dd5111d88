//! Every `saas.*` setting, registered in one place when the library loads,
//! and the `saas` prefix reserved: a misspelt `SET saas.tenant_clam = 'x'`
//! is an error instead of a placeholder nobody reads.
//!
//! Modules read the values through the statics below; what a value means
//! stays with the module that uses it.

use crate::request::TrustedProxies;
use pgrx::{pg_guard, pg_sys, GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use std::ffi::{c_char, c_void, CStr, CString};

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

/// `saas.llm_hit_slots`: LLM cache hits and misses held in shared memory
/// between flushes (read once, at server start).
pub(crate) static LLM_HIT_SLOTS: GucSetting<i32> = GucSetting::<i32>::new(16_384);

/// `saas.trusted_proxies`: the reverse proxies whose `X-Forwarded-For` hops
/// are believed (`request::client_ip`), as addresses and CIDR ranges.
///
/// Superuser-only (SUSET), not SIGHUP: whoever may change it chooses whose
/// claim of a client address the audit log records and rate limits key
/// on, so no API role or session may; a superuser may still set it per
/// database or role (`ALTER DATABASE ... SET`) where deployments differ,
/// and in a session (the regression tests), which SIGHUP would not allow.
///
/// The default trusts loopback and the private ranges (RFC 1918, IPv6 ULA):
/// a reverse proxy in front of PostgREST on the same host or network. Such
/// addresses in X-Forwarded-For are proxies, not clients on the internet,
/// so skipping them loses nothing there, and a client's forged hops stay
/// to the left of the public address our proxy appended. A deployment
/// whose clients themselves come from private addresses (an intranet)
/// lists its proxies exactly.
pub(crate) static TRUSTED_PROXIES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(TRUSTED_PROXIES_DEFAULT));

/// [`TrustedProxies::DEFAULT`] as the setting's boot value.
const TRUSTED_PROXIES_DEFAULT: &CStr =
    c"127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7";

/// Refuses a `saas.trusted_proxies` value that is not a list of addresses
/// and CIDR ranges, when it is set (22023, with the list's HINT), so a
/// typo never silently trusts nothing or everything.
#[pg_guard]
extern "C-unwind" fn check_trusted_proxies(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: the GUC machinery passes a pointer to the proposed value,
    // NULL or a NUL-terminated string it owns for the duration of the call.
    let value = unsafe {
        if newval.is_null() || (*newval).is_null() {
            return true;
        }
        CStr::from_ptr(*newval)
    };
    // Not UTF-8: the replacement character is no address, so refused.
    let error = match TrustedProxies::parse(&value.to_string_lossy()) {
        Ok(_) => return true,
        Err(e) => e,
    };
    let (message, hint) = (
        CString::new(error.message).unwrap_or_default(),
        CString::new(error.hint).unwrap_or_default(),
    );
    // SAFETY: GUC_check_errmsg/errhint as the C macros set them: strings
    // palloc'd in the current memory context, which outlives the ereport
    // the GUC machinery makes of them right after this hook returns.
    unsafe {
        pg_sys::GUC_check_errcode(pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE as i32);
        pg_sys::GUC_check_errmsg_string = pg_sys::pstrdup(message.as_ptr());
        pg_sys::GUC_check_errhint_string = pg_sys::pstrdup(hint.as_ptr());
    }
    false
}

/// `saas.memory_log_sample_rate`: the share of `memory_search` calls (in
/// read-write transactions) written to `saas.memory_query_log`. Superuser-only.
pub(crate) static MEMORY_LOG_SAMPLE_RATE: GucSetting<f64> = GucSetting::<f64>::new(0.1);

/// `saas.memory_exact_below`: a tenant with at most this many embeddings for
/// the model is searched by brute force (exact, and cheaper than the index
/// there; bench/memory measures the crossing).
pub(crate) static MEMORY_EXACT_BELOW: GucSetting<i32> = GucSetting::<i32>::new(3_000);

/// `saas.memory_tenant_index_rows`: run_maintenance gives a tenant with at
/// least this many embeddings of a model an HNSW index of its own (0: never).
/// Its stream then reads no other tenant's tuples.
pub(crate) static MEMORY_TENANT_INDEX_ROWS: GucSetting<i32> = GucSetting::<i32>::new(5_000);

/// `saas.memory_ef_search`: pgvector's `hnsw.ef_search` for the stream
/// `memory_search` reads from a tenant's own index (a session's own
/// `hnsw.ef_search` is for its own queries). With an iterative scan it is
/// only the first search's width: the stream goes on until the bound.
pub(crate) static MEMORY_EF_SEARCH: GucSetting<i32> = GucSetting::<i32>::new(40);

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
    // The request.
    // SAFETY: the check hook is a #[pg_guard] function that only reads the
    // proposed value and sets the GUC_check_* strings.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"saas.trusted_proxies",
            c"Reverse proxies whose X-Forwarded-For hops are believed: IP addresses and CIDR ranges, comma-separated.",
            c"The client address (audit log, per-IP rate limits) is the first X-Forwarded-For hop from the right \
that is not one of these; X-Real-IP only without X-Forwarded-For. Empty trusts no proxy.",
            &TRUSTED_PROXIES,
            GucContext::Suset,
            GucFlags::default(),
            Some(check_trusted_proxies),
            None,
            None,
        );
    }
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
    // Memory search (read by sql/memory.sql with current_setting).
    GucRegistry::define_float_guc(
        c"saas.memory_log_sample_rate",
        c"Share of memory_search calls logged to saas.memory_query_log (0 to 1).",
        c"Only read-write transactions log; a read-only GET never writes the log.",
        &MEMORY_LOG_SAMPLE_RATE,
        0.0,
        1.0,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"saas.memory_exact_below",
        c"Tenants with at most this many embeddings of a model are searched exactly by brute force.",
        c"Above it memory_search reads the model's HNSW index in distance order and stops at the exactness bound.",
        &MEMORY_EXACT_BELOW,
        0,
        100_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"saas.memory_tenant_index_rows",
        c"Tenants with at least this many embeddings of a model get an HNSW index of their own (0: never).",
        c"run_maintenance builds them (saas.memory_index_tenant by hand); memory_search's stream then reads only the tenant's own tuples.",
        &MEMORY_TENANT_INDEX_ROWS,
        0,
        1_000_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"saas.memory_ef_search",
        c"hnsw.ef_search of the stream memory_search reads from a tenant's own HNSW index.",
        c"The first graph search's width (pgvector's default 40); the iterative scan goes on until the exactness bound stops it, so it trades the first batch's cost against later ones, not recall.",
        &MEMORY_EF_SEARCH,
        1,
        1_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"saas.llm_hit_slots",
        c"LLM cache hits and misses held in shared memory between flushes.",
        c"104 bytes each; run_maintenance() writes them to saas.llm_cache and saas.llm_cache_daily and frees the slots. When full, a lookup in a read-write transaction counts in the table, one in a read-only transaction fails with 53000.",
        &LLM_HIT_SLOTS,
        64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_default_is_the_request_default() {
        assert_eq!(
            TRUSTED_PROXIES_DEFAULT.to_str().unwrap(),
            TrustedProxies::DEFAULT
        );
        TrustedProxies::parse(TrustedProxies::DEFAULT).unwrap();
    }
}
