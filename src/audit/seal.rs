//! `audit_seal()`: chained seals per tenant over the rows of finished
//! transactions, one seal per month of the log, so that retention, which
//! retires whole months, retires whole seals and never half of one.

use super::log::log_xid_base;
use super::record::{Hash, RowsDigest, Seal, PG_EPOCH_OFFSET_MICROS};
use super::{audit_now, internal, spi_err, to_hash};
use crate::error::SaasResult;
use crate::pgutil::parse_pg_uuid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiHeapTupleData};

/// One new seal as `audit_seal()` returns it: tenant, seal number, rows,
/// and its transaction id range.
pub(super) type NewSeal = (pgrx::Uuid, i64, i64, i64, i64);

/// A seal as stored, with the hash it was stored with.
#[derive(Clone)]
pub(super) struct StoredSeal {
    pub seal: Seal,
    pub stored_hash: Hash,
}

/// The columns [`read_seal`] reads. Before `ALTER EXTENSION pg_saas UPDATE`
/// to 0.2.0 the seals have no month (`months` false).
pub(super) fn seal_columns(months: bool) -> String {
    let month = if months {
        "(extract(epoch FROM month_from) * 1000000)::int8, (extract(epoch FROM month_to) * 1000000)::int8, reseals"
    } else {
        "NULL::int8, NULL::int8, NULL::int8"
    };
    format!(
        "tenant_id::text, seal_no, xid_from, xid_to, row_count, \
         (extract(epoch FROM first_logged_at) * 1000000)::int8, (extract(epoch FROM last_logged_at) * 1000000)::int8, \
         rows_digest, prev_hash, seal_hash, (extract(epoch FROM sealed_at) * 1000000)::int8, {month}"
    )
}

pub(super) fn read_seal(row: &SpiHeapTupleData<'_>) -> Result<StoredSeal, pgrx::spi::Error> {
    let month = match (row.get::<i64>(12)?, row.get::<i64>(13)?) {
        (Some(from), Some(to)) => Some((from, to)),
        _ => None,
    };
    let seal = Seal {
        tenant_id: row.get::<String>(1)?.unwrap_or_default(),
        seal_no: row.get::<i64>(2)?.unwrap_or_default(),
        xid_from: row.get::<i64>(3)?.unwrap_or_default(),
        xid_to: row.get::<i64>(4)?.unwrap_or_default(),
        row_count: row.get::<i64>(5)?.unwrap_or_default(),
        first_logged_at: row.get::<i64>(6)?.unwrap_or_default(),
        last_logged_at: row.get::<i64>(7)?.unwrap_or_default(),
        rows_digest: to_hash(row.get::<Vec<u8>>(8)?),
        prev_hash: to_hash(row.get::<Vec<u8>>(9)?),
        sealed_at_unix_micros: row.get::<i64>(11)?.unwrap_or_default(),
        month,
        reseals: row.get::<i64>(14)?,
    };
    Ok(StoredSeal {
        seal,
        stored_hash: to_hash(row.get::<Vec<u8>>(10)?),
    })
}

/// Whether the seals have months (0.2.0's `saas.audit_seals`): between a
/// package upgrade and `ALTER EXTENSION pg_saas UPDATE` they do not, and
/// seals are made and read as 0.1.0 made them.
pub(super) fn seals_have_months(client: &SpiClient<'_>) -> SaasResult<bool> {
    Ok(client
        .select(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute \
             WHERE attrelid = 'saas.audit_seals'::pg_catalog.regclass AND attname = 'month_from' AND NOT attisdropped)",
            None,
            &[],
        )
        .map_err(spi_err("read the seals' columns"))?
        .first()
        .get_one::<bool>()
        .map_err(spi_err("read the seals' columns"))?
        .unwrap_or(false))
}

