//! The rows of an ordinary query's data pages: page `p` (1-based) of `r` rows is the JSON array
//! `[["{cluster}",p,1],...,["{cluster}",p,r]]`, the same for every query of this process. So each
//! array is rendered once and shared ([`PageRows`]): a 5 MB page costs a cache look-up, not 250,000 rows
//! serialised again on every request. Results pages splice it in as `data`; spooled segments serve it as
//! their bytes.
//!
//! The cache is bounded by [`CACHE_BUDGET`] bytes of JSON; when a new array would not fit, everything
//! cached is dropped first (load tests repeat few shapes, so this rarely happens and stays simple).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};
use serde_json::value::RawValue;

/// At most this many bytes of rendered rows are kept.
pub const CACHE_BUDGET: usize = 256 << 20;
/// What an entry costs beyond its JSON (map slot, `Arc`): keeps many tiny pages bounded too.
const ENTRY_OVERHEAD: usize = 64;

/// The rows arrays of this process (its `--name` is the `cluster` column).
#[derive(Debug)]
pub struct PageRows {
    cluster: String,
    budget: usize,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    arrays: HashMap<(u32, u32), Arc<RawValue>>,
    bytes: usize,
}

/// Page `page`'s rows, generated while serialising.
struct Generated<'a> {
    cluster: &'a str,
    page: u32,
    rows: u32,
}

impl Serialize for Generated<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.rows as usize))?;
        for row in 1..=self.rows {
            seq.serialize_element(&(self.cluster, self.page, row))?;
        }
        seq.end()
    }
}

/// A shared rows array as the bytes of a response body (no copy).
pub fn shared_bytes(array: Arc<RawValue>) -> Bytes {
    Bytes::from_owner(JsonBytes(array))
}

struct JsonBytes(Arc<RawValue>);

impl AsRef<[u8]> for JsonBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.get().as_bytes()
    }
}

impl PageRows {
    pub fn new(cluster: impl Into<String>) -> Self {
        Self::with_budget(cluster, CACHE_BUDGET)
    }

    fn with_budget(cluster: impl Into<String>, budget: usize) -> Self {
        Self { cluster: cluster.into(), budget, cache: Mutex::default() }
    }

    /// The JSON array of data page `page` (1-based) of `rows` rows.
    pub fn json(&self, page: u32, rows: u32) -> Arc<RawValue> {
        if let Some(array) = self.lock().arrays.get(&(page, rows)) {
            return array.clone();
        }
        // Rendered without the lock: two requests missing at once both render, and one result stays.
        let generated = Generated { cluster: &self.cluster, page, rows };
        let array: Arc<RawValue> =
            serde_json::value::to_raw_value(&generated).expect("rows always serialise").into();
        let cost = array.get().len() + ENTRY_OVERHEAD;
        let mut cache = self.lock();
        if cost <= self.budget {
            if cache.bytes + cost > self.budget {
                cache.arrays.clear();
                cache.bytes = 0;
            }
            if cache.arrays.insert((page, rows), array.clone()).is_none() {
                cache.bytes += cost;
            }
        }
        array
    }

    /// [`Self::json`] as bytes, e.g. for a spooled segment's body.
    pub fn bytes(&self, page: u32, rows: u32) -> Bytes {
        shared_bytes(self.json(page, rows))
    }

    /// Bytes of rows currently cached.
    #[cfg(test)]
    fn cached_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_are_rendered_once_and_shared() {
        let rows = PageRows::new("east");
        let a = rows.json(2, 2);
        assert_eq!(a.get(), r#"[["east",2,1],["east",2,2]]"#);
        assert!(Arc::ptr_eq(&a, &rows.json(2, 2)));
        assert_eq!(rows.json(1, 0).get(), "[]");
        assert_eq!(&rows.bytes(2, 2)[..], a.get().as_bytes());
        assert_eq!(rows.cached_bytes(), a.get().len() + 2 + 2 * ENTRY_OVERHEAD);
        let name = "a \"quoted\" name";
        assert_eq!(PageRows::new(name).json(1, 1).get(), serde_json::to_string(&[(name, 1, 1)]).unwrap());
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let rows = PageRows::with_budget("east", 1000);
        // 10 rows are about 150 bytes: the budget holds a few pages, never more.
        for page in 1..=40 {
            rows.json(page, 10);
            assert!(rows.cached_bytes() <= 1000);
            assert!(Arc::ptr_eq(&rows.json(page, 10), &rows.json(page, 10)));
        }
        assert!(rows.cached_bytes() > 0);
        // An array bigger than the whole budget is served, not kept.
        let big = rows.json(1, 100);
        assert!(big.get().len() > 1000 && !Arc::ptr_eq(&big, &rows.json(1, 100)));
    }
}
