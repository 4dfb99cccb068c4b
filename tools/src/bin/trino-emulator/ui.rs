//! The web UI's form login, as far as a load poller needs it: `POST /ui/login` (form fields `username`,
//! `password`, `redirectPath`) issues a session cookie, and `/ui/api/stats` ([`crate::node::cluster_stats`])
//! answers only to a request carrying one.
//!
//! Modelled on Trino's `FormWebUiAuthenticationFilter` and `LoginResource`: the cookie is
//! `Trino-UI-Token` (`Path=/ui; HttpOnly`), a successful login answers 303 to `redirectPath` (a local
//! path) or `/ui/`, a refused one 303 to `/ui/login.html` without a cookie, and a `/ui/api/` call
//! without a valid session gets 401 with `WWW-Authenticate: Trino-Form-Login`. Trino's cookie is a
//! signed JWT; here it is 256 random bits the process remembers ([`Sessions`]), so a forged or
//! foreign cookie never passes, and a restarted emulator forgets every session (as a Trino without a
//! shared secret does).
//!
//! Credentials: with `--ui-password`, any non-empty user name with exactly that password; without it,
//! any non-empty user name (the password is ignored).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, PoisonError, RwLock};

use crate::session::url_decode;

/// The session cookie's name (Trino's `TRINO_UI_COOKIE`).
pub const COOKIE: &str = "Trino-UI-Token";
/// Where a refused login (and a logout, and an unauthenticated UI page) is sent.
pub const LOGIN_FORM: &str = "/ui/login.html";
/// Where a successful login goes without a `redirectPath`.
pub const UI_HOME: &str = "/ui/";
/// The `WWW-Authenticate` challenge of a 401 from `/ui/api/`.
pub const CHALLENGE: &str = "Trino-Form-Login";
/// Sessions remembered at most; beyond that the oldest are forgotten.
const MAX_SESSIONS: usize = 10_000;

/// The fields of a `POST /ui/login` form (`application/x-www-form-urlencoded`); absent ones are empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoginForm {
    pub username: String,
    pub password: String,
    pub redirect_path: String,
}

impl LoginForm {
    /// Parses a form body; unknown fields are ignored, a repeated field keeps its first value.
    pub fn parse(body: &str) -> Self {
        let (mut username, mut password, mut redirect_path) = (None, None, None);
        for pair in body.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let field = match url_decode(name).as_str() {
                "username" => &mut username,
                "password" => &mut password,
                "redirectPath" => &mut redirect_path,
                _ => continue,
            };
            field.get_or_insert_with(|| url_decode(value));
        }
        Self {
            username: username.unwrap_or_default(),
            password: password.unwrap_or_default(),
            redirect_path: redirect_path.unwrap_or_default(),
        }
    }

    /// Where a successful login redirects: `redirectPath` when it is a local absolute path (printable
    /// ASCII, no spaces), else `/ui/`.
    pub fn redirect_target(&self) -> &str {
        let path = self.redirect_path.as_str();
        let local = path.starts_with('/')
            && !path.starts_with("//")
            && !path.contains('\\')
            && path.bytes().all(|b| b.is_ascii_graphic());
        if local { path } else { UI_HOME }
    }
}

#[derive(Debug, Default)]
struct Issued {
    /// Session token → the user who logged in.
    tokens: HashMap<Arc<str>, String>,
    order: VecDeque<Arc<str>>,
}

/// The web UI sessions this process issued, and the password a login needs.
#[derive(Debug)]
pub struct Sessions {
    password: Option<String>,
    issued: RwLock<Issued>,
}

impl Sessions {
    pub fn new(password: Option<String>) -> Self {
        Self { password, issued: RwLock::default() }
    }

