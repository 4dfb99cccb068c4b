//! Facts about a request → where it goes. Pure: no I/O, no clocks, no protobuf; the caller supplies what
//! the router has learned (query owners) and how it spreads load (a picker), so every rule is testable
//! in a one-line table row.

use std::sync::Arc;

use crate::domain::config::{Config, Group};
use crate::domain::query_id::QueryId;
use crate::domain::refusal::Refusal;
use crate::domain::target::{Target, classify};

/// The request facts a decision reads. Borrowed from the ext_proc message; header values that were not
/// valid UTF-8 arrive as `None`.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// `X-Trino-Routing-Group`, as sent by the client.
    pub routing_group: Option<&'a str>,
    /// The group the routing rules chose for a new statement (index into `Config::groups`), if any rule
    /// matched. It wins over the routing-group header.
    pub rule_group: Option<usize>,
    /// A new statement that must run on one cluster (by name), whatever the rules say.
    pub pinned: Option<(Arc<str>, Pin)>,
}

/// Why a new statement must run on one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// It carries `X-Trino-Transaction-Id` of a transaction that cluster started.
    Transaction,
    /// It names a query of that cluster (`CALL system.runtime.kill_query(...)`).
    NamedQuery,
}

/// What a decision needs to know about one cluster right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterView {
    /// May take new queries: healthy (or not yet polled), and neither draining nor disabled.
    pub accepts_new: bool,
    /// Known to be gone: its queries cannot progress.
    pub down: bool,
    /// Load per unit of weight; the least loaded cluster takes the next new query.
    pub load: f64,
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
    /// A new query for `requested` (an index into `Config::groups`), placed in group `placed` — the
    /// same group, or one of its fallbacks.
    NewQuery { requested: usize, placed: usize },
    /// A request about a query, sent to the cluster that owns it.
    QueryOwner(QueryId),
    /// Any other request: a cluster of the default group.
    DefaultGroup,
    /// A new statement that must run where its transaction or named query lives.
    Pinned(Pin),
    /// The path names the cluster (URL-carried placement).
    UrlPlaced,
}

/// A path under the URL-placement prefix: the cluster it names and the path to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixedPath<'a> {
    pub cluster: &'a str,
    /// The path with `{prefix}/{cluster}` stripped (always starts with `/`).
    pub rest: &'a str,
}

/// Splits `{prefix}/{cluster}/rest...` (with `prefix` as configured, no trailing slash).
pub fn split_prefixed<'a>(prefix: &str, path: &'a str) -> Option<PrefixedPath<'a>> {
    let after = path.strip_prefix(prefix)?.strip_prefix('/')?;
    let slash = after.find('/')?;
    let (cluster, rest) = after.split_at(slash);
    (!cluster.is_empty()).then_some(PrefixedPath { cluster, rest })
}

/// Decides a request whose path names its cluster. A new statement is decided as any other (its
/// prefix is only stripped: a client cannot pick a cluster by writing a URL); anything else goes to the
/// named cluster, whatever its state (as follow-ups do).
pub fn decide_prefixed(
    config: &Config,
    prefixed: &PrefixedPath<'_>,
    facts: &RequestFacts<'_>,
    owner_of: impl FnOnce(&QueryId) -> Option<Arc<str>>,
    view: impl Fn(usize) -> ClusterView,
    turn: usize,
) -> Decision {
    let facts = RequestFacts { path: prefixed.rest, ..facts.clone() };
    if classify(facts.method, facts.path) == Target::NewStatement {
        return decide(config, &facts, owner_of, view, turn);
    }
    match config.clusters.iter().position(|c| &*c.name == prefixed.cluster) {
        Some(cluster) => Decision::Route { cluster, basis: Basis::UrlPlaced },
        None => Decision::Refuse(Refusal::UnknownClusterInPath(prefixed.cluster.into())),
    }
}

