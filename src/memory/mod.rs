//! Memory search (issue 19): memories with embeddings per model, searched
//! exactly by a decayed, importance- and entity-boosted score, with an
//! explanation per row; erasure by subject.
//!
//! The pure logic is in `score.rs` (the score, its terms and the stopping
//! bound of the candidate stage) and `decay.rs` (half-lives from other
//! systems' decay parameters). The tables, `memory_search` and the other
//! entry points are SQL (`sql/memory.sql`), calling the functions below for
//! every number they compute, so the SQL and `cargo test` agree.
//!
//! The `#[pg_extern]` functions stay in this file: the `requires` of the
//! `extension_sql_file!` below find them by module path.

pub mod decay;
pub mod score;

use crate::error::{ErrorKind, OrRaise, SaasError, SaasResult};
use pgrx::prelude::*;
use score::{Metric, Terms, Weights};

fn metric(name: &str) -> SaasResult<Metric> {
    Metric::parse(name).ok_or_else(|| {
        SaasError::new(
            ErrorKind::InvalidParameter,
            format!("unknown distance \"{}\"", crate::error::echoed(name)),
            "Use 'cosine', 'l2' or 'ip' (pgvector's <=>, <-> and <#>).",
        )
    })
}

fn weights(similarity: f64, recency: f64, importance: f64, entity: f64) -> SaasResult<Weights> {
    Weights {
        similarity,
        recency,
        importance,
        entity,
    }
    .checked()
    .ok_or_else(|| {
        SaasError::new(
            ErrorKind::OutOfRange,
            "memory weights must be finite, non-negative and not all zero",
            "Pass weights such as '{\"similarity\": 1, \"recency\": 0.3, \"importance\": 0.2, \"entity\": 0.3}'.",
        )
    })
}

/// Similarity in [0, 1] of a distance measured by `distance_kind`.
#[pg_extern(immutable, strict, parallel_safe)]
fn _memory_similarity(distance_kind: &str, distance: f64) -> f64 {
    score::similarity(metric(distance_kind).or_raise(), distance)
}

/// Recency in [0, 1]: `0.5 ^ (age / half_life)`, 1 when evergreen, at least `floor`.
#[pg_extern(immutable, strict, parallel_safe)]
fn _memory_recency(age_seconds: f64, half_life_seconds: f64, evergreen: bool, floor: f64) -> f64 {
    if !(half_life_seconds.is_finite() && half_life_seconds > 0.0) {
        SaasError::new(
            ErrorKind::OutOfRange,
            format!("half-life {half_life_seconds} s is not positive"),
            "Give half-lives as positive intervals, e.g. '30 days'.",
        )
        .report();
    }
    score::recency(age_seconds, half_life_seconds, evergreen, floor)
}

/// The score in [0, 1]: the weighted mean of the four terms.
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, strict, parallel_safe)]
fn _memory_score(
    w_similarity: f64,
    w_recency: f64,
    w_importance: f64,
    w_entity: f64,
    similarity: f64,
    recency: f64,
    importance: f64,
    entity: f64,
) -> f64 {
    let w = weights(w_similarity, w_recency, w_importance, w_entity).or_raise();
    score::score(
        &w,
        &Terms {
            similarity,
            recency,
            importance,
            entity,
        },
    )
}

/// The best score a memory not matching the query's entities can reach at
/// `distance` or farther: the candidate stage stops once its k-th score
/// reaches it.
#[pg_extern(immutable, strict, parallel_safe)]
fn _memory_best_unseen(
    distance_kind: &str,
    distance: f64,
    w_similarity: f64,
    w_recency: f64,
    w_importance: f64,
    w_entity: f64,
) -> f64 {
    let w = weights(w_similarity, w_recency, w_importance, w_entity).or_raise();
    score::best_unseen(&w, metric(distance_kind).or_raise(), distance)
}

/// The candidate stage's running top k after one more score (best first).
#[pg_extern(immutable, strict, parallel_safe)]
fn _memory_top_push(top: Vec<f64>, score: f64, k: i32) -> Vec<f64> {
    score::push_top(top, score, usize::try_from(k).unwrap_or(0))
}

/// Half-life in seconds of LangChain's `decay_rate`.
#[pg_extern(immutable, strict, parallel_safe)]
fn _memory_half_life_langchain(decay_rate: f64) -> f64 {
    decay::half_life_from_langchain(decay_rate).or_raise()
}

/// Half-life in seconds of a decay by `factor` per `unit_seconds`.
#[pg_extern(immutable, strict, parallel_safe)]
fn _memory_half_life_factor(factor: f64, unit_seconds: f64) -> f64 {
    decay::half_life_from_factor(factor, unit_seconds).or_raise()
}

/// Half-life in seconds of Elasticsearch's `exp` decay (`scale`, `decay`).
#[pg_extern(immutable, strict, parallel_safe)]
fn _memory_half_life_elasticsearch(scale_seconds: f64, decay: f64) -> f64 {
    decay::half_life_from_elasticsearch(scale_seconds, decay).or_raise()
}

extension_sql_file!(
    "../../sql/memory.sql",
    name = "memory",
    requires = [
        "registry",
        "tenancy",
        "partitions",
        _memory_similarity,
        _memory_recency,
        _memory_score,
        _memory_best_unseen,
        _memory_top_push,
        _memory_half_life_langchain,
        _memory_half_life_factor,
        _memory_half_life_elasticsearch
    ]
);
