//! Forwarded headers, as a Trino coordinator's HTTP server (airlift on Jetty 12) treats them, and the
//! external base URI every URI the emulator hands out starts with (docs/trino-conformance.md, rows F1–F6,
//! U1).
//!
//! `http-server.process-forwarded` ([`Mode`]): REJECT, the default, answers 406 to any request carrying a
//! header whose name starts with `X-Forwarded-` (airlift's `RejectForwardedRequestCustomizer`; RFC 7239
//! `Forwarded` is not one of them and is simply not read); ACCEPT (`=true`) builds URIs from them
//! (Jetty's `ForwardedRequestCustomizer`, and Trino's `ExternalUriInfo` for `X-Forwarded-Prefix`); IGNORE
//! drops every `X-Forwarded-*` header before anything reads it (airlift's
//! `IgnoreForwardedRequestCustomizer`).
//!
//! Pure: header values in, strings out.

use http::HeaderMap;
use http::header::HOST;

use crate::trino_version::{PrefixHandling, Version};

/// `http-server.process-forwarded`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Trino's default: 406 for any `X-Forwarded-*` header.
    #[default]
    Reject,
    /// `=true`: URIs follow `X-Forwarded-Proto/Host/Port/Prefix` and `Forwarded`.
    Accept,
    /// `=ignore`: `X-Forwarded-*` headers are dropped unread.
    Ignore,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Reject => "reject",
            Mode::Accept => "accept",
            Mode::Ignore => "ignore",
        }
    }
}

/// What airlift's check matches: the name starts with `x-forwarded-`, in any case.
fn is_forwarding_header(name: &str) -> bool {
    name.len() >= 12 && name.as_bytes()[..12].eq_ignore_ascii_case(b"x-forwarded-")
}

/// The header name as Jetty reports it: the canonical spelling of the ones its `HttpHeader` knows, else
/// each word capitalised (the emulator's HTTP stack keeps no original spelling).
fn jetty_name(lower: &str) -> String {
    match lower {
        "x-forwarded-for" => "X-Forwarded-For".to_owned(),
        "x-forwarded-host" => "X-Forwarded-Host".to_owned(),
        "x-forwarded-proto" => "X-Forwarded-Proto".to_owned(),
        "x-forwarded-server" => "X-Forwarded-Server".to_owned(),
        "x-forwarded-port" => "X-Forwarded-Port".to_owned(),
        other => other
            .split('-')
            .map(|word| {
                let mut chars = word.chars();
                chars
                    .next()
                    .map_or_else(String::new, |first| first.to_ascii_uppercase().to_string() + chars.as_str())
            })
            .collect::<Vec<_>>()
            .join("-"),
    }
}

/// Under REJECT: the first `X-Forwarded-*` header of the request (in the order received), by name.
pub fn rejected_header(mode: Mode, headers: &HeaderMap) -> Option<String> {
    if mode != Mode::Reject {
        return None;
    }
    headers.keys().find(|name| is_forwarding_header(name.as_str())).map(|name| jetty_name(name.as_str()))
}

/// The reason of the 406 (airlift's `RejectForwardedRequestCustomizer`).
pub fn rejection_message(header: &str) -> String {
    format!("Server configuration does not allow processing of the {header} header")
}

/// The request's parts that decide its external base URI.
#[derive(Clone, Copy, Debug, Default)]
pub struct Origin<'a> {
    /// `Host` (HTTP/1.1 always has one).
    pub host: Option<&'a str>,
    pub x_forwarded_proto: Option<&'a str>,
    pub x_forwarded_host: Option<&'a str>,
    pub x_forwarded_port: Option<&'a str>,
    pub x_forwarded_prefix: Option<&'a str>,
    /// RFC 7239 `Forwarded`.
    pub forwarded: Option<&'a str>,
}

impl<'a> Origin<'a> {
    pub fn from_headers(headers: &'a HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Origin {
            host: get(HOST.as_str()),
            x_forwarded_proto: get("x-forwarded-proto"),
            x_forwarded_host: get("x-forwarded-host"),
            x_forwarded_port: get("x-forwarded-port"),
            x_forwarded_prefix: get("x-forwarded-prefix"),
            forwarded: get("forwarded"),
        }
    }
}

