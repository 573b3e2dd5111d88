//! pg_saas: the multi-tenant SaaS back end as a PostgreSQL extension.
//!
//! One module per capability (DESIGN.md); each keeps its pure logic free of
//! pgrx types so `cargo test` covers it, and a thin `#[pg_extern]` layer.
//! Hand-written SQL lives in `sql/` and is pulled in below in a fixed order.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use pgrx::prelude::*;

pub mod audit;
pub mod error;
mod gucs;
pub mod partitions;
mod pgutil;
pub mod ratelimit;
pub mod request;
mod request_settings;
pub mod tenancy;
pub mod uuid;

::pgrx::pg_module_magic!(name, version);

/// Runs when a backend loads the library: registers the `saas.*` settings
/// (and reserves the prefix), then each module's callbacks and hooks.
#[allow(non_snake_case)]
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    tenancy::init();
    audit::init();
    ratelimit::init();
}

// Schema-wide set-up that every module relies on; runs before any function.
extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
// How modules meet (api grants, table registries, maintenance tasks, partition
// and retention hooks); every module's SQL inserts its rows here.
extension_sql_file!("../sql/registry.sql", name = "registry", requires = ["bootstrap"]);
// Tables, policies and SQL functions of tenancy; its policies call the Rust
// functions, which must exist first.
extension_sql_file!(
    "../sql/tenancy.sql",
    name = "tenancy",
    requires = [
        "registry",
        tenancy::current_tenant,
        tenancy::current_user_id,
        tenancy::has_role,
        tenancy::set_tenant
    ]
);
// Monthly partitions; convert_to_monthly keeps a converted table's tenancy.
extension_sql_file!(
    "../sql/partitions.sql",
    name = "partitions",
    requires = [
        "registry",
        "tenancy",
        partitions::monthly_partition_name,
        partitions::default_partition_name_sql
    ]
);
// Audit trail: its log is a monthly partitioned table, so partitions first;
// its policies read the tenant context.
extension_sql_file!(
    "../sql/audit.sql",
    name = "audit",
    requires = [
        "registry",
        "tenancy",
        "partitions",
        audit::audit_row_trigger,
        audit::audit_statement_trigger,
        audit::audit_seal,
        audit::audit_verify
    ]
);
// Rate limits, plan quotas and the PostgREST pre-request hook; its view
// reads the Rust pending-counter function.
extension_sql_file!(
    "../sql/ratelimit.sql",
    name = "ratelimit",
    requires = [
        "registry",
        "tenancy",
        ratelimit::rate_limit,
        ratelimit::rate_limit_rule_set,
        ratelimit::rate_limit_vacuum,
        ratelimit::rate_limit_stats,
        ratelimit::usage_flush,
        ratelimit::_usage_pending,
        ratelimit::_rate_limit_request,
        ratelimit::_rate_limit_rules_changed
    ]
);
// Runs last: privileges on everything the extension created.
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

/// The version of the pg_saas library that is loaded. After an upgrade of the
/// package but before `ALTER EXTENSION pg_saas UPDATE` this differs from
/// `pg_extension.extversion`, which is how monitoring can spot it.
#[pg_extern(immutable, strict, parallel_safe)]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
