//! Which request paths a Trino coordinator's HTTP server refuses before any resource sees them: Jetty 12's
//! default URI compliance (`UriCompliance.DEFAULT`, which allows no violation, checked in
//! `HttpChannelState.onRequest` with `UriCompliance.checkUriCompliance`) over the violations Jetty's
//! `HttpURI.Mutable.parse`/`checkSegment` finds, and the paths its parser cannot take at all (a bad
//! escape, `%00`, or `..` climbing above the root: "Bad URI"). Airlift switches none of it off unless
//! a server asks for `LEGACY_URI_COMPLIANCE`, and Trino's coordinator does not. Rows J1–J7 of
//! docs/trino-conformance.md.
//!
//! A plain `..` is no violation: Jetty resolves it for its own servlet mapping, but Jersey matches the
//! raw path ([`crate::jersey`]). Pure: a raw path (no query) in, the 400's reason out.

/// Jetty's `UriCompliance.Violation`s, in its declaration order (which is the order of the reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Violation {
    AmbiguousPathSegment,
    AmbiguousEmptySegment,
    AmbiguousPathSeparator,
    AmbiguousPathParameter,
    AmbiguousPathEncoding,
    Utf16Encodings,
    BadUtf8Encoding,
    SuspiciousPathCharacters,
    IllegalPathCharacters,
}

impl Violation {
    fn description(self) -> &'static str {
        match self {
            Violation::AmbiguousPathSegment => "Ambiguous URI path segment",
            Violation::AmbiguousEmptySegment => "Ambiguous URI empty segment",
            Violation::AmbiguousPathSeparator => "Ambiguous URI path separator",
            Violation::AmbiguousPathParameter => "Ambiguous URI path parameter",
            Violation::AmbiguousPathEncoding => "Ambiguous URI path encoding",
            Violation::Utf16Encodings => "UTF-16 encoding",
            Violation::BadUtf8Encoding => "Bad UTF-8 encoding",
            Violation::SuspiciousPathCharacters => "Suspicious Path Character",
            Violation::IllegalPathCharacters => "Illegal Path Character",
        }
    }
}

/// Segments `HttpURI` calls ambiguous (`true`: always; `false`: only before a `;parameter`).
const AMBIGUOUS_SEGMENTS: [(&str, bool); 12] = [
    (".", false),
    ("%2e", true),
    ("%u002e", true),
    ("..", false),
    (".%2e", true),
    (".%u002e", true),
    ("%2e.", true),
    ("%2e%2e", true),
    ("%2e%u002e", true),
    ("%u002e.", true),
    ("%u002e%2e", true),
    ("%u002e%u002e", true),
];

/// RFC 3986 `pchar` (without the `%` of an escape), as Jetty's `__pathCharacters`.
fn is_path_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&c)
}

fn is_suspicious(value: u32) -> bool {
    value == u32::from(b'\\') || value == 0x7F || value <= 0x1F
}

#[derive(Default)]
struct Parse {
    violations: Vec<Violation>,
    empty_segment: bool,
}

impl Parse {
    fn add(&mut self, violation: Violation) {
        if !self.violations.contains(&violation) {
            self.violations.push(violation);
        }
    }

    /// Jetty's `checkSegment`: `path[segment..end]` just ended (before `/`, `;` or the end).
    fn check_segment(&mut self, path: &str, dot_or_encoded: bool, segment: usize, end: usize, param: bool) {
        if self.empty_segment {
            self.add(Violation::AmbiguousEmptySegment);
        }
        if end == segment {
            if end >= path.len() {
                return;
            }
            if segment == 0 {
                self.add(Violation::AmbiguousEmptySegment);
                return;
            }
            if !self.empty_segment {
                self.empty_segment = true;
                return;
            }
        }
        if !dot_or_encoded {
            return;
        }
        let text = &path[segment..end];
        if let Some((_, always)) = AMBIGUOUS_SEGMENTS.iter().find(|(s, _)| s.eq_ignore_ascii_case(text)) {
            if *always {
                self.add(Violation::AmbiguousPathSegment);
            }
            if param {
                self.add(Violation::AmbiguousPathParameter);
            }
        }
    }
}

