//! A coordinator's health as the router judges it, from polls and passive signals. Pure: the poller
//! ([`crate::coordinators::poller`]) feeds observations in, this module says what state follows.
//!
//! - A poll that shows `starting: true` → `Starting`; state `SHUTTING_DOWN` (or another non-`ACTIVE`
//!   node state) → `ShuttingDown`; `ACTIVE` → counts toward `Healthy`.
//! - A refused or reset connection is definitive: `Unreachable` at once — nothing listens, the queries
//!   it ran are gone. Timeouts and bad answers count toward `Unhealthy` (`unhealthy_threshold` in a row):
//!   a coordinator that is hung, slow or cut off from the router may still finish what it runs.
//! - A passive failure (Envoy could not deliver a new query to the cluster) is a suspicion: the caller
//!   polls at once. [`DELIVERY_FAILURES`] of them within [`DELIVERY_WINDOW_MS`] make it `Unhealthy`:
//!   one 5xx that Envoy made itself (its own circuit breaker, one reset connection, a client that
//!   timed out) cannot take a cluster out; only polls bring it back (`healthy_threshold` good polls in a
//!   row).
//! - A coordinator that refuses what Envoy adds to every request (406 to a poll carrying
//!   `X-Forwarded-Proto`: Trino's default `http-server.process-forwarded`) is `Misconfigured` at once:
//!   every query sent through Envoy would fail, so it takes none until polls say it is fixed.
//! - Only `Unreachable` is down: the router fails its queries' follow-ups with a clear error. Every other
//!   state sends follow-ups on to the coordinator that owns them (it takes no new queries).

use std::fmt;

/// The router's view of a coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not polled yet.
    Unknown,
    Healthy,
    /// The coordinator is up but still starting (`/v1/info` says `starting: true`).
    Starting,
    /// Not answering in time, answering nonsense, or a new query could not be delivered: takes no new
    /// queries, but its running queries' follow-ups still go there.
    Unhealthy,
    /// Nothing listens: the connection was refused or reset. Its queries are gone.
    Unreachable,
    /// In graceful shutdown (`/v1/info/state` is `SHUTTING_DOWN` or another non-active state).
    ShuttingDown,
    /// Up, but configured so that requests through Envoy fail (the reason says what to change): takes
    /// no new queries.
    Misconfigured,
}

impl Health {
    /// May this coordinator take new queries (before the operator's say)? An unpolled coordinator may:
    /// the first poll round runs before the router serves, and a failed delivery marks it at once.
    pub fn takes_new_queries(self) -> bool {
        matches!(self, Health::Healthy | Health::Unknown)
    }

    /// Is the coordinator known to be gone (its queries cannot progress)?
    pub fn is_down(self) -> bool {
        self == Health::Unreachable
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Starting => "starting",
            Health::Unhealthy => "unhealthy",
            Health::Unreachable => "unreachable",
            Health::ShuttingDown => "shutting_down",
            Health::Misconfigured => "misconfigured",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one poll saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// `/v1/info` and `/v1/info/state` answered; `starting` and the node state as read.
    Answered { starting: bool, state: String },
    /// The connection was refused or reset: nothing listens.
    Refused,
    /// No answer in time, or an answer that is not Trino's.
    Failed(String),
    /// It answers, but refuses what every request through Envoy carries; what to change.
    Misconfigured(String),
}

/// Failed deliveries of new queries within [`DELIVERY_WINDOW_MS`] that make a coordinator unhealthy.
pub const DELIVERY_FAILURES: usize = 3;

/// The window (milliseconds) in which [`DELIVERY_FAILURES`] failed deliveries eject a coordinator.
pub const DELIVERY_WINDOW_MS: u64 = 10_000;
impl Observation {
    /// Why the poll leads where it does, in a few words (for logs, `admin list`, the status page).
    pub fn reason(&self) -> String {
        match self {
            Observation::Answered { starting: true, .. } => "starting".to_owned(),
            Observation::Answered { state, .. } if !state.eq_ignore_ascii_case("ACTIVE") => {
                format!("node state {state}")
            }
            Observation::Answered { .. } => String::new(),
            Observation::Refused => "connection refused".to_owned(),
            Observation::Failed(why) | Observation::Misconfigured(why) => why.clone(),
        }
    }
}

/// Why a coordinator that answered 406 to a poll carrying `X-Forwarded-Proto` takes no queries, and what
/// to change (airlift's `RejectForwardedRequestCustomizer`, Trino's default; row F1 of
/// docs/trino-conformance.md).
pub const FORWARDED_REFUSED: &str = "the coordinator refuses X-Forwarded-* headers (406 to /v1/info \
     with X-Forwarded-Proto, which Envoy adds to every request): set http-server.process-forwarded=true \
     in its config.properties (Trino's default rejects them)";

/// How many polls in a row change the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

/// Health with its streak counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracker {
    health: Health,
    good_streak: u32,
    bad_streak: u32,
    /// When the last failed deliveries happened (ms on the caller's clock; oldest first; 0 = none).
    failed_deliveries: [u64; DELIVERY_FAILURES],
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            health: Health::Unknown,
            good_streak: 0,
            bad_streak: 0,
            failed_deliveries: [0; DELIVERY_FAILURES],
        }
    }
}

