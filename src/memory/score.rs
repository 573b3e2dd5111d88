//! The memory search score and the stopping bound of its candidate stage.
//!
//! A memory's score is an absolute, bounded weighted mean of four terms,
//! each in [0, 1]: similarity (the distance mapped monotonically), recency
//! (`0.5 ^ (age / half_life)`, 1 for evergreen memories, never below an
//! optional floor), importance, and the entity boost (the share of the
//! query's entities the memory mentions). Nothing is normalised over the
//! candidates, so adding a memory never changes another memory's score.
//!
//! The candidate stage reads memories in ascending distance. Every term but
//! similarity is at most 1, and the memories that match an entity are scored
//! separately whatever their distance, so a memory not seen yet, at distance
//! `d` or more, scores at most [`best_unseen`]`(d)`. Once the k-th best score
//! seen reaches that, no unseen memory can beat it: [`can_stop`].

/// How the index measures distance (pgvector operator classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// `<=>`, cosine distance in [0, 2].
    Cosine,
    /// `<->`, Euclidean distance in [0, inf).
    L2,
    /// `<#>`, the negative inner product.
    InnerProduct,
}

impl Metric {
    pub fn parse(name: &str) -> Option<Metric> {
        match name {
            "cosine" => Some(Metric::Cosine),
            "l2" => Some(Metric::L2),
            "ip" => Some(Metric::InnerProduct),
            _ => None,
        }
    }
}

/// Similarity in [0, 1] from a distance, non-increasing in the distance
/// (the stopping bound relies on that). Cosine: `1 - d/2`; L2: `1/(1+d)`;
/// inner product: the logistic of the inner product (`d` is its negative).
pub fn similarity(metric: Metric, distance: f64) -> f64 {
    if distance.is_nan() {
        return 0.0;
    }
    let s = match metric {
        Metric::Cosine => 1.0 - distance / 2.0,
        Metric::L2 => 1.0 / (1.0 + distance.max(0.0)),
        Metric::InnerProduct => 1.0 / (1.0 + distance.exp()),
    };
    s.clamp(0.0, 1.0)
}

/// Recency in [0, 1]: `0.5 ^ (age / half_life)`, 1 when evergreen, at least
/// `floor`. A negative age (an event in the future) counts as 0.
pub fn recency(age_seconds: f64, half_life_seconds: f64, evergreen: bool, floor: f64) -> f64 {
    let floor = if floor.is_finite() {
        floor.clamp(0.0, 1.0)
    } else {
        0.0
    };
    if evergreen {
        return 1.0;
    }
    let age = if age_seconds.is_finite() {
        age_seconds.max(0.0)
    } else if age_seconds > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    let r = 0.5f64.powf(age / half_life_seconds);
    if r.is_nan() {
        floor
    } else {
        r.clamp(0.0, 1.0).max(floor)
    }
}

/// The weights of the four terms; non-negative, not all zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    pub similarity: f64,
    pub recency: f64,
    pub importance: f64,
    pub entity: f64,
}

impl Weights {
    pub const DEFAULT: Weights = Weights {
        similarity: 1.0,
        recency: 0.3,
        importance: 0.2,
        entity: 0.3,
    };

    pub fn total(&self) -> f64 {
        self.similarity + self.recency + self.importance + self.entity
    }

    /// `None` unless every weight is finite and non-negative and one is positive.
    pub fn checked(self) -> Option<Weights> {
        let all = [self.similarity, self.recency, self.importance, self.entity];
        if all.iter().all(|w| w.is_finite() && *w >= 0.0) && self.total() > 0.0 {
            Some(self)
        } else {
            None
        }
    }
}

/// The four terms of one memory, each in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Terms {
    pub similarity: f64,
    pub recency: f64,
    pub importance: f64,
    pub entity: f64,
}

/// The score in [0, 1]: `sum(w_i * t_i) / sum(w_i)`.
pub fn score(w: &Weights, t: &Terms) -> f64 {
    let clamp = |x: f64| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) };
    let sum = w.similarity * clamp(t.similarity)
        + w.recency * clamp(t.recency)
        + w.importance * clamp(t.importance)
        + w.entity * clamp(t.entity);
    (sum / w.total()).clamp(0.0, 1.0)
}

/// The best score any memory at `distance` or farther can reach when its
/// entity term is at most `entity`: 0 for the index stage (the memories
/// matching the query's entities are scored separately), 1 for the entity
/// stage's own stream.
pub fn best_unseen(w: &Weights, metric: Metric, distance: f64, entity: f64) -> f64 {
    score(
        w,
        &Terms {
            similarity: similarity(metric, distance),
            recency: 1.0,
            importance: 1.0,
            entity,
        },
    )
}

