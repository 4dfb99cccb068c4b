//! Trino query ids: which strings are query ids, and what their shape tells the router.
//!
//! A coordinator names queries `yyyyMMdd_HHmmss_NNNNN_ccccc`, where `ccccc` is a coordinator id drawn at
//! random once per coordinator process (`QueryIdGenerator`). Trino itself accepts any id made of
//! `[a-z0-9_]`, so the router does too, up to [`MAX_LEN`] characters; only ids of the generator's exact
//! shape have a [`QueryId::coordinator_id`].

use std::fmt;
use std::sync::Arc;

/// Longer ids are refused: Trino's own ids are 27 characters.
pub const MAX_LEN: usize = 128;

/// The alphabet of coordinator ids (no `l`, `o`, `0`, `1`).
pub const COORDINATOR_ID_ALPHABET: &str = "abcdefghijkmnpqrstuvwxyz23456789";

/// A syntactically valid query id. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(Arc<str>);

/// Why a string is not a query id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryIdError {
    Empty,
    TooLong,
    /// A character outside `[a-z0-9_]`.
    BadCharacter,
}

impl fmt::Display for QueryIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryIdError::Empty => "the query id is empty",
            QueryIdError::TooLong => "the query id is too long",
            QueryIdError::BadCharacter => "the query id may only hold a-z, 0-9 and _",
        })
    }
}

impl QueryId {
    pub fn parse(text: &str) -> Result<QueryId, QueryIdError> {
        if text.is_empty() {
            return Err(QueryIdError::Empty);
        }
        if text.len() > MAX_LEN {
            return Err(QueryIdError::TooLong);
        }
        if !text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(QueryIdError::BadCharacter);
        }
        Ok(QueryId(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` is a coordinator id as Trino draws them (5 characters of its alphabet): what a
    /// coordinator's `/v1/info` publishes as `coordinatorId` must be, to place anything.
    pub fn is_coordinator_id(text: &str) -> bool {
        text.len() == 5 && text.bytes().all(|c| COORDINATOR_ID_ALPHABET.as_bytes().contains(&c))
    }

    /// The coordinator id, when the id has the shape Trino's generator gives it.
    pub fn coordinator_id(&self) -> Option<&str> {
        let b = self.0.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let shaped = b.len() == 27
            && digits(0..8)
            && b[8] == b'_'
            && digits(9..15)
            && b[15] == b'_'
            && digits(16..21)
            && b[21] == b'_'
            && b[22..].iter().all(|c| COORDINATOR_ID_ALPHABET.as_bytes().contains(c));
        shaped.then(|| &self.0[22..])
    }
}

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueryId({})", &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_coordinator_id() {
        #[rustfmt::skip]
        let cases: &[(&str, Result<Option<&str>, QueryIdError>)] = &[
            ("20260101_120000_00001_abcde", Ok(Some("abcde"))),
            ("20260101_120000_99999_23456", Ok(Some("23456"))),
            ("20260101_120000_00001_abcdl", Ok(None)),       // `l` is not in the alphabet
            ("20260101_120000_00001_abcd0", Ok(None)),       // neither is `0`
            ("20260101_120000_0001_abcde", Ok(None)),        // counter too short
            ("20260101_120000_00001_abcdef", Ok(None)),      // suffix too long
            ("2026010a_120000_00001_abcde", Ok(None)),
            ("20260101-120000_00001_abcde", Err(QueryIdError::BadCharacter)),
            ("query_1", Ok(None)),
            ("x", Ok(None)),
            ("", Err(QueryIdError::Empty)),
            ("20260101_120000_00001_ABCDE", Err(QueryIdError::BadCharacter)),
            ("20260101_120000_00001_abcd%65", Err(QueryIdError::BadCharacter)),
            ("../etc/passwd", Err(QueryIdError::BadCharacter)),
            ("abc def", Err(QueryIdError::BadCharacter)),
            ("ab\0c", Err(QueryIdError::BadCharacter)),
            ("é", Err(QueryIdError::BadCharacter)),
        ];
        for (text, expected) in cases {
            let got = QueryId::parse(text).map(|id| id.coordinator_id().map(str::to_owned));
            let expected = expected.map(|o| o.map(str::to_owned));
            assert_eq!(got, expected, "{text:?}");
        }
    }

    #[test]
    fn length_bound() {
        assert!(QueryId::parse(&"a".repeat(MAX_LEN)).is_ok());
        assert_eq!(QueryId::parse(&"a".repeat(MAX_LEN + 1)), Err(QueryIdError::TooLong));
        assert_eq!(QueryId::parse(&"a".repeat(1 << 20)), Err(QueryIdError::TooLong));
    }
}
