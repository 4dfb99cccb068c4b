//! What the router has learned about where queries live, without a database.
//!
//! Two tables:
//! - **coordinator ids**: a query id ends with its coordinator's random 5-character id, fixed for the
//!   coordinator process's life. Once one query of a coordinator is placed, every query id with that
//!   suffix is placed without an entry of its own, so memory does not grow with the number of queries.
//!   Two clusters sharing a suffix (1 in 32⁵ per pair) make that suffix ambiguous: from then on its
//!   queries are placed by exact entries only. A claim that a known suffix belongs to a second cluster
//!   is only a dispute until that cluster's coordinator confirms it knows the query
//!   ([`Affinity::confirm_shared`]): a forged claim cannot make a suffix ambiguous. Coordinators that publish their id (`coordinatorId` in
//!   `/v1/info`, Trino 477+) are learned from the poller before any of their queries is seen
//!   ([`Affinity::publish`]); a cluster publishing a new id has restarted, and its older ids are
//!   *retired*: their queries are gone, and the router says so rather than sending them anywhere.
//! - **exact entries** (query id → cluster) for what suffixes cannot place: ids from an ambiguous
//!   suffix, ids not of Trino's generated shape. A bounded moka cache: least recently used out first,
//!   forgotten after an idle period.
//!
//! Cluster *names* are stored rather than indices so that what was learned stays true across reloads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use crate::domain::config::AffinitySettings;
use crate::domain::query_id::QueryId;

/// Coordinator ids kept at most; past this, new coordinators' queries are placed by exact entries.
pub const MAX_COORDINATOR_IDS: usize = 65_536;

/// Who a coordinator id belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SuffixOwner {
    /// One cluster's coordinator; the number says when it was learned (larger is more recent).
    One(Arc<str>, u64),
    /// Seen on two clusters: ambiguous.
    Shared,
    /// This cluster's coordinator had this id before it restarted: its queries are gone.
    Retired(Arc<str>),
}

/// What a published coordinator id changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Already known as this cluster's.
    Unchanged,
    /// New: the cluster's queries are placed by it from now on; `retired` older ids of the cluster
    /// (a restart) no longer place anything.
    Learned { retired: usize },
    /// Another cluster has it too: ambiguous from now on.
    Shared,
    /// The table is full: not learned.
    Full,
}

/// How a query was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Suffix,
    Exact,
    /// The suffix is known to belong to another cluster: the claim must be checked with the claimed
    /// cluster's coordinator before the suffix is taken as shared ([`Affinity::confirm_shared`]).
    Disputed,
}

/// How long a transaction-starting query is watched for its `X-Trino-Started-Transaction-Id`.
pub const WATCH_WINDOW: Duration = Duration::from_secs(600);

/// A transaction not used for this long is forgotten. Trino aborts a transaction idle for
/// `transaction.idle-timeout` (5 minutes by default), so one unused this long is gone anyway.
pub const TRANSACTION_IDLE_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// Learned query owners.
pub struct Affinity {
    suffixes: RwLock<HashMap<Box<str>, SuffixOwner>>,
    /// Counts changes to `suffixes` (also numbers learned ids, most recent highest).
    suffix_changes: AtomicU64,
    exact: Cache<QueryId, Arc<str>>,
    /// Transaction id → the cluster that started it (a transaction exists only there).
    transactions: Cache<String, Arc<str>>,
    /// `START TRANSACTION` queries whose answers will name a new transaction.
    watched: Cache<QueryId, ()>,
}

impl Affinity {
    pub fn new(settings: &AffinitySettings) -> Affinity {
        // Least recently used out first: a new query must be remembered at once (moka's default
        // admission policy would turn a new entry away from a full cache of often-read ones).
        let exact = Cache::builder()
            .max_capacity(settings.max_queries)
            .eviction_policy(EvictionPolicy::lru())
            .time_to_idle(Duration::from_secs(settings.idle_expiry_seconds))
            .build();
        let transactions = Cache::builder()
            .max_capacity(settings.max_queries)
            .eviction_policy(EvictionPolicy::lru())
            .time_to_idle(TRANSACTION_IDLE_EXPIRY)
            .build();
        let watched = Cache::builder()
            .max_capacity(settings.max_queries)
            .eviction_policy(EvictionPolicy::lru())
            .time_to_live(WATCH_WINDOW)
            .build();
        Affinity {
            suffixes: RwLock::new(HashMap::new()),
            suffix_changes: AtomicU64::new(0),
            exact,
            transactions,
            watched,
        }
    }

