//! Customer value: an incremental per-customer ledger on payments tables,
//! the lifetimes-style summary, SaaS revenue metrics and cohorts,
//! retention-risk scores and customer health (docs/ltv.md).
//!
//! Pure logic: the retention-risk rules (`risk`), ChartMogul's MRR movement
//! rule with its brute-force model (`mrr`), the summary from a daily series
//! (`summary`) and tie-safe RFM quintiles (`rfm`). The ledger triggers, the
//! summary, metrics, cohorts and health queries are SQL (sql/ltv.sql),
//! calling the three functions below.

mod capture;
pub mod mrr;
pub mod percent;
pub mod rfm;
pub mod risk;
pub mod summary;

use crate::error::{ErrorKind, OrRaise, SaasError, SaasResult};
use pgrx::prelude::*;
use risk::{RiskInput, RiskResult, RiskRules, Trend};

extension_sql!(
    r#"
-- The row retention_risk() returns (a plain composite: its descriptor is
-- looked up once per call site).
CREATE TYPE @extschema@.retention_risk_result AS (
  score         integer,
  level         text,
  drivers       text[],
  rule_version  integer
);
COMMENT ON TYPE @extschema@.retention_risk_result IS
  'Result of saas.retention_risk: score 0-100 (higher is riskier), level (low, medium, high, critical), the drivers that explain it, and the version of the rules that produced it (0: the seed''s).';
"#,
    name = "retention_risk_result",
    requires = ["bootstrap"],
);

/// A `numeric` argument decoded for exact comparison with whole-number
/// thresholds (`percent`), the datum kept for error messages.
pub struct Percent {
    value: Option<f64>,
    datum: pg_sys::Datum,
}

impl FromDatum for Percent {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: the datum is a non-null numeric argument of this call;
        // detoasted (kept packed) in the call's memory context, read only.
        let value = unsafe {
            let v = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
            let len = pgrx::varlena::varsize_any_exhdr(v);
            let data = std::slice::from_raw_parts(pgrx::varlena::vardata_any(v).cast::<u8>(), len);
            percent::comparable(data)
        };
        Some(Percent { value, datum })
    }
}

// SAFETY: a numeric argument, unboxed through FromDatum above.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for Percent {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the caller's contract: a numeric argument, not null (STRICT).
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

pgrx::impl_sql_translatable!(Percent, arg_only = "NUMERIC");

impl Percent {
    fn get(&self, what: &str) -> SaasResult<f64> {
        match self.value {
            Some(v) if (0.0..=100.0).contains(&v) => Ok(v),
            _ => {
                // SAFETY: the argument's datum, valid for this call.
                let text: String = unsafe {
                    pgrx::direct_function_call::<&std::ffi::CStr>(
                        pg_sys::numeric_out,
                        &[Some(self.datum)],
                    )
                }
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default();
                Err(SaasError::new(
                    ErrorKind::OutOfRange,
                    format!(
                        "retention_risk: {what} is {}, outside 0-100",
                        crate::error::echoed(&text)
                    ),
                    "Match and fit values are percentages from 0 to 100.",
                ))
            }
        }
    }
}

fn risk_impl(
    m: &Percent,
    w: &Percent,
    s: &Percent,
    days: i32,
    trend: &str,
    rules: &RiskRules,
) -> SaasResult<RiskResult> {
    let input = RiskInput {
        motivational: m.get("motivational_drivers_match")?,
        working: w.get("working_preferences_match")?,
        skill: s.get("role_skill_fit")?,
        last_assessment_days: days,
        trend: Trend::parse(trend)?,
    };
    risk::evaluate(&input, rules)
}

/// One `saas.retention_risk_result` value.
pub struct RiskRow(RiskResult);

// The SQL type is created by the `retention_risk_result` block above, which
// the functions returning it require.
pgrx::impl_sql_translatable!(RiskRow, "@extschema@.retention_risk_result");

