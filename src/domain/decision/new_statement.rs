//! Where a new statement (`POST /v1/statement`) goes: the one function that decides it, [`decide`],
//! over plain facts (the request, its SQL, the config) and what the router has learned ([`Lookups`]).
//! The ext_proc stream and `trino-router explain` both call it; metrics and logs are written by the
//! caller from the [`NewStatementDecision`] it returns, which says what happened and why.
//!
//! The steps, in order:
//! 1. **Rules**: the first routing rule that holds picks the group (the SQL is analysed only when a rule
//!    needs statement facts).
//! 2. **Routing-group permission**: the group the client names by `X-Trino-Routing-Group` counts only if
//!    it admits the client's user or source (`groups[].allow`); a refused header counts as none.
//! 3. **Group choice**: the rule's group, else the header's group when it exists, else `default_group`.
//! 4. **Pins**: a statement of a known transaction must run where the transaction lives; with
//!    `placement_from_sql`, one that names a query (`kill_query`) where that query runs — or, when no
//!    one knows that query, it is looked up on the clusters first ([`Outcome::LookUp`]).
//! 5. **Pin admission**: a pin is something the client sends, so it may not lead into a group that does
//!    not admit the client (403).
//! 6. **Placement**: a pinned statement goes to its cluster unless that is down (502); any other to the
//!    least loaded cluster of its group that takes new queries (load per weight, equals take turns),
//!    else of the group's fallbacks in order, else nowhere (503 with `Retry-After`).

use std::sync::Arc;

use super::{Lookups, once, place};
use crate::domain::client_request::{ClientRequest, TRANSACTION_HEADER};
use crate::domain::config::Config;
use crate::domain::pin::{Pin, named_transaction, split_transaction_id};
use crate::domain::query_id::QueryId;
use crate::domain::refusal::Refusal;
use crate::domain::rules::{Evaluation, LazyStatement};
use crate::domain::statement::Limits;

/// A new statement, as the decision reads it.
#[derive(Debug, Clone, Copy)]
pub struct NewStatement<'a> {
    /// What its HTTP request says.
    pub request: &'a ClientRequest,
    /// Its SQL, once the body was read. `None`: decided on the headers alone — the rules see the kind
    /// `unknown`, and nothing is placed by what the SQL names.
    pub sql: Option<&'a str>,
    /// A query the SQL names but no one has placed may be looked up on the clusters first (else the
    /// statement is placed as if it named none).
    pub may_look_up: bool,
    /// Record every rule tried (for `explain`).
    pub trace_rules: bool,
}

/// What the decision found and decided for one new statement.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStatementDecision {
    /// What the routing rules did: the rule that matched, the rules that failed, and (when asked for)
    /// every rule tried.
    pub rules: Evaluation,
    /// The group the statement asks for, and why.
    pub group: usize,
    pub why: GroupReason,
    /// The routing group the client named by `X-Trino-Routing-Group` and may not have (it counted as
    /// none).
    pub refused_routing_group: Option<String>,
    /// The cluster (by name) the statement must run on, and why.
    pub pin: Option<(Arc<str>, Pin)>,
    /// The transaction id to send the coordinator instead of the client's `{cluster}~{id}`.
    pub transaction_rewrite: Option<String>,
    /// The statement starts a transaction: its answers are watched for the transaction's id.
    pub starts_transaction: bool,
    /// Placed on a cluster that looks unhealthy: every cluster of the group's chain did, and none that
    /// takes new queries was left (see [`in_group`]).
    pub doubtful: bool,
    pub outcome: Outcome,
}

/// Why a new statement asks for its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupReason {
    /// Routing rule `Config::rules[i]` picked it.
    Rule(usize),
    /// The client named it by `X-Trino-Routing-Group`.
    RoutingGroupHeader,
    /// Nothing else did: `default_group`.
    DefaultGroup,
}

/// Where the statement goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send it to `Config::clusters[cluster]`.
    Route { cluster: usize, placed: Placed },
    /// Answer the client directly; nothing reaches a coordinator.
    Refuse(Refusal),
    /// The SQL names this query, which no one has placed: look it up on the clusters, then decide again
    /// without lookups.
    LookUp(QueryId),
}

/// How a routed statement was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// In group `Config::groups[group]`: the one asked for, or one of its fallbacks.
    InGroup(usize),
    /// On the cluster of its transaction or of the query it names.
    Pinned(Pin),
}