impl Tracker {
    pub fn health(&self) -> Health {
        self.health
    }

    /// Feeds one poll; returns the new health when it changed.
    pub fn observe(&mut self, seen: &Observation, thresholds: Thresholds) -> Option<Health> {
        let next = match seen {
            Observation::Answered { starting: true, .. } => {
                self.reset_streaks();
                Health::Starting
            }
            Observation::Answered { state, .. } if !state.eq_ignore_ascii_case("ACTIVE") => {
                self.reset_streaks();
                Health::ShuttingDown
            }
            Observation::Answered { .. } => {
                self.bad_streak = 0;
                self.good_streak = self.good_streak.saturating_add(1);
                let was_serving = matches!(self.health, Health::Healthy | Health::Unknown);
                if was_serving || self.good_streak >= thresholds.healthy {
                    Health::Healthy
                } else {
                    self.health
                }
            }
            Observation::Refused => {
                self.reset_streaks();
                Health::Unreachable
            }
            Observation::Misconfigured(_) => {
                self.reset_streaks();
                Health::Misconfigured
            }
            Observation::Failed(_) => {
                self.good_streak = 0;
                self.bad_streak = self.bad_streak.saturating_add(1);
                if self.bad_streak >= thresholds.unhealthy || self.health == Health::Unknown {
                    Health::Unhealthy
                } else {
                    self.health
                }
            }
        };
        self.set(next)
    }

    /// A new query could not be delivered at `now_ms` (refused, reset or timed out: Envoy does not say
    /// which; `now_ms` > 0). The [`DELIVERY_FAILURES`]th within [`DELIVERY_WINDOW_MS`] stops new queries
    /// until polls say otherwise; its running queries are not given up on. The caller polls at once
    /// after any: a poll tells whether it is unreachable.
    pub fn passive_failure(&mut self, now_ms: u64) -> Option<Health> {
        self.failed_deliveries.rotate_left(1);
        self.failed_deliveries[DELIVERY_FAILURES - 1] = now_ms.max(1);
        let oldest = self.failed_deliveries[0];
        if oldest == 0 || now_ms.saturating_sub(oldest) > DELIVERY_WINDOW_MS {
            return None;
        }
        self.failed_deliveries = [0; DELIVERY_FAILURES];
        self.reset_streaks();
        match self.health {
            Health::Unreachable | Health::Misconfigured => None,
            _ => self.set(Health::Unhealthy),
        }
    }

    /// The coordinator itself refused a new query (it answered 502/503/504): it takes no new queries
    /// until polls say otherwise, but it is alive and its running queries go on. Never upgrades a
    /// coordinator already known to be down or starting.
    pub fn refused_new_query(&mut self) -> Option<Health> {
        match self.health {
            Health::Unhealthy
            | Health::Unreachable
            | Health::Starting
            | Health::ShuttingDown
            | Health::Misconfigured => None,
            Health::Healthy | Health::Unknown => {
                self.reset_streaks();
                self.set(Health::ShuttingDown)
            }
        }
    }

    fn reset_streaks(&mut self) {
        self.good_streak = 0;
        self.bad_streak = 0;
    }

