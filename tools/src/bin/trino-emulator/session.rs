//! The client session as it travels in headers, and the transactions this emulator started.
//!
//! Session state lives in the client: `X-Trino-Session: a=1,b=x%20y` (values URL-encoded) on every
//! request, `X-Trino-Set-Session: name=value` / `X-Trino-Clear-Session: name` in answers. Values in
//! answers are form-encoded like Java's `URLEncoder` (the Python client decodes with `unquote_plus`).
//!
//! A transaction exists only on the coordinator that started it: [`Transactions`] remembers the ids this
//! process handed out, so a query carrying any other `X-Trino-Transaction-Id` (except `NONE`) fails.

use std::collections::HashSet;

/// The transaction id clients send when they are not in a transaction.
pub const NO_TRANSACTION: &str = "NONE";

/// `(name, value)` pairs of an `X-Trino-Session` header, values decoded; malformed items are skipped.
pub fn parse_session_header(header: &str) -> Vec<(String, String)> {
    header
        .split(',')
        .filter_map(|item| {
            let (name, value) = item.split_once('=')?;
            let name = name.trim();
            (!name.is_empty()).then(|| (name.to_owned(), url_decode(value.trim())))
        })
        .collect()
}

/// The transaction a request claims to be in: `None` for a missing, empty or `NONE` header.
pub fn claimed_transaction(header: Option<&str>) -> Option<&str> {
    header.map(str::trim).filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case(NO_TRANSACTION))
}

/// Form encoding as Java's `URLEncoder.encode(value, UTF_8)`: space as `+`, `[A-Za-z0-9.*_-]` kept.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'*' | b'_' | b'-' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes and `+` (as Java's `URLDecoder`); invalid escapes are kept verbatim.
pub fn url_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(hi, lo)| hi * 16 + lo),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// The transactions this process started and that are not yet committed or rolled back.
#[derive(Debug, Default)]
pub struct Transactions {
    active: HashSet<String>,
}

impl Transactions {
    /// Starts a transaction and returns its new id (UUID-shaped, like Trino's).
    pub fn start(&mut self) -> String {
        let id = new_transaction_id();
        self.active.insert(id.clone());
        id
    }

    pub fn is_active(&self, id: &str) -> bool {
        self.active.contains(id)
    }

    /// Ends a transaction; false if this process did not start it (or it already ended).
    pub fn end(&mut self, id: &str) -> bool {
        self.active.remove(id)
    }
}

/// A random version-4 UUID in its usual text form.
fn new_transaction_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn session_header() {
        for (header, expected) in [
            ("", pairs(&[])),
            ("a=1", pairs(&[("a", "1")])),
            ("a=1,b=x%20y", pairs(&[("a", "1"), ("b", "x y")])),
            (" hive.x = it%27s , bad, =v", pairs(&[("hive.x", "it's")])),
            ("q=10m", pairs(&[("q", "10m")])),
        ] {
            assert_eq!(parse_session_header(header), expected, "{header:?}");
        }
    }

    #[test]
    fn claimed_transactions() {
        for (header, expected) in [
            (None, None),
            (Some(""), None),
            (Some("NONE"), None),
            (Some("none"), None),
            (Some(" 1234 "), Some("1234")),
        ] {
            assert_eq!(claimed_transaction(header), expected, "{header:?}");
        }
    }

    #[test]
    fn form_encoding() {
        for (value, expected) in [
            ("10m", "10m"),
            ("a b", "a+b"),
            ("it's", "it%27s"),
            ("x=y,z", "x%3Dy%2Cz"),
            ("é", "%C3%A9"),
            ("a.b*c_d-e", "a.b*c_d-e"),
        ] {
            assert_eq!(form_encode(value), expected, "{value:?}");
            assert_eq!(url_decode(expected), value, "{expected:?}");
        }
    }

    #[test]
    fn decoding_tolerates_bad_escapes() {
        for (value, expected) in [("%", "%"), ("%4", "%4"), ("%zz", "%zz"), ("a%20", "a "), ("%2", "%2")] {
            assert_eq!(url_decode(value), expected, "{value:?}");
        }
    }

    #[test]
    fn transactions_are_remembered_until_ended() {
        let mut txns = Transactions::default();
        let id = txns.start();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert!(txns.is_active(&id));
        assert!(!txns.is_active("forged"));
        assert!(txns.end(&id));
        assert!(!txns.is_active(&id));
        assert!(!txns.end(&id));
    }
}
