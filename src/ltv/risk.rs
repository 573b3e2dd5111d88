//! Retention risk: the Torsor seed's fixed rules, with weights and
//! thresholds a tenant may override (`saas.retention_risk_settings`).
//!
//! Seed rules (version 0, the default): motivational-drivers match below 50
//! adds 30 (driver "Motivational drivers misaligned with role"), below 70
//! adds 15; working-preferences match below 50 adds 25 ("Working style not
//! accommodated"), below 70 adds 12; role-skill fit below 60 adds 25
//! ("Skills underutilized or overextended"), below 80 adds 10; more than 180
//! days since the last assessment adds 10 ("Assessments outdated (>6
//! months)"), more than 90 adds 5; trend `down` adds 10 ("Declining
//! performance trend"). Level: critical from 70, high from 50, medium from
//! 30, else low. Only the stronger step of a rule names a driver, as in the
//! seed. Scores are capped at 100.

use crate::error::{ErrorKind, SaasError, SaasResult};
use serde_json::Value;

/// One "below/over" rule with two steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step2 {
    pub high: f64,
    pub high_points: i32,
    pub medium: f64,
    pub medium_points: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RiskRules {
    pub version: i32,
    pub motivational: Step2,
    pub working: Step2,
    pub skill: Step2,
    /// Thresholds are "more than N days".
    pub assessment: Step2,
    pub trend_down_points: i32,
    pub level_critical: i32,
    pub level_high: i32,
    pub level_medium: i32,
}

pub const DRIVER_MOTIVATIONAL: &str = "Motivational drivers misaligned with role";
pub const DRIVER_WORKING: &str = "Working style not accommodated";
pub const DRIVER_SKILL: &str = "Skills underutilized or overextended";
pub const DRIVER_ASSESSMENT: &str = "Assessments outdated (>6 months)";
pub const DRIVER_TREND: &str = "Declining performance trend";

impl Default for RiskRules {
    fn default() -> Self {
        RiskRules {
            version: 0,
            motivational: Step2 {
                high: 50.0,
                high_points: 30,
                medium: 70.0,
                medium_points: 15,
            },
            working: Step2 {
                high: 50.0,
                high_points: 25,
                medium: 70.0,
                medium_points: 12,
            },
            skill: Step2 {
                high: 60.0,
                high_points: 25,
                medium: 80.0,
                medium_points: 10,
            },
            assessment: Step2 {
                high: 180.0,
                high_points: 10,
                medium: 90.0,
                medium_points: 5,
            },
            trend_down_points: 10,
            level_critical: 70,
            level_high: 50,
            level_medium: 30,
        }
    }
}

/// The keys a rules object may hold, each overriding the seed's value.
pub const RULE_KEYS: &[&str] = &[
    "version",
    "motivational_high_below",
    "motivational_high_points",
    "motivational_medium_below",
    "motivational_medium_points",
    "working_high_below",
    "working_high_points",
    "working_medium_below",
    "working_medium_points",
    "skill_high_below",
    "skill_high_points",
    "skill_medium_below",
    "skill_medium_points",
    "assessment_high_over_days",
    "assessment_high_points",
    "assessment_medium_over_days",
    "assessment_medium_points",
    "trend_down_points",
    "level_critical",
    "level_high",
    "level_medium",
];

fn bad_rules(msg: String) -> SaasError {
    SaasError::new(
        ErrorKind::InvalidParameter,
        msg,
        format!(
            "Rules are a JSON object overriding some of: {}. Points, levels and match thresholds are whole numbers 0-100; day thresholds 0-36500; a high step is stricter than its medium step.",
            RULE_KEYS.join(", ")
        ),
    )
}

