//! The built-in status page (`GET /` on the metrics port): every cluster's state and load, and the most
//! recent new queries (kept by [`crate::state::telemetry`]), as one server-rendered HTML page that refreshes
//! itself.

use std::fmt::Write;

use crate::state::router::Router;
use crate::state::telemetry::recent_queries;

/// The page.
pub fn render(router: &Router) -> String {
    let snapshot = router.snapshot();
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>trino-router</title><style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin-bottom:2em}\
         th,td{border:1px solid #ccc;padding:4px 10px;text-align:left}\
         th{background:#f0f0f0}.no{color:#b00;font-weight:bold}.yes{color:#070}\
         </style></head><body><h1>trino-router</h1><h2>Clusters</h2><table id=\"clusters\"><tr>\
         <th>cluster</th><th>group</th><th>health</th><th>operator</th><th>new queries</th>\
         <th>load</th><th>in flight</th><th>routed</th><th>coordinator</th></tr>",
    );
    for (cluster, runtime) in snapshot.config.clusters.iter().zip(&snapshot.clusters) {
        let accepts = runtime.accepts_new_queries();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>",
            escape(&cluster.name),
            escape(&cluster.group),
            runtime.health(),
            runtime.operator(),
            if accepts { "yes" } else { "no" },
            if accepts { "yes" } else { "no" },
            runtime.load(),
            runtime.in_flight(),
            runtime.queries_routed(),
            escape(&cluster.url.to_string()),
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
        let page = render(&router);
        assert!(page.contains("<td>a</td><td>adhoc</td>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !page.contains("<script>"));
        assert!(page.contains("20260101_000000_00001_abcde"));
        assert!(!page.contains("SELECT secret"), "never SQL");
    }
}
