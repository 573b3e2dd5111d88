//! The transaction ids the log stores are the cluster's plus a base fixed
//! once per database (`saas.audit_xid_base`, sql/audit.sql). Seals cut the
//! log by transaction id, so the ids must keep growing across a restore into
//! another cluster, whose own ids start lower.
//!
//! The base is read as the log's owner. A backend keeps it once it has seen
//! it committed; a base this transaction fixed itself is used but not kept,
//! since the transaction may still roll back. Between a package upgrade and
//! `ALTER EXTENSION pg_saas UPDATE` the table is not there yet: the base is
//! 0 then, as before 0.2.0.

use super::spi_err;
use crate::error::SaasResult;
use crate::pgutil::local_xid;
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    /// The committed base, with the log it belongs to (a re-created
    /// extension has a new log and a base of its own).
    static KEPT: Cell<Option<(pg_sys::Oid, i64)>> = const { Cell::new(None) };
    /// The transaction that fixed the base in this backend, if any.
    static FIXED_IN: Cell<Option<u32>> = const { Cell::new(None) };
}

/// The base to add to this cluster's transaction ids, for the log `log`.
pub(super) fn xid_base(log: pg_sys::Oid) -> SaasResult<i64> {
    if let Some((kept_for, base)) = KEPT.with(Cell::get) {
        if kept_for == log {
            return Ok(base);
        }
    }
    let lxid = local_xid();
    let (base, visible) = Spi::connect_mut(|client| -> SaasResult<(i64, bool)> {
        let installed = client
            .select(
                "SELECT pg_catalog.to_regclass('saas.audit_xid_base') IS NOT NULL",
                None,
                &[],
            )
            .map_err(spi_err("look for the audit xid base"))?
            .first()
            .get_one::<bool>()
            .map_err(spi_err("look for the audit xid base"))?
            .unwrap_or(false);
        if !installed {
            return Ok((0, false));
        }
        let fixed = client
            .select(
                "SELECT xid_base FROM saas.audit_xid_base WHERE id = 1",
                None,
                &[],
            )
            .map_err(spi_err("read the audit xid base"))?
            .first()
            .get_one::<i64>()
            .map_err(spi_err("read the audit xid base"))?;
        if let Some(base) = fixed {
            return Ok((base, true));
        }
        let base = client
            .update("SELECT saas._audit_xid_base()", None, &[])
            .map_err(spi_err("fix the audit xid base"))?
            .first()
            .get_one::<i64>()
            .map_err(spi_err("fix the audit xid base"))?
            .unwrap_or(0);
        FIXED_IN.with(|f| f.set(Some(lxid)));
        Ok((base, false))
    })?;
    // Seen fixed, and not by this transaction: committed, so kept.
    if visible && FIXED_IN.with(Cell::get) != Some(lxid) {
        KEPT.with(|k| k.set(Some((log, base))));
    }
    Ok(base)
}