impl RiskRules {
    /// Rules from a JSON object; missing keys keep the seed's values.
    pub fn from_json(text: &str) -> SaasResult<RiskRules> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| bad_rules(format!("retention_risk: the rules are not JSON: {e}")))?;
        Self::from_value(&v)
    }

    pub fn from_value(v: &Value) -> SaasResult<RiskRules> {
        let obj = v
            .as_object()
            .ok_or_else(|| bad_rules("retention_risk: the rules must be a JSON object".into()))?;
        let mut r = RiskRules::default();
        for (k, val) in obj {
            let n = val.as_f64().filter(|n| n.is_finite()).ok_or_else(|| {
                bad_rules(format!(
                    "retention_risk: rule \"{}\" must be a number",
                    crate::error::echoed(k)
                ))
            })?;
            let whole = |max: f64| -> SaasResult<i32> {
                if n.fract() != 0.0 || !(0.0..=max).contains(&n) {
                    return Err(bad_rules(format!(
                        "retention_risk: rule \"{k}\" must be a whole number from 0 to {max}, not {n}"
                    )));
                }
                Ok(n as i32)
            };
            match k.as_str() {
                "version" => r.version = whole(2_147_483_647.0)?,
                "motivational_high_below" => r.motivational.high = whole(100.0)? as f64,
                "motivational_high_points" => r.motivational.high_points = whole(100.0)?,
                "motivational_medium_below" => r.motivational.medium = whole(100.0)? as f64,
                "motivational_medium_points" => r.motivational.medium_points = whole(100.0)?,
                "working_high_below" => r.working.high = whole(100.0)? as f64,
                "working_high_points" => r.working.high_points = whole(100.0)?,
                "working_medium_below" => r.working.medium = whole(100.0)? as f64,
                "working_medium_points" => r.working.medium_points = whole(100.0)?,
                "skill_high_below" => r.skill.high = whole(100.0)? as f64,
                "skill_high_points" => r.skill.high_points = whole(100.0)?,
                "skill_medium_below" => r.skill.medium = whole(100.0)? as f64,
                "skill_medium_points" => r.skill.medium_points = whole(100.0)?,
                "assessment_high_over_days" => r.assessment.high = whole(36500.0)? as f64,
                "assessment_high_points" => r.assessment.high_points = whole(100.0)?,
                "assessment_medium_over_days" => r.assessment.medium = whole(36500.0)? as f64,
                "assessment_medium_points" => r.assessment.medium_points = whole(100.0)?,
                "trend_down_points" => r.trend_down_points = whole(100.0)?,
                "level_critical" => r.level_critical = whole(100.0)?,
                "level_high" => r.level_high = whole(100.0)?,
                "level_medium" => r.level_medium = whole(100.0)?,
                _ => {
                    return Err(bad_rules(format!(
                        "retention_risk: unknown rule \"{}\"",
                        crate::error::echoed(k)
                    )))
                }
            }
        }
        for (name, s) in [
            ("motivational", r.motivational),
            ("working", r.working),
            ("skill", r.skill),
        ] {
            if s.high > s.medium {
                return Err(bad_rules(format!(
                    "retention_risk: {name}_high_below ({}) is above {name}_medium_below ({})",
                    s.high, s.medium
                )));
            }
        }
        if r.assessment.high < r.assessment.medium {
            return Err(bad_rules(format!(
                "retention_risk: assessment_high_over_days ({}) is below assessment_medium_over_days ({})",
                r.assessment.high, r.assessment.medium
            )));
        }
        if !(r.level_medium <= r.level_high && r.level_high <= r.level_critical) {
            return Err(bad_rules(
                "retention_risk: levels must rise: level_medium <= level_high <= level_critical"
                    .into(),
            ));
        }
        Ok(r)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trend {
    Up,
    Stable,
    Down,
}

impl Trend {
    pub fn parse(s: &str) -> SaasResult<Trend> {
        match s {
            "up" => Ok(Trend::Up),
            "stable" => Ok(Trend::Stable),
            "down" => Ok(Trend::Down),
            _ => Err(SaasError::new(
                ErrorKind::InvalidParameter,
                format!(
                    "retention_risk: unknown performance trend \"{}\"",
                    crate::error::echoed(s)
                ),
                "performance_trend is one of 'up', 'stable', 'down' (lower case).",
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RiskInput {
    pub motivational: f64,
    pub working: f64,
    pub skill: f64,
    pub last_assessment_days: i32,
    pub trend: Trend,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiskResult {
    pub score: i32,
    pub level: &'static str,
    pub drivers: Vec<&'static str>,
    pub rule_version: i32,
}

fn check_match(name: &str, v: f64) -> SaasResult<()> {
    if !(0.0..=100.0).contains(&v) {
        return Err(SaasError::new(
            ErrorKind::OutOfRange,
            format!("retention_risk: {name} is {v}, outside 0-100"),
            "Match and fit values are percentages from 0 to 100.",
        ));
    }
    Ok(())
}

impl RiskInput {
    pub fn validate(&self) -> SaasResult<()> {
        check_match("motivational_drivers_match", self.motivational)?;
        check_match("working_preferences_match", self.working)?;
        check_match("role_skill_fit", self.skill)?;
        if self.last_assessment_days < 0 {
            return Err(SaasError::new(
                ErrorKind::OutOfRange,
                format!(
                    "retention_risk: last_assessment_days is {}, a negative number of days",
                    self.last_assessment_days
                ),
                "Pass the days since the last assessment (0 for today).",
            ));
        }
        Ok(())
    }
}

/// The level a score reaches under `rules`.
pub fn level_of(score: i32, rules: &RiskRules) -> &'static str {
    if score >= rules.level_critical {
        "critical"
    } else if score >= rules.level_high {
        "high"
    } else if score >= rules.level_medium {
        "medium"
    } else {
        "low"
    }
}

/// The score, level and drivers of one input (validated first).
pub fn evaluate(input: &RiskInput, rules: &RiskRules) -> SaasResult<RiskResult> {
    input.validate()?;
    let mut score = 0i32;
    let mut drivers = Vec::new();
    let mut below = |v: f64, s: Step2, driver: &'static str| {
        if v < s.high {
            score += s.high_points;
            drivers.push(driver);
        } else if v < s.medium {
            score += s.medium_points;
        }
    };
    below(input.motivational, rules.motivational, DRIVER_MOTIVATIONAL);
    below(input.working, rules.working, DRIVER_WORKING);
    below(input.skill, rules.skill, DRIVER_SKILL);
    let days = input.last_assessment_days as f64;
    if days > rules.assessment.high {
        score += rules.assessment.high_points;
        drivers.push(DRIVER_ASSESSMENT);
    } else if days > rules.assessment.medium {
        score += rules.assessment.medium_points;
    }
    if input.trend == Trend::Down {
        score += rules.trend_down_points;
        drivers.push(DRIVER_TREND);
    }
    let score = score.min(100);
    Ok(RiskResult {
        score,
        level: level_of(score, rules),
        drivers,
        rule_version: rules.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(m: f64, w: f64, s: f64, d: i32, t: Trend) -> RiskInput {
        RiskInput {
            motivational: m,
            working: w,
            skill: s,
            last_assessment_days: d,
            trend: t,
        }
    }
    fn score(i: RiskInput) -> i32 {
        evaluate(&i, &RiskRules::default()).unwrap().score
    }
    const GOOD: (f64, f64, f64, i32, Trend) = (100.0, 100.0, 100.0, 0, Trend::Stable);

    #[test]
    fn every_boundary_of_the_seed() {
        let (m, w, s, d, t) = GOOD;
        assert_eq!(score(input(m, w, s, d, t)), 0);
        // motivational 49/50, 69/70
        assert_eq!(score(input(49.0, w, s, d, t)), 30);
        assert_eq!(score(input(49.99, w, s, d, t)), 30);
        assert_eq!(score(input(50.0, w, s, d, t)), 15);
        assert_eq!(score(input(69.0, w, s, d, t)), 15);
        assert_eq!(score(input(70.0, w, s, d, t)), 0);
        // working 49/50, 69/70
        assert_eq!(score(input(m, 49.0, s, d, t)), 25);
        assert_eq!(score(input(m, 50.0, s, d, t)), 12);
        assert_eq!(score(input(m, 69.0, s, d, t)), 12);
        assert_eq!(score(input(m, 70.0, s, d, t)), 0);
        // skill 59/60, 79/80
        assert_eq!(score(input(m, w, 59.0, d, t)), 25);
        assert_eq!(score(input(m, w, 60.0, d, t)), 10);
        assert_eq!(score(input(m, w, 79.0, d, t)), 10);
        assert_eq!(score(input(m, w, 80.0, d, t)), 0);
        // days 90/91, 180/181
        assert_eq!(score(input(m, w, s, 90, t)), 0);
        assert_eq!(score(input(m, w, s, 91, t)), 5);
        assert_eq!(score(input(m, w, s, 180, t)), 5);
        assert_eq!(score(input(m, w, s, 181, t)), 10);
        // trend
        assert_eq!(score(input(m, w, s, d, Trend::Down)), 10);
        assert_eq!(score(input(m, w, s, d, Trend::Up)), 0);
        // everything at its worst: 30+25+25+10+10
        assert_eq!(score(input(0.0, 0.0, 0.0, 1000, Trend::Down)), 100);
    }

    #[test]
    fn level_edges() {
        let r = RiskRules::default();
        for (s, l) in [
            (0, "low"),
            (29, "low"),
            (30, "medium"),
            (49, "medium"),
            (50, "high"),
            (69, "high"),
            (70, "critical"),
            (100, "critical"),
        ] {
            assert_eq!(level_of(s, &r), l, "score {s}");
        }
    }

    #[test]
    fn drivers_only_on_the_strong_step() {
        let r = evaluate(
            &input(49.0, 69.0, 59.0, 181, Trend::Down),
            &RiskRules::default(),
        )
        .unwrap();
        assert_eq!(
            r.drivers,
            vec![
                DRIVER_MOTIVATIONAL,
                DRIVER_SKILL,
                DRIVER_ASSESSMENT,
                DRIVER_TREND
            ]
        );
        assert_eq!(r.score, 30 + 12 + 25 + 10 + 10);
        assert_eq!(r.level, "critical");
        assert_eq!(r.rule_version, 0);
    }

    #[test]
    fn bad_input() {
        let r = RiskRules::default();
        for i in [
            input(-0.1, 0.0, 0.0, 0, Trend::Up),
            input(0.0, 100.1, 0.0, 0, Trend::Up),
            input(0.0, 0.0, 0.0, -1, Trend::Up),
        ] {
            assert_eq!(evaluate(&i, &r).unwrap_err().kind, ErrorKind::OutOfRange);
        }
        assert_eq!(
            Trend::parse("Down").unwrap_err().kind,
            ErrorKind::InvalidParameter
        );
    }

    #[test]
    fn rules_override_and_refuse() {
        let r = RiskRules::from_json(
            r#"{"version": 3, "motivational_high_below": 40, "level_critical": 90}"#,
        )
        .unwrap();
        assert_eq!(r.version, 3);
        assert_eq!(r.motivational.high, 40.0);
        assert_eq!(r.level_critical, 90);
        assert_eq!(r.working, RiskRules::default().working);
        for bad in [
            r#"[]"#,
            r#"{"nope": 1}"#,
            r#"{"level_high": 1.5}"#,
            r#"{"level_high": "x"}"#,
            r#"{"skill_high_below": 59.5}"#,
            r#"{"motivational_high_below": 80}"#,
            r#"{"level_medium": 60}"#,
            r#"{"skill_high_points": 101}"#,
            "{",
        ] {
            assert_eq!(
                RiskRules::from_json(bad).unwrap_err().kind,
                ErrorKind::InvalidParameter,
                "{bad}"
            );
        }
        assert_eq!(RiskRules::from_json("{}").unwrap(), RiskRules::default());
    }

    /// The seed's rules written as the TypeScript does, for the oracle.
    fn seed(m: f64, w: f64, s: f64, d: i32, down: bool) -> i32 {
        let mut score = 0;
        if m < 50.0 {
            score += 30
        } else if m < 70.0 {
            score += 15
        }
        if w < 50.0 {
            score += 25
        } else if w < 70.0 {
            score += 12
        }
        if s < 60.0 {
            score += 25
        } else if s < 80.0 {
            score += 10
        }
        if d > 180 {
            score += 10
        } else if d > 90 {
            score += 5
        }
        if down {
            score += 10
        }
        score
    }

    proptest! {
        #[test]
        fn matches_the_seed(m in 0.0f64..=100.0, w in 0.0f64..=100.0, s in 0.0f64..=100.0, d in 0i32..400, t in 0u8..3) {
            let trend = [Trend::Up, Trend::Stable, Trend::Down][t as usize];
            let r = evaluate(&input(m, w, s, d, trend), &RiskRules::default()).unwrap();
            let expect = seed(m, w, s, d, trend == Trend::Down);
            prop_assert_eq!(r.score, expect);
            prop_assert!((0..=100).contains(&r.score));
            let lvl = if expect >= 70 { "critical" } else if expect >= 50 { "high" } else if expect >= 30 { "medium" } else { "low" };
            prop_assert_eq!(r.level, lvl);
        }

        /// Worse inputs never lower the score.
        #[test]
        fn monotone(m in 0.0f64..=100.0, dm in 0.0f64..=100.0, d in 0i32..400, dd in 0i32..400) {
            let r = RiskRules::default();
            let a = evaluate(&input(m, 50.0, 50.0, d, Trend::Up), &r).unwrap().score;
            let b = evaluate(&input((m - dm).max(0.0), 50.0, 50.0, d + dd, Trend::Up), &r).unwrap().score;
            prop_assert!(b >= a);
        }
    }
}
