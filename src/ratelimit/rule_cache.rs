//! The rules `pre_request()` applies (stored by `rate_limit_rule_set()`)
//! and the paths its daily quota never refuses (`saas.quota_exemptions`):
//! read as the state owner and kept per backend until either table is
//! invalidated. A rule the limiter cannot run is skipped with a warning,
//! never fails every request.

use super::check::{limit_of, period_us};
use super::gcra::{self, Limit};
use super::internal;
use super::rules::{self, Scope};
use crate::error::{ErrorKind, SaasError, SaasResult};
use crate::pgutil::{as_owner, kept_plan, saas_relids};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

thread_local! {
    static RULES_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static EXEMPTIONS_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    /// The rules as last read, kept until `saas.rate_limit_rules` or
    /// `saas.quota_exemptions` is invalidated (their trigger fires a
    /// relcache invalidation on every change, which reaches every backend
    /// at commit).
    static RULES: RefCell<Option<Rc<Rules>>> = const { RefCell::new(None) };
    /// The OIDs of both tables when RULES was filled.
    static RULES_RELIDS: Cell<[pg_sys::Oid; 2]> = const { Cell::new([pg_sys::InvalidOid; 2]) };
    /// Invalidations of the rules seen so far: rules read while one
    /// arrives are used once, not kept.
    static RULES_GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// Drops the cached rules when their table is invalidated (InvalidOid: every
/// relation, after a cache reset).
pub(super) extern "C-unwind" fn on_relcache_change(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid || RULES_RELIDS.with(Cell::get).contains(&relid) {
        RULES.with(|r| r.borrow_mut().take());
        RULES_GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
    }
}

pub(super) fn rule_set_impl(
    path_pattern: Option<&str>,
    count: Option<i32>,
    period: Option<Interval>,
    scope: Option<&str>,
    method: Option<&str>,
    max_burst: Option<i32>,
    cost: Option<i32>,
) -> SaasResult<i64> {
    let missing = |what: &str| {
        SaasError::new(
            ErrorKind::NullValue,
            format!("rate_limit_rule_set: {what} must not be NULL"),
            "Pass a path pattern, a count and a period, e.g. saas.rate_limit_rule_set('/rpc/generate_roadmap', 5, '1 hour').",
        )
    };
    let pattern = path_pattern.ok_or_else(|| missing("path_pattern"))?;
    let count = count.ok_or_else(|| missing("count"))?;
    let period = period.ok_or_else(|| missing("period"))?;
    let scope = scope.ok_or_else(|| missing("scope"))?;
    let cost = cost.ok_or_else(|| missing("cost"))?;
    rules::validate_pattern(pattern)?;
    Scope::parse(scope)?;
    let method = rules::normalize_method(method)?;
    let limit = limit_of(max_burst.unwrap_or(count) as i64, count as i64, &period)?;
    gcra::validate_cost(cost as i64)?;
    if cost as i64 > limit.burst {
        return Err(SaasError::new(
            ErrorKind::InvalidParameter,
            format!(
                "a rule with cost {cost} and a burst of {} would refuse every request",
                limit.burst
            ),
            "Give the rule a max_burst of at least its cost.",
        ));
    }
    let upsert = "INSERT INTO saas.rate_limit_rules AS r (path_pattern, method, scope, max_burst, count, period, cost) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7) \
                  ON CONFLICT (path_pattern, method, scope) DO UPDATE \
                    SET max_burst = EXCLUDED.max_burst, count = EXCLUDED.count, period = EXCLUDED.period, cost = EXCLUDED.cost \
                  RETURNING r.id";
    let args = [
        pattern.into(),
        method.into(),
        scope.into(),
        max_burst.into(),
        count.into(),
        period.into(),
        cost.into(),
    ];
    // No row limit (so not Spi::get_one_with_args): an INSERT ... RETURNING
    // stopped after its first row never fires its statement triggers, and
    // the rules' trigger is what tells every backend to read them again.
    let id =
        Spi::connect_mut(|client| client.update(upsert, None, &args)?.first().get_one::<i64>())
            .map_err(|e| internal("store the rule", e))?;
    id.ok_or_else(|| internal("store the rule", "no id returned"))
}

/// A stored rule, as `pre_request()` applies it.
pub(super) struct Rule {
    pub(super) id: i64,
    pub(super) pattern: String,
    /// The pattern as a route (`rules::route_pattern`), what requests match.
    pub(super) route: String,
    pub(super) method: Option<String>,
    pub(super) scope: Scope,
    pub(super) count: i64,
    pub(super) period_us: i64,
    pub(super) limit: Limit,
    pub(super) cost: i64,
}

/// What pre_request applies: the rules, and the routes the daily quota
/// counts but never refuses.
pub(super) struct Rules {
    pub(super) rules: Vec<Rule>,
    pub(super) quota_exempt: Vec<String>,
}

/// Every rule and exemption, from the backend's cache or read as the state
/// owner.
pub(super) fn cached_rules(owner: pg_sys::Oid) -> SaasResult<Rc<Rules>> {
    if let Some(rules) = RULES.with(|r| r.borrow().clone()) {
        return Ok(rules);
    }
    // The OIDs first, so that an invalidation arriving while the rules are
    // read (a lock taken after the snapshot processes them) is recognised;
    // rules read across one are used for this request only.
    // InvalidOid for an exemptions table not created yet (before ALTER
    // EXTENSION UPDATE).
    let relids = saas_relids([c"rate_limit_rules", c"quota_exemptions"]);
    RULES_RELIDS.with(|r| r.set(relids));
    let generation = RULES_GENERATION.with(Cell::get);
    let has_exemptions = relids[1] != pg_sys::InvalidOid;
    let rules = Rc::new(as_owner(owner, || {
        Spi::connect(|client| {
            Ok::<_, SaasError>(Rules {
                rules: load_rules(client)?,
                quota_exempt: if has_exemptions {
                    load_exemptions(client)?
                } else {
                    Vec::new()
                },
            })
        })
    })?);
    if RULES_GENERATION.with(Cell::get) == generation {
        RULES.with(|r| *r.borrow_mut() = Some(rules.clone()));
    }
    Ok(rules)
}

fn load_exemptions(client: &SpiClient<'_>) -> SaasResult<Vec<String>> {
    let stmt = kept_plan(
        &EXEMPTIONS_PLAN,
        client,
        "SELECT path_pattern FROM saas.quota_exemptions ORDER BY path_pattern",
        &[],
    )
    .map_err(|e| internal("prepare the quota exemption lookup", e))?;
    let rows = client
        .select(stmt, None, &[])
        .map_err(|e| internal("read the quota exemptions", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let pattern: Option<String> = row
            .get(1)
            .map_err(|e| internal("read the quota exemptions", e))?;
        out.extend(pattern.map(|p| rules::route_pattern(&p)));
    }
    Ok(out)
}

fn load_rules(client: &SpiClient<'_>) -> SaasResult<Vec<Rule>> {
    let stmt = kept_plan(
        &RULES_PLAN,
        client,
        "SELECT id, path_pattern, method, scope, coalesce(max_burst, count), count, period, cost \
         FROM saas.rate_limit_rules ORDER BY id",
        &[],
    )
    .map_err(|e| internal("prepare the rule lookup", e))?;
    let rows = client
        .select(stmt, None, &[])
        .map_err(|e| internal("read the rules", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let get_err = |e: pgrx::spi::SpiError| internal("read the rules", e);
        let period: Interval = row
            .get(7)
            .map_err(get_err)?
            .ok_or_else(|| internal("read the rules", "NULL period"))?;
        let burst: i32 = row.get(5).map_err(get_err)?.unwrap_or(1);
        let count: i32 = row.get(6).map_err(get_err)?.unwrap_or(1);
        let id: i64 = row.get(1).map_err(get_err)?.unwrap_or(0);
        let pattern: String = row.get(2).map_err(get_err)?.unwrap_or_default();
        let scope = row.get::<String>(4).map_err(get_err)?.unwrap_or_default();
        // One rule the limiter cannot run (written before the table's
        // CHECKs, or past them) is skipped, said once per read, and the
        // others still apply: it never fails every request.
        let runnable = period_us(&period).and_then(|period_us| {
            Ok((
                period_us,
                Limit::new(burst as i64, count as i64, period_us)?,
                Scope::parse(&scope)?,
            ))
        });
        let (period_us, limit, scope) = match runnable {
            Ok(r) => r,
            Err(e) => {
                pgrx::warning!(
                    "pg_saas: rate-limit rule {id} ({pattern}) is skipped: {}; fix it with saas.rate_limit_rule_set or drop it",
                    e.message
                );
                continue;
            }
        };
        out.push(Rule {
            id,
            route: rules::route_pattern(&pattern),
            pattern,
            method: row.get(3).map_err(get_err)?,
            scope,
            count: count as i64,
            period_us,
            limit,
            cost: row.get::<i32>(8).map_err(get_err)?.unwrap_or(1) as i64,
        });
    }
    Ok(out)
}
