//! Every query this process knows, shared by the HTTP handlers.
//!
//! Locking: the map sits behind a `RwLock` held only to look up, insert or remove (never across an
//! await); each query has its own `Mutex` around its state machine ([`Query`]), so requests for
//! different queries never wait on each other. Id generation and the transaction set have small
//! mutexes of their own, taken once per POST.
//!
//! [`Registry::load`] counts queued and running queries for `/ui/api/stats`.
//!
//! Memory stays bounded: [`Registry::forget`] drops queries nobody asked about for a while, then, while
//! more than a cap remain, the oldest (finished ones first); the caller runs it periodically. A forgotten
//! query answers 404 like one never issued.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::node::Load;
use crate::plan::{Submission, plan};
use crate::queries::{Plan, Query, State};
use crate::query_id::{CoordinatorId, QueryIdGenerator};
use crate::session::Transactions;
use crate::slug::Slug;
use crate::spooling::{QuerySpooling, select_encoding};

/// How many queries [`Registry::forget`] removes per hold of the map's write lock.
const FORGET_CHUNK: usize = 1024;

/// Per-query request counts, for `/v1/emulator/queries`.
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub queued_gets: AtomicU64,
    pub executing_gets: AtomicU64,
    pub heads: AtomicU64,
    pub deletes: AtomicU64,
    pub info_gets: AtomicU64,
}

impl RequestCounts {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "post": 1,
            "queued_get": get(&self.queued_gets),
            "executing_get": get(&self.executing_gets),
            "head": get(&self.heads),
            "delete": get(&self.deletes),
            "info_get": get(&self.info_gets),
        })
    }
}

/// What a POST brought, recorded as received.
#[derive(Debug, Clone, Default)]
pub struct Submitted {
    pub sql: String,
    /// `X-Trino-User`.
    pub user: Option<String>,
    /// The `Host` header.
    pub host: Option<String>,
    /// Every `x-trino-*` header (lower-case names, in arrival order).
    pub headers: Vec<(String, String)>,
    /// Decoded `X-Trino-Session`.
    pub session: Vec<(String, String)>,
    /// The transaction claimed by `X-Trino-Transaction-Id`, if any (not `NONE`).
    pub transaction: Option<String>,
    /// `X-Trino-Query-Data-Encoding`: the encodings the client accepts (spooling protocol).
    pub data_encoding: Option<String>,
}

/// One query: what it was submitted with, its counters and its state machine.
#[derive(Debug)]
pub struct Entry {
    pub id: Arc<str>,
    /// Creation order within the process.
    pub seq: u64,
    pub created_unix_ms: u128,
    pub submitted: Submitted,
    pub requests: RequestCounts,
    /// Set when the client negotiated an encoding and the query returns rows: its pages carry segments.
    pub spooling: Option<QuerySpooling>,
    query: Mutex<Query>,
}

impl Entry {
    /// The state machine; never hold the guard across an await.
    pub fn lock(&self) -> MutexGuard<'_, Query> {
        self.query.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
pub struct Registry {
    queries: RwLock<HashMap<Arc<str>, Arc<Entry>>>,
    ids: Mutex<QueryIdGenerator>,
    transactions: Mutex<Transactions>,
    next_seq: AtomicU64,
    default_queued_polls: u32,
}

impl Registry {
    pub fn new(coordinator: CoordinatorId, default_queued_polls: u32) -> Self {
        Self {
            queries: RwLock::default(),
            ids: Mutex::new(QueryIdGenerator::new(coordinator)),
            transactions: Mutex::default(),
            next_seq: AtomicU64::new(0),
            default_queued_polls,
        }
    }

    /// Plans and registers a new query created at `now` (`unix_ms` on the wall clock).
    pub fn create(&self, submitted: Submitted, now: Instant, unix_ms: u128) -> Arc<Entry> {
        let planned = {
            let mut transactions = self.transactions.lock().unwrap_or_else(PoisonError::into_inner);
            let submission = Submission {
                sql: &submitted.sql,
                session: &submitted.session,
                transaction: submitted.transaction.as_deref(),
            };
            plan(&submission, &mut transactions)
        };
        let spooling = match planned.plan {
            Plan::Rows { .. } => submitted.data_encoding.as_deref().and_then(select_encoding),
            _ => None,
        }
        .map(|encoding| QuerySpooling::new(encoding, planned.spooled));
        let queued_polls = planned.queued_polls.unwrap_or(self.default_queued_polls);
        let query = Query::new(planned.plan, Slug::random(), queued_polls, planned.delay, now);
        let unix_secs = u64::try_from(unix_ms / 1000).unwrap_or(u64::MAX);
        let id: Arc<str> = self.ids.lock().unwrap_or_else(PoisonError::into_inner).next_id(unix_secs).into();
        let entry = Arc::new(Entry {
            id: id.clone(),
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            created_unix_ms: unix_ms,
            submitted,
            requests: RequestCounts::default(),
            spooling,
            query: Mutex::new(query),
        });
        self.write().insert(id, entry.clone());
        entry
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.read().get(id).cloned()
    }

