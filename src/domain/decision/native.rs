//! Which new statements Envoy may place by itself (`new_query_routing: envoy`), and where: pure, from
//! the config and the clusters' state. The router serves the answer to Envoy as routes over RDS
//! (`envoy::route_discovery`), rebuilt at every poll; a new statement Envoy places this way costs the
//! router nothing (no ext_proc stream), which is what lets Envoy + router beat a proxy such as trino-lb
//! on short queries (`benches/new-query-cost.md`).
//!
//! Envoy can do what [`super::new_statement::decide`] does when the decision depends only on things a
//! route can match: no rule reads the SQL, CEL, the user or a regex; `placement_from_sql` is off (the
//! SQL may name a query to place by); no per-query log line is asked for (`query_log.query_ids`); no
//! `url_prefix`. Then [`plan`] gives the routes, in the order the decision tries things:
//! 1. a statement of a transaction (`X-Trino-Transaction-Id` names one): to the router (pinned);
//! 2. each rule, as header matches: its group;
//! 3. `X-Trino-Routing-Group` naming a group that admits anyone, exactly: that group;
//! 4. any other `X-Trino-Routing-Group` (a restricted group, a value to trim, an unknown name): to the
//!    router;
//! 5. everything else: the default group.
//!
//! A group's target ([`weights`]) is its clusters that take new queries, as weights — the first group
//! of its fallback chain that has one, as the router's placement does; none anywhere: to the router
//! (its 503 with `Retry-After`). A cluster draining, disabled, unhealthy, starting or down gets no
//! weight; the others share by their configured weight, less the more loaded they are than the least
//! loaded one, and none when they are [`LOAD_GAP`] or more above it (per unit of weight). The router's
//! per-query choice is exact; these weights follow the load at every poll instead.
//!
//! Each group target also says whether Envoy should let the router read the new queries' first answers
//! (the learn filter): only while a cluster in it has a coordinator id the router does not know yet.

use super::ClusterView;
use crate::domain::client_request::{ROUTING_GROUP_HEADER, TRANSACTION_HEADER};
use crate::domain::config::{Config, NewQueryRouting};
use crate::domain::rules::HeaderCondition;

/// Load per unit of weight above the least loaded cluster at which a cluster gets no new queries.
pub const LOAD_GAP: f64 = 16.0;

/// The weight of the least loaded cluster of weight 1 (Envoy's weights are integers).
pub const WEIGHT_SCALE: f64 = 100.0;

/// Why Envoy may not place any new statement by itself under this config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotNative {
    /// `new_query_routing: router`.
    RouterDecides,
    /// A rule Envoy cannot test (by name).
    Rule(String),
    /// `placement_from_sql: true`: every statement's SQL may name where it must run.
    PlacementFromSql,
    /// `query_log.query_ids`: every new query's line waits for its id.
    QueryLog,
    /// `url_prefix`: new statements are sent with a per-cluster prefix header.
    UrlPrefix,
}

impl NotNative {
    /// Why, in words, for logs and `check`.
    pub fn reason(&self) -> String {
        match self {
            NotNative::RouterDecides => "new_query_routing is router".to_owned(),
            NotNative::Rule(name) => format!(
                "rule `{name}` tests what Envoy cannot match (SQL, CEL, the user, a regex); only \
                 headers.NAME, source and client_info with values can be"
            ),
            NotNative::PlacementFromSql => "placement_from_sql reads every statement's SQL".to_owned(),
            NotNative::QueryLog => "query_log.query_ids logs every new query with its id".to_owned(),
            NotNative::UrlPrefix => "url_prefix sends each new query with its cluster's prefix".to_owned(),
        }
    }
}

/// What a header must carry for a route to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderTest {
    /// One of these values exactly; with `missing_is_empty`, absent counts as `""`.
    OneOf { values: Vec<String>, missing_is_empty: bool },
    /// Present, whatever the value.
    Present,
    /// Names a transaction: present, not blank and not `NONE` (any case).
    NamesTransaction,
}

/// Where a native route sends new statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// To the router's decide filter, as without native routing.
    Router,
    /// Envoy picks among `Config::clusters[i]` by weight.
    Weighted(Weighted),
}

/// A group's clusters as Envoy's weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weighted {
    /// The group placed in: the one asked for, or the first of its fallbacks with a cluster to take it.
    pub group: usize,
    /// `(cluster index, weight > 0)`, in the group's order.
    pub clusters: Vec<(usize, u32)>,
    /// Some cluster's coordinator id is unknown: the router reads the first answers to learn it.
    pub learn: bool,
}

