//! The Trino release the emulator answers as (`--trino-version N`), and what differs between releases
//! (docs/trino-conformance.md names the source of each difference):
//!
//! - `/v1/info` names the node and the coordinator id from 477 (rows N1, N2);
//! - `infoUri` is `/ui/query.html?{id}` before 483 and `/ui#/queries/{id}` from 483 (rows U2, U3);
//! - `X-Forwarded-Prefix` (under `http-server.process-forwarded=true`) is ignored before 452, escaped as one
//!   path segment in 452–457 and prepended as it is from 458 (rows F4, F5).
//!
//! Releases before [`Version::OLDEST`] (Jetty 12, whose URI rules the emulator applies) are refused.

use std::fmt;
use std::str::FromStr;

/// A Trino release number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(u32);

/// How a release treats `X-Forwarded-Prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixHandling {
    /// Before 452: not read at all.
    Ignored,
    /// 452–457: escaped as one path segment (`/a/b` → `%2Fa%2Fb`).
    EscapedSegment,
    /// From 458: prepended to every path as it is.
    Raw,
}

impl Version {
    /// The newest release the conformance table covers: the emulator's default.
    pub const NEWEST: Version = Version(483);
    /// The oldest release the emulator answers as (Trino on Jetty 12).
    pub const OLDEST: Version = Version(441);

    pub fn number(self) -> u32 {
        self.0
    }

    /// `/v1/info` carries `nodeId`, `state` and `coordinatorId` (Trino 477 and later).
    pub fn publishes_node_identity(self) -> bool {
        self.0 >= 477
    }

    /// `infoUri` names the query in a fragment, `/ui#/queries/{id}` (Trino 483 and later).
    pub fn info_uri_in_fragment(self) -> bool {
        self.0 >= 483
    }

    pub fn prefix_handling(self) -> PrefixHandling {
        match self.0 {
            ..=451 => PrefixHandling::Ignored,
            452..=457 => PrefixHandling::EscapedSegment,
            _ => PrefixHandling::Raw,
        }
    }
}

impl Default for Version {
    fn default() -> Self {
        Version::NEWEST
    }
}

impl FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number: u32 =
            s.trim().parse().map_err(|_| format!("a Trino version is a release number, not {s:?}"))?;
        if number < Version::OLDEST.0 {
            return Err(format!(
                "Trino {number} is older than {} (Jetty 12), the oldest release the emulator answers as",
                Version::OLDEST
            ));
        }
        Ok(Version(number))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // conformance: N1, N2, U2, U3, F4, F5
    #[test]
    fn what_each_release_does() {
        #[rustfmt::skip]
        let cases = [
            // version, node identity in /v1/info, infoUri fragment, X-Forwarded-Prefix
            (441, false, false, PrefixHandling::Ignored),
            (451, false, false, PrefixHandling::Ignored),
            (452, false, false, PrefixHandling::EscapedSegment),
            (457, false, false, PrefixHandling::EscapedSegment),
            (458, false, false, PrefixHandling::Raw),
            (476, false, false, PrefixHandling::Raw),
            (477, true, false, PrefixHandling::Raw),
            (482, true, false, PrefixHandling::Raw),
            (483, true, true, PrefixHandling::Raw),
            (999, true, true, PrefixHandling::Raw),
        ];
        for (number, identity, fragment, prefix) in cases {
            let version: Version = number.to_string().parse().unwrap();
            assert_eq!(
                (
                    version.publishes_node_identity(),
                    version.info_uri_in_fragment(),
                    version.prefix_handling()
                ),
                (identity, fragment, prefix),
                "{number}"
            );
        }
        assert_eq!(Version::default(), Version::NEWEST);
        assert_eq!(Version::NEWEST.number(), 483);
    }

    #[test]
    fn parsing() {
        assert_eq!("477".parse::<Version>(), Ok(Version(477)));
        assert_eq!(" 483 ".parse::<Version>(), Ok(Version(483)));
        for bad in ["440", "0", "-1", "", "477a", "v477"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }
}