/// Decides where a request goes.
///
/// `owner_of` names the cluster that owns a query, if known; `view` tells each cluster's state (by
/// index into `Config::clusters`); `turn` breaks ties between equally loaded clusters, so that a caller
/// passing a counter gets round-robin among equals.
pub fn decide(
    config: &Config,
    facts: &RequestFacts<'_>,
    owner_of: impl FnOnce(&QueryId) -> Option<Arc<str>>,
    view: impl Fn(usize) -> ClusterView,
    turn: usize,
) -> Decision {
    match classify(facts.method, facts.path) {
        Target::NewStatement if facts.pinned.is_some() => {
            let (name, pin) = facts.pinned.clone().expect("checked by the guard");
            match config.clusters.iter().position(|c| c.name == name) {
                Some(cluster) if view(cluster).down => {
                    Decision::Refuse(Refusal::PinnedClusterDown { cluster: name, pin })
                }
                Some(cluster) => Decision::Route { cluster, basis: Basis::Pinned(pin) },
                None => Decision::Refuse(Refusal::PinnedClusterDown { cluster: name, pin }),
            }
        }
        Target::NewStatement => {
            let requested = requested_group(config, facts.rule_group, facts.routing_group);
            match place(config, requested, &view, turn, |v| v.accepts_new) {
                Some((placed, cluster)) => {
                    Decision::Route { cluster, basis: Basis::NewQuery { requested, placed } }
                }
                None => Decision::Refuse(Refusal::NoCapacity {
                    group: config.groups[requested].name.clone(),
                    retry_after_seconds: config.health.retry_after.as_secs().max(1),
                }),
            }
        }
        Target::Query(id) => match owner_of(&id) {
            Some(name) => match config.clusters.iter().position(|c| c.name == name) {
                Some(cluster) if view(cluster).down => Decision::Refuse(Refusal::OwnerDown {
                    query_id: id,
                    cluster: name,
                    as_query_failure: is_statement_poll(facts),
                }),
                Some(cluster) => Decision::Route { cluster, basis: Basis::QueryOwner(id) },
                None => Decision::Refuse(Refusal::OwnerRemoved { query_id: id, cluster: name }),
            },
            None => Decision::Refuse(Refusal::QueryNotFound(id)),
        },
        Target::BadQueryId(error) => Decision::Refuse(Refusal::BadQueryId(error)),
        Target::SpooledSegment => Decision::Refuse(Refusal::SpooledSegmentUnplaced),
        Target::Other => {
            // Prefer a cluster that takes new queries; else any that is not down; else the first
            // (Envoy then answers for it).
            let group = config.default_group;
            let placed = place(config, group, &view, turn, |v| v.accepts_new)
                .or_else(|| place(config, group, &view, turn, |v| !v.down))
                .or_else(|| place(config, group, &view, turn, |_| true));
            match placed {
                Some((_, cluster)) => Decision::Route { cluster, basis: Basis::DefaultGroup },
                None => unreachable!("a validated default group has clusters or fallbacks with clusters"),
            }
        }
    }
}

/// The group a new query asks for: the routing rules' choice, else the group the client names when it
/// exists, else the default group.
pub fn requested_group(config: &Config, rule_group: Option<usize>, routing_group: Option<&str>) -> usize {
    rule_group.unwrap_or_else(|| group_for(config, routing_group))
}

/// The routing group a client asked for (`X-Trino-Routing-Group`), if it may have it: a group with
/// `allow` admits only its users and sources; anyone else's request counts as naming no group (a rule or
/// the default group decides). Rules are the operator's and are not restricted.
pub fn permitted_routing_group<'a>(
    config: &Config,
    requested: Option<&'a str>,
    user: &str,
    source: &str,
) -> Option<&'a str> {
    let name = requested?;
    match config.group_named(name.trim()).and_then(|g| config.groups[g].allow.as_ref()) {
        Some(access) if !access.admits(user, source) => None,
        _ => Some(name),
    }
}

/// The group that refuses a statement pinned to `cluster` (by its transaction, or by the query it
/// names), if any: a pin is something the client sends, so it may not lead into a group that does not
/// admit the user or source. A cluster the config does not have is left to [`decide`] (which refuses it
/// as down).
pub fn pin_refused_by(config: &Config, cluster: &str, user: &str, source: &str) -> Option<Arc<str>> {
    let group = &config.cluster_named(cluster)?.group;
    permitted_routing_group(config, Some(group), user, source).is_none().then(|| group.clone())
}

