//! Partitions: monthly range partitions. Naming and month arithmetic are pure
//! Rust (`naming`); the DDL lives in `sql/partitions.sql`.

pub mod naming;
pub mod routing;

use crate::error::OrRaise;
use naming::{default_partition_name, partition_name, Month};
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    /// Set while a rescue moves rows out of a default partition: the
    /// (local transaction, subtransaction) it was set in. An ERROR in the
    /// move rolls that subtransaction back, so the flag can never hold for
    /// a later statement of the transaction, nor for a later transaction.
    static MOVING_ROWS: Cell<Option<(u32, u32)>> = const { Cell::new(None) };
}

fn current_subtransaction() -> (u32, u32) {
    // SAFETY: plain read of this backend's transaction state.
    (crate::pgutil::local_xid(), unsafe {
        pg_sys::GetCurrentSubTransactionId()
    })
}

/// Whether the statement running is a rescue's move of rows (not a change
/// of them): the ltv triggers log nothing for it.
pub(crate) fn moving_rows() -> bool {
    MOVING_ROWS.with(|m| m.get() == Some(current_subtransaction()))
}

/// The rescue (`_partition_ensure_month`) marks its move of rows around the
/// statement that moves them; for the current subtransaction only.
#[pg_extern(volatile, strict, parallel_unsafe)]
fn _partition_moving_rows(moving: bool) {
    MOVING_ROWS.with(|m| m.set(moving.then(current_subtransaction)));
}

/// `<parent>_pYYYY_MM` for the month, shortened to fit 63 bytes.
#[pg_extern(immutable, strict, parallel_safe)]
fn monthly_partition_name(parent: &str, year: i32, month: i32) -> String {
    partition_name(parent, Month::new(year, month).or_raise())
}

/// `<parent>_default`, shortened to fit 63 bytes.
#[pg_extern(immutable, strict, parallel_safe, name = "default_partition_name")]
fn default_partition_name_sql(parent: &str) -> String {
    default_partition_name(parent)
}

// Monthly partitions; convert_to_monthly keeps a converted table's tenancy.
extension_sql_file!(
    "../../sql/partitions.sql",
    name = "partitions",
    requires = [
        "registry",
        "tenancy",
        monthly_partition_name,
        default_partition_name_sql,
        _partition_moving_rows
    ]
);
