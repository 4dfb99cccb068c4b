//! What the router's query placement memory costs: process RSS while learning query ids, and how fast
//! `Affinity::owner_of` answers, for the two ways a query is placed.
//!
//! `cargo bench --bench affinity` (release). No benchmark framework: throughput is a loop's count over its
//! wall time (`std::time::Instant` around the whole loop), after a warm-up; RSS is `VmRSS` of
//! `/proc/self/status` (the whole bench process, allocator slack included; Linux only).
//!
//! Scenarios:
//! - **suffix placement**: 1,000,000 distinct query ids of 4 coordinators are learned (each id is parsed
//!   and dropped, as the router does with a first answer's id); one query places its whole coordinator,
//!   so the memory should not grow with the number of ids. Then lookups of learned ids.
//! - **exact entries**: ids the coordinator id cannot place, kept one by one in the bounded cache
//!   (`affinity.max_queries`, default 100,000): 100,000 ids of an odd shape (not `yyyyMMdd_HHmmss_NNNNN_ccccc`),
//!   and, in a second `Affinity`, 100,000 ids of a coordinator id two clusters share (ambiguous).
//! - for scale: lookups of an id nobody learned (the router then asks the clusters), and lookups from
//!   several threads at once (the router decides on every runtime thread).
//! - at capacity: what becomes of ids learned into a full exact cache whose entries were looked up a few
//!   times (moka admits by frequency, TinyLFU, not by recency), how many follow-ups a new query needs until
//!   its entry stays, and the same for the transactions table.
//!
//! Target: process RSS ≤ 64 MiB after learning 1,000,000 ids.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trino_router::domain::config::AffinitySettings;
use trino_router::domain::query_id::QueryId;
use trino_router::state::affinity::{Affinity, Placement};

/// The 4 coordinators of the suffix scenario: (coordinator id, cluster).
const COORDINATORS: [(&str, &str); 4] =
    [("abcde", "trino-a"), ("fghij", "trino-b"), ("kmnpq", "trino-c"), ("rstuv", "trino-d")];
/// The coordinator id two clusters share in the ambiguous scenario.
const SHARED: &str = "zzzzz";
const RSS_TARGET_MIB: f64 = 64.0;

/// `VmRSS` and `VmHWM` (peak) of this process, in MiB.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The `n`th distinct Trino-shaped id of coordinator id `suffix` (100,000 per "second", as Trino's counter).
fn trino_id(buf: &mut String, n: usize, suffix: &str) -> QueryId {
    use std::fmt::Write as _;
    buf.clear();
    let (second, counter) = (n / 100_000, n % 100_000);
    write!(buf, "20260101_{:06}_{counter:05}_{suffix}", 100_000 + second).expect("writing to a String");
    QueryId::parse(buf).expect("a valid id")
}

/// The `n`th id of a shape that names no coordinator (Trino accepts any `[a-z0-9_]` id).
fn odd_id(buf: &mut String, n: usize) -> QueryId {
    use std::fmt::Write as _;
    buf.clear();
    write!(buf, "adhoc_query_{n}").expect("writing to a String");
    QueryId::parse(buf).expect("a valid id")
}

/// Runs `lookup` over `ids` (cycled) `iterations` times; returns lookups per second.
fn lookups(affinity: &Affinity, ids: &[QueryId], iterations: usize, expect_found: bool) -> f64 {
    for id in ids.iter().take(iterations.min(ids.len())) {
        black_box(affinity.owner_of(black_box(id))); // warm-up
    }
    let mut found = 0usize;
    let started = Instant::now();
    for i in 0..iterations {
        found += usize::from(black_box(affinity.owner_of(black_box(&ids[i % ids.len()]))).is_some());
    }
    let elapsed = started.elapsed();
    assert_eq!(found, if expect_found { iterations } else { 0 }, "lookups found {found} of {iterations}");
    iterations as f64 / elapsed.as_secs_f64()
}

