//! What the router writes about its decisions — counters, log lines, and the status page's list of
//! recent new queries — from the values the decisions return, in one place. The decisions themselves
//! ([`crate::domain::decision`]) write nothing.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::domain::client_request::ClientRequest;
use crate::domain::config::Config;
use crate::domain::decision::follow_up::{Basis, Decision, FollowUp};
use crate::domain::decision::new_statement::{NewStatementDecision, Outcome};
use crate::domain::refusal::{LocalReply, Refusal};
use crate::state::metrics::METRICS;
use crate::state::router::Stage;

/// One new query's log line: who, where, why, how fast.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryLine {
    pub user: String,
    pub source: String,
    pub group: String,
    pub cluster: String,
    /// The rule that chose the group; empty when none did.
    pub rule: String,
    pub decision_us: u64,
    /// Only with `query_log.sql`.
    pub sql: Option<String>,
}

impl QueryLine {
    /// Writes the line (`query_id` empty when not known) and keeps it for the status page.
    pub fn log(&self, query_id: &str) {
        remember(self, query_id);
        tracing::info!(
            target: "trino_router::queries",
            query_id,
            user = self.user,
            source = self.source,
            group = self.group,
            cluster = self.cluster,
            rule = self.rule,
            decision_us = self.decision_us,
            sql = self.sql.as_deref(),
            "new query"
        );
    }
}

/// New queries kept for the status page.
pub const RECENT: usize = 50;

/// A new query as the status page lists it: when, its id (empty when not known), its line (no SQL).
pub type RecentQuery = (SystemTime, String, QueryLine);

static RECENT_QUERIES: Mutex<VecDeque<RecentQuery>> = Mutex::new(VecDeque::new());

/// Remembers a new query for the status page; the oldest goes when [`RECENT`] are kept.
fn remember(line: &QueryLine, query_id: &str) {
    let mut recent = RECENT_QUERIES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if recent.len() == RECENT {
        recent.pop_front();
    }
    let mut line = line.clone();
    line.sql = None; // the page never shows SQL
    recent.push_back((SystemTime::now(), query_id.to_owned(), line));
}

/// The most recent new queries, oldest first.
pub fn recent_queries() -> Vec<RecentQuery> {
    RECENT_QUERIES.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
}

/// Writes what a new statement's decision says: a failing rule (once per rule), a refused pin or
/// routing group, the decision at debug level, and for a final route the new-query counter and its log
/// line. Returns the line when it is to be written later, with the query's id (`query_log.query_ids`).
pub fn new_statement(
    config: &Config,
    request: &ClientRequest,
    sql: Option<&str>,
    decision: &NewStatementDecision,
    stage: Stage,
    took: Duration,
) -> Option<QueryLine> {
    for (index, message) in &decision.rules.failures {
        let rule = &config.rules.rules()[*index];
        if rule.first_failure() {
            tracing::warn!(rule = %rule.name, "rule failed and counts as no match (logged once): {message}");
        }
    }
    match &decision.outcome {
        Outcome::LookUp(_) => return None,
        Outcome::Refuse(Refusal::PinnedGroupNotAllowed { cluster, group, pin }) => {
            tracing::warn!(
                %cluster, %group, ?pin, user = request.user, source = request.source,
                "pinned statement refused: its cluster's group does not admit this user or source"
            );
            return None;
        }
        _ => {}
    }
    let final_decision = stage == Stage::Final;
    if let (Some(group), true) = (&decision.refused_routing_group, final_decision) {
        tracing::warn!(
            group,
            user = request.user,
            source = request.source,
            "routing group refused: the group does not admit this user or source"
        );
        METRICS.refused("routing_group_not_allowed");
    }
    let rule = decision.rules.matched.map(|i| &config.rules.rules()[i]);
    tracing::debug!(
        user = %request.user, rule = rule.map(|r| r.name.as_str()), decision = ?decision.outcome, final_decision,
        "new statement"
    );
    let Outcome::Route { cluster, .. } = decision.outcome else { return None };
    if decision.doubtful && final_decision {
        METRICS.safeguard(crate::state::metrics::Safeguard::DoubtfulPlacement);
        tracing::debug!(cluster = %config.clusters[cluster].name, "every cluster looks unhealthy and none is known down: placed anyway");
    }
    if !final_decision {
        return None;
    }
    let chosen = &config.clusters[cluster];
    METRICS.new_query(&chosen.group, &chosen.name, rule.map(|r| r.name.as_str()), took);
    let line = QueryLine {
        user: request.user.clone(),
        source: request.source.clone(),
        group: chosen.group.to_string(),
        cluster: chosen.name.to_string(),
        rule: rule.map(|r| r.name.clone()).unwrap_or_default(),
        decision_us: took.as_micros() as u64,
        sql: config.query_log.sql.then(|| sql.unwrap_or("").to_owned()),
    };
    if config.query_log.query_ids {
        return Some(line); // written by the learn filter, with the query id
    }
    line.log("");
    None
}

/// Writes what the decision for any other request says. `may_look_up`: a query no one knows is looked
/// up next (not a miss yet).
pub fn follow_up(request: &FollowUp<'_>, decision: &Decision, may_look_up: bool, took: Duration) {
    if request.url_cluster.is_some() {
        if let Decision::Route { .. } = decision {
            METRICS.placed("url", took);
        }
        return;
    }
    tracing::debug!(method = request.method, path = request.path, ?decision, "decided");
    match decision {
        Decision::Route { basis: Basis::QueryOwner(_), .. } => METRICS.placed("learned", took),
        Decision::Refuse(Refusal::QueryNotFound(_)) if !may_look_up => {
            METRICS.placement_misses.inc();
        }
        _ => {}
    }
}

/// Counts an answer the router gives itself, by its reason.
pub fn refused(reply: &LocalReply) {
    METRICS.refused(reply.details.strip_prefix("trino_router_").unwrap_or(reply.details));
}
