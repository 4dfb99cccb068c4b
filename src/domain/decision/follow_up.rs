//! Where every request but a new statement goes: a request naming a query goes to the cluster that owns
//! it (refused when no one knows it, or its owner is down), a URL-placed path to the cluster it names, a
//! spooled segment nowhere (without URL placement its id names no cluster), anything else to a cluster
//! of the default group.

use std::sync::Arc;

use super::{Lookups, once, place};
use crate::domain::config::Config;
use crate::domain::query_id::QueryId;
use crate::domain::refusal::Refusal;
use crate::domain::target::Target;

/// A request that is not a new statement, as the decision reads it.
#[derive(Debug, Clone)]
pub struct FollowUp<'a> {
    pub method: &'a str,
    /// The path as the coordinator knows it (under URL placement, without the prefix).
    pub path: &'a str,
    /// What the path is about ([`crate::domain::target::classify`]).
    pub target: Target,
    /// Under URL placement: the cluster the path names.
    pub url_cluster: Option<&'a str>,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send the request to `Config::clusters[cluster]`.
    Route { cluster: usize, basis: Basis },
    /// Answer the client directly; nothing reaches a coordinator.
    Refuse(Refusal),
}

/// Why a request goes where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// A request about a query, sent to the cluster that owns it.
    QueryOwner(QueryId),
    /// Any other request: a cluster of the default group.
    DefaultGroup,
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

/// Decides where a request that is not a new statement goes (a new statement passed here is placed as
/// any other request: [`super::new_statement::decide`] decides those).
pub fn decide(config: &Config, request: &FollowUp<'_>, lookups: &impl Lookups) -> Decision {
    if let Some(named) = request.url_cluster {
        // The path names its cluster: it goes there whatever its state (as follow-ups do).
        return match config.cluster_index(named) {
            Some(cluster) => Decision::Route { cluster, basis: Basis::UrlPlaced },
            None => Decision::Refuse(Refusal::UnknownClusterInPath(named.into())),
        };
    }
    match &request.target {
        Target::Query(id) => match (lookups.owner_of(id), lookups.restarted_owner(id)) {
            (Some(name), _) => owner(config, request, id, name, lookups),
            (None, Some(cluster)) => Decision::Refuse(Refusal::CoordinatorRestarted {
                query_id: id.clone(),
                cluster,
                as_query_failure: is_statement_poll(request),
            }),
            (None, None) => Decision::Refuse(not_held(request, id)),
        },
        Target::BadQueryId(error) => Decision::Refuse(Refusal::BadQueryId(*error)),
        Target::SpooledSegment => Decision::Refuse(Refusal::SpooledSegmentUnplaced),
        Target::NewStatement | Target::Other => {
            // Prefer a cluster that takes new queries; else any that is not down; else the first
            // (Envoy then answers for it).
            let group = config.default_group;
            let view = |c| lookups.view(c);
            let mut turn = once(lookups);
            let placed = place(config, group, &view, &mut turn, |v| v.accepts_new)
                .or_else(|| place(config, group, &view, &mut turn, |v| !v.down))
                .or_else(|| place(config, group, &view, &mut turn, |_| true));
            match placed {
                Some((_, cluster)) => Decision::Route { cluster, basis: Basis::DefaultGroup },
                // Validation rules this out (the default group's chain has clusters); a refusal, not a
                // panic, should a config ever get here without it.
                None => Decision::Refuse(Refusal::NoCapacity {
                    group: config.groups[group].name.clone(),
                    retry_after_seconds: config.health.retry_after.as_secs().max(1),
                }),
            }
        }
    }
}

/// A request about query `id`, which `name` owns.
fn owner(
    config: &Config,
    request: &FollowUp<'_>,
    id: &QueryId,
    name: Arc<str>,
    lookups: &impl Lookups,
) -> Decision {
    match config.cluster_index(&name) {
        Some(cluster) if lookups.view(cluster).down => Decision::Refuse(Refusal::OwnerDown {
            query_id: id.clone(),
            cluster: name,
            as_query_failure: is_statement_poll(request),
        }),
        Some(cluster) => Decision::Route { cluster, basis: Basis::QueryOwner(id.clone()) },
        None => Decision::Refuse(Refusal::OwnerRemoved { query_id: id.clone(), cluster: name }),
    }
}