    /// A new session token when the credentials are accepted, else `None`.
    pub fn login(&self, form: &LoginForm) -> Option<String> {
        if form.username.is_empty() {
            return None;
        }
        if let Some(expected) = &self.password
            && form.password != *expected
        {
            return None;
        }
        let token: Arc<str> =
            format!("{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>()).into();
        let mut issued = self.issued.write().unwrap_or_else(PoisonError::into_inner);
        while issued.order.len() >= MAX_SESSIONS {
            if let Some(old) = issued.order.pop_front() {
                issued.tokens.remove(&old);
            }
        }
        issued.tokens.insert(token.clone(), form.username.clone());
        issued.order.push_back(token.clone());
        Some(token.to_string())
    }

    /// Whether any `Trino-UI-Token` cookie among the `Cookie` header values is a session this process
    /// issued (and did not forget or log out).
    pub fn is_valid<'a>(&self, cookie_headers: impl IntoIterator<Item = &'a str>) -> bool {
        self.user(cookie_headers).is_some()
    }

    /// The user of the first `Trino-UI-Token` cookie that is a session this process issued.
    pub fn user<'a>(&self, cookie_headers: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let issued = self.issued.read().unwrap_or_else(PoisonError::into_inner);
        session_cookies(cookie_headers).find_map(|token| issued.tokens.get(token).cloned())
    }

    /// Forgets the sessions named by the `Cookie` header values; returns how many.
    pub fn logout<'a>(&self, cookie_headers: impl IntoIterator<Item = &'a str>) -> usize {
        let doomed: Vec<&str> = session_cookies(cookie_headers).collect();
        if doomed.is_empty() {
            return 0;
        }
        let mut issued = self.issued.write().unwrap_or_else(PoisonError::into_inner);
        let before = issued.tokens.len();
        for token in doomed {
            issued.tokens.remove(token);
        }
        let Issued { tokens, order } = &mut *issued;
        order.retain(|t| tokens.contains_key(t));
        before - issued.tokens.len()
    }
}

/// The values of every `Trino-UI-Token` cookie in `Cookie` header values (`a=1; Trino-UI-Token=x`).
fn session_cookies<'a>(cookie_headers: impl IntoIterator<Item = &'a str>) -> impl Iterator<Item = &'a str> {
    cookie_headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// The `Set-Cookie` value of a new session (as Trino: `Path=/ui`, `HttpOnly`, no expiry).
pub fn session_cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/ui; HttpOnly")
}

/// The `Set-Cookie` value that ends a session (logout).
pub fn expired_cookie() -> String {
    format!("{COOKIE}=delete; Path=/ui; Max-Age=0; HttpOnly")
}

