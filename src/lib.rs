//! pg_saas: the multi-tenant SaaS back end as a PostgreSQL extension.
//!
//! One module per capability (docs/architecture.md); each keeps its pure
//! logic free of pgrx types so `cargo test` covers it, and a thin
//! `#[pg_extern]` layer. Hand-written SQL lives in `sql/`: the shared files
//! are pulled in below, each module's from its own `mod.rs`.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

use pgrx::prelude::*;

pub mod audit;
pub mod error;
mod gucs;
pub mod llm;
pub mod ltv;
pub mod memory;
pub mod partitions;
mod pgutil;
pub mod ratelimit;
pub mod request;
mod request_settings;
mod shmem;
pub mod tenancy;
pub mod uuid;

::pgrx::pg_module_magic!(name, version);

/// Runs when a backend loads the library: registers the `saas.*` settings
/// (and reserves the prefix), then each module's callbacks and hooks.
#[allow(non_snake_case)]
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // pgrx puts a Rust backtrace into an error's DETAIL when the server
    // runs with RUST_BACKTRACE set; clients must never receive one. Set
    // before anything captures one (std reads it once).
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    gucs::init();
    tenancy::init();
    audit::init();
    ratelimit::init();
    llm::init();
}

// The SQL of the shared layer; each module pulls in its own sql/<module>.sql
// from its mod.rs, requiring what it uses ("registry", other modules' names).
// Schema-wide set-up that every module relies on; runs before any function.
extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
// How modules meet (api grants, table registries, maintenance tasks, partition
// and retention hooks); every module's SQL inserts its rows here.
extension_sql_file!(
    "../sql/registry.sql",
    name = "registry",
    requires = ["bootstrap"]
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
