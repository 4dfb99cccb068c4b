//! Slugs: the unguessable path segment of every statement URI.
//!
//! Like Trino's `Slug`, a slug is `"y"` + a keyed hash over (context, token) with a key drawn per query:
//! the slug of `/v1/statement/queued/{id}/{slug}/3` differs from that of `.../4` and from the executing
//! URIs', so nobody (a router included) can forge or predict a valid URI from another one. The hash is
//! SipHash over (secret key, context, token); good enough for an emulator, not a MAC.

use std::hash::{DefaultHasher, Hash, Hasher};

/// Which resource a slug is valid for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlugContext {
    Queued,
    Executing,
}

/// The per-query slug key.
#[derive(Clone, Debug)]
pub struct Slug {
    key: u128,
}

impl Slug {
    pub fn random() -> Self {
        Self::with_key(rand::random())
    }

    pub fn with_key(key: u128) -> Self {
        Self { key }
    }

    /// The slug for a URI of `context` carrying `token`.
    pub fn make(&self, context: SlugContext, token: u64) -> String {
        let mut hasher = DefaultHasher::new();
        self.key.hash(&mut hasher);
        context.hash(&mut hasher);
        token.hash(&mut hasher);
        format!("y{:016x}", hasher.finish())
    }

    pub fn is_valid(&self, context: SlugContext, slug: &str, token: u64) -> bool {
        self.make(context, token) == slug
    }
}

#[cfg(test)]
mod tests {
    use super::SlugContext::*;
    use super::*;

    #[test]
    fn slug_shape() {
        let s = Slug::with_key(7).make(Queued, 1);
        assert_eq!(s.len(), 17);
        assert!(s.starts_with('y'));
        assert!(s[1..].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn validity() {
        let slug = Slug::with_key(42);
        let q1 = slug.make(Queued, 1);
        for (context, candidate, token, ok) in [
            (Queued, q1.clone(), 1, true),
            (Queued, q1.clone(), 2, false),
            (Executing, q1.clone(), 1, false),
            (Queued, Slug::with_key(43).make(Queued, 1), 1, false),
            (Queued, "y0000000000000000".to_owned(), 1, false),
            (Executing, slug.make(Executing, 0), 0, true),
        ] {
            assert_eq!(slug.is_valid(context, &candidate, token), ok, "{context:?} {candidate} {token}");
        }
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(Slug::random().make(Queued, 1), Slug::random().make(Queued, 1));
    }
}