/// Why Jetty answers 400 to a request for `path` (the raw path, as received, without the query), or
/// `None` when it takes it.
pub fn refusal(path: &str) -> Option<String> {
    match parse(path) {
        Err(reason) => Some(reason.to_owned()),
        Ok(parse) if !parse.violations.is_empty() => {
            let mut violations = parse.violations;
            violations.sort();
            Some(violations.iter().map(|v| v.description()).collect::<Vec<_>>().join(", "))
        }
        Ok(_) => None,
    }
}

fn parse(path: &str) -> Result<Parse, &'static str> {
    const BAD_URI: &str = "Bad URI";
    let bytes = path.as_bytes();
    let mut p = Parse::default();
    let (mut segment, mut dot, mut encoded, mut in_param) = (0usize, false, false, false);
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_param {
            if c == b'/' {
                encoded = true;
                segment = i + 1;
                in_param = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'%' => {
                encoded = true;
                let (digits, utf16) =
                    if bytes.get(i + 1).is_some_and(|b| *b == b'u') { (4, true) } else { (2, false) };
                let start = if utf16 { i + 2 } else { i + 1 };
                let hex = bytes.get(start..start + digits).ok_or(BAD_URI)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return Err(BAD_URI);
                }
                let value = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .ok_or(BAD_URI)?;
                if utf16 {
                    p.add(Violation::Utf16Encodings);
                }
                match value {
                    0 => return Err(BAD_URI),
                    0x2F => p.add(Violation::AmbiguousPathSeparator),
                    0x25 => p.add(Violation::AmbiguousPathEncoding),
                    v if is_suspicious(v) => p.add(Violation::SuspiciousPathCharacters),
                    _ => {}
                }
                i = start + digits;
                continue;
            }
            b';' => {
                p.check_segment(path, dot || encoded, segment, i, true);
                in_param = true;
            }
            b'/' => {
                if i != 0 {
                    p.check_segment(path, dot || encoded, segment, i, false);
                }
                segment = i + 1;
            }
            b'.' => dot |= segment == i,
            _ => {
                if !c.is_ascii() || !is_path_char(c) {
                    p.add(Violation::IllegalPathCharacters);
                }
                if is_suspicious(u32::from(c)) {
                    p.add(Violation::SuspiciousPathCharacters);
                }
            }
        }
        i += 1;
    }
    if !in_param {
        p.check_segment(path, dot || encoded, segment, bytes.len(), false);
    }
    if dot || encoded {
        if !decodes_to_utf8(path) {
            p.add(Violation::BadUtf8Encoding);
        }
        if climbs_above_root(path) {
            return Err(BAD_URI);
        }
    }
    Ok(p)
}

/// Whether the percent-decoded path is UTF-8 (Jetty's canonical path reports bad UTF-8 otherwise).
fn decodes_to_utf8(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && bytes.get(i + 1) != Some(&b'u'))
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(value) = escaped {
            decoded.push(value);
            i += 3;
            continue;
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    std::str::from_utf8(&decoded).is_ok()
}