/// The running top k of the candidate stage: `top` (best first, at most
/// `k` scores) after `score` is seen. Its k-th entry is what the stopping
/// test compares with [`best_unseen`]; keeping it here saves the stream a
/// sort per improving candidate.
pub fn push_top(mut top: Vec<f64>, score: f64, k: usize) -> Vec<f64> {
    if !score.is_nan() {
        insert_best(&mut top, score, k, |a, b| a > b);
    }
    top.truncate(k);
    top
}

/// Inserts `x` into `best` (best first by `better`, at most `k` long) when
/// it is better than the k-th; after the equals already there otherwise.
fn insert_best<T>(best: &mut Vec<T>, x: T, k: usize, better: impl Fn(&T, &T) -> bool) {
    best.truncate(k);
    if best.len() == k && best.last().is_none_or(|last| !better(&x, last)) {
        return;
    }
    let at = best.partition_point(|r| !better(&x, r));
    best.insert(at, x);
    best.truncate(k);
}

/// The distance from which no unseen memory (entity term at most `entity`)
/// can beat `kth_score`: the least `d` with `best_unseen(d) <= kth_score`, so that the stream compares each
/// row's distance with one number instead of computing the bound per row
/// (it confirms with [`can_stop`], which rounding may differ from);
/// negative infinity when every distance qualifies, infinity when none does.
pub fn stop_distance(kth_score: f64, w: &Weights, metric: Metric, entity: f64) -> f64 {
    let rest = (w.recency + w.importance + w.entity * entity.clamp(0.0, 1.0)) / w.total();
    if w.similarity <= 0.0 {
        return if kth_score >= rest {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    // best_unseen(d) <= kth  <=>  similarity(d) <= s
    let s = (kth_score - rest) * w.total() / w.similarity;
    if s >= 1.0 {
        return f64::NEG_INFINITY;
    }
    match metric {
        Metric::Cosine if s >= 0.0 => 2.0 * (1.0 - s),
        Metric::L2 if s > 0.0 => 1.0 / s - 1.0,
        Metric::InnerProduct if s > 0.0 => (1.0 / s - 1.0).ln(),
        _ => f64::INFINITY,
    }
}

/// The index stage reading its stream: rows come in distance order and
/// [`Stream::offer`] says when no unseen memory can beat the k-th score
/// (the row offered then is not taken). The candidates are the best k rows
/// taken (score descending, then id), so memory stays O(k) however long
/// the stream: a row outside them is beaten by k rows and cannot be in the
/// final top k either.
pub struct Stream {
    k: usize,
    w: Weights,
    metric: Metric,
    entity: f64,
    top: Vec<f64>,
    stop_at: f64,
    best: Vec<(f64, i64)>,
}

impl Stream {
    /// A stream whose top k starts with `seed_top` (the entity stage's
    /// scores) and whose unseen rows have an entity term of at most `entity`.
    pub fn new(seed_top: Vec<f64>, k: usize, w: Weights, metric: Metric, entity: f64) -> Stream {
        let mut top = Vec::with_capacity(k + 1);
        for s in seed_top {
            top = push_top(top, s, k);
        }
        let mut stream = Stream {
            k,
            w,
            metric,
            entity,
            top,
            stop_at: f64::INFINITY,
            best: Vec::new(),
        };
        stream.update_stop();
        stream
    }

    fn kth(&self) -> Option<f64> {
        (self.k > 0 && self.top.len() >= self.k).then(|| self.top[self.k - 1])
    }

    fn update_stop(&mut self) {
        if let Some(kth) = self.kth() {
            self.stop_at = stop_distance(kth, &self.w, self.metric, self.entity);
        }
    }

    /// Offers the next row; true when the stream stops before it.
    /// `already_scored`: the entity stage scored it (it is not taken twice).
    pub fn offer(&mut self, id: i64, distance: f64, score: f64, already_scored: bool) -> bool {
        // stop_at spares the bound per row; can_stop decides (rounding).
        if distance >= self.stop_at
            && can_stop(self.kth(), &self.w, self.metric, distance, self.entity)
        {
            return true;
        }
        if !already_scored && !score.is_nan() {
            self.keep(id, score);
            if self.kth().is_none_or(|kth| score > kth) {
                self.top = push_top(std::mem::take(&mut self.top), score, self.k);
                self.update_stop();
            }
        }
        false
    }

    /// Keeps (score, id) if it is among the best k taken so far (score
    /// descending, then id, as the final statement orders them).
    fn keep(&mut self, id: i64, score: f64) {
        insert_best(&mut self.best, (score, id), self.k, |a, b| {
            a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
        });
    }

    /// The candidates, best first: their ids and scores.
    pub fn into_candidates(self) -> (Vec<i64>, Vec<f64>) {
        self.best.into_iter().map(|(s, id)| (id, s)).unzip()
    }
}

/// Whether the distance-ordered stream may stop: the k-th best score so far
/// (`None` while fewer than k are scored) is at least what any unseen memory
/// (entity term at most `entity`) could score, the stream being at `distance`.
pub fn can_stop(
    kth_score: Option<f64>,
    w: &Weights,
    metric: Metric,
    distance: f64,
    entity: f64,
) -> bool {
    match kth_score {
        Some(kth) => kth >= best_unseen(w, metric, distance, entity),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const METRICS: [Metric; 3] = [Metric::Cosine, Metric::L2, Metric::InnerProduct];

    #[test]
    fn half_life_halves() {
        assert_eq!(recency(0.0, 3600.0, false, 0.0), 1.0);
        assert!((recency(3600.0, 3600.0, false, 0.0) - 0.5).abs() < 1e-12);
        assert!((recency(7200.0, 3600.0, false, 0.0) - 0.25).abs() < 1e-12);
        assert_eq!(recency(1e12, 3600.0, true, 0.0), 1.0);
        assert_eq!(recency(1e12, 3600.0, false, 0.1), 0.1);
        assert_eq!(recency(-50.0, 3600.0, false, 0.0), 1.0);
    }

    #[test]
    fn similarity_maps_distances() {
        assert_eq!(similarity(Metric::Cosine, 0.0), 1.0);
        assert_eq!(similarity(Metric::Cosine, 2.0), 0.0);
        assert_eq!(similarity(Metric::Cosine, 1.0), 0.5);
        assert_eq!(similarity(Metric::L2, 0.0), 1.0);
        assert_eq!(similarity(Metric::InnerProduct, 0.0), 0.5);
        assert_eq!(Metric::parse("dot"), None);
    }

    #[test]
    fn weights_are_checked() {
        assert!(Weights::DEFAULT.checked().is_some());
        let mut w = Weights::DEFAULT;
        w.recency = -0.1;
        assert!(w.checked().is_none());
        let zero = Weights {
            similarity: 0.0,
            recency: 0.0,
            importance: 0.0,
            entity: 0.0,
        };
        assert!(zero.checked().is_none());
    }

    fn weights() -> impl Strategy<Value = Weights> {
        (0.0..3.0f64, 0.0..3.0f64, 0.0..3.0f64, 0.0..3.0f64)
            .prop_filter("some weight", |(a, b, c, d)| a + b + c + d > 1e-6)
            .prop_map(|(a, b, c, d)| Weights {
                similarity: a,
                recency: b,
                importance: c,
                entity: d,
            })
    }

    proptest! {
        #[test]
        fn stream_keeps_the_exact_top_k(
            w in weights(),
            k in 1usize..6,
            entity in prop::sample::select(vec![0.0, 1.0]),
            seed in proptest::collection::vec(0.0..1.0f64, 0..4),
            mut items in proptest::collection::vec((0.0..2.0f64, 0.0..1.0f64, 0.0..1.0f64, 0.0..1.0f64), 0..60),
        ) {
            // Rows in distance order, each with its own recency, importance
            // and entity term (at most `entity`: 0 for the index stage, any
            // up to 1 for the entity stage's stream); stopping where the
            // stream says keeps the top k of the seed and every row.
            items.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            let rows: Vec<(f64, f64)> = items.iter().map(|&(d, rec, imp, ent)| {
                (d, score(&w, &Terms { similarity: similarity(Metric::Cosine, d), recency: rec, importance: imp, entity: ent * entity }))
            }).collect();
            let mut stream = Stream::new(seed.clone(), k, w, Metric::Cosine, entity);
            for (i, &(d, s)) in rows.iter().enumerate() {
                if stream.offer(i as i64, d, s, false) {
                    break;
                }
            }
            let (ids, scores) = stream.into_candidates();
            // At most k candidates, best first, each the score of its row.
            prop_assert!(ids.len() <= k);
            prop_assert!(scores.windows(2).all(|p| p[0] >= p[1]));
            prop_assert!(ids.iter().zip(&scores).all(|(&i, &s)| rows[i as usize].1 == s));
            let mut kept: Vec<f64> = seed.iter().copied().chain(scores.iter().copied()).collect();
            let mut all: Vec<f64> = seed.iter().copied().chain(rows.iter().map(|r| r.1)).collect();
            kept.sort_by(|a, b| b.partial_cmp(a).unwrap());
            all.sort_by(|a, b| b.partial_cmp(a).unwrap());
            kept.truncate(k);
            all.truncate(k);
            prop_assert_eq!(kept, all);
        }

        #[test]
        fn stop_distance_is_where_the_bound_allows_stopping(
            w in weights(), m in 0usize..3, kth in 0.0..1.0f64, d in -5.0..5.0f64, entity in 0.0..1.0f64,
        ) {
            let metric = [Metric::Cosine, Metric::L2, Metric::InnerProduct][m];
            let at = stop_distance(kth, &w, metric, entity);
            // Past it (beyond rounding) the bound allows stopping; well
            // before it, it does not.
            let bound = best_unseen(&w, metric, d, entity);
            if d > at + 1e-9 * (1.0 + at.abs()) {
                prop_assert!(kth >= bound - 1e-12);
            }
            if d < at - 1e-9 * (1.0 + at.abs()) {
                prop_assert!(kth < bound + 1e-12);
            }
        }

        #[test]
        fn push_top_keeps_the_k_best(scores in proptest::collection::vec(0.0..1.0f64, 0..80), k in 0usize..15) {
            let mut top = Vec::new();
            for &x in &scores {
                top = push_top(top, x, k);
            }
            let mut all = scores.clone();
            all.sort_by(|a, b| b.partial_cmp(a).unwrap());
            all.truncate(k);
            prop_assert_eq!(top, all);
        }

        #[test]
        fn score_is_bounded_and_monotone(w in weights(), m in 0usize..3,
                                         d1 in 0.0..2.0f64, dd in 0.0..2.0f64,
                                         r in 0.0..1.0f64, i in 0.0..1.0f64, e in 0.0..1.0f64) {
            let metric = METRICS[m];
            let near = Terms { similarity: similarity(metric, d1), recency: r, importance: i, entity: e };
            let far = Terms { similarity: similarity(metric, d1 + dd), ..near };
            let (a, b) = (score(&w, &near), score(&w, &far));
            prop_assert!((0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b));
            prop_assert!(a >= b);
            // The bound covers every memory at that distance without an entity match.
            let no_entity = Terms { entity: 0.0, ..near };
            prop_assert!(best_unseen(&w, metric, d1, 0.0) >= score(&w, &no_entity));
        }

        #[test]
        fn recency_is_bounded_and_decays(age in 0.0..1e9f64, more in 0.0..1e9f64,
                                         hl in 1.0..1e8f64, floor in 0.0..1.0f64) {
            let a = recency(age, hl, false, floor);
            let b = recency(age + more, hl, false, floor);
            prop_assert!((floor..=1.0).contains(&a));
            prop_assert!(b <= a);
            prop_assert_eq!(recency(age, hl, true, floor), 1.0);
        }

        /// The stream stopped by `can_stop` holds the exact top-k of the whole
        /// stream (entity matches scored separately, as the search does).
        #[test]
        fn stopping_never_loses_the_top_k(
            w in weights(), m in 0usize..3, k in 1usize..8,
            items in proptest::collection::vec((0.0..2.0f64, 0.0..1.0f64, 0.0..1.0f64, any::<bool>()), 0..60),
        ) {
            let metric = METRICS[m];
            let mut stream = items.clone();
            stream.sort_by(|a, b| a.0.total_cmp(&b.0));
            let scored = |it: &(f64, f64, f64, bool)| score(&w, &Terms {
                similarity: similarity(metric, it.0), recency: it.1, importance: it.2,
                entity: if it.3 { 1.0 } else { 0.0 } });
            // Truth: every item scored.
            let mut all: Vec<f64> = stream.iter().map(scored).collect();
            all.sort_by(|a, b| b.total_cmp(a));
            all.truncate(k);
            // The search: entity matches first, then the stream until the bound.
            let mut seen: Vec<f64> = stream.iter().filter(|it| it.3).map(scored).collect();
            for it in &stream {
                let mut top = seen.clone();
                top.sort_by(|a, b| b.total_cmp(a));
                let kth = if top.len() >= k { Some(top[k - 1]) } else { None };
                if can_stop(kth, &w, metric, it.0, 0.0) {
                    break;
                }
                if !it.3 {
                    seen.push(scored(it));
                }
            }
            seen.sort_by(|a, b| b.total_cmp(a));
            seen.truncate(k);
            prop_assert_eq!(seen, all);
        }
    }
}
