//! Secrets the config holds (the admin token, Envoy's shared token, the metrics token): a type whose
//! `Debug` never shows the value, compared in constant time, and the strength every token must have.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// Shortest token the router accepts (`openssl rand -hex 24` gives 48 characters).
pub const MIN_TOKEN_LEN: usize = 16;

/// Tokens from examples and habits: refused whatever their length.
const KNOWN_WEAK: &[&str] = &["change-me", "changeme", "change_me", "secret", "password", "admin", "token"];

/// A secret value: printed as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Secret {
        Secret(value.into())
    }

    /// The value, for whoever must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.len() == presented.len() && bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a token is too weak to guard anything, if it is.
pub fn weakness(token: &str) -> Option<String> {
    let lowered = token.trim().to_ascii_lowercase();
    if KNOWN_WEAK
        .iter()
        .any(|weak| lowered == *weak || lowered.trim_matches(|c: char| !c.is_ascii_alphanumeric()) == *weak)
    {
        return Some(format!(
            "`{token}` is an example value, not a secret: set one of your own (e.g. `openssl rand -hex 24`)"
        ));
    }
    if token.chars().count() < MIN_TOKEN_LEN {
        return Some(format!(
            "a token of {} characters is too short: use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 24`)",
            token.chars().count()
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(
            "a token must not hold spaces or control characters (it travels in a header)".to_owned(),
        );
    }
    if token.chars().all(|c| c == token.chars().next().unwrap_or(' ')) {
        return Some("a token of one repeated character is not a secret".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("0123456789abcdef-very-secret");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert!(secret.matches("0123456789abcdef-very-secret"));
        assert!(!secret.matches("0123456789abcdef-very-secreT"));
        assert!(!secret.matches("0123456789abcdef"));
        assert!(!secret.matches(""));
    }

    #[test]
    fn weak_tokens() {
        #[rustfmt::skip]
        let cases: &[(&str, Option<&str>)] = &[
            ("change-me", Some("is an example value")),
            ("CHANGE-ME", Some("is an example value")),
            ("password", Some("is an example value")),
            ("short", Some("5 characters is too short")),
            ("fifteen-chars-x", Some("15 characters is too short")),
            ("aaaaaaaaaaaaaaaaaaaa", Some("one repeated character")),
            ("sixteen chars ok", Some("spaces")),
            ("e2e-admin-token-3f9c", None),
            ("0123456789abcdef", None),
        ];
        for (token, want) in cases {
            let got = weakness(token);
            match want {
                None => assert_eq!(got, None, "{token}"),
                Some(part) => assert!(got.as_deref().is_some_and(|g| g.contains(part)), "{token}: {got:?}"),
            }
        }
    }
}