    fn set(&mut self, next: Health) -> Option<Health> {
        (next != self.health).then(|| {
            self.health = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::*;

    const T: Thresholds = Thresholds { healthy: 2, unhealthy: 3 };

    fn ok() -> Observation {
        Observation::Answered { starting: false, state: "ACTIVE".into() }
    }
    fn starting() -> Observation {
        Observation::Answered { starting: true, state: "ACTIVE".into() }
    }
    fn state(s: &str) -> Observation {
        Observation::Answered { starting: false, state: s.into() }
    }
    fn timeout() -> Observation {
        Observation::Failed("timeout".into())
    }
    fn misconfigured() -> Observation {
        Observation::Misconfigured("406".into())
    }

    /// Runs observations from a fresh tracker (`None` = a passive failure, 1 s after the one before)
    /// and returns the health after each.
    fn run(seen: &[Option<Observation>]) -> Vec<Health> {
        let mut tracker = Tracker::default();
        let mut now_ms = 0;
        seen.iter()
            .map(|s| {
                now_ms += 1_000;
                match s {
                    Some(o) => tracker.observe(o, T),
                    None => tracker.passive_failure(now_ms),
                };
                tracker.health()
            })
            .collect()
    }

    #[test]
    fn transitions() {
        let passive = None;
        #[rustfmt::skip]
        let cases: Vec<(Vec<Option<Observation>>, Vec<Health>)> = vec![
            (vec![Some(ok())], vec![Healthy]),
            (vec![Some(starting()), Some(ok()), Some(ok())], vec![Starting, Starting, Healthy]),
            (vec![Some(ok()), Some(Observation::Refused)], vec![Healthy, Unreachable]),
            (vec![Some(ok()), passive.clone(), Some(Observation::Refused)], vec![Healthy, Healthy, Unreachable]),
            (vec![Some(ok()), passive.clone(), passive.clone(), passive.clone()], vec![Healthy, Healthy, Healthy, Unhealthy]),
            (vec![Some(Observation::Refused), passive.clone()], vec![Unreachable, Unreachable]),
            (vec![Some(Observation::Refused), Some(timeout()), Some(timeout()), Some(timeout())], vec![Unreachable, Unreachable, Unreachable, Unhealthy]),
            (vec![Some(ok()), Some(timeout()), Some(timeout()), Some(timeout())], vec![Healthy, Healthy, Healthy, Unhealthy]),
            (vec![Some(ok()), Some(timeout()), Some(ok()), Some(timeout()), Some(timeout())], vec![Healthy, Healthy, Healthy, Healthy, Healthy]),
            (vec![Some(timeout())], vec![Unhealthy]),
            (vec![Some(Observation::Refused), Some(ok()), Some(ok())], vec![Unreachable, Unreachable, Healthy]),
            (vec![Some(ok()), Some(state("SHUTTING_DOWN"))], vec![Healthy, ShuttingDown]),
            (vec![Some(ok()), Some(state("DRAINING")), Some(ok()), Some(ok())], vec![Healthy, ShuttingDown, ShuttingDown, Healthy]),
            (vec![Some(state("active"))], vec![Healthy]),
            (vec![Some(ok()), passive.clone(), passive.clone(), passive.clone(), Some(ok()), Some(ok())], vec![Healthy, Healthy, Healthy, Unhealthy, Unhealthy, Healthy]),
            (vec![passive.clone()], vec![Unknown]),
            (vec![Some(starting()), passive.clone(), passive.clone(), passive.clone(), Some(starting())], vec![Starting, Starting, Starting, Unhealthy, Starting]),
            // 406 to a poll with X-Forwarded-Proto: out at once; back after healthy_threshold good polls.
            (vec![Some(ok()), Some(misconfigured()), Some(ok()), Some(ok())], vec![Healthy, Misconfigured, Misconfigured, Healthy]),
            (vec![Some(misconfigured()), passive.clone(), passive.clone(), passive], vec![Misconfigured, Misconfigured, Misconfigured, Misconfigured]),
        ];
        for (seen, expected) in cases {
            assert_eq!(run(&seen), expected, "{seen:?}");
        }
    }

    #[test]
    fn a_refusal_is_not_a_death() {
        let mut tracker = Tracker::default();
        tracker.observe(&ok(), T);
        assert_eq!(tracker.refused_new_query(), Some(ShuttingDown));
        assert!(!tracker.health().takes_new_queries() && !tracker.health().is_down());
        assert_eq!(tracker.observe(&ok(), T), None, "one good poll is not enough");
        assert_eq!(tracker.observe(&ok(), T), Some(Healthy));
        tracker.observe(&Observation::Refused, T);
        assert_eq!(tracker.refused_new_query(), None, "a dead coordinator stays dead");
        let mut starting = Tracker::default();
        starting.observe(&starting_(), T);
        assert_eq!(starting.refused_new_query(), None);
    }

    fn starting_() -> Observation {
        starting()
    }

    #[test]
    fn reports_changes_only() {
        let mut tracker = Tracker::default();
        assert_eq!(tracker.observe(&ok(), T), Some(Healthy));
        assert_eq!(tracker.observe(&ok(), T), None);
        assert_eq!((tracker.passive_failure(1), tracker.passive_failure(2)), (None, None));
        assert_eq!(tracker.passive_failure(3), Some(Unhealthy));
        assert_eq!(tracker.passive_failure(4), None);
    }

    /// Failed deliveries spread over more than the window never eject; three within it do.
    #[test]
    fn failed_deliveries_count_within_the_window() {
        let mut tracker = Tracker::default();
        tracker.observe(&ok(), T);
        let spread = [1, 6_000, 12_000, 18_000, 24_000];
        assert!(spread.iter().all(|&t| tracker.passive_failure(t).is_none()), "one every 6 s");
        assert_eq!(tracker.health(), Healthy);
        assert_eq!(tracker.passive_failure(25_000), Some(Unhealthy), "three within 10 s");
    }

    #[test]
    fn who_takes_new_queries() {
        let all = [Unknown, Healthy, Starting, Unhealthy, Unreachable, ShuttingDown, Misconfigured];
        assert_eq!(all.map(Health::takes_new_queries), [true, true, false, false, false, false, false]);
        assert_eq!(all.map(Health::is_down), [false, false, false, false, true, false, false]);
    }
}