/// The same lookups from `threads` threads at once; returns the total lookups per second.
fn parallel_lookups(affinity: &Affinity, ids: &[QueryId], per_thread: usize, threads: usize) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let mut found = 0usize;
                for i in 0..per_thread {
                    let id = &ids[(i + t * 7919) % ids.len()];
                    found += usize::from(black_box(affinity.owner_of(black_box(id))).is_some());
                }
                assert_eq!(found, per_thread);
            });
        }
    });
    (per_thread * threads) as f64 / started.elapsed().as_secs_f64()
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn line(what: &str, rate: f64) {
    println!("  {what:<58} {:>12.0}/s  {:>8.1} ns each", rate, 1e9 / rate);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: a quick pass then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let scale = |n: usize| if quick { n / 100 } else { n };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    let settings = AffinitySettings::default();
    let mut buf = String::with_capacity(64);
    let clusters: Vec<Arc<str>> = COORDINATORS.iter().map(|(_, c)| Arc::from(*c)).collect();

    println!(
        "affinity: Affinity with default settings (max_queries {}, idle expiry {} s){}",
        settings.max_queries,
        settings.idle_expiry_seconds,
        if quick { " — quick pass (run `cargo bench --bench affinity` for figures)" } else { "" }
    );
    let (rss_start, _) = rss();
    println!("  RSS at start: {rss_start:.1} MiB");

    // Suffix placement: 1,000,000 ids of 4 coordinators.
    let affinity = Affinity::new(&settings);
    let learned = scale(1_000_000);
    let started = Instant::now();
    for n in 0..learned {
        let c = n % COORDINATORS.len();
        let id = trino_id(&mut buf, n / COORDINATORS.len(), COORDINATORS[c].0);
        let placement = affinity.learn(id, clusters[c].clone());
        debug_assert_eq!(placement, Placement::Suffix);
    }
    let learn_time = started.elapsed();
    let (rss_suffix, hwm_suffix) = rss();
    assert_eq!(affinity.exact_entries(), 0, "suffix-placed ids must not be kept one by one");
    assert_eq!(affinity.coordinator_ids(), COORDINATORS.len());
    println!(
        "\nsuffix placement: learned {learned} distinct ids of {} coordinators in {:.0} ms ({:.0} learns/s, id parsing \
         included); coordinator ids kept: {}, exact entries: {}",
        COORDINATORS.len(),
        learn_time.as_secs_f64() * 1e3,
        per_second(learned, learn_time),
        affinity.coordinator_ids(),
        affinity.exact_entries()
    );
    let verdict = if quick {
        "not judged (quick pass)".to_owned()
    } else if rss_suffix <= RSS_TARGET_MIB {
        format!("≤ {RSS_TARGET_MIB} MiB: met")
    } else {
        format!("≤ {RSS_TARGET_MIB} MiB: MISSED")
    };
    println!(
        "  RSS after {learned} ids: {rss_suffix:.1} MiB (+{:.1} MiB; peak {hwm_suffix:.1} MiB)  target {verdict}",
        rss_suffix - rss_start
    );

    // Lookups of learned ids (a sample, parsed beforehand so that parsing is not timed).
    let sample: Vec<QueryId> = (0..65_536)
        .map(|i| {
            let n = (i * 15_259) % learned.max(1);
            trino_id(&mut buf, n / COORDINATORS.len(), COORDINATORS[n % COORDINATORS.len()].0)
        })
        .collect();
    let iterations = scale(4_000_000);
    let suffix_rate = lookups(&affinity, &sample, iterations, true);
    line("lookup, suffix placement (1 thread)", suffix_rate);
    let unknown: Vec<QueryId> = (0..4_096).map(|n| trino_id(&mut buf, n, "wxy23")).collect();
    line(
        "lookup, unknown coordinator id: not found (1 thread)",
        lookups(&affinity, &unknown, iterations, false),
    );
    line(
        &format!("lookup, suffix placement ({threads} threads, total)"),
        parallel_lookups(&affinity, &sample, iterations / threads, threads),
    );

    // Exact entries, odd shape: 100,000 ids in the same Affinity (default capacity).
    let exact = scale(100_000);
    // The default capacity (a quick pass scales it down with the entry count, to stay at capacity).
    let at_capacity = AffinitySettings { max_queries: exact as u64, ..settings };
    let started = Instant::now();
    for n in 0..exact {
        assert_eq!(affinity.learn(odd_id(&mut buf, n), clusters[n % 4].clone()), Placement::Exact);
    }
    let entries = affinity.exact_entries();
    let exact_time = started.elapsed();
    let (rss_odd, _) = rss();
    println!(
        "\nexact entries, odd-shaped ids ({}): learned {exact} in {:.0} ms ({:.0} learns/s); entries kept: {entries}",
        odd_id(&mut buf, 7),
        exact_time.as_secs_f64() * 1e3,
        per_second(exact, exact_time)
    );
    println!(
        "  RSS: {rss_odd:.1} MiB (+{:.1} MiB for {entries} entries: {:.0} bytes each)",
        rss_odd - rss_suffix,
        (rss_odd - rss_suffix) * 1024.0 * 1024.0 / entries.max(1) as f64
    );
    let odd_sample: Vec<QueryId> =
        (0..exact.min(65_536)).map(|i| odd_id(&mut buf, (i * 7) % exact)).collect();
    let odd_rate = lookups(&affinity, &odd_sample, scale(1_000_000), true);
    line("lookup, exact entry (1 thread)", odd_rate);
    line(
        &format!("lookup, exact entry ({threads} threads, total)"),
        parallel_lookups(&affinity, &odd_sample, scale(1_000_000) / threads, threads),
    );
    line(
        "lookup, suffix placement, with the exact entries present",
        lookups(&affinity, &sample, iterations, true),
    );

    // Exact entries, an ambiguous coordinator id: a fresh Affinity, the id seen on two clusters first (the
    // second sighting is its first exact entry): ids 1..=exact are kept one by one.
    let shared = Affinity::new(&at_capacity);
    shared.learn(trino_id(&mut buf, 0, SHARED), clusters[0].clone());
    let started = Instant::now();
    for n in 1..=exact {
        assert_eq!(shared.learn(trino_id(&mut buf, n, SHARED), clusters[n % 2].clone()), Placement::Exact);
    }
    assert!(shared.is_shared_suffix(SHARED));
    let entries = shared.exact_entries();
    let shared_time = started.elapsed();
    let (rss_shared, _) = rss();
    println!(
        "\nexact entries, ambiguous coordinator id ({SHARED} on 2 clusters): learned {exact} in {:.0} ms \
         ({:.0} learns/s); entries kept: {entries}",
        shared_time.as_secs_f64() * 1e3,
        per_second(exact, shared_time)
    );
    println!("  RSS: {rss_shared:.1} MiB (+{:.1} MiB)", rss_shared - rss_odd);
    let shared_sample: Vec<QueryId> =
        (0..exact.min(65_536)).map(|i| trino_id(&mut buf, 1 + (i * 7) % exact, SHARED)).collect();
    line(
        "lookup, exact entry of an ambiguous id (1 thread)",
        lookups(&shared, &shared_sample, scale(1_000_000), true),
    );

    // At capacity: the cache is full of entries that were each looked up a few times (queries that were
    // polled); what becomes of ids learned now (new queries)?
    for _ in 0..3 {
        for n in 1..=exact {
            black_box(shared.owner_of(&trino_id(&mut buf, n, SHARED)));
        }
    }
    let fresh = exact.min(1_000);
    for n in exact + 1..=exact + fresh {
        shared.learn(trino_id(&mut buf, n, SHARED), clusters[n % 2].clone());
    }
    let entries = shared.exact_entries(); // runs moka's pending maintenance (admission and eviction)
    let placed = |buf: &mut String, n: usize| shared.owner_of(&trino_id(buf, n, SHARED)).is_some();
    let kept_new = (exact + 1..=exact + fresh).filter(|&n| placed(&mut buf, n)).count();
    let kept_old = (1..=exact).filter(|&n| placed(&mut buf, n)).count();
    println!(
        "  at capacity: {fresh} ids learned into the full cache (its {exact} entries each looked up 3 times): \
         {kept_new} of the new ids kept, {kept_old} of the old; entries {entries}"
    );
    // What the router does for such a query: each follow-up that misses is discovered and learned again.
    // How many follow-ups until its entry stays?
    let mut rounds = Vec::new();
    for n in exact + fresh + 1..=exact + fresh + 100 {
        let id = trino_id(&mut buf, n, SHARED);
        let mut polls = 0;
        while polls < 50 {
            polls += 1;
            if shared.owner_of(&id).is_none() {
                shared.learn(id.clone(), clusters[n % 2].clone());
            }
            shared.exact_entries(); // maintenance, as moka runs it under traffic
            if shared.owner_of(&id).is_some() {
                break;
            }
        }
        rounds.push(polls);
    }
    rounds.sort_unstable();
    println!(
        "  a new query's follow-ups until its entry stays (each miss discovered and learned again; 100 queries): \
         median {}, max {}{}",
        rounds[rounds.len() / 2],
        rounds[rounds.len() - 1],
        if rounds[rounds.len() - 1] >= 50 { " (gave up at 50)" } else { "" }
    );

    // The transactions table is a cache of the same kind and capacity. The router never removes a committed
    // transaction (it reads only the answers of START TRANSACTION queries, not those of COMMIT or ROLLBACK,
    // and `X-Trino-Clear-Transaction-Id` says `true`, not the id), so the table holds every transaction of
    // the last `idle_expiry_seconds`, up to `max_queries`; each was looked up once per statement.
    let transactions = Affinity::new(&at_capacity);
    for n in 0..exact {
        transactions.learn_transaction(&format!("tx-{n:08}"), clusters[n % 2].clone());
        for _ in 0..3 {
            black_box(transactions.transaction_owner(&format!("tx-{n:08}")));
        }
    }
    for n in exact..exact + fresh {
        transactions.learn_transaction(&format!("tx-{n:08}"), clusters[n % 2].clone());
    }
    // moka applies pending inserts (admission, eviction) on the calling threads: let some time pass and read,
    // as traffic would.
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..64 {
        black_box(transactions.transaction_owner("tx-00000001"));
    }
    let kept_new = (exact..exact + fresh)
        .filter(|n| transactions.transaction_owner(&format!("tx-{n:08}")).is_some())
        .count();
    let (rss_end, hwm_end) = rss();
    println!(
        "\ntransactions table at capacity ({exact} transactions, each looked up 3 times): {kept_new} of {fresh} new \
         transactions kept; RSS {rss_end:.1} MiB"
    );

    println!(
        "\nsummary: RSS {rss_start:.1} MiB at start, {rss_suffix:.1} MiB after {learned} suffix-placed ids (target ≤ \
         {RSS_TARGET_MIB} MiB: {}), {rss_end:.1} MiB at the end (peak {hwm_end:.1} MiB); suffix lookups are \
         {:.1}x as fast as exact ones",
        if quick {
            "not judged"
        } else if rss_suffix <= RSS_TARGET_MIB {
            "met"
        } else {
            "MISSED"
        },
        suffix_rate / odd_rate
    );
}
