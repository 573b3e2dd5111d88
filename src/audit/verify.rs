//! `audit_verify()`: every row's hash, every seal's hash and chain link, and
//! each seal's rows recounted and re-digested.

use super::json_object::JsonObject;
use super::record::{AuditRecord, Hash, RowsDigest, Seal};
use super::{json_err, spi_err, to_hash};
use crate::error::{ErrorKind, SaasError, SaasResult};
use crate::pgutil::stack_too_deep;
use crate::request::normalize_ip;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use std::collections::HashMap;

/// The outcome of `audit_verify`: ok with counts, or the first row or
/// seal that does not match.
#[derive(Default)]
pub(super) struct VerifyReport {
    pub ok: bool,
    pub kind: Option<String>,
    pub tenant_id: Option<String>,
    pub log_id: Option<i64>,
    pub seal_no: Option<i64>,
    pub detail: String,
    pub rows_checked: i64,
    pub seals_checked: i64,
    pub unsealed_rows: i64,
    pub retired_seals: i64,
}

#[derive(Clone)]
struct StoredSeal {
    seal: Seal,
    stored_hash: Hash,
}

fn read_seal(row: &pgrx::spi::SpiHeapTupleData<'_>) -> Result<StoredSeal, pgrx::spi::Error> {
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
    };
    Ok(StoredSeal {
        seal,
        stored_hash: to_hash(row.get::<Vec<u8>>(10)?),
    })
}

const SEAL_COLUMNS: &str = "tenant_id::text, seal_no, xid_from, xid_to, row_count, \
     (extract(epoch FROM first_logged_at) * 1000000)::int8, (extract(epoch FROM last_logged_at) * 1000000)::int8, \
     rows_digest, prev_hash, seal_hash, (extract(epoch FROM sealed_at) * 1000000)::int8";

fn parse_json(text: Option<String>) -> SaasResult<Option<JsonObject>> {
    text.map(|t| {
        JsonObject::parse_with(&t, &stack_too_deep)
            .map_err(|e| json_err("read a logged JSON value", "a logged row image", e))
    })
    .transpose()
}

