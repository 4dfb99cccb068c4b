//! Facts about a request → where it goes. Pure: no I/O, no clocks, no protobuf; the caller supplies what
//! the router has learned (query owners) and how it spreads load (a picker), so every rule is testable
//! in a one-line table row.

use std::sync::Arc;

use crate::config::{Config, Group};
use crate::query_id::QueryId;
use crate::refusal::Refusal;
use crate::target::{Target, classify};

/// The request facts a decision reads. Borrowed from the ext_proc message; header values that were not
/// valid UTF-8 arrive as `None`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// `X-Trino-Routing-Group`, as sent by the client.
    pub routing_group: Option<&'a str>,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send the request to `Config::clusters[cluster]`.
    Route { cluster: usize, basis: Basis },
    /// Answer the client directly; nothing reaches a coordinator.
    Refuse(Refusal),
}

/// Why a request goes where it goes (for logs, metrics and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// A new query, placed inside `Config::groups[group]`.
    NewQuery { group: usize },
    /// A request about a query, sent to the cluster that owns it.
    QueryOwner(QueryId),
    /// Any other request: a cluster of the default group.
    DefaultGroup,
}

/// Decides where a request goes.
///
/// `owner_of` names the cluster that owns a query, if known; `pick` chooses a member (a cluster index)
/// of a group for a new query or an unspecific request.
pub fn decide(
    config: &Config,
    facts: &RequestFacts<'_>,
    owner_of: impl FnOnce(&QueryId) -> Option<Arc<str>>,
    pick: impl FnOnce(usize, &Group) -> usize,
) -> Decision {
    match classify(facts.method, facts.path) {
        Target::NewStatement => {
            let group = group_for(config, facts.routing_group);
            let cluster = pick(group, &config.groups[group]);
            Decision::Route { cluster, basis: Basis::NewQuery { group } }
        }
        Target::Query(id) => match owner_of(&id) {
            Some(name) => match config.clusters.iter().position(|c| c.name == name) {
                Some(cluster) => Decision::Route { cluster, basis: Basis::QueryOwner(id) },
                None => Decision::Refuse(Refusal::OwnerRemoved { query_id: id, cluster: name }),
            },
            None => Decision::Refuse(Refusal::QueryNotFound(id)),
        },
        Target::BadQueryId(error) => Decision::Refuse(Refusal::BadQueryId(error)),
        Target::SpooledSegment => Decision::Refuse(Refusal::SpooledSegmentUnplaced),
        Target::Other => {
            let group = config.default_group;
            let cluster = pick(group, &config.groups[group]);
            Decision::Route { cluster, basis: Basis::DefaultGroup }
        }
    }
}