    /// Records that `cluster` started transaction `id`.
    pub fn learn_transaction(&self, id: &str, cluster: Arc<str>) {
        tracing::debug!(transaction = id, %cluster, "learned a transaction's cluster");
        self.transactions.insert(id.to_owned(), cluster);
    }

    /// The transaction ended.
    pub fn forget_transaction(&self, id: &str) {
        self.transactions.invalidate(id);
    }

    /// The cluster that started transaction `id`, if known.
    pub fn transaction_owner(&self, id: &str) -> Option<Arc<str>> {
        self.transactions.get(id)
    }

    /// Watch `query`'s answers for the transaction it starts.
    pub fn watch(&self, query: QueryId) {
        self.watched.insert(query, ());
    }

    pub fn is_watched(&self, query: &QueryId) -> bool {
        self.watched.contains_key(query)
    }

    /// Records that `cluster` owns `query`; returns how the query will be placed from now on.
    pub fn learn(&self, query: QueryId, cluster: Arc<str>) -> Placement {
        let Some(suffix) = query.coordinator_id() else {
            self.exact.insert(query, cluster);
            return Placement::Exact;
        };
        let known = self.read().get(suffix).cloned();
        match known {
            Some(SuffixOwner::One(owner, _)) if owner == cluster => Placement::Suffix,
            Some(SuffixOwner::Shared) => {
                self.exact.insert(query, cluster);
                Placement::Exact
            }
            Some(SuffixOwner::One(owner, _)) => {
                tracing::debug!(
                    coordinator_id = suffix,
                    first = %owner,
                    second = %cluster,
                    "a known coordinator id claimed for a second cluster: to be confirmed"
                );
                Placement::Disputed
            }
            None | Some(SuffixOwner::Retired(_)) => {
                let mut suffixes = self.write();
                if suffixes.len() >= MAX_COORDINATOR_IDS && !suffixes.contains_key(suffix) {
                    drop(suffixes);
                    self.exact.insert(query, cluster);
                    return Placement::Exact;
                }
                let restarted =
                    suffixes.values().any(|o| matches!(o, SuffixOwner::One(c, _) if *c == cluster));
                let order = self.suffix_changes.fetch_add(1, Ordering::Relaxed) + 1;
                suffixes.insert(suffix.into(), SuffixOwner::One(cluster.clone(), order));
                drop(suffixes);
                if restarted {
                    tracing::info!(%cluster, coordinator_id = suffix, "cluster has a new coordinator id (restarted?)");
                } else {
                    tracing::info!(%cluster, coordinator_id = suffix, "learned a cluster's coordinator id");
                }
                Placement::Suffix
            }
        }
    }

    /// `cluster`'s coordinator confirmed it knows `query`, whose suffix another cluster owns: the two
    /// share the suffix, whose queries are placed by exact entries from now on.
    pub fn confirm_shared(&self, query: QueryId, cluster: Arc<str>) {
        let Some(suffix) = query.coordinator_id() else { return };
        let current = self.read().get(suffix).cloned();
        match current {
            Some(SuffixOwner::One(owner, _)) if owner != cluster => {
                self.share(suffix, &owner, &cluster);
                self.exact.insert(query, cluster);
            }
            Some(SuffixOwner::Shared) => self.exact.insert(query, cluster),
            _ => {}
        }
    }

