//! Who is asking, and may they: Trino's default authentication for resources marked
//! `@ResourceSecurity(AUTHENTICATED_USER)` (`POST /v1/statement`, `/v1/query/...`), and the access check
//! on queries (rows Q4, Q7 of docs/trino-conformance.md).
//!
//! Without `http-server.authentication.type`, Trino authenticates with its `InsecureAuthenticator`: the
//! user of HTTP Basic credentials (a password is refused), else `X-Trino-User`; neither is a 401 with
//! `WWW-Authenticate: Basic realm="Trino"` (`BasicAuthCredentials`, `ServletSecurityUtils`). Public
//! resources (statement follow-ups, `/v1/info`, spooled segments) need nobody.
//!
//! Viewing or killing a query is then up to the access control ([`QueryAccess`]): Trino's default lets
//! every user see and kill every query; `owner` is what a rules file limiting `query` access to its owner
//! does (403 for anyone else). Pure.

use base64::Engine;
use http::HeaderMap;
use http::header::AUTHORIZATION;

/// The `WWW-Authenticate` challenge of a refused authentication.
pub const BASIC_CHALLENGE: &str = "Basic realm=\"Trino\"";

/// Who may view and kill a query (`--query-access`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryAccess {
    /// Trino's default access control: every user, every query.
    #[default]
    All,
    /// Only the user who submitted it (a file-based rule on `query` owners).
    Owner,
}

impl QueryAccess {
    /// Whether `user` may view or kill a query `owner` submitted.
    pub fn allows(self, user: &str, owner: Option<&str>) -> bool {
        match self {
            QueryAccess::All => true,
            QueryAccess::Owner => owner == Some(user),
        }
    }
}

/// Why a request was not authenticated: the 401's message, and whether it carries the Basic challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unauthenticated {
    pub message: &'static str,
    pub challenge: bool,
}

/// The authenticated user of a request, as Trino's `InsecureAuthenticator` finds it.
pub fn authenticated_user(headers: &HeaderMap) -> Result<String, Unauthenticated> {
    let refuse = |message, challenge| Err(Unauthenticated { message, challenge });
    if let Some(authorization) = headers.get(AUTHORIZATION) {
        let header = String::from_utf8_lossy(authorization.as_bytes());
        if let Some((scheme, credentials)) = header.split_once(' ')
            && scheme.eq_ignore_ascii_case("basic")
        {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials.trim()) else {
                return refuse("Invalid base64 encoded credentials", false);
            };
            // ISO-8859-1, as Trino decodes them.
            let text: String = decoded.iter().map(|&b| char::from(b)).collect();
            let (user, password) = text.split_once(':').unwrap_or((text.as_str(), ""));
            if user.is_empty() {
                return refuse("Malformed credentials: user is empty", false);
            }
            if !password.is_empty() {
                return refuse("Password not allowed for insecure authentication", true);
            }
            return Ok(user.to_owned());
        }
    }
    match headers.get("x-trino-user").map(|v| v.as_bytes()).filter(|v| !v.is_empty()) {
        // Header values are ISO-8859-1 to Jetty: any bytes make a user.
        Some(bytes) => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        None => refuse("Basic authentication or X-Trino-User must be sent", true),
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn basic(credentials: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
    }

    // conformance: Q7
    #[test]
    fn insecure_authentication() {
        let missing = Err(Unauthenticated {
            message: "Basic authentication or X-Trino-User must be sent",
            challenge: true,
        });
        for (headers, expected) in [
            (vec![("x-trino-user", "alice".to_owned())], Ok("alice".to_owned())),
            (vec![("authorization", basic("bob"))], Ok("bob".to_owned())),
            (vec![("authorization", basic("bob:"))], Ok("bob".to_owned())),
            (
                vec![("authorization", basic("bob")), ("x-trino-user", "alice".to_owned())],
                Ok("bob".to_owned()),
            ),
            (
                vec![("authorization", "Bearer x".to_owned()), ("x-trino-user", "alice".to_owned())],
                Ok("alice".to_owned()),
            ),
            (
                vec![("authorization", basic("bob:secret"))],
                Err(Unauthenticated {
                    message: "Password not allowed for insecure authentication",
                    challenge: true,
                }),
            ),
            (
                vec![("authorization", basic(":x"))],
                Err(Unauthenticated { message: "Malformed credentials: user is empty", challenge: false }),
            ),
            (
                vec![("authorization", "Basic !!!".to_owned())],
                Err(Unauthenticated { message: "Invalid base64 encoded credentials", challenge: false }),
            ),
            (vec![], missing.clone()),
            (vec![("x-trino-user", String::new())], missing.clone()),
            (vec![("x-presto-user", "old".to_owned())], missing),
        ] {
            let mut map = HeaderMap::new();
            for (name, value) in &headers {
                map.append(http::HeaderName::from_static(name), HeaderValue::from_str(value).unwrap());
            }
            assert_eq!(authenticated_user(&map), expected, "{headers:?}");
        }
        let mut latin1 = HeaderMap::new();
        latin1.insert("x-trino-user", HeaderValue::from_bytes(b"\xe9t\xe9").unwrap());
        assert_eq!(authenticated_user(&latin1), Ok("\u{e9}t\u{e9}".to_owned()));
    }

    // conformance: Q4
    #[test]
    fn query_access() {
        for (access, user, owner, allowed) in [
            (QueryAccess::All, "alice", Some("bob"), true),
            (QueryAccess::All, "alice", None, true),
            (QueryAccess::Owner, "alice", Some("alice"), true),
            (QueryAccess::Owner, "alice", Some("bob"), false),
            (QueryAccess::Owner, "alice", None, false),
        ] {
            assert_eq!(access.allows(user, owner), allowed, "{access:?} {user} {owner:?}");
        }
    }
}