/// The group a new query belongs to: the one the client names when it exists, else the default group.
pub fn group_for(config: &Config, requested: Option<&str>) -> usize {
    requested.map(str::trim).and_then(|name| config.group_named(name)).unwrap_or(config.default_group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use crate::query_id::QueryIdError;
    use std::path::Path;

    const CONFIG: &str = "
listen: 127.0.0.1:50051
default_group: adhoc
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-b, url: 'http://127.0.0.1:2', group: adhoc}
  - {name: trino-etl, url: 'http://127.0.0.1:3', group: etl}
  - {name: trino-etl2, url: 'http://127.0.0.1:4', group: etl}
  - {name: trino-bi, url: 'http://127.0.0.1:5', group: BI}
";
    const A: &str = "20260101_120000_00001_aaaaa";
    const B: &str = "20260101_120000_00001_bbbbb";
    const GONE: &str = "20260101_120000_00001_ggggg";
    const UNKNOWN: &str = "20260101_120000_00001_zzzzz";

    fn config() -> Config {
        Config::from_yaml(Path::new("t.yaml"), CONFIG, &Overrides::default()).unwrap()
    }

    /// Owners the router has learned: query A on trino-a, B on trino-b, GONE on a cluster no longer configured.
    fn owner_of(id: &QueryId) -> Option<Arc<str>> {
        match id.as_str() {
            A => Some("trino-a".into()),
            B => Some("trino-b".into()),
            GONE => Some("trino-old".into()),
            _ => None,
        }
    }

    /// Decides with a picker that always takes the group's last member, and names the outcome.
    fn outcome(method: &str, path: &str, group: Option<&str>) -> String {
        let config = config();
        let facts = RequestFacts { method, path, routing_group: group };
        let pick = |_, g: &Group| *g.members.last().unwrap();
        match decide(&config, &facts, owner_of, pick) {
            Decision::Route { cluster, basis } => {
                let why = match basis {
                    Basis::NewQuery { group } => format!("new in {}", config.groups[group].name),
                    Basis::QueryOwner(id) => format!("owner of {}", &id.as_str()[22..]),
                    Basis::DefaultGroup => "default".to_owned(),
                };
                format!("{} ({why})", config.clusters[cluster].name)
            }
            Decision::Refuse(r) => format!("refuse {}", r.reply().status),
        }
    }

    #[test]
    fn decisions() {
        #[rustfmt::skip]
        let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
            // New queries: the named group when it exists, else the default group.
            ("POST", "/v1/statement".into(), None, "trino-b (new in adhoc)"),
            ("POST", "/v1/statement".into(), Some("etl"), "trino-etl2 (new in etl)"),
            ("POST", "/v1/statement".into(), Some(" etl "), "trino-etl2 (new in etl)"),
            ("POST", "/v1/statement".into(), Some("BI"), "trino-bi (new in BI)"),
            ("POST", "/v1/statement".into(), Some("bi"), "trino-b (new in adhoc)"),
            ("POST", "/v1/statement".into(), Some("adhoc"), "trino-b (new in adhoc)"),
            ("POST", "/v1/statement".into(), Some("nope"), "trino-b (new in adhoc)"),
            ("POST", "/v1/statement".into(), Some(""), "trino-b (new in adhoc)"),
            ("POST", "/v1/statement".into(), Some("trino-etl"), "trino-b (new in adhoc)"),
            ("POST", "/ui/api/statement".into(), Some("etl"), "trino-etl2 (new in etl)"),
            // Follow-ups go to the owner, whatever the routing group says.
            ("GET", format!("/v1/statement/queued/{A}/y1/1"), None, "trino-a (owner of aaaaa)"),
            ("GET", format!("/v1/statement/queued/{A}/y1/1"), Some("etl"), "trino-a (owner of aaaaa)"),
            ("GET", format!("/v1/statement/executing/{B}/y1/2"), None, "trino-b (owner of bbbbb)"),
            ("HEAD", format!("/v1/statement/executing/{B}/y1/2"), None, "trino-b (owner of bbbbb)"),
            ("DELETE", format!("/v1/statement/executing/{B}/y1/2"), None, "trino-b (owner of bbbbb)"),
            ("DELETE", format!("/v1/statement/executing/partialCancel/{A}/1/y1/2"), None, "trino-a (owner of aaaaa)"),
            ("GET", format!("/v1/query/{A}"), None, "trino-a (owner of aaaaa)"),
            ("PUT", format!("/v1/query/{B}/killed"), None, "trino-b (owner of bbbbb)"),
            ("GET", format!("/ui/query.html?{A}"), None, "trino-a (owner of aaaaa)"),
            ("GET", format!("/ui/api/query/{B}"), None, "trino-b (owner of bbbbb)"),
            ("GET", format!("/ui/api/statement/executing/{B}/y/1"), None, "trino-b (owner of bbbbb)"),
            // Queries the router cannot place are refused, never guessed.
            ("GET", format!("/v1/statement/queued/{UNKNOWN}/y1/1"), None, "refuse 404"),
            ("GET", format!("/v1/query/{UNKNOWN}"), None, "refuse 404"),
            ("GET", format!("/v1/statement/queued/{GONE}/y1/1"), None, "refuse 404"),
            ("GET", "/v1/statement/queued/NOT_AN_ID/y/1".into(), None, "refuse 400"),
            ("GET", "/v1/statement/executing/".into(), None, "refuse 400"),
            ("GET", "/v1/spooled/download/abc".into(), None, "refuse 404"),
            // Anything else: the default group.
            ("GET", "/v1/info".into(), None, "trino-b (default)"),
            ("GET", "/v1/info".into(), Some("etl"), "trino-b (default)"),
            ("GET", "/ui/".into(), None, "trino-b (default)"),
            ("GET", "/v1/statement".into(), Some("etl"), "trino-b (default)"),
        ];
        for (method, path, group, expected) in cases {
            assert_eq!(outcome(method, &path, group), expected, "{method} {path} group={group:?}");
        }
    }

    #[test]
    fn picker_sees_the_chosen_group() {
        let config = config();
        let facts = RequestFacts { method: "POST", path: "/v1/statement", routing_group: Some("etl") };
        let mut seen = None;
        let decision = decide(&config, &facts, owner_of, |group, g| {
            seen = Some((group, g.members.clone()));
            g.members[0]
        });
        assert_eq!(seen, Some((1, vec![2, 3])));
        assert_eq!(decision, Decision::Route { cluster: 2, basis: Basis::NewQuery { group: 1 } });
    }

    #[test]
    fn bad_ids_are_named() {
        let config = config();
        let facts = RequestFacts { method: "GET", path: "/v1/query/x-y", routing_group: None };
        let decision = decide(&config, &facts, |_| unreachable!(), |_, _| unreachable!());
        assert_eq!(decision, Decision::Refuse(Refusal::BadQueryId(QueryIdError::BadCharacter)));
    }
}