/// Where the emulator itself is: the fallback authority and the listener's scheme.
#[derive(Clone, Copy, Debug)]
pub struct Listener<'a> {
    /// `host:port` it listens on.
    pub address: &'a str,
    /// `http`, or `https` with `--tls-cert`.
    pub scheme: &'a str,
}

/// `scheme://authority[/prefix]`, no trailing slash: the base of every URI handed out for a request.
pub fn external_base(mode: Mode, version: Version, origin: &Origin<'_>, listener: Listener<'_>) -> String {
    let mut scheme = listener.scheme.to_owned();
    let (mut host, mut port) = split_authority(origin.host.unwrap_or(listener.address));
    let mut prefix = None;
    if mode == Mode::Accept {
        // Jetty's ForwardedRequestCustomizer: each header sets scheme, host or port with a priority
        // (Forwarded > X-Forwarded-Host > X-Forwarded-Port > X-Forwarded-Proto); the leftmost value counts.
        let forwarded = origin.forwarded.map(first_forwarded_element).unwrap_or_default();
        if let Some(proto) = forwarded.proto.or_else(|| origin.x_forwarded_proto.and_then(leftmost)) {
            scheme = proto.to_ascii_lowercase();
        }
        let forwarded_host = forwarded.host.or_else(|| origin.x_forwarded_host.and_then(leftmost));
        if let Some(authority) = forwarded_host {
            // A forwarded host replaces the Host header's port too: without a port of its own the port
            // is implied by the scheme unless X-Forwarded-Port names one.
            let (h, p) = split_authority(authority);
            host = h;
            port = p.or_else(|| origin.x_forwarded_port.and_then(leftmost).map(str::to_owned));
        } else if let Some(p) = origin.x_forwarded_port.and_then(leftmost) {
            port = Some(p.to_owned());
        }
        prefix = origin.x_forwarded_prefix.and_then(|p| prefix_path(version, p));
    }
    let default_port = match scheme.as_str() {
        "http" => Some("80"),
        "https" => Some("443"),
        _ => None,
    };
    let authority = match port {
        Some(p) if Some(p.as_str()) != default_port => format!("{host}:{p}"),
        _ => host,
    };
    format!("{scheme}://{authority}{}", prefix.unwrap_or_default())
}

fn leftmost(value: &str) -> Option<&str> {
    value.split(',').next().map(str::trim).filter(|v| !v.is_empty())
}

/// `host[:port]` (IPv6 literals in brackets) → host and port.
fn split_authority(authority: &str) -> (String, Option<String>) {
    let authority = authority.trim();
    if let Some(end) = authority.strip_prefix('[').and_then(|rest| rest.find(']')) {
        let host = &authority[..end + 2];
        let port = authority[end + 2..].strip_prefix(':').filter(|p| !p.is_empty());
        return (host.to_owned(), port.map(str::to_owned));
    }
    match authority.rsplit_once(':') {
        Some((host, port))
            if !host.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (host.to_owned(), Some(port.to_owned()))
        }
        _ => (authority.to_owned(), None),
    }
}

#[derive(Default)]
struct ForwardedElement<'a> {
    host: Option<&'a str>,
    proto: Option<&'a str>,
}

/// The `host` and `proto` of the first element of an RFC 7239 `Forwarded` header.
fn first_forwarded_element(value: &str) -> ForwardedElement<'_> {
    let mut element = ForwardedElement::default();
    let first = value.split(',').next().unwrap_or_default();
    for pair in first.split(';') {
        let Some((key, val)) = pair.split_once('=') else { continue };
        let val = val.trim().trim_matches('"');
        if val.is_empty() {
            continue;
        }
        match key.trim().to_ascii_lowercase().as_str() {
            "host" => element.host = Some(val),
            "proto" => element.proto = Some(val),
            _ => {}
        }
    }
    element
}

