//! What the router knows about each cluster at run time: its health, the operator's say (active,
//! draining, disabled), its load, and the queries seen in flight on it.
//!
//! One [`ClusterRuntime`] lives per cluster *name* and survives config reloads, so a reload never
//! forgets a drain, a health verdict or a load reading.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::sync::Cache;

use crate::domain::health::{Health, Observation, Thresholds, Tracker};
use crate::domain::query_id::QueryId;

/// A query counts as in flight while its client was heard from this recently. Trino clients poll at
/// least every second (long polls last at most one), so a silent query has finished or been abandoned.
pub const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(5);

pub use crate::domain::operator_state::Operator;

/// The most entries any table keyed by what clients send may hold (queries heard from, queries
/// verified); past it, the least recently used go first.
pub const MAX_CLIENT_KEYED: u64 = 100_000;

/// A query the router placed or verified is remembered this long after it was last heard from.
pub const KNOWN_IDLE_EXPIRY: Duration = Duration::from_secs(3600);

fn operator_from_u8(value: u8) -> Operator {
    match value {
        1 => Operator::Draining,
        2 => Operator::Disabled,
        _ => Operator::Active,
    }
}

fn operator_to_u8(operator: Operator) -> u8 {
    match operator {
        Operator::Active => 0,
        Operator::Draining => 1,
        Operator::Disabled => 2,
    }
}

/// Run-time state of one cluster. Every method is cheap and lock-free but health, whose lock is held
/// only to update a few integers.
pub struct ClusterRuntime {
    health: Mutex<Tracker>,
    operator: AtomicU8,
    /// Running + queued queries as the coordinator last reported them; `u64::MAX` = not known.
    coordinator_queries: AtomicU64,
    /// New queries sent here since the coordinator last reported its load (decays when it never does).
    recent_dispatches: AtomicU64,
    /// New queries sent here since the router started.
    queries_routed: AtomicU64,
    /// Queries whose clients were heard from within [`IN_FLIGHT_WINDOW`] (only queries in `known`).
    heard_from: Cache<QueryId, ()>,
    /// Queries the router placed here (learned from their first answer, or found by a lookup) or whose
    /// coordinator confirmed them: the only ones that count as in flight.
    known: Cache<QueryId, ()>,
    /// Whether the end of the current drain was reported already.
    drain_reported: AtomicBool,
    /// When the current drain began.
    draining_since: Mutex<Option<Instant>>,
    /// When a query's owner here was last learned from an answer (ms since [`EPOCH`]; 0 = never).
    last_learned_ms: AtomicU64,
    /// Why the last poll led where it did (empty when healthy): what to change, when misconfigured.
    health_reason: Mutex<String>,
}

/// A table keyed by client input: at most [`MAX_CLIENT_KEYED`] entries, least recently used out first
/// (moka's default admission would turn new entries away from a full table), idle ones forgotten.
fn bounded(idle: Duration) -> Cache<QueryId, ()> {
    Cache::builder()
        .max_capacity(MAX_CLIENT_KEYED)
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .time_to_idle(idle)
        .build()
}

/// The origin of the router's millisecond clock for lock-free timestamps.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    // Never 0, which means "never".
    EPOCH.elapsed().as_millis() as u64 + 1
}

impl ClusterRuntime {
    pub fn new(enabled: bool) -> ClusterRuntime {
        let operator = if enabled { Operator::Active } else { Operator::Disabled };
        ClusterRuntime {
            health: Mutex::new(Tracker::default()),
            operator: AtomicU8::new(operator_to_u8(operator)),
            coordinator_queries: AtomicU64::new(u64::MAX),
            recent_dispatches: AtomicU64::new(0),
            queries_routed: AtomicU64::new(0),
            heard_from: bounded(IN_FLIGHT_WINDOW),
            known: bounded(KNOWN_IDLE_EXPIRY),
            drain_reported: AtomicBool::new(false),
            draining_since: Mutex::new(None),
            last_learned_ms: AtomicU64::new(0),
            health_reason: Mutex::new(String::new()),
        }
    }

    pub fn health(&self) -> Health {
        self.tracker().health()
    }

    pub fn operator(&self) -> Operator {
        operator_from_u8(self.operator.load(Ordering::Relaxed))
    }

    /// Sets the operator's say; returns the previous one.
    pub fn set_operator(&self, operator: Operator) -> Operator {
        self.drain_reported.store(false, Ordering::Relaxed);
        let previous = operator_from_u8(self.operator.swap(operator_to_u8(operator), Ordering::Relaxed));
        // Draining again keeps the drain's start; any other change starts or ends a drain.
        if !(previous == Operator::Draining && operator == Operator::Draining) {
            *self.draining_since.lock().unwrap_or_else(|p| p.into_inner()) =
                (operator == Operator::Draining).then(Instant::now);
        }
        previous
    }

