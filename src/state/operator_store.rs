//! This replica's copy of the operator's book ([`crate::domain::operator_state`]): every cluster's
//! operator say with its version, this replica's name and clock, and whether the book is known to be
//! complete yet (settled: the state file and the peers were heard from, or the wait for them ended).
//!
//! The store only keeps the book; [`crate::state::router::Router`] applies what changes to the
//! clusters' run-time state, and `operate::fleet` exchanges it with the peers and writes the state file
//! whenever [`OperatorStore::generation`] moves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::domain::operator_state::{Book, Clock, Entry, Operator};

/// The book, the clock and what they are for.
pub struct OperatorStore {
    replica: Arc<str>,
    inner: Mutex<Inner>,
    /// Bumped on every change of the book.
    generation: AtomicU64,
    /// Notified on every change of the book (the fleet task pushes it and writes the file).
    changed: Notify,
    settled: AtomicBool,
    /// Whether a state file was read at start.
    file_read: AtomicBool,
}

struct Inner {
    book: Book,
    clock: Clock,
}

/// Milliseconds since the Unix epoch on this machine's clock.
fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl OperatorStore {
    /// An empty book of replica `replica`, settled (a replica on its own knows all there is); a server
    /// that has peers or a state file to hear from first calls [`OperatorStore::unsettle`].
    pub fn new(replica: Arc<str>) -> OperatorStore {
        OperatorStore {
            replica,
            inner: Mutex::new(Inner { book: Book::default(), clock: Clock::default() }),
            generation: AtomicU64::new(0),
            changed: Notify::new(),
            settled: AtomicBool::new(true),
            file_read: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the book whole (one insert), so a panic elsewhere cannot corrupt it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// This replica's name (the origin of its writes).
    pub fn replica(&self) -> &Arc<str> {
        &self.replica
    }

    /// A copy of the book.
    pub fn book(&self) -> Book {
        self.lock().book.clone()
    }

    /// A cluster's entry, if one was ever written.
    pub fn entry(&self, cluster: &str) -> Option<Entry> {
        self.lock().book.get(cluster).cloned()
    }

    /// Writes a say made here (an admin command, a config flip) with a version newer than anything seen.
    pub fn write(&self, cluster: &str, operator: Operator, reason: &str, config_enabled: bool) -> Entry {
        let entry = {
            let mut inner = self.lock();
            let version = inner.clock.tick(wall_ms(), &self.replica);
            let entry = Entry { operator, reason: reason.to_owned(), version, config_enabled };
            inner.book.offer(cluster, entry.clone());
            entry
        };
        self.bump();
        entry
    }

    /// Takes whatever is newer of a peer's (or the state file's) entries; returns the clusters whose
    /// entry changed. The clock moves past every version seen, changed or not.
    pub fn merge(&self, entries: Vec<(String, Entry)>) -> Vec<Arc<str>> {
        let changed = {
            let mut inner = self.lock();
            for (_, entry) in &entries {
                inner.clock.observe(&entry.version);
            }
            inner.book.merge(entries.iter().map(|(cluster, entry)| (cluster.as_str(), entry.clone())))
        };
        if !changed.is_empty() {
            self.bump();
        }
        changed
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// Moves on every change: what was written to the state file is current while this has not moved.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Notified when the book changed.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Whether this replica has heard what there was to hear (its state file, its peers) or stopped
    /// waiting: until then it reports NOT_SERVING.
    pub fn settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed)
    }

    pub fn set_settled(&self) {
        self.settled.store(true, Ordering::Relaxed);
    }

    /// A state file was read into the book at start.
    pub fn set_file_read(&self) {
        self.file_read.store(true, Ordering::Relaxed);
    }

    pub fn file_read(&self) -> bool {
        self.file_read.load(Ordering::Relaxed)
    }

    /// Not settled until [`OperatorStore::set_settled`]: there are peers or a state file to hear first.
    pub fn unsettle(&self) {
        self.settled.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::operator_state::Version;

    #[test]
    fn writes_are_newer_than_what_was_merged() {
        let store = OperatorStore::new("r0".into());
        let far_ahead = Entry {
            operator: Operator::Draining,
            reason: "from a peer with a fast clock".into(),
            version: Version { wall_ms: wall_ms() + 3_600_000, counter: 5, origin: "r1".into() },
            config_enabled: true,
        };
        assert_eq!(store.merge(vec![("blue".into(), far_ahead.clone())]), vec![Arc::from("blue")]);
        let before = store.generation();
        let written = store.write("blue", Operator::Active, "back", true);
        assert!(written.version > far_ahead.version, "{written:?}");
        assert_eq!(store.entry("blue").unwrap().operator, Operator::Active);
        assert_eq!(store.generation(), before + 1);
        assert!(store.merge(vec![("blue".into(), far_ahead)]).is_empty(), "the older write changes nothing");
        assert_eq!(store.generation(), before + 1);
        assert!(store.settled(), "a replica on its own is settled");
    }
}