/// The path prefix `X-Forwarded-Prefix` puts before every path, as `version` builds it (`/a/b` or
/// `/%2Fa%2Fb`); `None` when it puts none.
fn prefix_path(version: Version, prefix: &str) -> Option<String> {
    match version.prefix_handling() {
        PrefixHandling::Ignored => None,
        // Guava's urlPathSegmentEscaper: the whole value becomes one segment.
        PrefixHandling::EscapedSegment => {
            (!prefix.is_empty()).then(|| format!("/{}", escape(prefix, SEGMENT_SAFE)))
        }
        // Prepended as it is (Jersey's UriBuilder encodes only what cannot stand in a path).
        PrefixHandling::Raw => {
            let trimmed = prefix.trim_matches('/');
            (!trimmed.is_empty()).then(|| format!("/{}", escape(trimmed, PATH_SAFE)))
        }
    }
}

/// Characters a path segment keeps unescaped (RFC 3986 pchar without `%`).
const SEGMENT_SAFE: &str = "-._~!$&'()*+,;=:@";
/// What a path keeps: pchar, `/`, and `%` when it starts an escape already.
const PATH_SAFE: &str = "-._~!$&'()*+,;=:@/%";

fn escape(text: &str, safe: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    for (i, &b) in bytes.iter().enumerate() {
        let keep = b.is_ascii_alphanumeric()
            || (b.is_ascii() && safe.contains(b as char) && b != b'%')
            || (b == b'%'
                && safe.contains('%')
                && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const LISTENER: Listener<'static> = Listener { address: "127.0.0.1:9", scheme: "http" };

    fn v(n: u32) -> Version {
        n.to_string().parse().unwrap()
    }

    // conformance: F1
    #[test]
    fn reject_refuses_any_x_forwarded_header_and_names_it() {
        for (headers, expected) in [
            (vec![("x-forwarded-proto", "http")], Some("X-Forwarded-Proto")),
            (vec![("X-Forwarded-For", "10.0.0.1")], Some("X-Forwarded-For")),
            (vec![("x-forwarded-prefix", "/p")], Some("X-Forwarded-Prefix")),
            (vec![("X-FORWARDED-HOST", "h")], Some("X-Forwarded-Host")),
            (vec![("x-forwarded-anything", "")], Some("X-Forwarded-Anything")),
            (vec![("x-trino-user", "a"), ("x-forwarded-port", "1")], Some("X-Forwarded-Port")),
            // Not X-Forwarded-*: RFC 7239's Forwarded, and look-alikes.
            (vec![("forwarded", "proto=https")], None),
            (vec![("x-forwarded", "1")], None),
            (vec![("x-forwardedfor", "1")], None),
            (vec![("x-real-ip", "1")], None),
            (vec![], None),
        ] {
            let mut map = HeaderMap::new();
            for (name, value) in &headers {
                map.append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_static(value),
                );
            }
            assert_eq!(rejected_header(Mode::Reject, &map).as_deref(), expected, "{headers:?}");
            assert_eq!(rejected_header(Mode::Accept, &map), None);
            assert_eq!(rejected_header(Mode::Ignore, &map), None);
        }
        assert_eq!(
            rejection_message("X-Forwarded-Proto"),
            "Server configuration does not allow processing of the X-Forwarded-Proto header"
        );
    }

    fn origin<'a>(
        host: Option<&'a str>,
        [proto, fwd_host, port, prefix]: [Option<&'a str>; 4],
    ) -> Origin<'a> {
        Origin {
            host,
            x_forwarded_proto: proto,
            x_forwarded_host: fwd_host,
            x_forwarded_port: port,
            x_forwarded_prefix: prefix,
            forwarded: None,
        }
    }

    // conformance: U1, F2
    #[test]
    fn accept_builds_uris_from_forwarded_headers_as_jetty_does() {
        #[rustfmt::skip]
        let cases = [
            (Some("envoy:8080"), [None; 4], "http://envoy:8080"),
            (None, [None; 4], "http://127.0.0.1:9"),
            (Some("envoy:80"), [None; 4], "http://envoy"),
            (Some("h"), [Some("https"), None, None, None], "https://h"),
            (Some("h:8080"), [Some("https"), None, None, None], "https://h:8080"),
            (Some("h:1"), [Some("HTTPS, http"), None, None, None], "https://h:1"),
            (Some("h:1"), [None, Some("gw.example"), None, None], "http://gw.example"),
            (Some("h:1"), [None, Some("gw.example:8443, other"), None, None], "http://gw.example:8443"),
            (Some("h:1"), [None, None, Some("443"), None], "http://h:443"),
            (Some("h:1"), [Some("https"), None, Some("443"), None], "https://h"),
            (Some("h:1"), [None, Some("gw"), Some("81"), None], "http://gw:81"),
            // A port in X-Forwarded-Host outranks X-Forwarded-Port.
            (Some("h:1"), [None, Some("gw:82"), Some("81"), None], "http://gw:82"),
            (Some("[::1]:1"), [None, None, Some("2"), None], "http://[::1]:2"),
            (Some("h"), [None, Some("[::2]:7"), None, None], "http://[::2]:7"),
            (Some("h"), [None, None, None, Some("/trino/")], "http://h/trino"),
            (Some("h"), [None, None, None, Some("trino")], "http://h/trino"),
            (Some("h"), [None, None, None, Some("/")], "http://h"),
            (Some("h"), [None, None, None, Some("/_trino/a b")], "http://h/_trino/a%20b"),
        ];
        for (host, forwarded, expected) in cases {
            let o = origin(host, forwarded);
            assert_eq!(
                external_base(Mode::Accept, Version::NEWEST, &o, LISTENER),
                expected,
                "{host:?} {forwarded:?}"
            );
        }
        // RFC 7239 Forwarded outranks every X-Forwarded-* header.
        let o = Origin {
            forwarded: Some("for=10.0.0.1;proto=https;host=\"fw.example:9443\", for=10.0.0.2;host=other"),
            ..origin(Some("h:1"), [Some("http"), Some("xf.example"), Some("81"), None])
        };
        assert_eq!(external_base(Mode::Accept, Version::NEWEST, &o, LISTENER), "https://fw.example:9443");
        // The listener's own scheme counts only when nothing is forwarded.
        let tls = Listener { address: "127.0.0.1:9", scheme: "https" };
        assert_eq!(
            external_base(Mode::Accept, Version::NEWEST, &origin(Some("h:443"), [None; 4]), tls),
            "https://h"
        );
        assert_eq!(
            external_base(
                Mode::Accept,
                Version::NEWEST,
                &origin(Some("h:1"), [Some("http"), None, None, None]),
                tls
            ),
            "http://h:1"
        );
    }

    // conformance: F3
    #[test]
    fn reject_and_ignore_build_uris_from_the_host_header_alone() {
        let o = Origin {
            forwarded: Some("proto=https;host=fw"),
            ..origin(Some("envoy:8080"), [Some("https"), Some("gw"), Some("443"), Some("/p")])
        };
        for mode in [Mode::Reject, Mode::Ignore] {
            assert_eq!(external_base(mode, Version::NEWEST, &o, LISTENER), "http://envoy:8080", "{mode:?}");
        }
    }

    // conformance: F4, F5
    #[test]
    fn prefix_by_version() {
        for (version, prefix, expected) in [
            (451, "/_trino/a", "http://h"),
            (452, "/_trino/a", "http://h/%2F_trino%2Fa"),
            (457, "/_trino/a", "http://h/%2F_trino%2Fa"),
            (457, "/t r%", "http://h/%2Ft%20r%25"),
            (457, "", "http://h"),
            (458, "/_trino/a", "http://h/_trino/a"),
            (483, "/_trino/a/", "http://h/_trino/a"),
            (483, "/a%2Fb", "http://h/a%2Fb"),
        ] {
            let o = origin(Some("h"), [None, None, None, Some(prefix)]);
            assert_eq!(
                external_base(Mode::Accept, v(version), &o, LISTENER),
                expected,
                "{version} {prefix:?}"
            );
        }
    }
}