/// The month of the log a row of `logged_at` belongs to, `[from, to)` in
/// microseconds since 1970, as the partitions module cuts the log: months
/// start at midnight in the time zone of the log's partition configuration.
/// `$tz` is that zone.
const MONTH_OF_ROW: &str = "CROSS JOIN LATERAL (SELECT pg_catalog.date_trunc('month', l.logged_at AT TIME ZONE $tz) AS start) ms \
     CROSS JOIN LATERAL (SELECT (extract(epoch FROM ms.start AT TIME ZONE $tz) * 1000000)::int8 AS month_from, \
                                (extract(epoch FROM (ms.start + interval '1 month') AT TIME ZONE $tz) * 1000000)::int8 AS month_to) m";

/// The time zone the log's months start in (its partition configuration;
/// UTC when it has none).
fn log_time_zone(client: &SpiClient<'_>) -> SaasResult<String> {
    Ok(client
        .select(
            "SELECT coalesce((SELECT c.time_zone FROM saas.partition_config c \
                              WHERE c.parent = 'saas.audit_log'::pg_catalog.regclass), 'UTC')",
            None,
            &[],
        )
        .map_err(spi_err("read the log's time zone"))?
        .first()
        .get_one::<String>()
        .map_err(spi_err("read the log's time zone"))?
        .unwrap_or_else(|| "UTC".into()))
}

/// Rows of one seal in the making: their digest and times.
struct Rows {
    month: Option<(i64, i64)>,
    digest: RowsDigest,
    first: i64,
    last: i64,
}

impl Rows {
    fn new(month: Option<(i64, i64)>, at: i64) -> Self {
        Rows {
            month,
            digest: RowsDigest::default(),
            first: at,
            last: at,
        }
    }

    fn push(&mut self, id: i64, hash: &[u8], at: i64) {
        self.digest.push(id, hash);
        self.first = self.first.min(at);
        self.last = self.last.max(at);
    }
}