    /// `cluster`'s coordinator says its id is `suffix` (its `/v1/info`): its queries are placed by it
    /// from now on, and every other id the cluster had is retired (the coordinator restarted: their
    /// queries are gone).
    pub fn publish(&self, suffix: &str, cluster: Arc<str>) -> Published {
        let mut suffixes = self.write();
        let current = suffixes.get(suffix).cloned();
        let outcome = match current {
            Some(SuffixOwner::One(owner, _)) if owner == cluster => Published::Unchanged,
            Some(SuffixOwner::Shared) => return Published::Shared,
            Some(SuffixOwner::One(owner, _)) => {
                drop(suffixes);
                self.share(suffix, &owner, &cluster);
                return Published::Shared;
            }
            None if suffixes.len() >= MAX_COORDINATOR_IDS => return Published::Full,
            None | Some(SuffixOwner::Retired(_)) => {
                let order = self.suffix_changes.fetch_add(1, Ordering::Relaxed) + 1;
                suffixes.insert(suffix.into(), SuffixOwner::One(cluster.clone(), order));
                Published::Learned { retired: 0 }
            }
        };
        let mut retired = 0;
        for (id, owner) in suffixes.iter_mut() {
            if &**id != suffix && matches!(owner, SuffixOwner::One(c, _) if *c == cluster) {
                *owner = SuffixOwner::Retired(cluster.clone());
                retired += 1;
            }
        }
        if retired > 0 {
            self.suffix_changes.fetch_add(1, Ordering::Relaxed);
        }
        drop(suffixes);
        match outcome {
            _ if retired > 0 => {
                tracing::info!(%cluster, coordinator_id = suffix, retired, "cluster publishes a new coordinator id (restarted): the queries of its older ids are gone");
                Published::Learned { retired }
            }
            Published::Learned { .. } => {
                tracing::info!(%cluster, coordinator_id = suffix, "learned a cluster's coordinator id from its /v1/info");
                outcome
            }
            other => other,
        }
    }