// SAFETY: the functions returning RiskRow are declared to return
// saas.retention_risk_result, whose four attributes are filled here in order.
unsafe impl pgrx::callconv::BoxRet for RiskRow {
    /// # Safety
    ///
    /// As for [`pgrx::callconv::BoxRet::box_into`]: `fcinfo` is the call's.
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        let r = self.0;
        let mut values = [
            pg_sys::Datum::from(r.score),
            r.level.into_datum().unwrap_or(pg_sys::Datum::null()),
            r.drivers.into_datum().unwrap_or(pg_sys::Datum::null()),
            pg_sys::Datum::from(r.rule_version),
        ];
        let mut nulls = [false; 4];
        use pg_sys::BuiltinOid as B;
        let types = [
            B::INT4OID.value(),
            B::TEXTOID.value(),
            B::TEXTARRAYOID.value(),
            B::INT4OID.value(),
        ];
        // SAFETY: `fcinfo` is this call's; the four values are datums of the
        // four types given, which return_composite checks against the
        // declared result type; nothing else uses this call site's fn_extra.
        unsafe { crate::pgutil::return_composite(fcinfo, &types, &mut values, &mut nulls) }
    }
}

/// Retention risk by the Torsor seed's rules (rule version 0). STRICT:
/// NULL in, NULL out.
#[pg_extern(immutable, strict, parallel_safe, requires = ["retention_risk_result"])]
fn retention_risk(
    motivational_drivers_match: Percent,
    working_preferences_match: Percent,
    role_skill_fit: Percent,
    last_assessment_days: i32,
    performance_trend: &str,
) -> RiskRow {
    thread_local! {
        static SEED: RiskRules = RiskRules::default();
    }
    SEED.with(|rules| {
        RiskRow(
            risk_impl(
                &motivational_drivers_match,
                &working_preferences_match,
                &role_skill_fit,
                last_assessment_days,
                performance_trend,
                rules,
            )
            .or_raise(),
        )
    })
}

/// The same with rules given as JSON (keys in docs/ltv.md; missing keys
/// keep the seed's values; `version` names the result's rule version).
#[pg_extern(
    immutable,
    strict,
    parallel_safe,
    name = "retention_risk",
    requires = ["retention_risk_result"]
)]
fn retention_risk_with_rules(
    motivational_drivers_match: Percent,
    working_preferences_match: Percent,
    role_skill_fit: Percent,
    last_assessment_days: i32,
    performance_trend: &str,
    rules: pgrx::JsonB,
) -> RiskRow {
    let rules = RiskRules::from_value(&rules.0).or_raise();
    RiskRow(
        risk_impl(
            &motivational_drivers_match,
            &working_preferences_match,
            &role_skill_fit,
            last_assessment_days,
            performance_trend,
            &rules,
        )
        .or_raise(),
    )
}

/// ChartMogul's movement of a customer whose MRR goes from `prev` to `cur`
/// ('new', 'expansion', 'contraction', 'churn', 'reactivation', 'none').
#[pg_extern(immutable, strict, parallel_safe)]
fn _mrr_movement(prev: AnyNumeric, cur: AnyNumeric, had_before: bool) -> &'static str {
    mrr::classify(&prev, &cur, &AnyNumeric::from(0), had_before).as_str()
}

/// The tie-safe quintile (1-5) of a value with `rank()` `rank` among `n`.
#[pg_extern(immutable, strict, parallel_safe)]
fn _ltv_quintile(rank: i64, n: i64) -> i32 {
    rfm::quintile(rank, n)
}

/// The statement trigger of tracked payments tables (AFTER INSERT, UPDATE,
/// DELETE FOR EACH STATEMENT with transition tables `ltv_new`/`ltv_old`):
/// appends the statement's changes to `saas.ltv_pending` (`capture`).
#[pg_trigger]
fn _ltv_capture<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, SaasError> {
    capture::capture(trigger).or_raise();
    Ok(None)
}

extension_sql_file!(
    "../../sql/ltv.sql",
    name = "ltv",
    requires = [
        "registry",
        "tenancy",
        "retention_risk_result",
        retention_risk,
        retention_risk_with_rules,
        _mrr_movement,
        _ltv_quintile,
        _ltv_capture
    ]
);
