//! The built-in status page (`GET /` on the metrics port): one replica's view, and it says so — every
//! cluster's state (with who set the operator's say, when and why) and load, this replica's peers as it
//! last heard them (whether they hold the same operator state), and the most recent new queries this
//! replica routed (kept by [`crate::state::telemetry`]); one server-rendered HTML page that refreshes
//! itself. Loads and queries in flight are this replica's counts; `trino-router admin clusters` shows
//! every replica's side by side.

use std::fmt::Write;

use crate::operate::fleet::{Fleet, PeerStatus};
use crate::state::router::Router;
use crate::state::telemetry::recent_queries;

/// The page.
pub fn render(router: &Router, fleet: &Fleet) -> String {
    let snapshot = router.snapshot();
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>trino-router</title><style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin-bottom:2em}\
         th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}\
         th{background:#f0f0f0}.no{color:#b00;font-weight:bold}.yes{color:#070}\
         </style></head><body><h1>trino-router</h1>",
    );
    fleet_section(&mut html, router, fleet);
    html.push_str(
        "<h2>Clusters</h2><table id=\"clusters\"><tr>\
         <th>cluster</th><th>group</th><th>health</th><th>operator</th><th>new queries</th>\
         <th>load</th><th>in flight</th><th>routed</th><th>coordinator</th><th>operator's say</th></tr>",
    );
    for (cluster, runtime) in snapshot.config.clusters.iter().zip(&snapshot.clusters) {
        let accepts = runtime.accepts_new_queries();
        let say = match router.operators().entry(&cluster.name) {
            None => format!("the config (enabled: {})", cluster.enabled),
            Some(e) => {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.version.wall_ms);
                let why = if e.reason.is_empty() { String::new() } else { format!(": {}", e.reason) };
                format!(
                    "{} by {} at {}{why}",
                    e.operator,
                    e.version.origin,
                    humantime::format_rfc3339_seconds(at)
                )
            }
        };
        let health = runtime.health();
        let reason = runtime.health_reason();
        let health = if reason.is_empty() || health == crate::domain::health::Health::Healthy {
            health.to_string()
        } else {
            format!("{health}: <span class=\"no\">{}</span>", escape(&reason))
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&cluster.name),
            escape(&cluster.group),
            health,
            runtime.operator(),
            if accepts { "yes" } else { "no" },
            if accepts { "yes" } else { "no" },
            runtime.load(),
            runtime.in_flight(),
            runtime.queries_routed(),
            escape(&cluster.url.to_string()),
            escape(&say),
        );
    }
    html.push_str(
        "</table><h2>Recent new queries</h2><table id=\"recent\"><tr><th>time (UTC)</th><th>query id</th>\
         <th>user</th><th>source</th><th>group</th><th>cluster</th><th>rule</th><th>decision µs</th></tr>",
    );
    for (at, query_id, line) in recent_queries().iter().rev() {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            humantime::format_rfc3339_seconds(*at),
            if query_id.is_empty() { "—".to_owned() } else { escape(query_id) },
            escape(&line.user),
            escape(&line.source),
            escape(&line.group),
            escape(&line.cluster),
            escape(&line.rule),
            line.decision_us,
        );
    }
    html.push_str("</table></body></html>");
    html
}

/// Which replica this is, that the page is its view, and its peers as it last heard them.
fn fleet_section(html: &mut String, router: &Router, fleet: &Fleet) {
    let operators = router.operators();
    let peers = fleet.peers();
    let _ = write!(
        html,
        "<p id=\"replica\">This page shows the view of replica <b>{}</b> alone{}: loads, queries in flight \
         and recent queries are what this replica counted. The operator's say is shared by every replica. \
         <code>trino-router admin clusters</code> lists every replica's view.</p>",
        escape(operators.replica()),
        if operators.settled() { "" } else { " (still starting: waiting for its peers, NOT_SERVING)" },
    );
    if peers.is_empty() {
        html.push_str("<p id=\"peers\">No peers (no <code>fleet.peers</code>, or none found).</p>");
        return;
    }
    html.push_str(
        "<h2>Peers</h2><table id=\"peers\"><tr><th>replica</th><th>address</th><th>status</th>\
         <th>last answer</th><th>operator state</th></tr>",
    );
    for (addr, peer) in peers {
        let ago = peer
            .last_answer
            .map_or("never".to_owned(), |t| format!("{:.1} s ago", t.elapsed().as_secs_f64()));
        let (class, status) = match peer.status {
            PeerStatus::Ok => ("yes", "ok".to_owned()),
            other => ("no", format!("{}: {}", other.as_str(), peer.error)),
        };
        let state = match (peer.status, peer.in_sync) {
            (PeerStatus::Ok, true) => "the same as here",
            (PeerStatus::Ok, false) => "differed at the last exchange (it takes the newer say)",
            _ => "not known",
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{ago}</td><td>{state}</td></tr>",
            escape(peer.replica.as_deref().unwrap_or("?")),
            escape(&format!("{addr} ({})", peer.configured)),
            escape(&status),
        );
    }
    html.push_str("</table>");
}

/// Text as HTML (user names and sources come from clients).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::telemetry::QueryLine;

    #[test]
    fn clusters_and_recent_queries_escaped() {
        let router = crate::state::router::testing::one_cluster_router();
        let line = QueryLine {
            user: "<script>alert(1)</script>".into(),
            cluster: "a".into(),
            sql: Some("SELECT secret".into()),
            ..Default::default()
        };
        line.log("20260101_000000_00001_abcde");
        let fleet = crate::operate::fleet::Fleet::new(router.clone());
        router.set_operator("a", crate::state::cluster_state::Operator::Draining, "upgrade <477>");
        let page = render(&router, &fleet);
        assert!(page.contains("<td>a</td><td>adhoc</td>"), "{page}");
        assert!(page.contains("view of replica <b>trino-router</b> alone"), "{page}");
        assert!(
            page.contains("draining by trino-router at ") && page.contains(": upgrade &lt;477&gt;"),
            "{page}"
        );
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !page.contains("<script>"));
        assert!(page.contains("20260101_000000_00001_abcde"));
        assert!(!page.contains("SELECT secret"), "never SQL");
    }
}