    /// Draining with nothing left in flight: safe to stop. Not before a whole [`IN_FLIGHT_WINDOW`] of
    /// draining: Envoy routes follow-ups of active clusters by itself, so the router hears of a running
    /// query only once its cluster drains and the query's client next polls.
    pub fn drained(&self) -> bool {
        self.drained_at(Instant::now())
    }

    fn drained_at(&self, now: Instant) -> bool {
        let since = *self.draining_since.lock().unwrap_or_else(|p| p.into_inner());
        self.operator() == Operator::Draining
            && since.is_some_and(|t| now.saturating_duration_since(t) >= IN_FLIGHT_WINDOW)
            && self.in_flight() == 0
    }

    /// True once per drain: when the cluster is first seen drained.
    pub fn take_drain_completion(&self) -> bool {
        self.take_drain_completion_at(Instant::now())
    }

    fn take_drain_completion_at(&self, now: Instant) -> bool {
        self.drained_at(now) && !self.drain_reported.swap(true, Ordering::Relaxed)
    }

    /// May this cluster take a new query now?
    pub fn accepts_new_queries(&self) -> bool {
        self.operator() == Operator::Active && self.health().takes_new_queries()
    }

    /// Feeds a poll result; returns the new health when it changed.
    pub fn observe(&self, seen: &Observation, thresholds: Thresholds) -> Option<Health> {
        *self.health_reason.lock().unwrap_or_else(|p| p.into_inner()) = seen.reason();
        self.tracker().observe(seen, thresholds)
    }

