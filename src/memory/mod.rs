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
use pgrx::datum::{AnyElement, DatumWithOid};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use score::{Metric, Terms, Weights};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

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

/// A memory's score in [0, 1] from its raw facts, in one call per row:
/// the weighted mean of the terms `_memory_similarity` and
/// `_memory_recency` compute (the same functions, so the same floats the
/// explanation shows), importance and the entity term. The stream and
/// brute force score every row with it; the term functions run only for
/// the k rows whose explanations show them.
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, strict, parallel_safe)]
fn _memory_row_score(
    w_similarity: f64,
    w_recency: f64,
    w_importance: f64,
    w_entity: f64,
    distance_kind: &str,
    distance: f64,
    age_seconds: f64,
    half_life_seconds: f64,
    evergreen: bool,
    recency_floor: f64,
    importance: f64,
    entity: f64,
) -> f64 {
    let w = weights(w_similarity, w_recency, w_importance, w_entity).or_raise();
    let terms = Terms {
        similarity: _memory_similarity(distance_kind, distance),
        recency: _memory_recency(age_seconds, half_life_seconds, evergreen, recency_floor),
        importance,
        entity,
    };
    score::score(&w, &terms)
}

thread_local! {
    /// The stream statements' plans, prepared once per backend and kept,
    /// by statement text. A text names a model and a stage (and, for a
    /// tenant index, the md5 its predicate holds), never a value of a
    /// search: those are parameters. The plan cache re-plans a kept plan
    /// after DDL or a change of role (RLS) by itself.
    /// The key holds the query vector's type too: a plan runs only with
    /// the parameter types it was prepared for (a datum of another type
    /// would be read as a vector).
    static KEPT_STREAMS: RefCell<HashMap<(pg_sys::Oid, String), Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// The largest k `memory_search` accepts (its documented maximum).
const MAX_K: i32 = 1000;

/// The longest stream statement `_memory_stream` takes.
const MAX_STREAM_SQL: usize = 64 * 1024;

/// Kept stream plans per backend at most; past it they are all dropped
/// (a backend serves a few models and its tenants' own indexes).
const KEPT_STREAMS_MAX: usize = 64;

/// The index stage's stream: `stream_sql` (memory id, distance, score, in
/// distance order) read through an SPI cursor until no unseen memory can
/// beat the k-th score (`score::Stream`), ten rows at a time (the index
/// reads little past the stop). Returns whether the bound stopped it, the
/// rows read, and the best k rows taken, best first (those in `skip`,
/// which the entity stage scored, are not taken again). `entity_bound`:
/// the highest entity term an unseen row of this stream can have (0 for
/// the index stage, whose entity matches are already scored; 1 for the
/// entity stage's own stream).
///
/// The statement's plan is kept (`KEPT_STREAMS`); the search's values are
/// its parameters: $1 the query vector, $2 the tenant, $3 the four weights,
/// $4 the default half-life in seconds, $5 the half-lives by kind, $6 the
/// evergreen kinds, $7 the recency floor, $8 `age_from`, $9 the time "now",
/// $10 the query's entities.
///
/// API roles may execute it because `memory_search` runs as its caller; it
/// runs the text with the caller's own rights, as PL/pgSQL's EXECUTE would,
/// so it gives no one more than they have (and schema `saas` is not one
/// PostgREST serves).
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, strict, parallel_unsafe)]
fn _memory_stream(
    stream_sql: &str,
    query: AnyElement,
    tenant: pgrx::Uuid,
    weights: Vec<Option<f64>>,
    half_life: f64,
    half_lives: pgrx::JsonB,
    evergreen_kinds: Vec<Option<String>>,
    recency_floor: f64,
    age_from: &str,
    now: TimestampWithTimeZone,
    entities: Vec<Option<String>>,
    k: i32,
    seed_top: Vec<Option<f64>>,
    skip: Vec<Option<i64>>,
    distance_kind: &str,
    entity_bound: f64,
) -> TableIterator<
    'static,
    (
        name!(stopped, bool),
        name!(streamed, i64),
        name!(ids, Vec<i64>),
        name!(scores, Vec<f64>),
    ),