/// Decides where a new statement goes (see the module doc for the steps).
pub fn decide(config: &Config, statement: &NewStatement<'_>, lookups: &impl Lookups) -> NewStatementDecision {
    let request = statement.request;
    let limits = Limits { max_bytes: config.max_sql_bytes };
    let mut sql = LazyStatement::new(statement.sql.unwrap_or(""), request, limits);
    let rules = config.rules.evaluate(request, &mut sql, statement.trace_rules);

    let asked = Some(request.routing_group.as_str()).filter(|g| !g.is_empty());
    let permitted = permitted_routing_group(config, asked, &request.user, &request.source);
    let refused_routing_group = asked.filter(|_| permitted.is_none()).map(str::to_owned);
    let (group, why) = match rules.matched {
        Some(rule) => (config.rules.rules()[rule].group, GroupReason::Rule(rule)),
        None => match permitted.map(str::trim).and_then(|name| config.group_named(name)) {
            Some(group) => (group, GroupReason::RoutingGroupHeader),
            None => (config.default_group, GroupReason::DefaultGroup),
        },
    };

    let (transaction_owner, transaction_rewrite) =
        transaction_placement(config, request.header(TRANSACTION_HEADER), lookups);
    let mut pin = transaction_owner.map(|owner| (owner, Pin::Transaction));
    let mut starts_transaction = false;
    let mut look_up = None;
    if statement.sql.is_some() && config.placement_from_sql {
        let (starts, query_ids) = sql.placement();
        starts_transaction = starts;
        if pin.is_none() {
            let named: Vec<QueryId> = query_ids.iter().filter_map(|id| QueryId::parse(id).ok()).collect();
            pin = named.iter().find_map(|id| lookups.owner_of(id)).map(|owner| (owner, Pin::NamedQuery));
            // A restarted router or another replica: ask the clusters, then decide.
            look_up = named.into_iter().next().filter(|_| pin.is_none() && statement.may_look_up);
        }
    }

    let (outcome, doubtful) = match (&look_up, &pin) {
        (Some(id), _) => (Outcome::LookUp(id.clone()), false),
        (None, Some((cluster, pin))) => (pinned(config, request, cluster, *pin, lookups), false),
        (None, None) => in_group(config, group, lookups),
    };
    NewStatementDecision {
        rules,
        group,
        why,
        refused_routing_group,
        pin,
        transaction_rewrite,
        starts_transaction,
        doubtful,
        outcome,
    }
}

/// A statement pinned to `cluster`: refused when the cluster's group does not admit the client, or the
/// cluster is down or gone.
fn pinned(
    config: &Config,
    request: &ClientRequest,
    cluster: &Arc<str>,
    pin: Pin,
    lookups: &impl Lookups,
) -> Outcome {
    if let Some(group) = pin_refused_by(config, cluster, &request.user, &request.source) {
        return Outcome::Refuse(Refusal::PinnedGroupNotAllowed { cluster: cluster.clone(), group, pin });
    }
    match config.cluster_index(cluster) {
        Some(index) if !lookups.view(index).down => {
            Outcome::Route { cluster: index, placed: Placed::Pinned(pin) }
        }
        _ => Outcome::Refuse(Refusal::PinnedClusterDown { cluster: cluster.clone(), pin }),
    }
}

/// The least loaded cluster that takes new queries in `group`, else in its fallbacks. When none does
/// and some look unhealthy only by the router's judgement (active, not known down: the router may be
/// the one cut off, or a reloaded CA may trust none), the least loaded of those (`true`: a doubtful
/// placement) — refusing every query would turn the router's doubt into an outage.
fn in_group(config: &Config, group: usize, lookups: &impl Lookups) -> (Outcome, bool) {
    let view = |c| lookups.view(c);
    let mut turn = once(lookups);
    if let Some((placed, cluster)) = place(config, group, &view, &mut turn, |v| v.accepts_new) {
        return (Outcome::Route { cluster, placed: Placed::InGroup(placed) }, false);
    }
    match place(config, group, &view, &mut turn, |v| v.doubtful && !v.down) {
        Some((placed, cluster)) => (Outcome::Route { cluster, placed: Placed::InGroup(placed) }, true),
        None => (
            Outcome::Refuse(Refusal::NoCapacity {
                group: config.groups[group].name.clone(),
                retry_after_seconds: config.health.retry_after.as_secs().max(1),
            }),
            false,
        ),
    }
}

/// The cluster (by name) that owns the transaction `X-Trino-Transaction-Id` names, and the id to send
/// the coordinator in its place: a `{envoy cluster}~{id}` id names its cluster (any replica places it,
/// and the coordinator gets its own id back); another is looked up in what the router learned.
pub fn transaction_placement(
    config: &Config,
    header: Option<&str>,
    lookups: &impl Lookups,
) -> (Option<Arc<str>>, Option<String>) {
    let Some(value) = named_transaction(header) else { return (None, None) };
    match cluster_prefixed_transaction(config, Some(value)) {
        Some((index, id)) => (Some(config.clusters[index].name.clone()), Some(id.to_owned())),
        None => (lookups.transaction_owner(value), None),
    }
}

/// A transaction id `{envoy cluster}~{id}` whose prefix names a configured cluster: that cluster's index
/// and the coordinator's own id.
pub fn cluster_prefixed_transaction<'a>(
    config: &Config,
    header: Option<&'a str>,
) -> Option<(usize, &'a str)> {
    let (cluster, id) = split_transaction_id(named_transaction(header)?)?;
    Some((config.cluster_by_envoy_cluster(cluster)?, id))
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
/// admit the user or source. A cluster the config does not have refuses nothing here (it is refused as
/// down).
pub fn pin_refused_by(config: &Config, cluster: &str, user: &str, source: &str) -> Option<Arc<str>> {
    let group = &config.cluster_named(cluster)?.group;
    permitted_routing_group(config, Some(group), user, source).is_none().then(|| group.clone())
}

#[cfg(test)]
mod tests;