    /// Why the last poll led where it did (empty after a good poll).
    pub fn health_reason(&self) -> String {
        self.health_reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A new query could not be delivered here; returns the new health when it changed.
    pub fn delivery_failed(&self) -> Option<Health> {
        self.tracker().passive_failure(now_ms())
    }

    /// The coordinator refused a new query; returns the new health when it changed.
    pub fn refused_new_query(&self) -> Option<Health> {
        self.tracker().refused_new_query()
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, Tracker> {
        // A panic while holding this lock cannot leave the tracker half-updated in a way that matters.
        self.health.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new query was sent here.
    pub fn dispatched(&self) {
        self.recent_dispatches.fetch_add(1, Ordering::Relaxed);
        self.queries_routed.fetch_add(1, Ordering::Relaxed);
    }

    /// The coordinator reported its running + queued queries: that count now includes what was
    /// dispatched before, so the router's own count starts over.
    pub fn coordinator_reported(&self, queries: u64) {
        self.coordinator_queries.store(queries, Ordering::Relaxed);
        self.recent_dispatches.store(0, Ordering::Relaxed);
    }

    /// A poll round passed without a load report: halve the router's own count (so it tracks the
    /// recent dispatch rate) and forget a stale coordinator reading.
    pub fn no_coordinator_report(&self) {
        self.coordinator_queries.store(u64::MAX, Ordering::Relaxed);
        let _ = self.recent_dispatches.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n / 2));
    }

    /// Running + queued queries as the coordinator last reported them.
    pub fn coordinator_queries(&self) -> Option<u64> {
        Some(self.coordinator_queries.load(Ordering::Relaxed)).filter(|&n| n != u64::MAX)
    }

    /// The load that decides between clusters: the coordinator's count (when known) plus the router's
    /// own recent dispatches.
    pub fn load(&self) -> u64 {
        self.coordinator_queries().unwrap_or(0) + self.recent_dispatches.load(Ordering::Relaxed)
    }

    pub fn queries_routed(&self) -> u64 {
        self.queries_routed.load(Ordering::Relaxed)
    }

    /// A query's owner here was learned from an answer (the coordinator's current id is known).
    pub fn learned_now(&self) {
        self.last_learned_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether a query's owner here was learned within `window`.
    pub fn learned_within(&self, window: Duration) -> bool {
        let last = self.last_learned_ms.load(Ordering::Relaxed);
        last != 0 && now_ms().saturating_sub(last) <= window.as_millis() as u64
    }

    /// `query` was placed here by the router, or its coordinator confirmed it.
    pub fn verified(&self, query: &QueryId) {
        if self.known.get(query).is_none() {
            self.known.insert(query.clone(), ());
        }
    }

    /// Whether `query` was placed here or verified (see [`ClusterRuntime::verified`]).
    pub fn is_known(&self, query: &QueryId) -> bool {
        self.known.contains_key(query)
    }

    /// A client asked about `query` here.
    pub fn heard_from(&self, query: &QueryId) {
        if self.heard_from.get(query).is_none() {
            self.heard_from.insert(query.clone(), ());
        }
    }

    /// Queries in flight: the coordinator's count when known, at least those heard from recently.
    pub fn in_flight(&self) -> u64 {
        self.heard_from.run_pending_tasks();
        self.heard_from.entry_count().max(self.coordinator_queries().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { healthy: 1, unhealthy: 1 };

    #[test]
    fn who_accepts_new_queries() {
        let c = ClusterRuntime::new(true);
        assert!(c.accepts_new_queries(), "unpolled and active");
        c.observe(&Observation::Refused, T);
        assert!(!c.accepts_new_queries());
        c.observe(&Observation::Answered { starting: false, state: "ACTIVE".into() }, T);
        assert!(c.accepts_new_queries());
        assert_eq!(c.set_operator(Operator::Draining), Operator::Active);
        assert!(!c.accepts_new_queries());
        c.set_operator(Operator::Active);
        c.delivery_failed();
        assert!(c.accepts_new_queries(), "one failed delivery is a suspicion");
        c.delivery_failed();
        c.delivery_failed();
        assert!(!c.accepts_new_queries());
        assert!(!ClusterRuntime::new(false).accepts_new_queries(), "starts disabled");
        assert_eq!(ClusterRuntime::new(false).operator(), Operator::Disabled);
    }

    #[test]
    fn load_combines_coordinator_and_dispatches() {
        let c = ClusterRuntime::new(true);
        assert_eq!((c.load(), c.coordinator_queries()), (0, None));
        c.dispatched();
        c.dispatched();
        c.dispatched();
        c.dispatched();
        assert_eq!(c.load(), 4);
        c.no_coordinator_report();
        assert_eq!(c.load(), 2, "decays without reports");
        c.coordinator_reported(10);
        assert_eq!((c.load(), c.coordinator_queries()), (10, Some(10)));
        c.dispatched();
        assert_eq!(c.load(), 11);
        assert_eq!(c.queries_routed(), 5);
    }

    #[test]
    fn in_flight_counts_distinct_queries_heard_from() {
        let c = ClusterRuntime::new(true);
        let a = QueryId::parse("20260101_120000_00001_abcde").unwrap();
        let b = QueryId::parse("20260101_120000_00002_abcde").unwrap();
        c.heard_from(&a);
        c.heard_from(&a);
        c.heard_from(&b);
        assert_eq!(c.in_flight(), 2);
        c.coordinator_reported(7);
        assert_eq!(c.in_flight(), 7);
    }

    #[test]
    fn client_keyed_tables_are_bounded() {
        let c = ClusterRuntime::new(true);
        for n in 0..(MAX_CLIENT_KEYED + 5_000) {
            let id = QueryId::parse(&format!("20260101_120000_{n:05}_abcde")).unwrap();
            c.verified(&id);
            c.heard_from(&id);
        }
        c.known.run_pending_tasks();
        assert!(c.known.entry_count() <= MAX_CLIENT_KEYED, "{}", c.known.entry_count());
        assert!(c.in_flight() <= MAX_CLIENT_KEYED, "{}", c.in_flight());
    }

    #[test]
    fn learned_within() {
        let c = ClusterRuntime::new(true);
        assert!(!c.learned_within(Duration::from_secs(3600)), "never learned");
        c.learned_now();
        assert!(c.learned_within(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!c.learned_within(Duration::from_millis(10)));
    }

    #[test]
    fn drain_completion_is_reported_once_per_drain() {
        let c = ClusterRuntime::new(true);
        let later = || Instant::now() + IN_FLIGHT_WINDOW;
        assert!(!c.take_drain_completion_at(later()), "not draining");
        c.set_operator(Operator::Draining);
        c.coordinator_reported(1);
        assert!(!c.drained_at(later()) && !c.take_drain_completion_at(later()), "a query in flight");
        c.coordinator_reported(0);
        assert!(!c.drained(), "the router has not heard from every client yet");
        assert!(c.drained_at(later()));
        assert!(c.take_drain_completion_at(later()));
        assert!(!c.take_drain_completion_at(later()), "once");
        c.set_operator(Operator::Active);
        c.set_operator(Operator::Draining);
        assert!(!c.drained_at(Instant::now() + IN_FLIGHT_WINDOW / 2), "a new drain waits again");
        assert!(c.take_drain_completion_at(later()), "a new drain reports again");
    }
}
