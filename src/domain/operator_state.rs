//! The operator's say over each cluster (active, draining, disabled) as every router replica keeps it,
//! and the rule that makes the replicas agree on it without a database.
//!
//! Each cluster name has one register, last writer wins ([`Book`]). A write carries a [`Version`]: a
//! hybrid logical clock (wall-clock milliseconds, a counter, the replica that wrote it). A replica's
//! clock never runs behind a version it has seen ([`Clock`]), so a change made after another was seen
//! is always newer than it, whatever the replicas' clocks say; changes made concurrently on two replicas
//! are ordered by their wall clocks, then by replica name. Merging is commutative, associative and
//! idempotent ([`Book::merge`]): replicas that have exchanged their books hold the same book, in
//! whatever order and however often the exchanges happened.
//!
//! A cluster with no entry follows the config's `enabled:` (the declared baseline). Each entry records
//! the `enabled:` its writer's config had for that cluster; when a replica's config file changes that
//! flag, the file is newer than the entry and overrides it ([`config_overrides`]). An entry written
//! under the current flag stands, so a replica that comes back with an old file never undoes an
//! operator's later command.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The operator's say over a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// Takes new queries when healthy.
    Active,
    /// Takes no new queries; its queries finish. Reported drained when none is left in flight.
    Draining,
    /// Takes no new queries (a standby, e.g. the idle side of a blue/green pair).
    Disabled,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Active => "active",
            Operator::Draining => "draining",
            Operator::Disabled => "disabled",
        }
    }

    /// The state a name written by [`Operator::as_str`] stands for.
    pub fn parse(text: &str) -> Option<Operator> {
        match text {
            "active" => Some(Operator::Active),
            "draining" => Some(Operator::Draining),
            "disabled" => Some(Operator::Disabled),
            _ => None,
        }
    }

    /// What the config's `enabled:` declares.
    pub fn declared(enabled: bool) -> Operator {
        if enabled { Operator::Active } else { Operator::Disabled }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a write happened and who made it; ordered by wall time, then counter, then replica name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Milliseconds since the Unix epoch (the writer's clock, never behind what it had seen).
    pub wall_ms: u64,
    /// Orders writes within one millisecond (and writes made while the wall clock lagged).
    pub counter: u32,
    /// The replica that made the write.
    pub origin: Arc<str>,
}

/// One cluster's register: the operator's say, why, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub operator: Operator,
    /// What the operator said (`--reason`), or why the router wrote it; may be empty.
    pub reason: String,
    pub version: Version,
    /// The `enabled:` the writer's config declared for the cluster when it wrote this.
    pub config_enabled: bool,
}

impl Entry {
    /// The total order the merge keeps the greatest of: the version, then (for two different writes
    /// under one version, which only a replica name used twice can make) the content, so that every
    /// replica still keeps the same one.
    fn precedence(&self, other: &Entry) -> Ordering {
        self.version
            .cmp(&other.version)
            .then(self.operator.cmp(&other.operator))
            .then(self.config_enabled.cmp(&other.config_enabled))
            .then_with(|| self.reason.cmp(&other.reason))
    }
}

/// The longest reason kept (longer ones are cut, on a character boundary).
pub const MAX_REASON_BYTES: usize = 512;
/// The most entries a book takes from a peer or a file; more is refused as nonsense.
pub const MAX_ENTRIES: usize = 4096;
/// The longest cluster name an entry may have.
pub const MAX_NAME_BYTES: usize = 253;

/// Checks an entry that came from outside the process (a peer, a state file): a name of sane length and
/// a reason cut to [`MAX_REASON_BYTES`].
pub fn check_entry(cluster: &str, mut entry: Entry) -> Result<Entry, String> {
    if cluster.is_empty() || cluster.len() > MAX_NAME_BYTES {
        return Err(format!("a cluster name of {} bytes", cluster.len()));
    }
    if entry.version.origin.is_empty() || entry.version.origin.len() > MAX_NAME_BYTES {
        return Err(format!("cluster `{cluster}`: a replica name of {} bytes", entry.version.origin.len()));
    }
    entry.reason = cut_reason(&entry.reason);
    Ok(entry)
}

/// A reason as kept: at most [`MAX_REASON_BYTES`], cut on a character boundary.
pub fn cut_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

/// Every cluster's register.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    entries: BTreeMap<Arc<str>, Entry>,
}

