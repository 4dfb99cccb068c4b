//! Query ids in Trino's format, `yyyyMMdd_HHmmss_NNNNN_ccccc`: the UTC time of creation, a per-process
//! counter zero-padded to five digits, and the coordinator id (five characters drawn once per process
//! from [`ALPHABET`], as Trino's `QueryIdGenerator` does).
//!
//! The counter starts at 0, restarts when the UTC day changes and wraps after 99,999 (the timestamp
//! keeps ids unique unless one process creates 100,000 queries within a second).

use std::fmt;
use std::str::FromStr;

/// The characters Trino draws a coordinator id from (no `l`, `o`, `0`, `1`).
pub const ALPHABET: &str = "abcdefghijkmnpqrstuvwxyz23456789";

/// Length of a coordinator id.
pub const COORDINATOR_ID_LEN: usize = 5;

const MAX_COUNTER: u32 = 99_999;
const SECS_PER_DAY: u64 = 86_400;

/// A validated five-character coordinator id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinatorId(String);

impl CoordinatorId {
    /// Draws a fresh id, as a Trino coordinator does once per process.
    pub fn random() -> Self {
        use rand::Rng;
        let alphabet = ALPHABET.as_bytes();
        let mut rng = rand::rng();
        let id = (0..COORDINATOR_ID_LEN)
            .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
            .collect();
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CoordinatorId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != COORDINATOR_ID_LEN || !s.chars().all(|c| ALPHABET.contains(c)) {
            return Err(format!(
                "a coordinator id is {COORDINATOR_ID_LEN} characters from {ALPHABET:?}, not {s:?}"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for CoordinatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hands out query ids; one per process, behind the registry's lock.
#[derive(Debug)]
pub struct QueryIdGenerator {
    coordinator: CoordinatorId,
    day: u64,
    next: u32,
}

impl QueryIdGenerator {
    pub fn new(coordinator: CoordinatorId) -> Self {
        Self { coordinator, day: 0, next: 0 }
    }

    /// The next id for a query created at `unix_secs` (seconds since the epoch, UTC).
    pub fn next_id(&mut self, unix_secs: u64) -> String {
        let day = unix_secs / SECS_PER_DAY;
        if day != self.day || self.next > MAX_COUNTER {
            self.day = day;
            self.next = 0;
        }
        let counter = self.next;
        self.next += 1;
        format_query_id(unix_secs, counter, &self.coordinator)
    }
}

/// `yyyyMMdd_HHmmss_NNNNN_ccccc` for a time, a counter and a coordinator id.
pub fn format_query_id(unix_secs: u64, counter: u32, coordinator: &CoordinatorId) -> String {
    let (year, month, day) = civil_from_days(unix_secs / SECS_PER_DAY);
    let secs = unix_secs % SECS_PER_DAY;
    format!(
        "{year:04}{month:02}{day:02}_{:02}{:02}{:02}_{counter:05}_{coordinator}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// True when `s` has the shape of a Trino query id (any coordinator id from [`ALPHABET`]).
#[cfg(test)]
pub fn is_query_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('_').collect();
    let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    parts.len() == 4
        && digits(parts[0], 8)
        && digits(parts[1], 6)
        && digits(parts[2], 5)
        && parts[3].parse::<CoordinatorId>().is_ok()
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(s: &str) -> CoordinatorId {
        s.parse().unwrap()
    }

    #[test]
    fn formats_like_trino() {
        for (secs, counter, expected) in [
            (0, 0, "19700101_000000_00000_abcde"),
            (951_782_400, 7, "20000229_000000_00007_abcde"),
            (1_732_563_845, 42, "20241125_194405_00042_abcde"),
            (4_102_444_799, 99_999, "20991231_235959_99999_abcde"),
        ] {
            assert_eq!(format_query_id(secs, counter, &cid("abcde")), expected, "{secs}");
        }
    }

    #[test]
    fn coordinator_id_validation() {
        for (input, ok) in [
            ("abcde", true),
            ("23456", true),
            ("zzzz9", true),
            ("abcd", false),
            ("abcdef", false),
            ("abcdl", false),
            ("abcd0", false),
            ("abcd1", false),
            ("ABCDE", false),
            ("", false),
        ] {
            assert_eq!(input.parse::<CoordinatorId>().is_ok(), ok, "{input:?}");
        }
    }

    #[test]
    fn random_coordinator_ids_are_valid() {
        for _ in 0..100 {
            let id = CoordinatorId::random();
            assert!(id.as_str().parse::<CoordinatorId>().is_ok(), "{id}");
        }
    }

    #[test]
    fn counter_counts_up_and_restarts_each_day() {
        let mut ids = QueryIdGenerator::new(cid("k2m3n"));
        let t = 1_732_563_845;
        assert_eq!(ids.next_id(t), "20241125_194405_00000_k2m3n");
        assert_eq!(ids.next_id(t), "20241125_194405_00001_k2m3n");
        assert_eq!(ids.next_id(t + 1), "20241125_194406_00002_k2m3n");
        assert_eq!(ids.next_id(t + SECS_PER_DAY), "20241126_194405_00000_k2m3n");
    }

    #[test]
    fn counter_wraps_after_99999() {
        let mut ids = QueryIdGenerator::new(cid("abcde"));
        ids.next_id(0);
        ids.next = MAX_COUNTER;
        assert!(ids.next_id(5).contains("_99999_"));
        assert!(ids.next_id(5).contains("_00000_"));
    }

    #[test]
    fn shape_check() {
        for (input, ok) in [
            ("20241125_194405_00042_abcde", true),
            ("20241125_194405_00042_abcd", false),
            ("20241125_194405_0042_abcde", false),
            ("2024112_194405_00042_abcde", false),
            ("20241125-194405_00042_abcde", false),
            ("20241125_194405_00042_abcd0", false),
        ] {
            assert_eq!(is_query_id(input), ok, "{input}");
        }
    }
}
