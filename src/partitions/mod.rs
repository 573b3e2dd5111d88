//! Partitions: monthly range partitions. Naming and month arithmetic are pure
//! Rust (`naming`); the DDL lives in `sql/partitions.sql`.

pub mod naming;
pub mod routing;

use crate::error::OrRaise;
use naming::{default_partition_name, partition_name, Month};
use pgrx::prelude::*;

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
        default_partition_name_sql
    ]
);
