//! What a new statement's HTTP request says, as routing rules test it (the CEL variable `request`): who
//! asks (user, source, client tags and info), what they name (routing group, catalog, schema, session
//! properties, transaction), and the raw headers. Pure: read from header pairs, once per new statement.
//! Also the names of the Trino protocol headers the router reads or sets.
//!
//! The user is `X-Trino-User`; without it, the user of `Authorization: Basic`, or the configured claim of
//! an `Authorization: Bearer` JWT. The JWT is only decoded, not verified: it picks a route, it grants
//! nothing (the coordinator authenticates).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// The header that names the user (a lookup on the coordinators asks as the request's user).
pub const USER_HEADER: &str = "x-trino-user";

/// The routing-group header clients (and trino-gateway users) send.
pub const ROUTING_GROUP_HEADER: &str = "x-trino-routing-group";

/// The header with which a coordinator (`http-server.process-forwarded=true`) prefixes its URIs.
pub const FORWARDED_PREFIX_HEADER: &str = "x-forwarded-prefix";

/// Trino's transaction headers: the client's, and the coordinator's answers.
pub const TRANSACTION_HEADER: &str = "x-trino-transaction-id";
pub const STARTED_TRANSACTION_HEADER: &str = "x-trino-started-transaction-id";
pub const CLEAR_TRANSACTION_HEADER: &str = "x-trino-clear-transaction-id";

/// What a new statement's request says (the CEL variable `request` of the routing rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRequest {
    pub method: String,
    pub path: String,
    pub user: String,
    pub source: String,
    pub client_tags: Vec<String>,
    pub client_info: String,
    pub routing_group: String,
    pub catalog: String,
    pub schema: String,
    /// `X-Trino-Session` as name → value pairs (values URL-decoded).
    pub session: Vec<(String, String)>,
    /// Every header with a UTF-8 value, names lower-case, in arrival order (pseudo-headers excluded).
    pub headers: Vec<(String, String)>,
    /// `X-Trino-Prepared-Statement`, raw.
    pub prepared_statements: String,
}

impl ClientRequest {
    /// Reads the facts from `(name, value)` header pairs (pseudo-headers `:method` and `:path` included).
    /// `jwt_user_claim`: the claim that names the user in a bearer JWT.
    pub fn from_headers<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        jwt_user_claim: &str,
    ) -> ClientRequest {
        let mut info = ClientRequest::default();
        let mut authorization = None;
        for (name, value) in pairs {
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                ":method" => info.method = value.to_owned(),
                ":path" => info.path = value.to_owned(),
                "x-trino-user" => info.user = value.trim().to_owned(),
                "x-trino-source" => info.source = value.to_owned(),
                "x-trino-client-tags" => info.client_tags = split_list(value),
                "x-trino-client-info" => info.client_info = value.to_owned(),
                "x-trino-routing-group" => info.routing_group = value.trim().to_owned(),
                "x-trino-catalog" => info.catalog = value.trim().to_owned(),
                "x-trino-schema" => info.schema = value.trim().to_owned(),
                "x-trino-session" => info.session.extend(parse_session(value)),
                "x-trino-prepared-statement" => info.prepared_statements = value.to_owned(),
                "authorization" => authorization = Some(value.to_owned()),
                _ => {}
            }
            if !name.starts_with(':') {
                info.headers.push((name, value.to_owned()));
            }
        }
        if info.user.is_empty()
            && let Some(user) =
                authorization.as_deref().and_then(|a| user_from_authorization(a, jwt_user_claim))
        {
            info.user = user;
        }
        info
    }

    /// The value of a header (lower-case name), the first if repeated.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// `a, b,c` → `["a", "b", "c"]` (empty items dropped).
fn split_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// `X-Trino-Session: a=1, b=x%20y` → `[("a","1"), ("b","x y")]`.
fn parse_session(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|item| item.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                percent_encoding::percent_decode_str(v.trim()).decode_utf8_lossy().into_owned(),
            )
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn user_from_authorization(value: &str, jwt_user_claim: &str) -> Option<String> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(credentials).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
        return (!user.is_empty()).then(|| user.to_owned());
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        let payload = credentials.split('.').nth(1)?;
        let payload = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
        return claims.get(jwt_user_claim)?.as_str().filter(|u| !u.is_empty()).map(str::to_owned);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pairs: &[(&str, &str)]) -> ClientRequest {
        ClientRequest::from_headers(pairs.iter().copied(), "sub")
    }

    fn jwt(claims: &str) -> String {
        format!(
            "Bearer {}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn users() {
        let basic = format!("Basic {}", STANDARD.encode("carol:secret"));
        let basic_no_password = format!("Basic {}", STANDARD.encode("dave"));
        let bearer = jwt(r#"{"sub":"erin","email":"erin@example.com"}"#);
        #[rustfmt::skip]
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("X-Trino-User", "alice")], "alice"),
            (vec![("x-trino-user", " bob ")], "bob"),
            (vec![("Authorization", &basic)], "carol"),
            (vec![("Authorization", &basic_no_password)], "dave"),
            (vec![("Authorization", &bearer)], "erin"),
            (vec![("X-Trino-User", "alice"), ("Authorization", &basic)], "alice"),
            (vec![("Authorization", "Basic !!!notbase64")], ""),
            (vec![("Authorization", "Bearer not.a-jwt")], ""),
            (vec![("Authorization", "Bearer")], ""),
            (vec![("Authorization", "Negotiate abc")], ""),
            (vec![], ""),
        ];
        for (pairs, user) in cases {
            assert_eq!(info(&pairs).user, user, "{pairs:?}");
        }
        let by_email = ClientRequest::from_headers([("authorization", bearer.as_str())], "email");
        assert_eq!(by_email.user, "erin@example.com");
    }

    #[test]
    fn trino_headers() {
        let i = info(&[
            (":method", "POST"),
            (":path", "/v1/statement"),
            ("X-Trino-Source", "superset-prod"),
            ("X-Trino-Client-Tags", "dashboard, finance,,"),
            ("X-Trino-Client-Info", "{\"team\":\"bi\"}"),
            ("X-Trino-Routing-Group", " etl "),
            ("X-Trino-Catalog", "hive"),
            ("X-Trino-Schema", "web"),
            ("X-Trino-Session", "query_max_run_time=1h, optimize_hash_generation=true"),
            ("X-Trino-Session", "time_zone=Europe%2FBerlin"),
            ("X-Custom", "1"),
        ]);
        assert_eq!((i.method.as_str(), i.path.as_str()), ("POST", "/v1/statement"));
        assert_eq!(i.source, "superset-prod");
        assert_eq!(i.client_tags, ["dashboard", "finance"]);
        assert_eq!(i.client_info, "{\"team\":\"bi\"}");
        assert_eq!((i.routing_group.as_str(), i.catalog.as_str(), i.schema.as_str()), ("etl", "hive", "web"));
        assert_eq!(
            i.session,
            [
                ("query_max_run_time".to_owned(), "1h".to_owned()),
                ("optimize_hash_generation".to_owned(), "true".to_owned()),
                ("time_zone".to_owned(), "Europe/Berlin".to_owned()),
            ]
        );
        assert_eq!(i.header("x-custom"), Some("1"));
        assert_eq!(i.header(":path"), None, "pseudo-headers are not headers");
    }
}
