//! Which state a check uses, shared memory or the table, and one check of a
//! key in it.

use super::gcra::{Decision, Limit};
use super::table_backend::table_check;
use super::{internal, shmem, slots};
use crate::error::{ErrorKind, SaasError, SaasResult};
use crate::gucs::{RateLimitBackend, RATE_LIMIT_BACKEND};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Backend {
    Shared,
    Table,
}

pub(super) fn backend() -> SaasResult<Backend> {
    match RATE_LIMIT_BACKEND.get() {
        RateLimitBackend::Auto if shmem::available() => Ok(Backend::Shared),
        RateLimitBackend::Auto | RateLimitBackend::Table => Ok(Backend::Table),
        RateLimitBackend::Shmem if shmem::available() => Ok(Backend::Shared),
        RateLimitBackend::Shmem => Err(SaasError::new(
            ErrorKind::ObjectNotInPrerequisiteState,
            "saas.rate_limit_backend is 'shmem' but pg_saas is not in shared_preload_libraries",
            "Add pg_saas to shared_preload_libraries and restart PostgreSQL, or set saas.rate_limit_backend to 'auto'.",
        )),
    }
}

/// One check of `key` in `namespace` against `limit`, in the backend given.
pub(super) fn check_key(
    backend: Backend,
    namespace: i64,
    key: &str,
    limit: Limit,
    now: i64,
    cost: i64,
) -> SaasResult<Decision> {
    match backend {
        Backend::Shared => {
            let d = shmem::rate_check(
                slots::key_hash(shmem::database(), namespace, key),
                limit,
                now,
                cost,
            )
            .ok_or_else(|| internal("reach its shared memory", "not preloaded"))??;
            Ok(d.decision)
        }
        Backend::Table => table_check(namespace, key, limit, now, cost),
    }
}

/// Gives back what an admitted check of `key` took (shared memory only: the
/// table's writes roll back with the refused request).
pub(super) fn refund(
    backend: Backend,
    namespace: i64,
    key: &str,
    limit: Limit,
    now: i64,
    cost: i64,
) {
    if backend == Backend::Shared {
        shmem::rate_refund(
            slots::key_hash(shmem::database(), namespace, key),
            limit,
            now,
            cost,
        );
    }
}