/// Whether resolving `.` and `..` (parameters removed) goes above `/` (Jetty's canonical path is then null).
fn climbs_above_root(path: &str) -> bool {
    let mut depth: i64 = 0;
    for segment in path.split('/').skip(1) {
        match segment.split(';').next().unwrap_or_default() {
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            "." => {}
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEP: &str = "Ambiguous URI path separator";
    const EMPTY: &str = "Ambiguous URI empty segment";
    const SEGMENT: &str = "Ambiguous URI path segment";
    const PARAM: &str = "Ambiguous URI path parameter";
    const ENCODING: &str = "Ambiguous URI path encoding";
    const SUSPICIOUS: &str = "Suspicious Path Character";
    const ILLEGAL: &str = "Illegal Path Character";
    const BAD: &str = "Bad URI";

    fn check(cases: &[(&str, Option<&str>)]) {
        for (path, expected) in cases {
            assert_eq!(refusal(path).as_deref(), *expected, "{path:?}");
        }
    }

    // conformance: J1
    #[test]
    fn encoded_slash_is_refused() {
        check(&[
            ("/v1/query/a%2Fb", Some(SEP)),
            ("/v1/query/a%2fb", Some(SEP)),
            ("/v1/statement/executing/x%2F..%2Fy/s/1", Some(SEP)),
        ]);
    }

    // conformance: J2
    #[test]
    fn empty_segments_are_refused() {
        check(&[
            ("//v1/info", Some(EMPTY)),
            ("/v1//info", Some(EMPTY)),
            ("/v1/statement//", Some(EMPTY)),
            ("/v1/;x/info", Some(EMPTY)),
            // A single trailing slash is no empty segment.
            ("/v1/statement/", None),
            ("/", None),
        ]);
    }

    // conformance: J3
    #[test]
    fn encoded_dot_segments_are_refused() {
        check(&[
            ("/v1/%2e%2e/info", Some(SEGMENT)),
            ("/v1/%2E%2E/info", Some(SEGMENT)),
            ("/v1/.%2e/info", Some(SEGMENT)),
            ("/v1/%2e./info", Some(SEGMENT)),
            ("/v1/%2e/info", Some(SEGMENT)),
            ("/v1/%u002e%u002e/info", Some("Ambiguous URI path segment, UTF-16 encoding")),
            ("/v1/statement/executing/%2e%2e", Some(SEGMENT)),
        ]);
    }

    // conformance: J4
    #[test]
    fn dot_segments_with_parameters_are_refused() {
        check(&[
            ("/v1/..;x/info", Some(PARAM)),
            ("/v1/.;x/info", Some(PARAM)),
            ("/v1/statement/executing/x/..;", Some(PARAM)),
            ("/v1/%2e%2e;x/info", Some("Ambiguous URI path segment, Ambiguous URI path parameter")),
            // A parameter on an ordinary segment is fine (Jersey drops it, row M1).
            ("/v1/statement;x=1", None),
        ]);
    }

    // conformance: J5
    #[test]
    fn encoded_percent_is_refused() {
        check(&[("/v1/query/2026%255F", Some(ENCODING)), ("/v1/%25", Some(ENCODING))]);
    }

    // conformance: J6
    #[test]
    fn plain_dot_dot_is_taken_unless_it_climbs_above_the_root() {
        check(&[
            ("/v1/statement/executing/x/../..", None),
            ("/v1/query/../info", None),
            ("/v1/./info", None),
            ("/a/b/../../c", None),
            ("/..", Some(BAD)),
            ("/v1/../../info", Some(BAD)),
            ("/a/b/..;x/c", Some(PARAM)),
            ("/a/..;x/../b", Some(BAD)),
        ]);
    }

    // conformance: J7
    #[test]
    fn suspicious_illegal_and_malformed_escapes_are_refused() {
        check(&[
            ("/v1/query/a%5Cb", Some(SUSPICIOUS)),
            ("/v1/query/a%0Ab", Some(SUSPICIOUS)),
            ("/v1/query/a%7Fb", Some(SUSPICIOUS)),
            ("/v1/query/a\\b", Some("Suspicious Path Character, Illegal Path Character")),
            ("/v1/query/a\"b", Some(ILLEGAL)),
            ("/v1/query/a<b>", Some(ILLEGAL)),
            ("/v1/query/a{b}", Some(ILLEGAL)),
            ("/v1/query/a|b", Some(ILLEGAL)),
            ("/v1/query/caf\u{e9}", Some(ILLEGAL)),
            ("/v1/query/%ff", Some("Bad UTF-8 encoding")),
            ("/v1/query/%00", Some(BAD)),
            ("/v1/query/%zz", Some(BAD)),
            ("/v1/query/%4", Some(BAD)),
            // Escapes of ordinary characters, and sub-delims, are fine.
            ("/v1/%73tatement", None),
            ("/v1/query/20260101_000000_00000_abcde", None),
            ("/v1/query/a%20b", None),
            ("/v1/query/!$&'()*+,=:@~", None),
            ("/ui/query.html", None),
        ]);
    }
}
