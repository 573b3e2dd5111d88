//! `audit_verify()`: every row's hash, every seal's hash and chain link, and
//! each seal's rows recounted and re-digested.

use super::coverage::{Cells, RetiredMonths, Retirement};
use super::json_object::JsonObject;
use super::record::{AuditRecord, RowsDigest, Seal};
use super::seal::{read_seal, seal_columns, seals_have_months, StoredSeal};
use super::{json_err, spi_err, to_hash};
use crate::error::{ErrorKind, SaasError, SaasResult};
use crate::pgutil::stack_too_deep;
use crate::request::normalize_ip;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use std::collections::{BTreeMap, HashMap};

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

fn parse_json(text: Option<String>) -> SaasResult<Option<JsonObject>> {
    text.map(|t| {
        JsonObject::parse_with(&t, &stack_too_deep)
            .map_err(|e| json_err("read a logged JSON value", "a logged row image", e))
    })
    .transpose()
}

/// A row older than the seal horizon, to be found in one of its tenant's
/// seals; its tenant as an index into the tenants seen.
struct SealedRow {
    tenant: usize,
    id: i64,
    txid: i64,
    at: i64,
}

fn read_seals(
    client: &pgrx::spi::SpiClient<'_>,
    sql: &str,
    args: &[pgrx::datum::DatumWithOid<'_>],
) -> SaasResult<Vec<StoredSeal>> {
    let mut out = Vec::new();
    for row in client
        .select(sql, None, args)
        .map_err(spi_err("read seals"))?
    {
        out.push(read_seal(&row).map_err(spi_err("read seals"))?);
    }
    Ok(out)
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
        let months = seals_have_months(client)?;
        let columns = seal_columns(months);
        // Where sealing has reached.
        let global_horizon: i64 = client
            .select(
                "SELECT coalesce(max(xid_to), 0) FROM saas.audit_seals",
                None,
                &[],
            )
            .map_err(spi_err("read seals"))?
            .first()
            .get_one::<i64>()
            .map_err(spi_err("read seals"))?
            .unwrap_or(0);
        // 1. Rows: their hash against their content; rows older than the
        //    seal horizon must lie in one of their tenant's seals.
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
        let mut sealed_rows: Vec<SealedRow> = Vec::new();
        let mut tenants: Vec<String> = Vec::new();
        let mut tenant_index: HashMap<String, usize> = HashMap::new();
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
            let tenant = match tenant_index.get(&rec.tenant_id) {
                Some(&i) => i,
                None => {
                    tenants.push(rec.tenant_id.clone());
                    tenant_index.insert(rec.tenant_id, tenants.len() - 1);
                    tenants.len() - 1
                }
            };
            sealed_rows.push(SealedRow {
                tenant,
                id: rec.id,
                txid: rec.txid,
                at: rec.logged_at_unix_micros,
            });
        }
        // The seals to check, by tenant and number: every seal holding one of
        // those rows, and every seal whose rows were logged in the range.
        let mut scope: BTreeMap<(String, i64), StoredSeal> = BTreeMap::new();
        if !sealed_rows.is_empty() {
            let lo = sealed_rows.iter().map(|r| r.txid).min().unwrap_or(0);
            let hi = sealed_rows.iter().map(|r| r.txid).max().unwrap_or(0);
            let candidates = read_seals(
                client,
                &format!(
                    "SELECT {columns} FROM saas.audit_seals \
                     WHERE tenant_id = ANY($1::text[]::uuid[]) AND xid_to > $2 AND xid_from <= $3"
                ),
                &[tenants.clone().into(), lo.into(), hi.into()],
            )?;
            // Per tenant (by index): its seals, and which of them hold a row.
            let mut theirs: Vec<Vec<&StoredSeal>> = vec![Vec::new(); tenants.len()];
            for s in &candidates {
                if let Some(&t) = tenant_index.get(&s.seal.tenant_id) {
                    theirs[t].push(s);
                }
            }
            let seals_of: Vec<Vec<&Seal>> = theirs
                .iter()
                .map(|ss| ss.iter().map(|s| &s.seal).collect())
                .collect();
            let cells: Vec<Cells<'_>> = seals_of.iter().map(|ss| Cells::new(ss)).collect();
            let mut holding: Vec<Vec<bool>> =
                theirs.iter().map(|ss| vec![false; ss.len()]).collect();
            for r in &sealed_rows {
                let found = cells[r.tenant].covering(r.txid, r.at);
                if found.is_empty() {
                    fail(&mut v, "row", &tenants[r.tenant], Some(r.id), None, format!(
                        "row {} carries transaction {}, older than the seal horizon, which its tenant's seals do not cover in the month it was logged: the row was inserted after sealing or a seal was deleted",
                        r.id, r.txid));
                    return Ok(v);
                }
                for i in found {
                    holding[r.tenant][i] = true;
                }
            }
            for (ss, held) in theirs.iter().zip(&holding) {
                for (s, _) in ss.iter().zip(held).filter(|(_, h)| **h) {
                    scope.insert((s.seal.tenant_id.clone(), s.seal.seal_no), (*s).clone());
                }
            }
        }
        for s in read_seals(
            client,
            &format!(
                "SELECT {columns} FROM saas.audit_seals WHERE first_logged_at < $2 AND last_logged_at >= $1"
            ),
            &[from.into(), to.into()],
        )? {
            scope
                .entry((s.seal.tenant_id.clone(), s.seal.seal_no))
                .or_insert(s);
        }
        // Months retention retired: rows of theirs are gone on purpose.
        let mut ranges: Vec<(i64, i64)> = Vec::new();
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
            ranges.push((row.get::<i64>(1).map_err(&e)?.unwrap_or(0), row.get::<i64>(2).map_err(&e)?.unwrap_or(0)));
        }
        let retired = RetiredMonths::new(ranges);
        // A 0.1.0 seal across months, some retired: its re-seals (one per
        // month, made while all its rows were there) are checked instead.
        let mut resealed: HashMap<(String, i64), i64> = HashMap::new();
        if months {
            let partly: Vec<(String, i64)> = scope
                .values()
                .filter(|s| {
                    s.seal.month.is_none()
                        && retired.of(s.seal.first_logged_at, s.seal.last_logged_at)
                            == Retirement::Partly
                })
                .map(|s| (s.seal.tenant_id.clone(), s.seal.seal_no))
                .collect();
            for (tenant, seal_no) in partly {
                let reseals = read_seals(
                    client,
                    &format!(
                        "SELECT {columns} FROM saas.audit_seals WHERE tenant_id = $1::uuid AND reseals = $2"
                    ),
                    &[tenant.clone().into(), seal_no.into()],
                )?;
                if reseals.is_empty() {
                    continue;
                }
                resealed.insert(
                    (tenant.clone(), seal_no),
                    reseals.iter().map(|s| s.seal.row_count).sum(),
                );
                for s in reseals {
                    scope
                        .entry((s.seal.tenant_id.clone(), s.seal.seal_no))
                        .or_insert(s);
                }
            }
        }
        let mut by_tenant: Vec<(String, Vec<StoredSeal>)> = Vec::new();
        for ((tenant, _), s) in scope {
            if by_tenant.last().map(|(t, _)| t != &tenant).unwrap_or(true) {
                by_tenant.push((tenant, Vec::new()));
            }
            by_tenant.last_mut().expect("pushed above").1.push(s);
        }
        let one_sql = format!(
            "SELECT {columns} FROM saas.audit_seals WHERE tenant_id = $1::uuid AND seal_no = $2"
        );
        let last_pass_sql = format!(
            "SELECT {columns} FROM saas.audit_seals \
             WHERE tenant_id = $1::uuid AND seal_no < $2 AND reseals IS NULL ORDER BY seal_no DESC LIMIT 1"
        );
        // The first seal whose rows cannot be checked any more, reported
        // when nothing worse is found.
        let mut unverifiable: Option<(String, i64, String)> = None;
        for (tenant, seals) in by_tenant {
            let read_one = |sql: &str, seal_no: i64| -> SaasResult<Option<StoredSeal>> {
                Ok(
                    read_seals(client, sql, &[tenant.clone().into(), seal_no.into()])?
                        .into_iter()
                        .next(),
                )
            };
            // Chain: each seal's hash, and its link to the one before.
            for (i, s) in seals.iter().enumerate() {
                v.seals_checked += 1;
                let n = s.seal.seal_no;
                if s.seal.hash() != s.stored_hash {
                    fail(
                        &mut v,
                        "seal",
                        &tenant,
                        None,
                        Some(n),
                        format!("seal {n} does not match its hash: it was changed"),
                    );
                    return Ok(v);
                }
                // The predecessor is usually the seal just checked; read it
                // only when it lies outside the range.
                let read;
                let prev = match i.checked_sub(1).map(|j| &seals[j]) {
                    Some(p) if p.seal.seal_no == n - 1 => Some(p),
                    _ if n > 1 => {
                        let Some(p) = read_one(&one_sql, n - 1)? else {
                            fail(
                                &mut v,
                                "seal",
                                &tenant,
                                None,
                                Some(n),
                                format!(
                                    "seal {n} follows a seal that is missing: seal {} was deleted",
                                    n - 1
                                ),
                            );
                            return Ok(v);
                        };
                        read = p;
                        Some(&read)
                    }
                    _ => None,
                };
                let linked = prev.map_or([0u8; 32], |p| p.stored_hash) == s.seal.prev_hash;
                // Transaction ids: a seal starts where the chain's last pass
                // ended, or continues that pass in a later month; a re-seal
                // has the range of the 0.1.0 seal it re-seals.
                let ranged = match (s.seal.reseals, prev) {
                    (Some(k), _) => {
                        let original = match seals.iter().find(|o| o.seal.seal_no == k) {
                            Some(o) => Some(o.clone()),
                            None if k < n => read_one(&one_sql, k)?,
                            None => None,
                        };
                        s.seal.month.is_some()
                            && original.is_some_and(|o| {
                                o.seal.month.is_none()
                                    && o.seal.reseals.is_none()
                                    && o.seal.xid_from == s.seal.xid_from
                                    && o.seal.xid_to == s.seal.xid_to
                            })
                    }
                    (None, None) => true,
                    (None, Some(p)) => {
                        let pass = if p.seal.reseals.is_none() {
                            Some(p.clone())
                        } else {
                            read_one(&last_pass_sql, n)?
                        };
                        pass.is_some_and(|q| {
                            s.seal.xid_from == q.seal.xid_to
                                || matches!((s.seal.month, q.seal.month),
                                    (Some(m), Some(qm)) if s.seal.xid_from == q.seal.xid_from
                                        && s.seal.xid_to == q.seal.xid_to && m.0 >= qm.1)
                        })
                    }
                };
                if !linked || !ranged {
                    fail(
                        &mut v,
                        "seal",
                        &tenant,
                        None,
                        Some(n),
                        format!("seal {n} does not continue the chain of seal {}", n - 1),
                    );
                    return Ok(v);
                }
            }
            // Rows: recount and re-digest each seal's rows, unless retention
            // retired every month they were in.
            let mut live: Vec<&StoredSeal> = Vec::new();
            for s in &seals {
                match retired.of(s.seal.first_logged_at, s.seal.last_logged_at) {
                    Retirement::Live => live.push(s),
                    Retirement::Retired => v.retired_seals += 1,
                    Retirement::Partly => {
                        let n = s.seal.seal_no;
                        match resealed.get(&(tenant.clone(), n)) {
                            // Its months still kept are checked through
                            // their re-seals.
                            Some(&count) if count == s.seal.row_count => v.retired_seals += 1,
                            Some(&count) => {
                                fail(&mut v, "seal", &tenant, None, Some(n), format!(
                                    "seal {n}: its re-seals cover {count} of its {} rows: a re-seal is missing",
                                    s.seal.row_count));
                                return Ok(v);
                            }
                            None => {
                                let why = if s.seal.month.is_none() {
                                    format!("seal {n} was made before 0.2.0 over rows of more than one month, and retention retired some of those months before it was re-sealed month by month: its rows in the months still kept cannot be checked against it")
                                } else {
                                    format!("seal {n} covers a month of which retention retired only part (the log's months changed after sealing?): its rows still kept cannot be checked against it")
                                };
                                unverifiable.get_or_insert((tenant.clone(), n, why));
                            }
                        }
                    }
                }
            }
            if live.is_empty() {
                continue;
            }
            let lo = live.iter().map(|s| s.seal.xid_from).min().unwrap_or(0);
            let hi = live.iter().map(|s| s.seal.xid_to).max().unwrap_or(0);
            let live_seals: Vec<&Seal> = live.iter().map(|s| &s.seal).collect();
            let cells = Cells::new(&live_seals);
            let mut digests: Vec<RowsDigest> = vec![RowsDigest::default(); live.len()];
            let rows = client
                .select(
                    "SELECT id, txid, (extract(epoch FROM logged_at) * 1000000)::int8, row_hash FROM saas.audit_log \
                     WHERE tenant_id = $1::uuid AND txid >= $2 AND txid < $3 ORDER BY id",
                    None,
                    &[tenant.clone().into(), lo.into(), hi.into()],
                )
                .map_err(spi_err("read sealed rows"))?;
            for row in rows {
                let e = spi_err("read sealed rows");
                let id = row.get::<i64>(1).map_err(&e)?.unwrap_or_default();
                let txid = row.get::<i64>(2).map_err(&e)?.unwrap_or_default();
                let at = row.get::<i64>(3).map_err(&e)?.unwrap_or_default();
                let hash = to_hash(row.get::<Vec<u8>>(4).map_err(&e)?);
                for i in cells.covering(txid, at) {
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
        if let Some((tenant, n, why)) = unverifiable {
            fail(&mut v, "unverifiable", &tenant, None, Some(n), why);
            return Ok(v);
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
