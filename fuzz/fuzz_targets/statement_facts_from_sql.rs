//! Feeds arbitrary SQL text (the bytes of a `POST /v1/statement` body, made UTF-8 the way the decide
//! role does it) to the statement reader: [`analyze`] (with default limits, and with a 128-byte limit
//! that takes the keyword-scan fallback), [`quick_placement`], [`execute_name`] and
//! [`analyze_execute`].
//!
//! Checks, beyond not panicking: every list of facts is sorted and free of duplicates, `tables` is the
//! union of `tables_read` and `tables_written`; the query ids named are query ids; an `unknown`
//! statement names no tables and no queries; where `quick_placement` answers, the full analysis agrees (same
//! `starts_transaction`, no query ids); `EXECUTE name` is of kind `execute`; and a statement sent as a
//! prepared statement (`X-Trino-Prepared-Statement: name=form-encoded-sql`) has the facts it has
//! when sent directly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use trino_router::domain::query_id::QueryId;
use trino_router::domain::statement::{
    Defaults, Limits, StatementFacts, StatementKind, analyze, analyze_execute, execute_name, quick_placement,
};

fuzz_target!(|data: &[u8]| {
    let sql = String::from_utf8_lossy(data);
    let session = Defaults { catalog: Some("hive"), schema: Some("web") };
    let [facts, _] = [Limits::default(), Limits { max_bytes: 128 }].map(|limits| {
        let facts = analyze(&sql, &Defaults::default(), &limits);
        check_facts(&facts, &sql);
        check_facts(&analyze(&sql, &session, &limits), &sql);
        if let Some(starts_transaction) = quick_placement(&sql, &limits) {
            assert_eq!(starts_transaction, facts.starts_transaction, "quick placement disagrees: {sql:?}");
            assert!(facts.query_ids.is_empty(), "quick placement missed query ids: {sql:?}");
        }
        facts
    });
    if let Some(name) = execute_name(&sql) {
        assert!(!name.is_empty(), "{sql:?}");
        assert_eq!(facts.kind, StatementKind::Execute, "EXECUTE {name:?} read as {:?}: {sql:?}", facts.kind);
    }
    let header = format!("fuzzed={}", utf8_percent_encode(&sql, NON_ALPHANUMERIC));
    let prepared = analyze_execute(&header, "fuzzed", &Defaults::default(), &Limits::default());
    assert_eq!(prepared.as_ref(), Some(&facts), "a prepared statement has the facts of its SQL: {sql:?}");
});

fn check_facts(facts: &StatementFacts, sql: &str) {
    let lists = [
        &facts.catalogs,
        &facts.schemas,
        &facts.tables,
        &facts.tables_read,
        &facts.tables_written,
        &facts.query_ids,
    ];
    for list in lists {
        assert!(list.windows(2).all(|w| w[0] < w[1]), "not sorted and unique: {list:?} from {sql:?}");
    }
    let mut union: Vec<&String> = facts.tables_read.iter().chain(&facts.tables_written).collect();
    union.sort();
    union.dedup();
    assert!(facts.tables.iter().eq(union), "tables is read ∪ written: {facts:?}");
    for id in &facts.query_ids {
        assert!(QueryId::parse(id).is_ok(), "{id:?}");
    }
    if facts.kind == StatementKind::Unknown {
        assert!(facts.tables.is_empty() && facts.query_ids.is_empty(), "{facts:?} from {sql:?}");
    }
}