/// The group a new query belongs to: the one the client names when it exists, else the default group.
pub fn group_for(config: &Config, requested: Option<&str>) -> usize {
    requested.map(str::trim).and_then(|name| config.group_named(name)).unwrap_or(config.default_group)
}

/// The least loaded eligible cluster of `group`, else of its fallbacks in order: `(group, cluster)`.
fn place(
    config: &Config,
    group: usize,
    view: &impl Fn(usize) -> ClusterView,
    turn: usize,
    eligible: impl Fn(&ClusterView) -> bool,
) -> Option<(usize, usize)> {
    std::iter::once(group)
        .chain(config.groups[group].fallback.iter().copied())
        .find_map(|g| least_loaded(&config.groups[g], view, turn, &eligible).map(|c| (g, c)))
}

fn least_loaded(
    group: &Group,
    view: &impl Fn(usize) -> ClusterView,
    turn: usize,
    eligible: &impl Fn(&ClusterView) -> bool,
) -> Option<usize> {
    // Each view is read once: loads change under concurrent dispatches, and a second reading could
    // disagree with the first.
    let candidates: Vec<(usize, f64)> = group
        .members
        .iter()
        .map(|&c| (c, view(c)))
        .filter(|(_, v)| eligible(v))
        .map(|(c, v)| (c, v.load))
        .collect();
    let lowest = candidates.iter().map(|&(_, load)| load).reduce(f64::min)?;
    let tied = || candidates.iter().filter(move |&&(_, load)| load <= lowest).map(|&(c, _)| c);
    tied().nth(turn % tied().count())
}