impl Book {
    /// The entry of a cluster, if anyone ever wrote one.
    pub fn get(&self, cluster: &str) -> Option<&Entry> {
        self.entries.get(cluster)
    }

    /// Every entry, by cluster name.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Entry)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The say in force over a cluster whose config declares `enabled`.
    pub fn effective(&self, cluster: &str, enabled: bool) -> Operator {
        self.get(cluster).map_or(Operator::declared(enabled), |e| e.operator)
    }

    /// The newest version in the book.
    pub fn latest(&self) -> Option<&Version> {
        self.entries.values().map(|e| &e.version).max()
    }

    /// Keeps `entry` if it is newer than the cluster's; returns whether it was.
    pub fn offer(&mut self, cluster: &str, entry: Entry) -> bool {
        match self.entries.get_mut(cluster) {
            Some(current) if entry.precedence(current) != Ordering::Greater => false,
            Some(current) => {
                *current = entry;
                true
            }
            None => {
                self.entries.insert(cluster.into(), entry);
                true
            }
        }
    }

    /// Takes whatever of `other` is newer; returns the clusters whose entry changed (name order).
    pub fn merge<'a>(&mut self, other: impl IntoIterator<Item = (&'a str, Entry)>) -> Vec<Arc<str>> {
        let mut changed: Vec<Arc<str>> = Vec::new();
        for (cluster, entry) in other {
            if self.offer(cluster, entry) && !changed.iter().any(|c| &**c == cluster) {
                changed.push(cluster.into());
            }
        }
        changed.sort();
        changed
    }
}

/// A replica's hybrid logical clock: the greatest (wall, counter) it has written or seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    wall_ms: u64,
    counter: u32,
}

impl Clock {
    /// A version seen (from a peer, a file): later writes here are newer than it.
    pub fn observe(&mut self, version: &Version) {
        if (version.wall_ms, version.counter) > (self.wall_ms, self.counter) {
            self.wall_ms = version.wall_ms;
            self.counter = version.counter;
        }
    }

    /// The version of a write made now (`now_ms`: the wall clock) by `origin`: newer than everything
    /// seen, and on the wall clock when that is ahead.
    pub fn tick(&mut self, now_ms: u64, origin: &Arc<str>) -> Version {
        if now_ms > self.wall_ms {
            self.wall_ms = now_ms;
            self.counter = 0;
        } else {
            self.counter = self.counter.saturating_add(1);
        }
        Version { wall_ms: self.wall_ms, counter: self.counter, origin: origin.clone() }
    }
}

