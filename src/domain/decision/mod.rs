//! Where a request goes. Pure: no I/O, no clocks, no protobuf, no metrics or logs; the caller supplies
//! what the router has learned and the clusters' state through [`Lookups`], and writes metrics and logs
//! from the value a decision returns.
//!
//! - A new statement (`POST /v1/statement`): [`new_statement::decide`], the one place that decides it —
//!   rules, transaction and named-query pins, pin admission, routing-group permission, group choice and
//!   fallbacks.
//! - Every other request (follow-ups naming a query, URL-placed paths, spooled segments, anything
//!   else): [`follow_up::decide`].
//! - Which new statements Envoy may place by itself, and the clusters' weights: [`native::plan`].

use std::sync::Arc;

use crate::domain::config::{Config, Group};
use crate::domain::query_id::QueryId;

pub mod follow_up;
pub mod native;
pub mod new_statement;

/// What a decision needs to know about one cluster right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterView {
    /// May take new queries: healthy (or not yet polled), and neither draining nor disabled.
    pub accepts_new: bool,
    /// Known to be gone: its queries cannot progress.
    pub down: bool,
    /// Load per unit of weight; the least loaded cluster takes the next new query.
    pub load: f64,
    /// Active, but judged unhealthy by the router (timed-out or nonsense polls, failed deliveries):
    /// not known to be down, and not saying itself that it takes nothing (starting, shutting down).
    pub doubtful: bool,
}

/// What the router has learned and sees, as a decision asks for it.
pub trait Lookups {
    /// The cluster (by name) that owns a query, if known.
    fn owner_of(&self, query: &QueryId) -> Option<Arc<str>>;
    /// The cluster (by name) whose coordinator ran a query before it restarted (the query's coordinator
    /// id was retired: its cluster publishes another one now), if known.
    fn restarted_owner(&self, _query: &QueryId) -> Option<Arc<str>> {
        None
    }
    /// The cluster (by name) that started a transaction (by the id the client sends), if known.
    fn transaction_owner(&self, id: &str) -> Option<Arc<str>>;
    /// The state of `Config::clusters[cluster]` now.
    fn view(&self, cluster: usize) -> ClusterView;
    /// Which of equally loaded clusters takes a new query (a caller passing a counter gets round-robin
    /// among equals). Asked once per decision, and only when equals are to be chosen between.
    fn turn(&self) -> usize;
}

/// The least loaded eligible cluster of `group`, else of the groups of its whole fallback chain in
/// order ([`Group::chain`]): `(group, cluster)`.
fn place(
    config: &Config,
    group: usize,
    view: &impl Fn(usize) -> ClusterView,
    turn: &mut impl FnMut() -> usize,
    eligible: impl Fn(&ClusterView) -> bool,
) -> Option<(usize, usize)> {
    config.groups[group]
        .chain
        .iter()
        .find_map(|&g| least_loaded(&config.groups[g], view, turn, &eligible).map(|c| (g, c)))
}

fn least_loaded(
    group: &Group,
    view: &impl Fn(usize) -> ClusterView,
    turn: &mut impl FnMut() -> usize,
    eligible: &impl Fn(&ClusterView) -> bool,
) -> Option<usize> {
    // Each view is read once: loads change under concurrent dispatches, and a second reading could
    // disagree with the first.
    let candidates: Vec<(usize, f64)> = group
        .members
        .iter()
        .map(|&c| (c, view(c)))
        .filter(|(_, v)| eligible(v))
        .map(|(c, v)| (c, v.load))
        .collect();
    let lowest = candidates.iter().map(|&(_, load)| load).reduce(f64::min)?;
    let tied = || candidates.iter().filter(move |&&(_, load)| load <= lowest).map(|&(c, _)| c);
    tied().nth(turn() % tied().count())
}

/// Asks `lookups` for the turn the first time it is needed, and keeps it.
fn once(lookups: &impl Lookups) -> impl FnMut() -> usize + '_ {
    let mut taken = None;
    move || *taken.get_or_insert_with(|| lookups.turn())
}

/// Decision fixtures shared by the table tests of both decisions.
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::Cell;
    use std::sync::Arc;

    use super::{ClusterView, Lookups};
    use crate::domain::query_id::QueryId;

    /// Query ids the fixture lookups know: A on trino-a, B on trino-b, ETL on trino-etl, VAULT on
    /// trino-vault, GONE on a cluster no longer configured. Transactions: `tx-a` on trino-a, `tx-etl` on
    /// trino-etl, `tx-gone` on a cluster no longer configured.
    pub const A: &str = "20260101_120000_00001_aaaaa";
    pub const B: &str = "20260101_120000_00001_bbbbb";
    pub const ETL: &str = "20260101_120000_00001_eeeee";
    pub const GONE: &str = "20260101_120000_00001_ggggg";
    pub const VAULT: &str = "20260101_120000_00001_vvvvv";
    pub const UNKNOWN: &str = "20260101_120000_00001_zzzzz";
    /// A query of trino-a's coordinator before it restarted (its id retired).
    pub const RESTARTED: &str = "20260101_120000_00001_rrrrr";

    /// Lookups over fixed owners, a compact spec of cluster views and a fixed turn.
    pub struct Fixed {
        /// One token per cluster index: `u` up, `d` down, `n` up but taking no new queries (draining,
        /// disabled, starting, shutting down), `h` active but judged unhealthy by the router (doubtful);
        /// a digit after it is its load. Missing ones are `u0`.
        pub views: &'static str,
        pub turn: usize,
        /// How often the turn was asked for.
        pub turns_taken: Cell<usize>,
    }

    impl Fixed {
        pub fn new(views: &'static str, turn: usize) -> Fixed {
            Fixed { views, turn, turns_taken: Cell::new(0) }
        }
    }

    impl Lookups for Fixed {
        fn owner_of(&self, query: &QueryId) -> Option<Arc<str>> {
            match query.as_str() {
                A => Some("trino-a".into()),
                B => Some("trino-b".into()),
                ETL => Some("trino-etl".into()),
                VAULT => Some("trino-vault".into()),
                GONE => Some("trino-old".into()),
                _ => None,
            }
        }

        fn restarted_owner(&self, query: &QueryId) -> Option<Arc<str>> {
            (query.as_str() == RESTARTED).then(|| "trino-a".into())
        }

        fn transaction_owner(&self, id: &str) -> Option<Arc<str>> {
            match id {
                "tx-a" => Some("trino-a".into()),
                "tx-etl" => Some("trino-etl".into()),
                "tx-gone" => Some("trino-old".into()),
                _ => None,
            }
        }

        fn view(&self, cluster: usize) -> ClusterView {
            let token = self.views.split_whitespace().nth(cluster).unwrap_or("u0");
            let (state, load) = token.split_at(1);
            ClusterView {
                accepts_new: state == "u",
                down: state == "d",
                load: load.parse().unwrap_or(0.0),
                doubtful: state == "h",
            }
        }

        fn turn(&self) -> usize {
            self.turns_taken.set(self.turns_taken.get() + 1);
            self.turn
        }
    }
}