/// A minimal login page (`GET /ui/login.html`), posting the form `POST /ui/login` expects.
pub const LOGIN_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Trino emulator login</title></head><body>\
<form method=\"post\" action=\"/ui/login\">\
<input name=\"username\" placeholder=\"username\"><input name=\"password\" type=\"password\" placeholder=\"password\">\
<input name=\"redirectPath\" type=\"hidden\" value=\"\"><button type=\"submit\">Log in</button>\
</form></body></html>\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn form(username: &str, password: &str) -> LoginForm {
        LoginForm { username: username.into(), password: password.into(), redirect_path: String::new() }
    }

    #[test]
    fn parses_login_forms() {
        assert_eq!(
            LoginForm::parse("username=al%20ice&password=p%26ss+word&redirectPath=%2Fui%2Fq&x=1"),
            LoginForm {
                username: "al ice".into(),
                password: "p&ss word".into(),
                redirect_path: "/ui/q".into()
            }
        );
        assert_eq!(LoginForm::parse(""), LoginForm::default());
        assert_eq!(LoginForm::parse("username&password="), LoginForm::default());
        assert_eq!(LoginForm::parse("username=a&username=b").username, "a");
    }

    #[test]
    fn redirects_only_to_local_paths() {
        for (path, expected) in [
            ("", "/ui/"),
            ("/ui/query.html?x", "/ui/query.html?x"),
            ("/", "/"),
            ("//evil.example/", "/ui/"),
            ("https://evil.example/", "/ui/"),
            ("ui/", "/ui/"),
            ("/\\evil", "/ui/"),
            ("/a\r\nSet-Cookie: x", "/ui/"),
            ("/caf\u{e9}", "/ui/"),
            ("/a b", "/ui/"),
        ] {
            let form = LoginForm { redirect_path: path.into(), ..LoginForm::default() };
            assert_eq!(form.redirect_target(), expected, "{path:?}");
        }
    }

    #[test]
    fn without_a_password_any_user_logs_in() {
        let sessions = Sessions::new(None);
        assert!(sessions.login(&form("alice", "")).is_some());
        assert!(sessions.login(&form("bob", "anything")).is_some());
        assert!(sessions.login(&form("", "")).is_none());
    }

    #[test]
    fn with_a_password_only_the_right_one_logs_in() {
        let sessions = Sessions::new(Some("s3cret".into()));
        assert!(sessions.login(&form("alice", "s3cret")).is_some());
        for (user, password) in [("alice", ""), ("alice", "S3CRET"), ("alice", "s3cret "), ("", "s3cret")] {
            assert!(sessions.login(&form(user, password)).is_none(), "{user:?} {password:?}");
        }
    }

    // conformance: N5, N6
    #[test]
    fn session_cookie_check() {
        let sessions = Sessions::new(None);
        let token = sessions.login(&form("alice", "")).unwrap();
        let other = sessions.login(&form("bob", "")).unwrap();
        assert_eq!(token.len(), 64);
        assert_ne!(token, other);
        let cookie = format!("{COOKIE}={token}");
        for (headers, ok) in [
            (vec![cookie.as_str()], true),
            (vec![&*format!("a=1; {COOKIE}={token}; b=2")], true),
            (vec!["a=1", &*format!("{COOKIE}=\"{token}\"")], true),
            (vec![&*format!("{COOKIE}=forged; {COOKIE}={token}")], true),
            (vec![], false),
            (vec!["a=1"], false),
            (vec![&*format!("{COOKIE}=")], false),
            (vec![&*format!("{COOKIE}={}", &token[..63])], false),
            (vec![&*format!("{COOKIE}={}", token.to_uppercase())], false),
            (vec![&*format!("trino-ui-token={token}")], false),
            (vec![&*format!("X{COOKIE}={token}")], false),
            (vec![&*format!("{COOKIE}={token}x")], false),
        ] {
            assert_eq!(sessions.is_valid(headers.iter().copied()), ok, "{headers:?}");
        }
        assert_eq!(sessions.user([cookie.as_str()]).as_deref(), Some("alice"));
        assert_eq!(sessions.user([&*format!("{COOKIE}={other}")]).as_deref(), Some("bob"));
        assert_eq!(sessions.user(["a=1"]), None);
        // Another process's sessions are not ours.
        assert!(!Sessions::new(None).is_valid([cookie.as_str()]));
        assert_eq!(sessions.logout([cookie.as_str()]), 1);
        assert!(!sessions.is_valid([cookie.as_str()]));
        assert!(sessions.is_valid([&*format!("{COOKIE}={other}")]));
        assert_eq!(sessions.logout(["a=1"]), 0);
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::new(None);
        let first = sessions.login(&form("a", "")).unwrap();
        for _ in 0..MAX_SESSIONS {
            sessions.login(&form("a", "")).unwrap();
        }
        assert!(!sessions.is_valid([&*format!("{COOKIE}={first}")]));
        let issued = sessions.issued.read().unwrap();
        assert_eq!((issued.tokens.len(), issued.order.len()), (MAX_SESSIONS, MAX_SESSIONS));
    }

    // conformance: N6
    #[test]
    fn cookies() {
        assert_eq!(session_cookie("abc"), "Trino-UI-Token=abc; Path=/ui; HttpOnly");
        assert!(expired_cookie().contains("Max-Age=0"));
    }
}
