//! What the router has learned about where queries live: query id → owning cluster name.
//!
//! Owners are learned from the first answer of each new query (`POST /v1/statement`) and kept in a
//! bounded moka cache (least recently used out first, forgotten after an idle period). Cluster *names*
//! are stored rather than indices so that what was learned stays true when the config changes.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

use crate::config::AffinitySettings;
use crate::query_id::QueryId;

/// Learned query owners.
#[derive(Clone)]
pub struct Affinity {
    owners: Cache<QueryId, Arc<str>>,
}

impl Affinity {
    pub fn new(settings: &AffinitySettings) -> Affinity {
        let owners = Cache::builder()
            .max_capacity(settings.max_queries)
            .time_to_idle(Duration::from_secs(settings.idle_expiry_seconds))
            .build();
        Affinity { owners }
    }

    /// Records that `cluster` owns `query`.
    pub fn learn(&self, query: QueryId, cluster: Arc<str>) {
        self.owners.insert(query, cluster);
    }

    /// The cluster that owns `query`, if learned (and not yet forgotten).
    pub fn owner_of(&self, query: &QueryId) -> Option<Arc<str>> {
        self.owners.get(query)
    }

    /// How many owners are remembered (approximate until moka runs its pending maintenance).
    pub fn len(&self) -> u64 {
        self.owners.run_pending_tasks();
        self.owners.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> QueryId {
        QueryId::parse(&format!("20260101_120000_{n:05}_abcde")).unwrap()
    }

    #[test]
    fn learns_and_recalls() {
        let affinity = Affinity::new(&AffinitySettings::default());
        assert_eq!(affinity.owner_of(&id(1)), None);
        affinity.learn(id(1), "trino-a".into());
        affinity.learn(id(2), "trino-b".into());
        assert_eq!(affinity.owner_of(&id(1)).as_deref(), Some("trino-a"));
        assert_eq!(affinity.owner_of(&id(2)).as_deref(), Some("trino-b"));
        affinity.learn(id(1), "trino-c".into());
        assert_eq!(affinity.owner_of(&id(1)).as_deref(), Some("trino-c"));
    }

    #[test]
    fn stays_bounded() {
        let affinity = Affinity::new(&AffinitySettings { max_queries: 100, idle_expiry_seconds: 60 });
        for n in 0..1_000 {
            affinity.learn(id(n), "trino-a".into());
        }
        assert!(affinity.len() <= 100, "{} entries", affinity.len());
        assert!(!affinity.is_empty());
    }
}