/// Appends a seal over `rows` to `tenant`'s chain, covering transactions
/// `[xid_from, xid_to)`: the next number, linked to the chain's last seal.
#[allow(clippy::too_many_arguments)]
fn append(
    client: &mut SpiClient<'_>,
    months: bool,
    tenant: &str,
    xid_from: i64,
    xid_to: i64,
    rows: &Rows,
    reseals: Option<i64>,
    sealed_at: i64,
) -> SaasResult<NewSeal> {
    let head = client
        .select(
            "SELECT seal_no, seal_hash FROM saas.audit_seals \
             WHERE tenant_id = $1::uuid ORDER BY seal_no DESC LIMIT 1",
            None,
            &[tenant.into()],
        )
        .map_err(spi_err("read the previous seal"))?;
    let (prev_no, prev_hash) = if head.is_empty() {
        (0i64, [0u8; 32])
    } else {
        let r = head.first();
        (
            r.get::<i64>(1)
                .map_err(spi_err("read the previous seal"))?
                .unwrap_or(0),
            to_hash(
                r.get::<Vec<u8>>(2)
                    .map_err(spi_err("read the previous seal"))?,
            ),
        )
    };
    let seal = Seal {
        tenant_id: tenant.into(),
        seal_no: prev_no + 1,
        xid_from,
        xid_to,
        row_count: rows.digest.count,
        rows_digest: rows.digest.digest,
        prev_hash,
        sealed_at_unix_micros: sealed_at + PG_EPOCH_OFFSET_MICROS,
        first_logged_at: rows.first,
        last_logged_at: rows.last,
        month: if months { rows.month } else { None },
        reseals,
    };
    let at = |n: u8| format!("'epoch'::timestamptz + ${n}::int8 * interval '1 microsecond'");
    let (columns, values) = if months {
        (
            ", month_from, month_to, reseals",
            format!(", {}, {}, $14", at(12), at(13)),
        )
    } else {
        ("", String::new())
    };
    let sql = format!(
        "INSERT INTO saas.audit_seals (tenant_id, seal_no, sealed_at, xid_from, xid_to, row_count, \
             first_logged_at, last_logged_at, rows_digest, prev_hash, seal_hash{columns}) \
         VALUES ($1::uuid, $2, {}, $4, $5, $6, {}, {}, $9, $10, $11{values})",
        at(3),
        at(7),
        at(8)
    );
    let mut args = vec![
        tenant.into(),
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
    ];
    if months {
        args.push(seal.month.map(|m| m.0).into());
        args.push(seal.month.map(|m| m.1).into());
        args.push(seal.reseals.into());
    }
    client
        .update(&sql, None, &args)
        .map_err(spi_err("write a seal"))?;
    let uuid =
        parse_pg_uuid(tenant).ok_or_else(|| internal("read a tenant id", tenant.to_string()))?;
    Ok((
        uuid,
        seal.seal_no,
        seal.row_count,
        seal.xid_from,
        seal.xid_to,
    ))
}

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
        let months = seals_have_months(client)?;
        let tz = if months {
            log_time_zone(client)?
        } else {
            String::new()
        };
        let mut out = Vec::new();
        if months {
            reseal_legacy(client, &tz, sealed_at, &mut out)?;
        }
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
            return Ok(out);
        }
        // Per tenant, then per month of the log (0.1.0's seals: no month).
        let rows = if months {
            client.select(
                &format!(
                    "SELECT l.tenant_id::text, l.id, l.row_hash, (extract(epoch FROM l.logged_at) * 1000000)::int8, \
                            m.month_from, m.month_to \
                     FROM saas.audit_log l {} \
                     WHERE l.txid >= $1 AND l.txid < $2 ORDER BY l.tenant_id, m.month_from, l.id",
                    MONTH_OF_ROW.replace("$tz", "$3")
                ),
                None,
                &[from.into(), horizon.into(), tz.as_str().into()],
            )
        } else {
            client.select(
                "SELECT l.tenant_id::text, l.id, l.row_hash, (extract(epoch FROM l.logged_at) * 1000000)::int8, \
                        NULL::int8, NULL::int8 \
                 FROM saas.audit_log l WHERE l.txid >= $1 AND l.txid < $2 ORDER BY l.tenant_id, l.id",
                None,
                &[from.into(), horizon.into()],
            )
        }
        .map_err(spi_err("read rows to seal"))?;
        let mut per_tenant: Vec<(String, Vec<Rows>)> = Vec::new();
        for row in rows {
            let e = spi_err("read rows to seal");
            let tenant: String = row.get(1).map_err(&e)?.unwrap_or_default();
            let id: i64 = row.get(2).map_err(&e)?.unwrap_or_default();
            let hash = to_hash(row.get::<Vec<u8>>(3).map_err(&e)?);
            let at: i64 = row.get(4).map_err(&e)?.unwrap_or_default();
            let month = match (
                row.get::<i64>(5).map_err(&e)?,
                row.get::<i64>(6).map_err(&e)?,
            ) {
                (Some(f), Some(t)) => Some((f, t)),
                _ => None,
            };
            if per_tenant.last().map(|(t, _)| t != &tenant).unwrap_or(true) {
                per_tenant.push((tenant, Vec::new()));
            }
            let seals = &mut per_tenant.last_mut().expect("pushed above").1;
            if seals.last().map(|r| r.month != month).unwrap_or(true) {
                seals.push(Rows::new(month, at));
            }
            seals.last_mut().expect("pushed above").push(id, &hash, at);
        }
        for (tenant, seals) in per_tenant {
            // The tenant's chain has reached the end of its last range (the
            // whole log's, for its first seal); this pass covers up to the
            // horizon, one seal per month.
            let reached: Option<i64> = client
                .select(
                    if months {
                        "SELECT (SELECT xid_to FROM saas.audit_seals WHERE tenant_id = $1::uuid AND reseals IS NULL \
                                 ORDER BY seal_no DESC LIMIT 1)"
                    } else {
                        "SELECT (SELECT xid_to FROM saas.audit_seals WHERE tenant_id = $1::uuid ORDER BY seal_no DESC LIMIT 1)"
                    },
                    None,
                    &[tenant.as_str().into()],
                )
                .map_err(spi_err("read the previous seal"))?
                .first()
                .get_one::<i64>()
                .map_err(spi_err("read the previous seal"))?;
            let xid_from = reached.unwrap_or(from);
            for rows in &seals {
                out.push(append(
                    client, months, &tenant, xid_from, horizon, rows, None, sealed_at,
                )?);
            }
        }
        Ok(out)
    })
}