/// One route of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeRoute {
    /// Unique within the plan (Envoy's route name).
    pub name: String,
    /// All must hold (besides `POST /v1/statement`).
    pub headers: Vec<(String, HeaderTest)>,
    /// Request headers to set (a rule's `set_headers`).
    pub set_headers: Vec<(String, String)>,
    pub target: Target,
}

/// Whether this config lets Envoy place new statements at all.
pub fn native_allowed(config: &Config) -> Result<(), NotNative> {
    if config.new_query_routing == NewQueryRouting::Router {
        return Err(NotNative::RouterDecides);
    }
    if config.placement_from_sql {
        return Err(NotNative::PlacementFromSql);
    }
    if config.query_log.query_ids {
        return Err(NotNative::QueryLog);
    }
    if config.url_prefix.is_some() {
        return Err(NotNative::UrlPrefix);
    }
    match config.rules.rules().iter().find(|rule| rule.as_header_conditions().is_none()) {
        Some(rule) => Err(NotNative::Rule(rule.name.clone())),
        None => Ok(()),
    }
}

/// The native routes for new statements, in order (see the module doc), or why there are none.
/// `view`: a cluster's state now; `id_known`: whether the router knows the cluster's coordinator id.
pub fn plan(
    config: &Config,
    view: &impl Fn(usize) -> ClusterView,
    id_known: &impl Fn(usize) -> bool,
) -> Result<Vec<NativeRoute>, NotNative> {
    native_allowed(config)?;
    let target = |group: usize| match weights(config, group, view) {
        Some((group, clusters)) => {
            let learn = clusters.iter().any(|&(cluster, _)| !id_known(cluster));
            Target::Weighted(Weighted { group, clusters, learn })
        }
        None => Target::Router,
    };
    let route = |name: String, headers: Vec<(String, HeaderTest)>, target: Target| NativeRoute {
        name,
        headers,
        set_headers: Vec::new(),
        target,
    };
    let mut routes = vec![route(
        "native-transaction".to_owned(),
        vec![(TRANSACTION_HEADER.to_owned(), HeaderTest::NamesTransaction)],
        Target::Router,
    )];
    for (index, rule) in config.rules.rules().iter().enumerate() {
        let conditions = rule.as_header_conditions().unwrap_or_default();
        let headers = conditions.into_iter().map(header_test).collect();
        routes.push(NativeRoute {
            name: format!("native-rule-{index}"),
            headers,
            set_headers: rule.set_headers.clone(),
            target: target(rule.group),
        });
    }
    for (index, group) in config.groups.iter().enumerate().filter(|(_, g)| g.allow.is_none()) {
        let named = HeaderTest::OneOf { values: vec![group.name.to_string()], missing_is_empty: false };
        routes.push(route(
            format!("native-group-{index}"),
            vec![(ROUTING_GROUP_HEADER.to_owned(), named)],
            target(index),
        ));
    }
    routes.push(route(
        "native-other-group".to_owned(),
        vec![(ROUTING_GROUP_HEADER.to_owned(), HeaderTest::Present)],
        Target::Router,
    ));
    routes.push(route("native-default".to_owned(), Vec::new(), target(config.default_group)));
    Ok(routes)
}

fn header_test(condition: HeaderCondition) -> (String, HeaderTest) {
    let HeaderCondition { header, values, missing_is_empty } = condition;
    (header, HeaderTest::OneOf { values, missing_is_empty })
}

/// The clusters that take `group`'s new queries now, as weights: the group's own, else those of the
/// first fallback with any, as `(group placed in, [(cluster, weight)])`; `None` when no cluster of the
/// chain takes new queries.
pub fn weights(
    config: &Config,
    group: usize,
    view: &impl Fn(usize) -> ClusterView,
) -> Option<(usize, Vec<(usize, u32)>)> {
    std::iter::once(group).chain(config.groups[group].fallback.iter().copied()).find_map(|g| {
        let eligible: Vec<(usize, f64)> = config.groups[g]
            .members
            .iter()
            .map(|&c| (c, view(c)))
            .filter(|(_, v)| v.accepts_new)
            .map(|(c, v)| (c, v.load))
            .collect();
        let least = eligible.iter().map(|&(_, load)| load).reduce(f64::min)?;
        let clusters: Vec<(usize, u32)> = eligible
            .into_iter()
            .filter(|&(_, load)| load - least < LOAD_GAP)
            .map(|(c, load)| {
                let share = config.clusters[c].weight / (1.0 + load - least);
                (c, (WEIGHT_SCALE * share).round().max(1.0) as u32)
            })
            .collect();
        Some((g, clusters))
    })
}

#[cfg(test)]
mod tests;