/// A client polling a statement for its next page (where a failed `QueryResults` is the clearest
/// answer the client can get).
fn is_statement_poll(facts: &RequestFacts<'_>) -> bool {
    facts.method.eq_ignore_ascii_case("GET")
        && (facts.path.starts_with("/v1/statement/") || facts.path.starts_with("/ui/api/statement/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::Overrides;
    use crate::domain::query_id::QueryIdError;
    use std::path::Path;

    const CONFIG: &str = "
listen: 127.0.0.1:50051
default_group: adhoc
groups:
  - {name: etl, fallback: [adhoc]}
  - {name: BI, fallback: [etl, adhoc]}
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

    /// Everything healthy, equally loaded.
    fn all_up(_: usize) -> ClusterView {
        ClusterView { accepts_new: true, down: false, load: 0.0 }
    }

    /// Decides with `view` and turn 1 (the second of equally loaded clusters), and names the outcome.
    fn outcome_with(
        method: &str,
        path: &str,
        group: Option<&str>,
        view: impl Fn(usize) -> ClusterView,
    ) -> String {
        let config = config();
        let facts = RequestFacts { method, path, routing_group: group, rule_group: None, pinned: None };
        match decide(&config, &facts, owner_of, view, 1) {
            Decision::Route { cluster, basis } => {
                let why = match basis {
                    Basis::NewQuery { requested, placed } if requested == placed => {
                        format!("new in {}", config.groups[placed].name)
                    }
                    Basis::NewQuery { requested, placed } => {
                        format!("new in {} via {}", config.groups[placed].name, config.groups[requested].name)
                    }
                    Basis::QueryOwner(id) => format!("owner of {}", &id.as_str()[22..]),
                    Basis::DefaultGroup => "default".to_owned(),
                    Basis::Pinned(pin) => format!("pinned by {pin:?}"),
                    Basis::UrlPlaced => "url".to_owned(),
                };
                format!("{} ({why})", config.clusters[cluster].name)
            }
            Decision::Refuse(r) => format!("refuse {}", r.reply().status),
        }
    }

    fn outcome(method: &str, path: &str, group: Option<&str>) -> String {
        outcome_with(method, path, group, all_up)
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

    /// Cluster views from a compact spec per cluster index: `u` up, `d` down (unhealthy), `n` up but
    /// taking no new queries (draining, disabled, starting, shutting down); a digit is its load.
    fn views(spec: &'static str) -> impl Fn(usize) -> ClusterView {
        move |i| {
            let token = spec.split_whitespace().nth(i).unwrap_or("u0");
            let (state, load) = token.split_at(1);
            ClusterView { accepts_new: state == "u", down: state == "d", load: load.parse().unwrap_or(0.0) }
        }
    }

    #[test]
    fn health_load_and_fallback() {
        let new = "/v1/statement";
        let follow = format!("/v1/statement/executing/{A}/y1/2");
        let info = format!("/v1/query/{A}");
        // clusters: 0 trino-a, 1 trino-b (adhoc); 2 trino-etl, 3 trino-etl2 (etl, falls back to adhoc);
        // 4 trino-bi (BI, falls back to etl then adhoc).
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, Option<&str>, &str, &str)> = vec![
            ("POST", new, None, "u0 u0 u0 u0 u0", "trino-b (new in adhoc)"),          // turn 1 of 2 equals
            ("POST", new, None, "u1 u0 u0 u0 u0", "trino-b (new in adhoc)"),          // least loaded
            ("POST", new, None, "u0 u1 u0 u0 u0", "trino-a (new in adhoc)"),
            ("POST", new, None, "u5 u3 u0 u0 u0", "trino-b (new in adhoc)"),
            ("POST", new, None, "d0 u9 u0 u0 u0", "trino-b (new in adhoc)"),          // the other is down
            ("POST", new, None, "n0 u9 u0 u0 u0", "trino-b (new in adhoc)"),          // the other drains
            ("POST", new, None, "u0 n0 u0 u0 u0", "trino-a (new in adhoc)"),
            ("POST", new, None, "d0 d0 u0 u0 u0", "refuse 503"),                      // adhoc has no fallback
            ("POST", new, None, "n0 n0 u0 u0 u0", "refuse 503"),
            ("POST", new, Some("etl"), "u0 u0 u0 u0 u0", "trino-etl2 (new in etl)"),
            ("POST", new, Some("etl"), "u0 u0 d0 u0 u0", "trino-etl2 (new in etl)"),
            ("POST", new, Some("etl"), "u0 u0 d0 n0 u0", "trino-b (new in adhoc via etl)"),
            ("POST", new, Some("etl"), "u0 d0 d0 d0 u0", "trino-a (new in adhoc via etl)"),
            ("POST", new, Some("etl"), "d0 d0 d0 d0 u0", "refuse 503"),
            ("POST", new, Some("BI"), "u0 u0 u0 u0 u0", "trino-bi (new in BI)"),
            ("POST", new, Some("BI"), "u0 u0 u0 u0 d0", "trino-etl2 (new in etl via BI)"),
            ("POST", new, Some("BI"), "u0 u0 d0 d0 d0", "trino-b (new in adhoc via BI)"),
            ("POST", new, Some("BI"), "u0 u0 u4 u2 d0", "trino-etl2 (new in etl via BI)"),
            // Follow-ups stay with their owner whatever its state, unless it is known to be down.
            ("GET", &follow, None, "n0 u0 u0 u0 u0", "trino-a (owner of aaaaa)"),
            ("GET", &follow, None, "u9 u0 u0 u0 u0", "trino-a (owner of aaaaa)"),
            ("GET", &follow, None, "d0 u0 u0 u0 u0", "refuse 200"),                   // a failed QueryResults
            ("DELETE", &follow, None, "d0 u0 u0 u0 u0", "refuse 502"),
            ("GET", &info, None, "d0 u0 u0 u0 u0", "refuse 502"),
            // Other paths: a default-group cluster that takes queries, else one not down, else any.
            ("GET", "/v1/info", None, "d0 u0 u0 u0 u0", "trino-b (default)"),
            ("GET", "/v1/info", None, "u0 d0 u0 u0 u0", "trino-a (default)"),
            ("GET", "/v1/info", None, "n0 d0 u0 u0 u0", "trino-a (default)"),
            ("GET", "/v1/info", None, "d0 d0 u0 u0 u0", "trino-b (default)"),
        ];
        for (method, path, group, spec, expected) in cases {
            assert_eq!(
                outcome_with(method, path, group, views(spec)),
                expected,
                "{method} {path} group={group:?} views={spec}"
            );
        }
    }

    #[test]
    fn a_rule_group_wins_over_the_header() {
        let config = config();
        let etl = config.group_named("etl");
        let facts = RequestFacts {
            method: "POST",
            path: "/v1/statement",
            routing_group: Some("BI"),
            rule_group: etl,
            pinned: None,
        };
        let Decision::Route { basis, .. } = decide(&config, &facts, owner_of, all_up, 0) else { panic!() };
        assert_eq!(basis, Basis::NewQuery { requested: etl.unwrap(), placed: etl.unwrap() });
        let follow = format!("/v1/query/{A}");
        let facts =
            RequestFacts { method: "GET", path: &follow, routing_group: None, rule_group: etl, pinned: None };
        assert!(matches!(decide(&config, &facts, owner_of, all_up, 0), Decision::Route { cluster: 0, .. }));
    }

    #[test]
    fn pinned_statements_go_to_their_cluster() {
        let config = config();
        let pinned = |name: &str, pin| {
            let facts = RequestFacts {
                method: "POST",
                path: "/v1/statement",
                routing_group: Some("etl"),
                rule_group: Some(0),
                pinned: Some((name.into(), pin)),
            };
            match decide(&config, &facts, owner_of, views("u0 d0 u0"), 0) {
                Decision::Route { cluster, basis } => format!("{} {basis:?}", config.clusters[cluster].name),
                Decision::Refuse(r) => format!("refuse {}", r.reply().status),
            }
        };
        assert_eq!(pinned("trino-a", Pin::Transaction), "trino-a Pinned(Transaction)");
        assert_eq!(pinned("trino-etl", Pin::NamedQuery), "trino-etl Pinned(NamedQuery)");
        assert_eq!(pinned("trino-b", Pin::Transaction), "refuse 502", "its cluster is down");
        assert_eq!(pinned("trino-gone", Pin::Transaction), "refuse 502", "its cluster was removed");
    }

    #[test]
    fn pins_into_restricted_groups() {
        let mut config = config();
        let etl = config.group_named("etl").unwrap();
        config.groups[etl].allow = Some(crate::domain::config::GroupAccess {
            users: vec!["etl_bot".into()],
            sources: vec![regex::Regex::new("^airflow").unwrap()],
        });
        #[rustfmt::skip]
        let cases = [
            ("trino-etl", "etl_bot", "cli", true),
            ("trino-etl", "alice", "airflow-7", true),
            ("trino-etl", "mallory", "cli", false),
            ("trino-etl", "mallory", "x-airflow", false),
            ("trino-etl", "", "", false),
            ("trino-a", "mallory", "cli", true),
            ("trino-gone", "mallory", "cli", true),
        ];
        for (cluster, user, source, permitted) in cases {
            let refused_by = pin_refused_by(&config, cluster, user, source);
            assert_eq!(refused_by.is_none(), permitted, "{cluster} {user} {source}");
            if let Some(group) = refused_by {
                assert_eq!(&*group, "etl", "{cluster} {user} {source}");
            }
        }
    }

    #[test]
    fn url_placement() {
        #[rustfmt::skip]
        let splits: &[(&str, Option<(&str, &str)>)] = &[
            ("/_trino/trino-a/v1/statement/executing/x/y/1", Some(("trino-a", "/v1/statement/executing/x/y/1"))),
            ("/_trino/trino-a/v1/spooled/download/abc", Some(("trino-a", "/v1/spooled/download/abc"))),
            ("/_trino/trino-a/", Some(("trino-a", "/"))),
            ("/_trino/trino-a", None),
            ("/_trino//v1/info", None),
            ("/_trinox/trino-a/v1/info", None),
            ("/v1/statement", None),
        ];
        for (path, expected) in splits {
            let got = split_prefixed("/_trino", path).map(|p| (p.cluster, p.rest));
            assert_eq!(got, *expected, "{path}");
        }
        let config = config();
        let outcome = |method: &str, path: &str| {
            let prefixed = split_prefixed("/_trino", path).unwrap();
            let facts = RequestFacts { method, path, ..Default::default() };
            match decide_prefixed(&config, &prefixed, &facts, owner_of, views("d0 u0"), 0) {
                Decision::Route { cluster, basis } => format!("{} {basis:?}", config.clusters[cluster].name),
                Decision::Refuse(r) => format!("refuse {}", r.reply().status),
            }
        };
        assert_eq!(outcome("GET", "/_trino/trino-etl/v1/statement/executing/q/y/1"), "trino-etl UrlPlaced");
        assert_eq!(
            outcome("GET", "/_trino/trino-a/v1/spooled/download/s1"),
            "trino-a UrlPlaced",
            "even when down"
        );
        assert_eq!(outcome("GET", "/_trino/nope/v1/spooled/download/s1"), "refuse 404");
        assert_eq!(
            outcome("POST", "/_trino/trino-etl/v1/statement"),
            "trino-b NewQuery { requested: 2, placed: 2 }",
            "a new statement is decided by the rules, not by its URL"
        );
    }

    #[test]
    fn equals_take_turns() {
        let config = config();
        let facts = RequestFacts { method: "POST", path: "/v1/statement", ..Default::default() };
        let picks: Vec<usize> = (0..4)
            .map(|turn| match decide(&config, &facts, owner_of, all_up, turn) {
                Decision::Route { cluster, .. } => cluster,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }

    /// Regression: views were read twice, and a load that rose between the readings left no cluster
    /// "tied" for the lowest load — a division by zero that killed the router under concurrent load.
    #[test]
    fn loads_changing_during_a_decision() {
        let config = config();
        let facts = RequestFacts { method: "POST", path: "/v1/statement", ..Default::default() };
        let readings = std::cell::Cell::new(0.0);
        let rising = |_| {
            readings.set(readings.get() + 1.0);
            ClusterView { accepts_new: true, down: false, load: readings.get() }
        };
        for turn in 0..4 {
            assert!(matches!(decide(&config, &facts, owner_of, rising, turn), Decision::Route { .. }));
        }
    }

    #[test]
    fn no_capacity_says_when_to_retry() {
        let config = config();
        let facts = RequestFacts { method: "POST", path: "/v1/statement", ..Default::default() };
        let Decision::Refuse(refusal) = decide(&config, &facts, owner_of, views("d0 d0"), 0) else {
            panic!()
        };
        assert_eq!(refusal, Refusal::NoCapacity { group: "adhoc".into(), retry_after_seconds: 1 });
    }

    #[test]
    fn bad_ids_are_named() {
        let config = config();
        let facts = RequestFacts {
            method: "GET",
            path: "/v1/query/x-y",
            routing_group: None,
            rule_group: None,
            pinned: None,
        };
        let decision = decide(&config, &facts, |_| unreachable!(), |_| unreachable!(), 0);
        assert_eq!(decision, Decision::Refuse(Refusal::BadQueryId(QueryIdError::BadCharacter)));
    }

    #[test]
    fn restricted_groups_admit_only_their_users_and_sources() {
        let text = "
listen: 127.0.0.1:1
default_group: adhoc
groups:
  - {name: etl, allow: {users: [etl_bot], sources: ['^airflow']}}
clusters:
  - {name: a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: e, url: 'http://127.0.0.1:2', group: etl}
";
        let config =
            Config::from_yaml(std::path::Path::new("t"), text, &crate::domain::config::Overrides::default())
                .unwrap();
        let rows: [(Option<&str>, &str, &str, Option<&str>); 8] = [
            (Some("etl"), "etl_bot", "", Some("etl")),
            (Some("etl"), "alice", "airflow-dag-1", Some("etl")),
            (Some("etl"), "alice", "trino-cli", None),
            (Some("etl"), "etl_bot2", "", None),
            (Some(" etl "), "mallory", "x-airflow", None),
            (Some("adhoc"), "mallory", "", Some("adhoc")),
            (Some("nope"), "mallory", "", Some("nope")),
            (None, "etl_bot", "airflow", None),
        ];
        for (asked, user, source, want) in rows {
            assert_eq!(
                permitted_routing_group(&config, asked, user, source),
                want,
                "{asked:?} {user} {source}"
            );
        }
    }
}