/// Seals made before 0.2.0 cover their transaction range in every month, so
/// one taken across a month boundary would be half retired with the older
/// month. Each such seal whose rows are all still there and still match it
/// is sealed again, month by month (re-seals appended to the chain, naming
/// it), once: retiring one of its months then leaves its other months
/// checked against their re-seals. A seal whose rows no longer match is
/// left alone for `audit_verify` to report.
fn reseal_legacy(
    client: &mut SpiClient<'_>,
    tz: &str,
    sealed_at: i64,
    out: &mut Vec<NewSeal>,
) -> SaasResult<()> {
    let legacy = client
        .select(
            &format!(
                "SELECT {} FROM saas.audit_seals s \
                 WHERE s.month_from IS NULL \
                   AND pg_catalog.date_trunc('month', s.first_logged_at AT TIME ZONE $1) \
                       <> pg_catalog.date_trunc('month', s.last_logged_at AT TIME ZONE $1) \
                   AND NOT EXISTS (SELECT FROM saas.audit_seals r WHERE r.tenant_id = s.tenant_id AND r.reseals = s.seal_no) \
                   AND NOT EXISTS (SELECT FROM saas.audit_retired d \
                                   WHERE d.range_from <= s.last_logged_at AND d.range_to > s.first_logged_at) \
                 ORDER BY s.tenant_id, s.seal_no",
                seal_columns(true)
            ),
            None,
            &[tz.into()],
        )
        .map_err(spi_err("read seals to re-seal"))?;
    let mut todo: Vec<StoredSeal> = Vec::new();
    for row in legacy {
        todo.push(read_seal(&row).map_err(spi_err("read seals to re-seal"))?);
    }
    for old in todo {
        if old.seal.hash() != old.stored_hash {
            continue;
        }
        let s = &old.seal;
        let rows = client
            .select(
                &format!(
                    "SELECT l.id, l.row_hash, (extract(epoch FROM l.logged_at) * 1000000)::int8, m.month_from, m.month_to \
                     FROM saas.audit_log l {} \
                     WHERE l.tenant_id = $1::uuid AND l.txid >= $2 AND l.txid < $3 ORDER BY l.id",
                    MONTH_OF_ROW.replace("$tz", "$4")
                ),
                None,
                &[s.tenant_id.as_str().into(), s.xid_from.into(), s.xid_to.into(), tz.into()],
            )
            .map_err(spi_err("read sealed rows"))?;
        let mut whole = RowsDigest::default();
        let mut by_month: std::collections::BTreeMap<(i64, i64), Rows> = Default::default();
        for row in rows {
            let e = spi_err("read sealed rows");
            let id: i64 = row.get(1).map_err(&e)?.unwrap_or_default();
            let hash = to_hash(row.get::<Vec<u8>>(2).map_err(&e)?);
            let at: i64 = row.get(3).map_err(&e)?.unwrap_or_default();
            let month = (
                row.get::<i64>(4).map_err(&e)?.unwrap_or_default(),
                row.get::<i64>(5).map_err(&e)?.unwrap_or_default(),
            );
            whole.push(id, &hash);
            by_month
                .entry(month)
                .or_insert_with(|| Rows::new(Some(month), at))
                .push(id, &hash, at);
        }
        if whole.count != s.row_count || whole.digest != s.rows_digest || by_month.len() < 2 {
            continue;
        }
        for rows in by_month.values() {
            out.push(append(
                client,
                true,
                &s.tenant_id,
                s.xid_from,
                s.xid_to,
                rows,
                Some(s.seal_no),
                sealed_at,
            )?);
        }
    }
    Ok(())
}