    /// Two clusters' coordinators have the same id: from now on its queries are placed one by one.
    fn share(&self, suffix: &str, first: &Arc<str>, second: &Arc<str>) {
        tracing::warn!(
            coordinator_id = suffix,
            %first,
            %second,
            "two clusters' coordinators share an id: their queries are placed one by one from now on"
        );
        self.write().insert(suffix.into(), SuffixOwner::Shared);
        self.suffix_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// The cluster whose coordinator ran `query` before it restarted (its id is retired), if known.
    pub fn restarted_owner(&self, query: &QueryId) -> Option<Arc<str>> {
        match query.coordinator_id().and_then(|s| self.read().get(s).cloned()) {
            Some(SuffixOwner::Retired(cluster)) if !self.exact.contains_key(query) => Some(cluster),
            _ => None,
        }
    }

    /// The cluster that owns `query`, if known (and not yet forgotten).
    pub fn owner_of(&self, query: &QueryId) -> Option<Arc<str>> {
        if let Some(SuffixOwner::One(owner, _)) =
            query.coordinator_id().and_then(|s| self.read().get(s).cloned())
        {
            return Some(owner);
        }
        self.exact.get(query)
    }

    /// Whether a suffix is known to be ambiguous (so lookups must go by exact id).
    pub fn is_shared_suffix(&self, suffix: &str) -> bool {
        self.read().get(suffix) == Some(&SuffixOwner::Shared)
    }

    /// Exact entries remembered (approximate until moka runs its pending maintenance).
    pub fn exact_entries(&self) -> u64 {
        self.exact.run_pending_tasks();
        self.exact.entry_count()
    }

    /// Coordinator ids known.
    pub fn coordinator_ids(&self) -> usize {
        self.read().len()
    }

    /// Changes the coordinator-id table has seen: when this did not move, neither did
    /// [`Affinity::recent_coordinator_ids`].
    pub fn coordinator_id_changes(&self) -> u64 {
        self.suffix_changes.load(Ordering::Relaxed)
    }

    /// The coordinator ids that place `cluster`'s queries (not the ambiguous ones), most recently
    /// learned first, at most `limit`. A coordinator gets a new id when it restarts, so older ids
    /// name queries that are gone.
    pub fn recent_coordinator_ids(&self, cluster: &str, limit: usize) -> Vec<Box<str>> {
        let mut ids: Vec<(u64, Box<str>)> = self
            .read()
            .iter()
            .filter_map(|(id, owner)| match owner {
                SuffixOwner::One(c, order) if &**c == cluster => Some((*order, id.clone())),
                _ => None,
            })
            .collect();
        ids.sort_unstable_by_key(|(order, _)| std::cmp::Reverse(*order));
        ids.into_iter().take(limit).map(|(_, id)| id).collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Box<str>, SuffixOwner>> {
        self.suffixes.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Box<str>, SuffixOwner>> {
        self.suffixes.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32, suffix: &str) -> QueryId {
        QueryId::parse(&format!("20260101_120000_{n:05}_{suffix}")).unwrap()
    }

    fn owner(affinity: &Affinity, id: &QueryId) -> Option<String> {
        affinity.owner_of(id).map(|c| c.to_string())
    }

    #[test]
    fn recent_coordinator_ids_per_cluster() {
        let affinity = Affinity::new(&AffinitySettings::default());
        let changes = affinity.coordinator_id_changes();
        for (n, suffix, cluster) in
            [(1, "aaaaa", "a"), (2, "bbbbb", "b"), (3, "ccccc", "a"), (4, "ddddd", "a"), (5, "ccccc", "a")]
        {
            affinity.learn(id(n, suffix), cluster.into());
        }
        assert_eq!(affinity.coordinator_id_changes(), changes + 4, "a known id changes nothing");
        assert_eq!(
            affinity.recent_coordinator_ids("a", 2),
            ["ddddd".into(), "ccccc".into()] as [Box<str>; 2]
        );
        assert_eq!(affinity.recent_coordinator_ids("b", 9), ["bbbbb".into()] as [Box<str>; 1]);
        affinity.learn(id(6, "bbbbb"), "a".into());
        assert_eq!(affinity.recent_coordinator_ids("b", 9).len(), 1, "an unconfirmed claim changes nothing");
        affinity.confirm_shared(id(6, "bbbbb"), "a".into());
        assert!(affinity.recent_coordinator_ids("b", 9).is_empty(), "an ambiguous id places nothing");
        assert_eq!(affinity.recent_coordinator_ids("a", 9).len(), 3);
    }

    #[test]
    fn one_query_places_its_whole_coordinator() {
        let affinity = Affinity::new(&AffinitySettings::default());
        assert_eq!(owner(&affinity, &id(1, "aaaaa")), None);
        assert_eq!(affinity.learn(id(1, "aaaaa"), "trino-a".into()), Placement::Suffix);
        assert_eq!(affinity.learn(id(1, "bbbbb"), "trino-b".into()), Placement::Suffix);
        for n in 2..100 {
            assert_eq!(owner(&affinity, &id(n, "aaaaa")).as_deref(), Some("trino-a"));
            assert_eq!(owner(&affinity, &id(n, "bbbbb")).as_deref(), Some("trino-b"));
        }
        assert_eq!(owner(&affinity, &id(1, "ccccc")), None);
        assert_eq!(affinity.learn(id(2, "aaaaa"), "trino-a".into()), Placement::Suffix);
        assert_eq!(affinity.exact_entries(), 0, "no per-query memory in the normal case");
        assert_eq!(affinity.coordinator_ids(), 2);
    }

    #[test]
    fn shared_suffix_falls_back_to_exact_entries() {
        let affinity = Affinity::new(&AffinitySettings::default());
        affinity.learn(id(1, "abcde"), "trino-a".into());
        assert_eq!(affinity.learn(id(7, "abcde"), "trino-b".into()), Placement::Disputed);
        assert!(!affinity.is_shared_suffix("abcde"), "a claim alone changes nothing");
        assert_eq!(owner(&affinity, &id(7, "abcde")).as_deref(), Some("trino-a"));
        affinity.confirm_shared(id(7, "abcde"), "trino-b".into());
        assert!(affinity.is_shared_suffix("abcde"));
        assert_eq!(owner(&affinity, &id(7, "abcde")).as_deref(), Some("trino-b"));
        assert_eq!(owner(&affinity, &id(1, "abcde")), None, "ambiguous now: found by discovery, not guessed");
        assert_eq!(affinity.learn(id(8, "abcde"), "trino-a".into()), Placement::Exact);
        assert_eq!(owner(&affinity, &id(8, "abcde")).as_deref(), Some("trino-a"));
        assert_eq!(owner(&affinity, &id(9, "abcde")), None);
    }

    #[test]
    fn restart_draws_a_new_suffix() {
        let affinity = Affinity::new(&AffinitySettings::default());
        affinity.learn(id(1, "aaaaa"), "trino-a".into());
        assert_eq!(affinity.learn(id(1, "zzzzz"), "trino-a".into()), Placement::Suffix);
        assert_eq!(owner(&affinity, &id(5, "zzzzz")).as_deref(), Some("trino-a"));
        assert_eq!(owner(&affinity, &id(5, "aaaaa")).as_deref(), Some("trino-a"));
    }

    #[test]
    fn published_ids_place_queries_before_any_is_seen_and_a_new_one_retires_the_old() {
        let affinity = Affinity::new(&AffinitySettings::default());
        assert_eq!(affinity.publish("aaaaa", "trino-a".into()), Published::Learned { retired: 0 });
        assert_eq!(owner(&affinity, &id(7, "aaaaa")).as_deref(), Some("trino-a"), "no query seen");
        assert_eq!(affinity.publish("aaaaa", "trino-a".into()), Published::Unchanged);
        affinity.learn(id(1, "ccccc"), "trino-a".into()); // a query answer names another id
        // trino-a restarts: its new id retires both older ones.
        assert_eq!(affinity.publish("zzzzz", "trino-a".into()), Published::Learned { retired: 2 });
        assert_eq!(owner(&affinity, &id(7, "aaaaa")), None);
        assert_eq!(affinity.restarted_owner(&id(7, "aaaaa")).as_deref(), Some("trino-a"));
        assert_eq!(affinity.restarted_owner(&id(1, "ccccc")).as_deref(), Some("trino-a"));
        assert_eq!(owner(&affinity, &id(8, "zzzzz")).as_deref(), Some("trino-a"));
        assert_eq!(affinity.recent_coordinator_ids("trino-a", 16), ["zzzzz".into()] as [Box<str>; 1]);
        // Another cluster publishing the same id makes it ambiguous; a retired id may be drawn again.
        assert_eq!(affinity.publish("zzzzz", "trino-b".into()), Published::Shared);
        assert!(affinity.is_shared_suffix("zzzzz"));
        assert_eq!(affinity.publish("aaaaa", "trino-b".into()), Published::Learned { retired: 0 });
        assert_eq!(owner(&affinity, &id(9, "aaaaa")).as_deref(), Some("trino-b"));
        assert_eq!(affinity.restarted_owner(&id(9, "aaaaa")), None);
    }

    #[test]
    fn transactions_and_watches() {
        let affinity = Affinity::new(&AffinitySettings::default());
        assert_eq!(affinity.transaction_owner("t1"), None);
        affinity.learn_transaction("t1", "trino-b".into());
        assert_eq!(affinity.transaction_owner("t1").as_deref(), Some("trino-b"));
        affinity.forget_transaction("t1");
        assert_eq!(affinity.transaction_owner("t1"), None);
        assert!(!affinity.is_watched(&id(1, "aaaaa")));
        affinity.watch(id(1, "aaaaa"));
        assert!(affinity.is_watched(&id(1, "aaaaa")) && !affinity.is_watched(&id(2, "aaaaa")));
    }

    /// Regression: with moka's default (TinyLFU) admission, a full cache of often-read entries turned
    /// every new entry away; a new query's follow-ups then missed again and again.
    #[test]
    fn a_full_cache_still_remembers_new_queries() {
        let settings = AffinitySettings { max_queries: 100, ..Default::default() };
        let affinity = Affinity::new(&settings);
        let odd = |n: u32| QueryId::parse(&format!("query_{n}")).unwrap();
        for n in 0..100 {
            affinity.learn(odd(n), "trino-a".into());
            for _ in 0..3 {
                affinity.owner_of(&odd(n));
            }
        }
        affinity.exact.run_pending_tasks();
        for n in 1000..1010 {
            affinity.learn(odd(n), "trino-b".into());
            affinity.exact.run_pending_tasks();
            assert_eq!(
                owner(&affinity, &odd(n)).as_deref(),
                Some("trino-b"),
                "new query {n} forgotten at once"
            );
        }
    }

    #[test]
    fn odd_ids_use_bounded_exact_entries() {
        let settings = AffinitySettings { max_queries: 100, idle_expiry_seconds: 60, ..Default::default() };
        let affinity = Affinity::new(&settings);
        let odd = |n: u32| QueryId::parse(&format!("query_{n}")).unwrap();
        assert_eq!(affinity.learn(odd(1), "trino-a".into()), Placement::Exact);
        assert_eq!(owner(&affinity, &odd(1)).as_deref(), Some("trino-a"));
        for n in 0..1_000 {
            affinity.learn(odd(n), "trino-a".into());
        }
        assert!(affinity.exact_entries() <= 100, "{} entries", affinity.exact_entries());
    }
}
