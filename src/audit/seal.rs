//! `audit_seal()`: one chained seal per tenant over the rows of finished
//! transactions.

use super::log::log_xid_base;
use super::record::{RowsDigest, Seal, PG_EPOCH_OFFSET_MICROS};
use super::{audit_now, internal, spi_err, to_hash};
use crate::error::SaasResult;
use crate::pgutil::parse_pg_uuid;
use pgrx::prelude::*;

struct TenantRows {
    digest: RowsDigest,
    first: i64,
    last: i64,
}

/// One new seal as `audit_seal()` returns it: tenant, seal number, rows,
/// and its transaction id range.
pub(super) type NewSeal = (pgrx::Uuid, i64, i64, i64, i64);

pub(super) fn seal_impl() -> SaasResult<Vec<NewSeal>> {
    let sealed_at = audit_now()?;
    Spi::connect_mut(|client| {
        // The log's parent before the seal lock (docs/partitions.md, "Locks"):
        // SHARE UPDATE EXCLUSIVE waits for maintenance's DDL on the log
        // (creating, attaching, rescuing, detaching a month), which then
        // seals in the same transaction; taken after the seal lock, the two
        // deadlocked (40P01). Writers (ROW EXCLUSIVE) are not held up.
        client
            .update(
                "LOCK TABLE ONLY saas.audit_log IN SHARE UPDATE EXCLUSIVE MODE",
                None,
                &[],
            )
            .map_err(spi_err("lock the log"))?;
        // One sealer at a time: each extends every chain from where the last ended.
        client
            .update(
                "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('saas.audit_seal'))",
                None,
                &[],
            )
            .map_err(spi_err("take the seal lock"))?;
        // Every transaction below the snapshot's xmin has finished: its rows
        // are all visible now and no row with such an id can still arrive.
        let horizon: i64 = client
            .select(
                "SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())::text::int8",
                None,
                &[],
            )
            .map_err(spi_err("read the snapshot horizon"))?
            .first()
            .get_one::<i64>()
            .map_err(spi_err("read the snapshot horizon"))?
            .unwrap_or(0);
        let from: i64 = client
            .select(
                "SELECT coalesce(max(xid_to), 0) FROM saas.audit_seals",
                None,
                &[],
            )
            .map_err(spi_err("read the last seal"))?
            .first()
            .get_one::<i64>()
            .map_err(spi_err("read the last seal"))?
            .unwrap_or(0);
        // In the log's numbering: this cluster's ids plus the database's base.
        let horizon = horizon + log_xid_base()?;
        if horizon <= from {
            return Ok(Vec::new());
        }
        let rows = client
            .select(
                "SELECT tenant_id::text, id, row_hash, \
                        ((extract(epoch FROM logged_at) * 1000000)::int8) AS at \
                 FROM saas.audit_log WHERE txid >= $1 AND txid < $2 ORDER BY tenant_id, id",
                None,
                &[from.into(), horizon.into()],
            )
            .map_err(spi_err("read rows to seal"))?;
        let mut per_tenant: Vec<(String, TenantRows)> = Vec::new();
        for row in rows {
            let tenant: String = row
                .get(1)
                .map_err(spi_err("read rows to seal"))?
                .unwrap_or_default();
            let id: i64 = row
                .get(2)
                .map_err(spi_err("read rows to seal"))?
                .unwrap_or_default();
            let hash: Option<Vec<u8>> = row.get(3).map_err(spi_err("read rows to seal"))?;
            let at: i64 = row
                .get(4)
                .map_err(spi_err("read rows to seal"))?
                .unwrap_or_default();
            if per_tenant.last().map(|(t, _)| t != &tenant).unwrap_or(true) {
                per_tenant.push((
                    tenant,
                    TenantRows {
                        digest: RowsDigest::default(),
                        first: at,
                        last: at,
                    },
                ));
            }
            let entry = &mut per_tenant.last_mut().expect("pushed above").1;
            entry.digest.push(id, &to_hash(hash));
            entry.first = entry.first.min(at);
            entry.last = entry.last.max(at);
        }
        let mut out = Vec::new();
        for (tenant, rows) in per_tenant {
            let prev = client
                .select(
                    "SELECT seal_no, seal_hash, xid_to FROM saas.audit_seals \
                     WHERE tenant_id = $1::uuid ORDER BY seal_no DESC LIMIT 1",
                    None,
                    &[tenant.clone().into()],
                )
                .map_err(spi_err("read the previous seal"))?;
            let (prev_no, prev_hash, prev_to) = if prev.is_empty() {
                (0i64, [0u8; 32], from)
            } else {
                let r = prev.first();
                (
                    r.get::<i64>(1)
                        .map_err(spi_err("read the previous seal"))?
                        .unwrap_or(0),
                    to_hash(
                        r.get::<Vec<u8>>(2)
                            .map_err(spi_err("read the previous seal"))?,
                    ),
                    r.get::<i64>(3)
                        .map_err(spi_err("read the previous seal"))?
                        .unwrap_or(from),
                )
            };
            let seal = Seal {
                tenant_id: tenant.clone(),
                seal_no: prev_no + 1,
                xid_from: prev_to,
                xid_to: horizon,
                row_count: rows.digest.count,
                rows_digest: rows.digest.digest,
                prev_hash,
                sealed_at_unix_micros: sealed_at + PG_EPOCH_OFFSET_MICROS,
                first_logged_at: rows.first,
                last_logged_at: rows.last,
            };
            client
                .update(
                    "INSERT INTO saas.audit_seals (tenant_id, seal_no, sealed_at, xid_from, xid_to, row_count, \
                         first_logged_at, last_logged_at, rows_digest, prev_hash, seal_hash) \
                     VALUES ($1::uuid, $2, 'epoch'::timestamptz + $3 * interval '1 microsecond', $4, $5, $6, \
                         'epoch'::timestamptz + $7 * interval '1 microsecond', \
                         'epoch'::timestamptz + $8 * interval '1 microsecond', $9, $10, $11)",
                    None,
                    &[
                        tenant.clone().into(),
                        seal.seal_no.into(),
                        seal.sealed_at_unix_micros.into(),
                        seal.xid_from.into(),
                        seal.xid_to.into(),
                        seal.row_count.into(),
                        seal.first_logged_at.into(),
                        seal.last_logged_at.into(),
                        seal.rows_digest.to_vec().into(),
                        seal.prev_hash.to_vec().into(),
                        seal.hash().to_vec().into(),
                    ],
                )
                .map_err(spi_err("write a seal"))?;
            let uuid = parse_pg_uuid(&tenant)
                .ok_or_else(|| internal("read a tenant id", tenant.clone()))?;
            out.push((
                uuid,
                seal.seal_no,
                seal.row_count,
                seal.xid_from,
                seal.xid_to,
            ));
        }
        Ok(out)
    })
}
