//! Converters from other systems' decay parameters to half-lives.
//!
//! pg_saas takes half-lives (an `interval`), never bare rates. These give
//! the half-life that reproduces another system's exponential decay exactly:
//!
//! - LangChain's `TimeWeightedVectorStoreRetriever` adds
//!   `(1 - decay_rate) ^ hours_passed`: half-life `ln 0.5 / ln(1 - decay_rate)` hours
//!   (its default 0.01 gives 68.97 hours).
//! - Generative Agents multiplies by 0.995 per hour (a factor per unit of
//!   time): half-life `ln 0.5 / ln(factor)` units (138.28 hours).
//! - Elasticsearch's `exp` decay function reaches `decay` at `scale` from
//!   `origin + offset`: half-life `scale * ln 0.5 / ln(decay)`. Its `offset`
//!   (no decay near the origin) has no counterpart and must be 0; its
//!   `gauss` and `linear` shapes are not exponential.

use crate::error::{ErrorKind, SaasError, SaasResult};

fn out_of_range(what: &str, value: f64, hint: &str) -> SaasError {
    SaasError::new(
        ErrorKind::OutOfRange,
        format!("{what} {value} is out of range"),
        hint.to_string(),
    )
}

/// Half-life, in units of `unit_seconds`, of a decay by `factor` per unit.
pub fn half_life_from_factor(factor: f64, unit_seconds: f64) -> SaasResult<f64> {
    if !(factor > 0.0 && factor < 1.0) {
        return Err(out_of_range(
            "decay factor",
            factor,
            "A factor per unit of time is strictly between 0 and 1, e.g. 0.995 per hour (Generative Agents).",
        ));
    }
    if !(unit_seconds.is_finite() && unit_seconds > 0.0) {
        return Err(out_of_range(
            "time unit (seconds)",
            unit_seconds,
            "The unit the factor applies per must be a positive interval, e.g. '1 hour'.",
        ));
    }
    Ok(unit_seconds * 0.5f64.ln() / factor.ln())
}

/// LangChain's `decay_rate` (per hour): `(1 - decay_rate) ^ hours`.
pub fn half_life_from_langchain(decay_rate: f64) -> SaasResult<f64> {
    if !(decay_rate > 0.0 && decay_rate < 1.0) {
        return Err(out_of_range(
            "LangChain decay_rate",
            decay_rate,
            "LangChain's decay_rate is strictly between 0 and 1 (its default is 0.01).",
        ));
    }
    half_life_from_factor(1.0 - decay_rate, 3600.0)
}

/// Elasticsearch's `exp` decay: the value is `decay` at `scale_seconds`.
pub fn half_life_from_elasticsearch(scale_seconds: f64, decay: f64) -> SaasResult<f64> {
    if !(scale_seconds.is_finite() && scale_seconds > 0.0) {
        return Err(out_of_range(
            "Elasticsearch scale (seconds)",
            scale_seconds,
            "scale is a positive interval, e.g. '7 days'.",
        ));
    }
    if !(decay > 0.0 && decay < 1.0) {
        return Err(out_of_range(
            "Elasticsearch decay",
            decay,
            "decay is strictly between 0 and 1 (Elasticsearch's default is 0.5).",
        ));
    }
    Ok(scale_seconds * 0.5f64.ln() / decay.ln())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::score::recency;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        let lc = half_life_from_langchain(0.01).unwrap() / 3600.0;
        assert!((lc - 68.967).abs() < 1e-3, "{lc}");
        let ga = half_life_from_factor(0.995, 3600.0).unwrap() / 3600.0;
        assert!((ga - 138.283).abs() < 1e-3, "{ga}");
        assert_eq!(half_life_from_elasticsearch(86400.0, 0.5).unwrap(), 86400.0);
        for bad in [0.0, 1.0, -0.5, f64::NAN, f64::INFINITY] {
            assert_eq!(
                half_life_from_langchain(bad).unwrap_err().kind,
                ErrorKind::OutOfRange
            );
            assert!(half_life_from_factor(bad, 3600.0).is_err());
            assert!(half_life_from_elasticsearch(3600.0, bad).is_err());
        }
        assert!(half_life_from_elasticsearch(0.0, 0.5).is_err());
        assert!(half_life_from_factor(0.9, -1.0).is_err());
    }

    proptest! {
        /// Our recency with the converted half-life equals the other
        /// system's decay at every age.
        #[test]
        fn converted_half_lives_reproduce_the_decay(rate in 0.0001..0.9999f64, hours in 0.0..5000.0f64,
                                                    scale in 1.0..1e7f64, decay in 0.001..0.999f64,
                                                    age in 0.0..1e8f64) {
            let hl = half_life_from_langchain(rate).unwrap();
            let theirs = (1.0 - rate).powf(hours);
            let ours = recency(hours * 3600.0, hl, false, 0.0);
            prop_assert!((theirs - ours).abs() <= 1e-9 + 1e-9 * theirs, "{} vs {}", theirs, ours);
            let hl = half_life_from_elasticsearch(scale, decay).unwrap();
            let theirs = (decay.ln() / scale * age).exp();
            let ours = recency(age, hl, false, 0.0);
            prop_assert!((theirs - ours).abs() <= 1e-9, "{} vs {}", theirs, ours);
        }
    }
}