/// The answer to a request about a query no cluster is known to hold: what Trino answers for it —
/// `DELETE /v1/query/{id}` is 204 whether held or not (row Q5), anything else the router's 404.
fn not_held(request: &FollowUp<'_>, id: &QueryId) -> Refusal {
    let cancel = request.method.eq_ignore_ascii_case("DELETE")
        && request
            .path
            .strip_prefix("/v1/query/")
            .is_some_and(|rest| rest.trim_end_matches('/') == id.as_str());
    if cancel { Refusal::NothingToCancel(id.clone()) } else { Refusal::QueryNotFound(id.clone()) }
}

/// A client polling a statement for its next page (where a failed `QueryResults` is the clearest
/// answer the client can get).
fn is_statement_poll(request: &FollowUp<'_>) -> bool {
    request.method.eq_ignore_ascii_case("GET")
        && (request.path.starts_with("/v1/statement/") || request.path.starts_with("/ui/api/statement/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::testing::{CHAIN, DECISIONS, config};
    use crate::domain::decision::testing::{A, B, Fixed, GONE, RESTARTED, UNKNOWN};
    use crate::domain::query_id::QueryIdError;
    use crate::domain::target::classify;

    /// Decides `method path` (with `views`, turn 1: the second of equally loaded clusters) and names
    /// the outcome.
    fn outcome(method: &str, path: &str, views: &'static str) -> String {
        let config = config(DECISIONS);
        let request = FollowUp { method, path, target: classify(method, path), url_cluster: None };
        name(&config, decide(&config, &request, &Fixed::new(views, 1)))
    }

    fn name(config: &Config, decision: Decision) -> String {
        match decision {
            Decision::Route { cluster, basis } => {
                let why = match basis {
                    Basis::QueryOwner(id) => format!("owner of {}", &id.as_str()[22..]),
                    Basis::DefaultGroup => "default".to_owned(),
                    Basis::UrlPlaced => "url".to_owned(),
                };
                format!("{} ({why})", config.clusters[cluster].name)
            }
            Decision::Refuse(r) => format!("refuse {}", r.reply().status),
        }
    }

    #[test]
    fn decisions() {
        let follow = format!("/v1/statement/executing/{A}/y1/2");
        let info = format!("/v1/query/{A}");
        // clusters: 0 trino-a, 1 trino-b (adhoc, the default group); 2 trino-etl, 3 trino-etl2 (etl);
        // 4 trino-bi (BI). Views: `u` up, `d` down, `n` no new queries; a digit is the load.
        #[rustfmt::skip]
        let cases: Vec<(&str, String, &str, &str)> = vec![
            // Follow-ups go to the owner, whatever the routing group says.
            ("GET", format!("/v1/statement/queued/{A}/y1/1"), "", "trino-a (owner of aaaaa)"),
            ("GET", format!("/v1/statement/executing/{B}/y1/2"), "", "trino-b (owner of bbbbb)"),
            ("HEAD", format!("/v1/statement/executing/{B}/y1/2"), "", "trino-b (owner of bbbbb)"),
            ("DELETE", format!("/v1/statement/executing/{B}/y1/2"), "", "trino-b (owner of bbbbb)"),
            ("DELETE", format!("/v1/statement/executing/partialCancel/{A}/1/y1/2"), "", "trino-a (owner of aaaaa)"),
            ("GET", format!("/v1/query/{A}"), "", "trino-a (owner of aaaaa)"),
            ("PUT", format!("/v1/query/{B}/killed"), "", "trino-b (owner of bbbbb)"),
            ("GET", format!("/ui/query.html?{A}"), "", "trino-a (owner of aaaaa)"),
            ("GET", format!("/ui/api/query/{B}"), "", "trino-b (owner of bbbbb)"),
            ("GET", format!("/ui/api/statement/executing/{B}/y/1"), "", "trino-b (owner of bbbbb)"),
            // Queries the router cannot place are refused, never guessed.
            ("GET", format!("/v1/statement/queued/{UNKNOWN}/y1/1"), "", "refuse 404"),
            ("GET", format!("/v1/query/{UNKNOWN}"), "", "refuse 404"),
            ("DELETE", format!("/v1/query/{UNKNOWN}"), "", "refuse 204"),             // as Trino (Q5)
            ("DELETE", format!("/v1/statement/executing/{UNKNOWN}/y1/1"), "", "refuse 404"), // as Trino (S5)
            ("PUT", format!("/v1/query/{UNKNOWN}/killed"), "", "refuse 404"),
            ("GET", format!("/v1/statement/queued/{GONE}/y1/1"), "", "refuse 404"),
            // A query of a coordinator that restarted since: gone, said so (a failed page to a poll).
            ("GET", format!("/v1/statement/executing/{RESTARTED}/y1/2"), "", "refuse 200"),
            ("DELETE", format!("/v1/statement/executing/{RESTARTED}/y1/2"), "", "refuse 404"),
            ("GET", "/v1/statement/queued/NOT_AN_ID/y/1".into(), "", "refuse 400"),
            ("GET", "/v1/statement/executing/".into(), "", "refuse 400"),
            ("GET", "/v1/spooled/download/abc".into(), "", "refuse 404"),
            // Follow-ups stay with their owner whatever its state, unless it is known to be down.
            ("GET", follow.clone(), "n0 u0 u0 u0 u0", "trino-a (owner of aaaaa)"),
            ("GET", follow.clone(), "u9 u0 u0 u0 u0", "trino-a (owner of aaaaa)"),
            ("GET", follow.clone(), "d0 u0 u0 u0 u0", "refuse 200"),             // a failed QueryResults
            ("DELETE", follow, "d0 u0 u0 u0 u0", "refuse 502"),
            ("GET", info, "d0 u0 u0 u0 u0", "refuse 502"),
            // Anything else: a default-group cluster that takes queries, else one not down, else any.
            ("GET", "/v1/info".into(), "", "trino-b (default)"),
            ("GET", "/ui/".into(), "", "trino-b (default)"),
            ("GET", "/v1/statement".into(), "", "trino-b (default)"),
            ("GET", "/v1/info".into(), "d0 u0 u0 u0 u0", "trino-b (default)"),
            ("GET", "/v1/info".into(), "u0 d0 u0 u0 u0", "trino-a (default)"),
            ("GET", "/v1/info".into(), "n0 d0 u0 u0 u0", "trino-a (default)"),
            ("GET", "/v1/info".into(), "d0 d0 u0 u0 u0", "trino-b (default)"),
        ];
        for (method, path, views, expected) in cases {
            assert_eq!(outcome(method, &path, views), expected, "{method} {path} views={views}");
        }
    }

    #[test]
    fn the_default_groups_whole_chain_is_followed() {
        let config = config(CHAIN);
        let info = FollowUp { method: "GET", path: "/v1/info", target: Target::Other, url_cluster: None };
        let decide_with = |views| name(&config, decide(&config, &info, &Fixed::new(views, 0)));
        assert_eq!(decide_with(""), "back-1 (default)", "front → middle → back");
        assert_eq!(decide_with("n0 u0"), "back-2 (default)");
        assert_eq!(
            decide_with("d0 d0 u0"),
            "back-1 (default)",
            "down everywhere: still a cluster of the chain"
        );
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
        let config = config(DECISIONS);
        let outcome = |path: &str| {
            let prefixed = split_prefixed("/_trino", path).unwrap();
            let target = classify("GET", prefixed.rest);
            let request =
                FollowUp { method: "GET", path: prefixed.rest, target, url_cluster: Some(prefixed.cluster) };
            name(&config, decide(&config, &request, &Fixed::new("d0 u0", 0)))
        };
        assert_eq!(outcome("/_trino/trino-etl/v1/statement/executing/q/y/1"), "trino-etl (url)");
        assert_eq!(outcome("/_trino/trino-a/v1/spooled/download/s1"), "trino-a (url)", "even when down");
        assert_eq!(outcome("/_trino/nope/v1/spooled/download/s1"), "refuse 404");
    }

    #[test]
    fn equals_take_turns_and_a_turn_is_taken_only_when_needed() {
        let config = config(DECISIONS);
        let info = FollowUp { method: "GET", path: "/v1/info", target: Target::Other, url_cluster: None };
        let picks: Vec<String> =
            (0..4).map(|turn| name(&config, decide(&config, &info, &Fixed::new("", turn)))).collect();
        assert_eq!(
            picks,
            ["trino-a (default)", "trino-b (default)", "trino-a (default)", "trino-b (default)"]
        );
        let path = format!("/v1/query/{A}");
        let follow =
            FollowUp { method: "GET", path: &path, target: classify("GET", &path), url_cluster: None };
        let lookups = Fixed::new("", 0);
        decide(&config, &follow, &lookups);
        assert_eq!(lookups.turns_taken.get(), 0, "a follow-up takes no turn");
    }

    #[test]
    fn bad_ids_are_named() {
        let config = config(DECISIONS);
        let request = FollowUp {
            method: "GET",
            path: "/v1/query/x-y",
            target: classify("GET", "/v1/query/x-y"),
            url_cluster: None,
        };
        let decision = decide(&config, &request, &Fixed::new("", 0));
        assert_eq!(decision, Decision::Refuse(Refusal::BadQueryId(QueryIdError::BadCharacter)));
    }
}