    /// Every known query, oldest first.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        let mut all: Vec<_> = self.read().values().cloned().collect();
        all.sort_by_key(|e| e.seq);
        all
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// How many known queries are queued and running (not finished, failed or canceled), and the rows
    /// all known queries served, at `now`. Takes each query's lock briefly, one at a time.
    pub fn load(&self, now: Instant) -> Load {
        let mut load = Load::default();
        for entry in self.read().values() {
            let query = entry.lock();
            match query.state() {
                State::Queued => load.queued += 1,
                State::Running => load.running += 1,
                State::Finished | State::Failed => {}
            }
            load.input_rows += query.progress(now).processed_rows;
        }
        load
    }

    /// Forgets every query whose last request is older than `max_idle`, then the oldest queries (finished
    /// or failed ones first) while more than `max_queries` remain; returns how many were forgotten.
    ///
    /// Requests go on meanwhile: the queries are looked at in a snapshot (the map is locked only to copy
    /// it), and removed [`FORGET_CHUNK`] at a time; the memory is freed after the last lock.
    pub fn forget(&self, now: Instant, max_idle: Duration, max_queries: usize) -> usize {
        let entries: Vec<Arc<Entry>> = self.read().values().cloned().collect();
        let mut doomed: Vec<&Arc<str>> = Vec::new();
        let mut kept: Vec<(bool, u64, &Arc<str>)> = Vec::new();
        for entry in &entries {
            let query = entry.lock();
            if now.saturating_duration_since(query.last_access()) > max_idle {
                doomed.push(&entry.id);
            } else {
                kept.push((query.is_done(), entry.seq, &entry.id));
            }
        }
        if kept.len() > max_queries {
            // Done queries sort first (`!true` < `!false`), oldest first within each group.
            kept.sort_unstable_by_key(|(done, seq, _)| (!*done, *seq));
            let excess = kept.len() - max_queries;
            doomed.extend(kept.into_iter().take(excess).map(|(_, _, id)| id));
        }
        for chunk in doomed.chunks(FORGET_CHUNK) {
            let mut queries = self.write();
            for id in chunk {
                queries.remove(*id);
            }
        }
        doomed.len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Entry>>> {
        self.queries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<Entry>>> {
        self.queries.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queries::{Page, Step};
    use crate::query_id::is_query_id;
    use crate::slug::SlugContext;

    fn registry() -> Registry {
        Registry::new("abcde".parse().unwrap(), 1)
    }

    fn submit(sql: &str) -> Submitted {
        Submitted { sql: sql.to_owned(), ..Submitted::default() }
    }

    #[test]
    fn creates_and_finds_queries() {
        let reg = registry();
        let now = Instant::now();
        let a = reg.create(submit("SELECT 1"), now, 1_732_563_845_000);
        let b = reg.create(submit("SELECT 2"), now, 1_732_563_845_000);
        assert_eq!(&*a.id, "20241125_194405_00000_abcde");
        assert_eq!(&*b.id, "20241125_194405_00001_abcde");
        assert!(is_query_id(&a.id));
        assert_eq!(reg.get(&a.id).unwrap().submitted.sql, "SELECT 1");
        assert!(reg.get("20241125_194405_00002_abcde").is_none());
        let order: Vec<_> = reg.all().iter().map(|e| e.seq).collect();
        assert_eq!(order, vec![0, 1]);
    }

    #[test]
    fn forgets_idle_queries() {
        let reg = registry();
        let t0 = Instant::now();
        let old = reg.create(submit("SELECT 1"), t0, 0);
        let fresh = reg.create(submit("SELECT 2"), t0 + Duration::from_secs(100), 0);
        assert_eq!(reg.forget(t0 + Duration::from_secs(120), Duration::from_secs(60), 10), 1);
        assert!(reg.get(&old.id).is_none());
        assert!(reg.get(&fresh.id).is_some());
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn forgets_oldest_finished_queries_beyond_the_cap() {
        let reg = registry();
        let t0 = Instant::now();
        let ids: Vec<_> = (0..4).map(|i| reg.create(submit(&format!("SELECT {i}")), t0, 0)).collect();
        for entry in [&ids[1], &ids[3]] {
            entry.lock().cancel(t0);
        }
        assert_eq!(reg.forget(t0, Duration::from_secs(60), 3), 1);
        let left: Vec<_> = reg.all().iter().map(|e| e.seq).collect();
        assert_eq!(left, vec![0, 2, 3]);
        assert_eq!(reg.forget(t0, Duration::from_secs(60), 1), 2);
        let left: Vec<_> = reg.all().iter().map(|e| e.seq).collect();
        assert_eq!(left, vec![2]);
    }

    #[test]
    fn load_counts_queries_by_state() {
        let reg = registry();
        let t0 = Instant::now();
        assert_eq!(reg.load(t0), Load::default());
        let hinted = |sql: &str| reg.create(submit(sql), t0, 0);
        let queued = hinted("SELECT 1");
        let running = hinted("SELECT 1 /* emulator: pages=3 rows=5 */");
        let finished = hinted("SELECT 1 /* emulator: rows=4 */");
        let canceled_queued = hinted("SELECT 1");
        let canceled_running = hinted("SELECT 1 /* emulator: pages=2 */");
        let failed = hinted("SELECT 'emulator_fail'");
        let dispatch = |entry: &Entry| {
            let mut query = entry.lock();
            let slug = query.slug(SlugContext::Queued, 1);
            query.queued(&slug, 1, t0).unwrap();
        };
        let execute = |entry: &Entry, token: u64| {
            let mut query = entry.lock();
            let slug = query.slug(SlugContext::Executing, token);
            query.executing(&slug, token, t0, t0).unwrap()
        };
        for entry in [&running, &finished, &canceled_running, &failed] {
            dispatch(entry);
        }
        assert!(matches!(execute(&running, 0), Step::Page(Page::Data { index: 0, .. })));
        assert!(matches!(execute(&finished, 0), Step::Page(Page::Data { index: 0, .. })));
        assert!(matches!(execute(&finished, 1), Step::Page(Page::Finished)));
        assert!(matches!(execute(&failed, 0), Step::Page(Page::Failed(_))));
        canceled_queued.lock().cancel(t0);
        canceled_running.lock().cancel(t0);
        assert_eq!(queued.lock().state(), State::Queued);
        // Queued: `queued`; running: `running` (dispatched, one page of 5 rows served); the rest are done.
        assert_eq!(reg.load(t0), Load { queued: 1, running: 1, input_rows: 5 + 4 });
        assert!(matches!(execute(&running, 1), Step::Page(Page::Data { index: 1, .. })));
        assert!(matches!(execute(&running, 2), Step::Page(Page::Data { index: 2, .. })));
        assert!(matches!(execute(&running, 3), Step::Page(Page::Finished)));
        assert_eq!(reg.load(t0), Load { queued: 1, running: 0, input_rows: 15 + 4 });
    }

    #[test]
    fn spooling_only_for_row_queries_with_a_known_encoding() {
        let reg = registry();
        let now = Instant::now();
        let spooling = |sql: &str, encoding: Option<&str>| {
            let submitted = Submitted { data_encoding: encoding.map(str::to_owned), ..submit(sql) };
            reg.create(submitted, now, 0).spooling.as_ref().map(|s| (s.encoding, s.hint))
        };
        let hinted = "SELECT 1 /* emulator: spooled=1 */";
        assert_eq!(spooling(hinted, Some("json+zstd,json+lz4,json")), Some(("json", Some(true))));
        assert_eq!(spooling("SELECT 1", Some("json")), Some(("json", None)));
        assert_eq!(spooling(hinted, None), None);
        assert_eq!(spooling(hinted, Some("json+zstd")), None);
        for sql in ["SHOW SESSION", "SET SESSION a = 1", "SELECT 'emulator_fail'", "START TRANSACTION"] {
            assert_eq!(spooling(sql, Some("json")), None, "{sql}");
        }
    }

    #[test]
    fn transactions_are_per_registry() {
        let reg = registry();
        let now = Instant::now();
        let forged = Submitted {
            transaction: Some("00000000-0000-4000-8000-000000000000".to_owned()),
            ..submit("SELECT 1")
        };
        let entry = reg.create(forged, now, 0);
        assert!(
            matches!(entry.lock().plan(), crate::queries::Plan::Fail(e) if e.name == "UNKNOWN_TRANSACTION")
        );
    }
}