pub(super) fn verify_impl(
    from: TimestampWithTimeZone,
    to: TimestampWithTimeZone,
) -> SaasResult<VerifyReport> {
    if pg_sys::TimestampTz::from(from) > pg_sys::TimestampTz::from(to) {
        return Err(SaasError::new(
            ErrorKind::InvalidParameter,
            "audit_verify: the range ends before it starts",
            "Pass the earlier timestamp first.",
        ));
    }
    Spi::connect(|client| {
        let mut v = VerifyReport {
            ok: true,
            ..Default::default()
        };
        let fail = |v: &mut VerifyReport,
                    kind: &str,
                    tenant: &str,
                    log_id: Option<i64>,
                    seal_no: Option<i64>,
                    detail: String| {
            v.ok = false;
            v.kind = Some(kind.into());
            v.tenant_id = Some(tenant.into());
            v.log_id = log_id;
            v.seal_no = seal_no;
            v.detail = detail;
        };
        // Where sealing has reached, and each tenant's sealed xid range.
        let mut sealed_to: HashMap<String, (i64, i64)> = HashMap::new();
        let mut global_horizon = 0i64;
        for row in client
            .select(
                "SELECT tenant_id::text, min(xid_from), max(xid_to) FROM saas.audit_seals GROUP BY 1",
                None,
                &[],
            )
            .map_err(spi_err("read seals"))?
        {
            let t: String = row.get(1).map_err(spi_err("read seals"))?.unwrap_or_default();
            let lo: i64 = row.get(2).map_err(spi_err("read seals"))?.unwrap_or_default();
            let hi: i64 = row.get(3).map_err(spi_err("read seals"))?.unwrap_or_default();
            global_horizon = global_horizon.max(hi);
            sealed_to.insert(t, (lo, hi));
        }
        // 1. Rows: their hash against their content; rows older than the
        //    seal horizon must lie in their tenant's sealed range.
        let rows = client
            .select(
                "SELECT id, tenant_id::text, (extract(epoch FROM logged_at) * 1000000)::int8, txid, \
                        actor_id::text, actor_role, operation, schema_name, table_name, record_key::text, \
                        old_values::text, new_values::text, host(client_ip), user_agent, request_id, \
                        request_method, request_path, row_hash \
                 FROM saas.audit_log \
                 WHERE logged_at >= $1 AND logged_at < $2 ORDER BY id",
                None,
                &[from.into(), to.into()],
            )
            .map_err(spi_err("read the log"))?;
        for row in rows {
            let e = spi_err("read the log");
            let rec = AuditRecord {
                id: row.get::<i64>(1).map_err(&e)?.unwrap_or_default(),
                tenant_id: row.get::<String>(2).map_err(&e)?.unwrap_or_default(),
                logged_at_unix_micros: row.get::<i64>(3).map_err(&e)?.unwrap_or_default(),
                txid: row.get::<i64>(4).map_err(&e)?.unwrap_or_default(),
                actor_id: row.get::<String>(5).map_err(&e)?,
                actor_role: row.get::<String>(6).map_err(&e)?,
                operation: row.get::<String>(7).map_err(&e)?.unwrap_or_default(),
                schema_name: row.get::<String>(8).map_err(&e)?.unwrap_or_default(),
                table_name: row.get::<String>(9).map_err(&e)?.unwrap_or_default(),
                record_key: parse_json(row.get::<String>(10).map_err(&e)?)?,
                old_values: parse_json(row.get::<String>(11).map_err(&e)?)?,
                new_values: parse_json(row.get::<String>(12).map_err(&e)?)?,
                client_ip: row
                    .get::<String>(13)
                    .map_err(&e)?
                    .as_deref()
                    .and_then(normalize_ip),
                user_agent: row.get::<String>(14).map_err(&e)?,
                request_id: row.get::<String>(15).map_err(&e)?,
                request_method: row.get::<String>(16).map_err(&e)?,
                request_path: row.get::<String>(17).map_err(&e)?,
            };
            let stored = row.get::<Vec<u8>>(18).map_err(&e)?;
            v.rows_checked += 1;
            if stored.as_deref() != Some(&rec.hash()[..]) {
                fail(
                    &mut v,
                    "row",
                    &rec.tenant_id,
                    Some(rec.id),
                    None,
                    format!(
                        "row {} does not match its hash: it was changed after it was written",
                        rec.id
                    ),
                );
                return Ok(v);
            }
            if rec.txid >= global_horizon {
                v.unsealed_rows += 1;
                continue;
            }
            let covered = sealed_to
                .get(&rec.tenant_id)
                .is_some_and(|(lo, hi)| rec.txid >= *lo && rec.txid < *hi);
            if !covered {
                fail(&mut v, "row", &rec.tenant_id, Some(rec.id), None, format!(
                    "row {} carries transaction {}, older than the seal horizon, which its tenant's seals do not cover: the row was inserted after sealing or a seal was deleted",
                    rec.id, rec.txid));
                return Ok(v);
            }
        }
        // 2. Seals whose rows overlap the range, plus their predecessors for
        //    the chain link.
        // Months retention retired: their seals' rows are gone on purpose.
        let mut retired: Vec<(i64, i64)> = Vec::new();
        for row in client
            .select(
                "SELECT (extract(epoch FROM range_from) * 1000000)::int8, (extract(epoch FROM range_to) * 1000000)::int8 \
                 FROM saas.audit_retired",
                None,
                &[],
            )
            .map_err(spi_err("read retired months"))?
        {
            let e = spi_err("read retired months");
            retired.push((row.get::<i64>(1).map_err(&e)?.unwrap_or(0), row.get::<i64>(2).map_err(&e)?.unwrap_or(0)));
        }
        let seals = client
            .select(
                &format!(
                    "SELECT {SEAL_COLUMNS} FROM saas.audit_seals \
                     WHERE first_logged_at < $2 AND last_logged_at >= $1 ORDER BY tenant_id, seal_no"
                ),
                None,
                &[from.into(), to.into()],
            )
            .map_err(spi_err("read seals"))?;
        let mut in_scope: Vec<StoredSeal> = Vec::new();
        for row in seals {
            in_scope.push(read_seal(&row).map_err(spi_err("read seals"))?);
        }
        let mut by_tenant: Vec<(String, Vec<StoredSeal>)> = Vec::new();
        for s in in_scope {
            if by_tenant
                .last()
                .map(|(t, _)| t != &s.seal.tenant_id)
                .unwrap_or(true)
            {
                by_tenant.push((s.seal.tenant_id.clone(), Vec::new()));
            }
            by_tenant.last_mut().expect("pushed above").1.push(s);
        }
        let predecessor_sql = format!("SELECT {SEAL_COLUMNS} FROM saas.audit_seals WHERE tenant_id = $1::uuid AND seal_no = $2");
        for (tenant, seals) in by_tenant {
            // Chain: each seal's hash, and its link to the one before.
            for (i, s) in seals.iter().enumerate() {
                v.seals_checked += 1;
                if s.seal.hash() != s.stored_hash {
                    fail(
                        &mut v,
                        "seal",
                        &tenant,
                        None,
                        Some(s.seal.seal_no),
                        format!(
                            "seal {} does not match its hash: it was changed",
                            s.seal.seal_no
                        ),
                    );
                    return Ok(v);
                }
                // The predecessor is usually the seal just checked; read it
                // only when it lies outside the range.
                let read;
                let prev = match i.checked_sub(1).map(|j| &seals[j]) {
                    Some(p) if p.seal.seal_no == s.seal.seal_no - 1 => Some(p),
                    _ if s.seal.seal_no > 1 => {
                        let mut r = client
                            .select(
                                &predecessor_sql,
                                None,
                                &[tenant.clone().into(), (s.seal.seal_no - 1).into()],
                            )
                            .map_err(spi_err("read seals"))?;
                        let Some(row) = r.next() else {
                            fail(
                                &mut v,
                                "seal",
                                &tenant,
                                None,
                                Some(s.seal.seal_no),
                                format!(
                                    "seal {} follows a seal that is missing: seal {} was deleted",
                                    s.seal.seal_no,
                                    s.seal.seal_no - 1
                                ),
                            );
                            return Ok(v);
                        };
                        read = read_seal(&row).map_err(spi_err("read seals"))?;
                        Some(&read)
                    }
                    _ => None,
                };
                let (want_prev, want_from) = match prev {
                    Some(p) => (p.stored_hash, Some(p.seal.xid_to)),
                    None => ([0u8; 32], None),
                };
                if s.seal.prev_hash != want_prev || want_from.is_some_and(|f| f != s.seal.xid_from)
                {
                    fail(
                        &mut v,
                        "seal",
                        &tenant,
                        None,
                        Some(s.seal.seal_no),
                        format!(
                            "seal {} does not continue the chain of seal {}",
                            s.seal.seal_no,
                            s.seal.seal_no - 1
                        ),
                    );
                    return Ok(v);
                }
            }
            // Rows: recount and re-digest each seal's rows, unless retention
            // retired the months they were in.
            let live: Vec<&StoredSeal> = seals
                .iter()
                .filter(|s| {
                    !retired.iter().any(|(lo, hi)| {
                        s.seal.first_logged_at >= *lo && s.seal.first_logged_at < *hi
                    })
                })
                .collect();
            v.retired_seals += (seals.len() - live.len()) as i64;
            if live.is_empty() {
                continue;
            }
            let lo = live.iter().map(|s| s.seal.xid_from).min().unwrap_or(0);
            let hi = live.iter().map(|s| s.seal.xid_to).max().unwrap_or(0);
            let mut digests: Vec<RowsDigest> = vec![RowsDigest::default(); live.len()];
            let rows = client
                .select(
                    "SELECT id, txid, row_hash FROM saas.audit_log \
                     WHERE tenant_id = $1::uuid AND txid >= $2 AND txid < $3 ORDER BY id",
                    None,
                    &[tenant.clone().into(), lo.into(), hi.into()],
                )
                .map_err(spi_err("read sealed rows"))?;
            for row in rows {
                let e = spi_err("read sealed rows");
                let id = row.get::<i64>(1).map_err(&e)?.unwrap_or_default();
                let txid = row.get::<i64>(2).map_err(&e)?.unwrap_or_default();
                let hash = to_hash(row.get::<Vec<u8>>(3).map_err(&e)?);
                if let Some(i) = live
                    .iter()
                    .position(|s| txid >= s.seal.xid_from && txid < s.seal.xid_to)
                {
                    digests[i].push(id, &hash);
                }
            }
            for (s, d) in live.iter().zip(digests) {
                if d.count != s.seal.row_count || d.digest != s.seal.rows_digest {
                    let how = if d.count < s.seal.row_count {
                        format!(
                            "{} of its {} rows are missing: deleted after sealing",
                            s.seal.row_count - d.count,
                            s.seal.row_count
                        )
                    } else if d.count > s.seal.row_count {
                        format!(
                            "{} rows more than the {} it sealed: inserted after sealing",
                            d.count - s.seal.row_count,
                            s.seal.row_count
                        )
                    } else {
                        format!("its {} rows no longer digest to the sealed value: a row or its hash was replaced", d.count)
                    };
                    fail(
                        &mut v,
                        "seal",
                        &tenant,
                        None,
                        Some(s.seal.seal_no),
                        format!("seal {}: {how}", s.seal.seal_no),
                    );
                    return Ok(v);
                }
            }
        }
        v.detail = if v.retired_seals > 0 {
            format!(
                "ok: {} rows and {} seals verified; {} seals cover months already retired by retention (their chain verifies, their rows are gone); {} rows not sealed yet",
                v.rows_checked, v.seals_checked, v.retired_seals, v.unsealed_rows
            )
        } else {
            format!(
                "ok: {} rows and {} seals verified; {} rows not sealed yet",
                v.rows_checked, v.seals_checked, v.unsealed_rows
            )
        };
        Ok(v)
    })
}