> {
    // Called directly, anything may come: k as memory_search allows it (the
    // candidates are kept in O(k)), a statement of sane length, and arrays
    // with NULLs are refused, not a panic.
    if !(1..=MAX_K).contains(&k) {
        SaasError::new(
            ErrorKind::OutOfRange,
            format!("k {k} is out of range"),
            "Ask for 1 to 1000 memories (k).",
        )
        .report();
    }
    if stream_sql.len() > MAX_STREAM_SQL {
        SaasError::new(
            ErrorKind::StringTooLong,
            format!("the stream statement has {} bytes", stream_sql.len()),
            "memory_search builds statements of a few kilobytes; pass one under 64 kB.",
        )
        .report();
    }
    let w = match *weights.as_slice() {
        [Some(s), Some(r), Some(i), Some(e)] => self::weights(s, r, i, e).or_raise(),
        _ => SaasError::new(
            ErrorKind::InvalidParameter,
            "the stream takes 4 weights, none NULL",
            "Pass similarity, recency, importance and entity, in that order.",
        )
        .report(),
    };
    let Some(seed_top) = seed_top.into_iter().collect::<Option<Vec<f64>>>() else {
        SaasError::new(
            ErrorKind::NullValue,
            "seed_top holds a NULL score",
            "Pass the scores the entity stage returned.",
        )
        .report()
    };
    // Sorted for binary search: a subject can have thousands of entity rows.
    let mut skip: Vec<i64> = skip.into_iter().flatten().collect();
    skip.sort_unstable();
    let mut stream = score::Stream::new(
        seed_top,
        usize::try_from(k).unwrap_or(0),
        w,
        metric(distance_kind).or_raise(),
        entity_bound,
    );
    let query_type = query.oid();
    // SAFETY: the datum is the `query` argument of this call, of type
    // `query_type`, and outlives the cursor (both end with this call).
    let query = unsafe { DatumWithOid::new(query, query_type) };
    let args = [
        query,
        tenant.into(),
        weights.into(),
        half_life.into(),
        half_lives.into(),
        evergreen_kinds.into(),
        recency_floor.into(),
        age_from.into(),
        now.into(),
        entities.into(),
    ];
    let read = Spi::connect(|client| -> SaasResult<(bool, i64)> {
        let failed = |e: pgrx::spi::SpiError| {
            SaasError::new(
                ErrorKind::ObjectNotInPrerequisiteState,
                "memory_search could not read its candidate stream",
                "Check that pgvector and the model's index are installed.",
            )
            .with_detail(e.to_string())
        };
        let key = (query_type, stream_sql.to_owned());
        let plan = match KEPT_STREAMS.with_borrow(|kept| kept.get(&key).cloned()) {
            Some(plan) => plan,
            None => {
                let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
                let plan = Rc::new(client.prepare(stream_sql, &types).map_err(failed)?.keep());
                KEPT_STREAMS.with_borrow_mut(|kept| {
                    if kept.len() >= KEPT_STREAMS_MAX {
                        kept.clear();
                    }
                    kept.insert(key, Rc::clone(&plan));
                });
                plan
            }
        };
        let mut cursor = client.try_open_cursor(&*plan, &args).map_err(failed)?;
        let mut streamed = 0i64;
        loop {
            let rows = cursor.fetch(10).map_err(failed)?;
            if rows.is_empty() {
                return Ok((false, streamed));
            }
            for row in rows {
                let id: i64 = row.get(1).map_err(failed)?.unwrap_or_default();
                let distance: f64 = row.get(2).map_err(failed)?.unwrap_or(f64::INFINITY);
                let score: f64 = row.get(3).map_err(failed)?.unwrap_or_default();
                streamed += 1;
                if stream.offer(id, distance, score, skip.binary_search(&id).is_ok()) {
                    return Ok((true, streamed));
                }
            }
        }
    })
    .or_raise();
    let (ids, scores) = stream.into_candidates();
    TableIterator::once((read.0, read.1, ids, scores))
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
        _memory_row_score,
        _memory_stream,
        _memory_half_life_langchain,
        _memory_half_life_factor,
        _memory_half_life_elasticsearch
    ]
);