/// After a replica's config was read (at start, once it knows its peers' books, and on every reload):
/// the clusters whose entry was written under another `enabled:` than the config's now, with the say
/// the config declares. The file changed after the entry was written, so the file wins. Clusters with
/// no entry follow the config anyway and need no write.
pub fn config_overrides<'a>(
    book: &Book,
    clusters: impl IntoIterator<Item = (&'a str, bool)>,
) -> Vec<(&'a str, Operator)> {
    clusters
        .into_iter()
        .filter(|(name, enabled)| book.get(name).is_some_and(|e| e.config_enabled != *enabled))
        .map(|(name, enabled)| (name, Operator::declared(enabled)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(wall_ms: u64, counter: u32, origin: &str) -> Version {
        Version { wall_ms, counter, origin: origin.into() }
    }

    fn entry(operator: Operator, wall_ms: u64, counter: u32, origin: &str) -> Entry {
        Entry { operator, reason: String::new(), version: v(wall_ms, counter, origin), config_enabled: true }
    }

    use Operator::{Active as A, Disabled as X, Draining as D};

    #[test]
    fn newer_entry_wins() {
        #[rustfmt::skip]
        let cases: &[(Entry, Entry, Operator, &str)] = &[
            // held,                    offered,                  kept, why
            (entry(A, 100, 0, "r0"),    entry(D, 101, 0, "r1"),   D, "later wall time"),
            (entry(D, 101, 0, "r1"),    entry(A, 100, 0, "r0"),   D, "earlier wall time loses"),
            (entry(A, 100, 0, "r0"),    entry(D, 100, 1, "r0"),   D, "same millisecond, later counter"),
            (entry(A, 100, 2, "r0"),    entry(D, 100, 1, "r9"),   A, "counter before replica name"),
            (entry(A, 100, 0, "r0"),    entry(D, 100, 0, "r1"),   D, "a tie broken by replica name"),
            (entry(D, 100, 0, "r1"),    entry(A, 100, 0, "r0"),   D, "... the same from the other side"),
            (entry(D, 100, 0, "r0"),    entry(D, 100, 0, "r0"),   D, "the same write again"),
            (entry(A, 100, 0, "r0"),    entry(X, 100, 0, "r0"),   X, "one version, two writes: the content decides"),
            (entry(X, 100, 0, "r0"),    entry(A, 100, 0, "r0"),   X, "... whichever arrives first"),
            (entry(A, 5_000, 0, "r0"),  entry(D, 4_999, 99, "r1"), A, "a counter never beats a later millisecond"),
        ];
        for (held, offered, kept, why) in cases {
            let mut book = Book::default();
            book.offer("blue", held.clone());
            book.offer("blue", offered.clone());
            assert_eq!(book.effective("blue", true), *kept, "{why}");
        }
    }

    #[test]
    fn merge_is_commutative_associative_and_idempotent() {
        let writes = [
            ("blue", entry(D, 100, 0, "r0")),
            ("blue", entry(A, 100, 0, "r1")),
            ("green", entry(X, 90, 0, "r2")),
            ("blue", entry(X, 99, 7, "r2")),
            ("green", entry(A, 91, 0, "r0")),
            ("blue", entry(D, 100, 0, "r1")),
        ];
        let book_of = |order: &[usize]| {
            let mut book = Book::default();
            for &i in order {
                book.offer(writes[i].0, writes[i].1.clone());
            }
            book
        };
        let reference = book_of(&[0, 1, 2, 3, 4, 5]);
        // Every order of the six writes (720 of them) gives the same book.
        let mut order: Vec<usize> = (0..writes.len()).collect();
        let mut permutations = 0;
        permute(&mut order, 0, &mut |o| {
            assert_eq!(book_of(o), reference, "order {o:?}");
            permutations += 1;
        });
        assert_eq!(permutations, 720);
        assert_eq!(reference.get("blue").unwrap().version, v(100, 0, "r1"));
        assert_eq!(reference.effective("blue", true), D, "same version: the content decides");
        assert_eq!(reference.effective("green", false), A);

        // Merging books: a ∪ b = b ∪ a, (a ∪ b) ∪ c = a ∪ (b ∪ c), a ∪ a = a.
        let a = book_of(&[0, 2]);
        let b = book_of(&[1, 4]);
        let c = book_of(&[3, 5]);
        let merged = |x: &Book, y: &Book| {
            let mut out = x.clone();
            out.merge(y.iter().map(|(k, e)| (&**k, e.clone())));
            out
        };
        assert_eq!(merged(&a, &b), merged(&b, &a));
        assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        assert_eq!(merged(&a, &a), a);
        assert_eq!(merged(&merged(&a, &b), &c), reference);
    }

    fn permute(items: &mut Vec<usize>, k: usize, visit: &mut impl FnMut(&[usize])) {
        if k == items.len() {
            visit(items);
            return;
        }
        for i in k..items.len() {
            items.swap(k, i);
            permute(items, k + 1, visit);
            items.swap(k, i);
        }
    }

    #[test]
    fn merge_reports_what_changed() {
        let mut book = Book::default();
        book.offer("blue", entry(D, 100, 0, "r0"));
        let incoming = vec![
            ("blue", entry(A, 99, 0, "r1")),
            ("green", entry(X, 50, 0, "r1")),
            ("amber", entry(D, 10, 0, "r1")),
            ("green", entry(A, 51, 0, "r1")),
        ];
        let changed = book.merge(incoming);
        assert_eq!(changed, vec![Arc::from("amber"), Arc::from("green")], "sorted, each once, blue kept");
        assert_eq!(book.effective("green", false), A);
        assert!(book.merge(vec![("green", entry(A, 51, 0, "r1"))]).is_empty(), "nothing new");
    }

    #[test]
    fn no_entry_follows_the_config() {
        let book = Book::default();
        assert_eq!(book.effective("blue", true), A);
        assert_eq!(book.effective("blue", false), X);
        assert_eq!(book.latest(), None);
    }

    #[test]
    fn clock_is_never_behind_what_it_saw() {
        let me: Arc<str> = "r0".into();
        type Case<'a> = (&'a [(u64, u32)], u64, (u64, u32), &'a str);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // seen,                    now,  next write,  why
            (&[],                       100,  (100, 0),    "a fresh clock writes at the wall time"),
            (&[(90, 3)],                100,  (100, 0),    "the wall clock is ahead of what was seen"),
            (&[(100, 3)],               100,  (100, 4),    "same millisecond: the counter moves"),
            (&[(500, 0)],               100,  (500, 1),    "a peer's clock is ahead: follow it, never behind"),
            (&[(500, 2), (400, 9)],     100,  (500, 3),    "the greatest seen counts"),
            (&[(100, u32::MAX)],        100,  (100, u32::MAX), "the counter saturates (a clock stuck for 4 billion writes)"),
        ];
        for (seen, now, next, why) in cases {
            let mut clock = Clock::default();
            for &(wall, counter) in *seen {
                clock.observe(&v(wall, counter, "r1"));
            }
            let written = clock.tick(*now, &me);
            assert_eq!((written.wall_ms, written.counter), *next, "{why}");
            for &(wall, counter) in *seen {
                assert!(
                    written >= v(wall, counter, "r1") || counter == u32::MAX,
                    "{why}: not after what it saw"
                );
            }
        }
        let mut clock = Clock::default();
        let first = clock.tick(100, &me);
        let second = clock.tick(100, &me);
        let third = clock.tick(99, &me);
        assert!(
            first < second && second < third,
            "local writes are ordered even when the wall clock steps back"
        );
    }

    #[test]
    fn a_command_made_after_seeing_a_change_wins_despite_a_slow_clock() {
        // r1's clock is 10 s behind r0's. r0 drains blue; r1 sees it, then enables blue.
        let (r0, r1): (Arc<str>, Arc<str>) = ("r0".into(), "r1".into());
        let (mut c0, mut c1) = (Clock::default(), Clock::default());
        let mut book0 = Book::default();
        let mut book1 = Book::default();
        let drain = Entry {
            operator: D,
            reason: "upgrade".into(),
            version: c0.tick(20_000, &r0),
            config_enabled: true,
        };
        book0.offer("blue", drain.clone());
        c1.observe(&drain.version);
        book1.offer("blue", drain);
        let enable =
            Entry { operator: A, reason: String::new(), version: c1.tick(10_000, &r1), config_enabled: true };
        book1.offer("blue", enable.clone());
        book0.merge([("blue", enable)]);
        assert_eq!((book0.effective("blue", true), book1.effective("blue", true)), (A, A));
    }

    #[test]
    fn the_config_overrides_entries_written_under_another_flag() {
        let with_flag = |operator, config_enabled| Entry { config_enabled, ..entry(operator, 100, 0, "r0") };
        #[rustfmt::skip]
        let cases: &[(Option<Entry>, bool, Option<Operator>, &str)] = &[
            // entry,                          config enabled: now, write,     why
            (None,                             true,  None,        "no entry: the config rules already"),
            (None,                             false, None,        "no entry, disabled in the file: the same"),
            (Some(with_flag(D, true)),         true,  None,        "drained under the same flag: the drain stands"),
            (Some(with_flag(D, true)),         false, Some(X),     "the file disabled it since: disabled"),
            (Some(with_flag(X, false)),        true,  Some(A),     "the file enabled it since: active"),
            (Some(with_flag(A, false)),        false, None,        "enabled by an operator despite the file: stands"),
            (Some(with_flag(X, true)),         true,  None,        "disabled by an operator: stands"),
        ];
        for (held, enabled, write, why) in cases {
            let mut book = Book::default();
            if let Some(held) = held {
                book.offer("blue", held.clone());
            }
            let writes = config_overrides(&book, [("blue", *enabled), ("absent", false)]);
            assert_eq!(writes.first().map(|(_, op)| *op), *write, "{why}");
            assert!(writes.len() <= 1, "{why}: a cluster without an entry needs no write");
        }
    }

    #[test]
    fn untrusted_entries_are_checked() {
        let long = "é".repeat(400);
        let checked = check_entry("blue", Entry { reason: long, ..entry(D, 1, 0, "r0") }).unwrap();
        assert!(checked.reason.len() <= MAX_REASON_BYTES && checked.reason.starts_with('é'));
        assert!(check_entry("", entry(D, 1, 0, "r0")).is_err());
        assert!(check_entry(&"x".repeat(300), entry(D, 1, 0, "r0")).is_err());
        assert!(check_entry("blue", entry(D, 1, 0, "")).is_err());
        for op in [A, D, X] {
            assert_eq!(Operator::parse(op.as_str()), Some(op));
        }
        assert_eq!(Operator::parse("drained"), None);
    }
}
