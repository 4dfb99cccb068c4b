//! The fleet as `trino-router admin` shows it: the views of every replica gathered into one
//! ([`FleetView`]; a replica heard directly and through a peer counts once), one table row per replica
//! × cluster, the notes under it (who set each operator's say and why, replicas that did not answer),
//! the disagreements between replicas flagged, and whether a drain is complete as every replica sees it
//! ([`drain_verdict`]). No calls here: `admin_client` gathers, this decides what it means.

use std::collections::BTreeMap;

use crate::operate::api::{Cluster, ListClustersResponse, ReplicaView};

/// One replica's answer (or the lack of one).
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// Its name; for a router too old to say, the address it was asked at.
    pub name: String,
    /// Where it was asked, and through whom (`via`: the replica that asked it for us).
    pub address: String,
    pub via: Option<String>,
    pub status: Status,
    pub settled: bool,
    pub clusters: Vec<Cluster>,
}

/// How asking a replica went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Answered,
    /// Nothing listens there: not running, nothing to count.
    Absent(String),
    /// No answer: it may be running; what it counts is not known.
    Unreachable(String),
}

/// Every replica's view, deduplicated by name (a direct answer wins over one relayed by a peer).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FleetView {
    pub replicas: Vec<Replica>,
}

impl FleetView {
    /// Adds what one replica (asked at `address`) answered: its own view and its peers'.
    pub fn add_answer(&mut self, address: &str, answer: ListClustersResponse) {
        let name = if answer.replica.is_empty() { address.to_owned() } else { answer.replica.clone() };
        self.add(Replica {
            name: name.clone(),
            address: address.to_owned(),
            via: None,
            status: Status::Answered,
            settled: answer.settled || answer.replica.is_empty(),
            clusters: answer.clusters,
        });
        for peer in answer.peers {
            self.add(relayed(&name, peer));
        }
    }

    /// Adds an address that could not be asked at all.
    pub fn add_failure(&mut self, address: &str, status: Status) {
        self.add(Replica {
            name: String::new(),
            address: address.to_owned(),
            via: None,
            status,
            settled: false,
            clusters: Vec::new(),
        });
    }

    fn add(&mut self, replica: Replica) {
        let same = |r: &Replica| {
            if replica.name.is_empty() || r.name.is_empty() {
                r.address == replica.address
            } else {
                r.name == replica.name
            }
        };
        match self.replicas.iter_mut().find(|r| same(r)) {
            Some(known) if rank(&replica) > rank(known) => *known = replica,
            Some(_) => {}
            None => self.replicas.push(replica),
        }
        // A name learned later replaces a failure known only by address.
        let named: Vec<String> =
            self.replicas.iter().filter(|r| !r.name.is_empty()).map(|r| r.address.clone()).collect();
        self.replicas.retain(|r| !(r.name.is_empty() && named.contains(&r.address)));
        self.replicas.sort_by(|a, b| a.name.cmp(&b.name).then(a.address.cmp(&b.address)));
    }

    /// The replicas that answered.
    pub fn answered(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter().filter(|r| r.status == Status::Answered)
    }
}

/// Which of two reports of one replica to keep: an answer over a failure, a direct one over a relayed.
fn rank(replica: &Replica) -> u8 {
    match (&replica.status, replica.via.is_none()) {
        (Status::Answered, true) => 4,
        (Status::Answered, false) => 3,
        (Status::Unreachable(_), _) => 2,
        (Status::Absent(_), _) => 1,
    }
}

fn relayed(via: &str, peer: ReplicaView) -> Replica {
    let status = match peer.status.as_str() {
        "ok" => Status::Answered,
        "absent" => Status::Absent(peer.error),
        _ => Status::Unreachable(peer.error),
    };
    Replica {
        name: peer.replica,
        address: peer.address,
        via: Some(via.to_owned()),
        status,
        settled: peer.settled,
        clusters: peer.clusters,
    }
}

const COLUMNS: [&str; 12] = [
    "REPLICA",
    "CLUSTER",
    "GROUP",
    "HEALTH",
    "OPERATOR",
    "NEW",
    "LOAD",
    "COORD",
    "IN_FLIGHT",
    "ROUTED",
    "WEIGHT",
    "URL",
];

/// The table (one row per replica × cluster, a cluster's rows together), a blank line, then the notes.
pub fn render(view: &FleetView) -> String {
    let mut rows: Vec<[String; 12]> = vec![COLUMNS.map(str::to_owned)];
    for (cluster, per_replica) in by_cluster(view) {
        for (replica, c) in per_replica {
            let coordinator =
                if c.coordinator_queries < 0 { "-".to_owned() } else { c.coordinator_queries.to_string() };
            let operator = if c.drained { "drained".to_owned() } else { c.operator_state.clone() };
            rows.push([
                replica.to_owned(),
                cluster.to_owned(),
                c.group.clone(),
                c.health.clone(),
                operator,
                if c.accepts_new_queries { "yes" } else { "no" }.to_owned(),
                c.load.to_string(),
                coordinator,
                c.in_flight.to_string(),
                c.queries_routed.to_string(),
                c.weight.to_string(),
                c.url.clone(),
            ]);
        }
    }
    let widths: Vec<usize> =
        (0..COLUMNS.len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out: String = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            format!("{}\n", cells.join("  ").trim_end())
        })
        .collect();
    out.push('\n');
    for line in notes(view) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Cluster name → (replica name, its view of the cluster), clusters in the order the replicas list them.
fn by_cluster(view: &FleetView) -> Vec<(&str, Vec<(&str, &Cluster)>)> {
    let mut order: Vec<&str> = Vec::new();
    let mut rows: BTreeMap<&str, Vec<(&str, &Cluster)>> = BTreeMap::new();
    for replica in view.answered() {
        for c in &replica.clusters {
            if !order.contains(&c.name.as_str()) {
                order.push(&c.name);
            }
            rows.entry(&c.name).or_default().push((&replica.name, c));
        }
    }
    order.into_iter().map(|name| (name, rows.remove(name).unwrap_or_default())).collect()
}

/// What the table cannot say: which replicas answered and how, the operator's say with its reason,
/// and every disagreement (`DISAGREE`: the operator's say, which must agree; `DIFFER`: health, which
/// each replica polls itself).
pub fn notes(view: &FleetView) -> Vec<String> {
    let mut lines = Vec::new();
    let answered: Vec<String> = view
        .answered()
        .map(|r| match &r.via {
            None => format!("{} ({})", r.name, r.address),
            Some(via) => format!("{} ({}, via {via})", r.name, r.address),
        })
        .collect();
    lines.push(format!("replicas: {} answered: {}", answered.len(), answered.join(", ")));
    for r in &view.replicas {
        match &r.status {
            Status::Answered if !r.settled => {
                lines.push(format!("STARTING {}: still waiting for its peers (NOT_SERVING)", r.name))
            }
            Status::Answered => {}
            Status::Absent(why) => lines.push(format!("absent {}: nothing listens ({why})", r.address)),
            Status::Unreachable(why) => lines.push(format!(
                "UNREACHABLE {}{}: {why}",
                if r.name.is_empty() { String::new() } else { format!("{} ", r.name) },
                r.address
            )),
        }
    }
    for (cluster, per_replica) in by_cluster(view) {
        if let Some((_, c)) = per_replica.iter().find(|(_, c)| c.operator_set_by != "config") {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(c.operator_set_at_ms);
            let why =
                if c.operator_reason.is_empty() { String::new() } else { format!(": {}", c.operator_reason) };
            lines.push(format!(
                "{cluster}: {} since {} (set through {}){why}",
                c.operator_state,
                humantime::format_rfc3339_seconds(at),
                c.operator_set_by
            ));
        }
        // Why a cluster is not healthy, once per distinct reason (each replica polls for itself).
        let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
        for (replica, c) in &per_replica {
            if c.health != "healthy" && !c.health_reason.is_empty() {
                match reasons.iter_mut().find(|(r, _)| *r == c.health_reason) {
                    Some((_, names)) => names.push(replica),
                    None => reasons.push((&c.health_reason, vec![replica])),
                }
            }
        }
        for (reason, names) in reasons {
            let health =
                per_replica.iter().find(|(_, c)| c.health_reason == reason).map_or("", |(_, c)| &c.health);
            lines.push(format!("{cluster}: {health} on {}: {reason}", names.join(", ")));
        }
        for (what, tag, value) in [
            ("operator", "DISAGREE", (|c: &Cluster| c.operator_state.clone()) as fn(&Cluster) -> String),
            ("health", "DIFFER", |c: &Cluster| c.health.clone()),
        ] {
            let mut seen: Vec<(String, Vec<&str>)> = Vec::new();
            for (replica, c) in &per_replica {
                let v = value(c);
                match seen.iter_mut().find(|(s, _)| *s == v) {
                    Some((_, names)) => names.push(replica),
                    None => seen.push((v, vec![replica])),
                }
            }
            if seen.len() > 1 {
                let parts: Vec<String> =
                    seen.iter().map(|(v, names)| format!("{v} on {}", names.join(", "))).collect();
                lines.push(format!("{tag} {cluster}: {what} {}", parts.join("; ")));
            }
        }
    }
    lines
}

/// Whether `cluster`'s drain is complete as every replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainVerdict {
    /// Every replica that answered reports it drained, and none could not be asked: the names.
    Drained(Vec<String>),
    /// Not yet: why, one reason per replica that holds it up.
    Waiting(Vec<String>),
    /// No replica has it draining any more (someone undrained or enabled it), or no replica knows it.
    Stopped(String),
}

/// The drain of `cluster` is complete when every replica that answered reports it drained (draining,
/// a whole in-flight window since the drain reached it, no query in flight that it counts) and none is
/// unreachable (it may count queries no one else does). Replicas where nothing listens count nothing.
pub fn drain_verdict(view: &FleetView, cluster: &str) -> DrainVerdict {
    let mut waiting = Vec::new();
    let mut drained = Vec::new();
    let mut draining_somewhere = false;
    let mut states = Vec::new();
    for replica in &view.replicas {
        match &replica.status {
            Status::Absent(_) => continue,
            Status::Unreachable(why) => {
                let name = if replica.name.is_empty() { &replica.address } else { &replica.name };
                waiting.push(format!("{name} does not answer, so what it counts is not known ({why})"));
                continue;
            }
            Status::Answered => {}
        }
        let Some(c) = replica.clusters.iter().find(|c| c.name == cluster) else {
            waiting.push(format!("{} has no cluster `{cluster}` in its config", replica.name));
            continue;
        };
        states.push(format!("{} on {}", c.operator_state, replica.name));
        match (c.operator_state.as_str(), c.drained) {
            ("draining", true) => {
                draining_somewhere = true;
                drained.push(replica.name.clone());
            }
            ("draining", false) => {
                draining_somewhere = true;
                waiting.push(format!("{} counts {} quer(ies) in flight", replica.name, c.in_flight));
            }
            (other, _) => waiting
                .push(format!("{} has `{cluster}` {other} (the drain has not reached it yet)", replica.name)),
        }
    }
    if !draining_somewhere {
        return DrainVerdict::Stopped(if states.is_empty() {
            format!("no replica answered with cluster `{cluster}`")
        } else {
            format!("{cluster} is no longer draining ({})", states.join(", "))
        });
    }
    if waiting.is_empty() { DrainVerdict::Drained(drained) } else { DrainVerdict::Waiting(waiting) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, operator: &str, drained: bool, in_flight: u64, health: &str) -> Cluster {
        Cluster {
            name: name.into(),
            group: "adhoc".into(),
            health: health.into(),
            operator_state: operator.into(),
            drained,
            in_flight,
            coordinator_queries: -1,
            weight: 1.0,
            url: "http://127.0.0.1:1".into(),
            operator_set_by: "config".into(),
            ..Default::default()
        }
    }

    fn answer(replica: &str, clusters: Vec<Cluster>, peers: Vec<ReplicaView>) -> ListClustersResponse {
        ListClustersResponse { clusters, replica: replica.into(), settled: true, peers }
    }

    fn peer(replica: &str, status: &str, clusters: Vec<Cluster>) -> ReplicaView {
        ReplicaView {
            replica: replica.into(),
            address: format!("10.0.0.{}:50051", replica.len()),
            status: status.into(),
            error: if status == "ok" { String::new() } else { "boom".into() },
            settled: true,
            clusters,
        }
    }

    #[test]
    fn one_row_per_replica_and_cluster_and_disagreements_flagged() {
        let mut view = FleetView::default();
        let mut drained_here = cluster("blue", "draining", false, 3, "healthy");
        drained_here.operator_set_by = "r0".into();
        drained_here.operator_reason = "upgrade to 477".into();
        drained_here.operator_set_at_ms = 1_767_225_600_000;
        view.add_answer(
            "127.0.0.1:1",
            answer(
                "r0",
                vec![drained_here, cluster("green", "active", false, 0, "healthy")],
                vec![peer(
                    "r1",
                    "ok",
                    vec![
                        cluster("blue", "active", false, 0, "healthy"),
                        cluster("green", "active", false, 0, "unhealthy"),
                    ],
                )],
            ),
        );
        // r1 asked directly too: counted once, as a direct answer.
        view.add_answer(
            "127.0.0.1:2",
            answer(
                "r1",
                vec![
                    cluster("blue", "active", false, 0, "healthy"),
                    cluster("green", "active", false, 0, "unhealthy"),
                ],
                vec![],
            ),
        );
        let text = render(&view);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("REPLICA  CLUSTER  GROUP"), "{text}");
        assert_eq!(
            &lines[1..5]
                .iter()
                .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>(),
            &["r0 blue", "r1 blue", "r0 green", "r1 green"],
            "{text}"
        );
        assert_eq!(lines[5], "", "a blank line ends the table");
        assert!(text.contains("replicas: 2 answered: r0 (127.0.0.1:1), r1 (127.0.0.1:2)"), "{text}");
        assert!(
            text.contains("blue: draining since 2026-01-01T00:00:00Z (set through r0): upgrade to 477"),
            "{text}"
        );
        assert!(text.contains("DISAGREE blue: operator draining on r0; active on r1"), "{text}");
        assert!(text.contains("DIFFER green: health healthy on r0; unhealthy on r1"), "{text}");
        assert!(!text.contains("DISAGREE green"), "{text}");
    }

    #[test]
    fn why_a_cluster_is_not_healthy_is_said_once_per_reason() {
        let mut view = FleetView::default();
        let misconfigured = |why: &str| {
            let mut c = cluster("red", "active", false, 0, "misconfigured");
            c.health_reason = why.into();
            c
        };
        let why = "set http-server.process-forwarded=true";
        view.add_answer(
            "127.0.0.1:1",
            answer("r0", vec![misconfigured(why)], vec![peer("r1", "ok", vec![misconfigured(why)])]),
        );
        let text = render(&view);
        assert!(text.contains(&format!("red: misconfigured on r0, r1: {why}")), "{text}");
        assert_eq!(text.matches(why).count(), 1, "{text}");
    }

    #[test]
    fn replicas_that_do_not_answer_are_named() {
        let mut view = FleetView::default();
        view.add_answer(
            "10.0.0.1:50051",
            answer(
                "r0",
                vec![cluster("blue", "active", false, 0, "healthy")],
                vec![
                    peer("r22", "unreachable", vec![]),
                    ReplicaView {
                        address: "10.0.0.9:50051".into(),
                        status: "absent".into(),
                        error: "Connection refused".into(),
                        ..Default::default()
                    },
                ],
            ),
        );
        view.add_failure("10.0.0.7:50051", Status::Unreachable("timed out".into()));
        let text = render(&view);
        assert!(text.contains("UNREACHABLE r22 10.0.0.3:50051: boom"), "{text}");
        assert!(text.contains("UNREACHABLE 10.0.0.7:50051: timed out"), "{text}");
        assert!(text.contains("absent 10.0.0.9:50051: nothing listens (Connection refused)"), "{text}");
        assert!(text.contains("replicas: 1 answered: r0 (10.0.0.1:50051)"), "{text}");
        // The unreachable relayed replica answers directly later: one entry, answered.
        view.add_answer("10.0.0.3:50051", answer("r22", vec![], vec![]));
        assert_eq!(view.replicas.iter().filter(|r| r.name == "r22").count(), 1);
        assert!(view.answered().any(|r| r.name == "r22"));
    }

    #[test]
    fn a_drain_is_complete_only_when_every_replica_says_so() {
        let on = |name: &str, operator: &str, drained: bool, in_flight: u64| {
            (
                name.to_owned(),
                Status::Answered,
                vec![cluster("blue", operator, drained, in_flight, "healthy")],
            )
        };
        let down = |name: &str, status: Status| (name.to_owned(), status, vec![]);
        type Row = (String, Status, Vec<Cluster>);
        #[rustfmt::skip]
        let cases: Vec<(Vec<Row>, &str, &str)> = vec![
            (vec![on("r0", "draining", true, 0), on("r1", "draining", true, 0)],        "drained",  "both drained"),
            (vec![on("r0", "draining", true, 0), on("r1", "draining", false, 2)],       "waiting",  "r1 still counts 2"),
            (vec![on("r0", "draining", false, 0), on("r1", "draining", true, 0)],       "waiting",  "r0's window has not passed"),
            (vec![on("r0", "draining", true, 0), on("r1", "active", false, 0)],         "waiting",  "the drain has not reached r1"),
            (vec![on("r0", "active", false, 0), on("r1", "active", false, 0)],          "stopped",  "undrained everywhere"),
            (vec![on("r0", "draining", true, 0), down("r1", Status::Unreachable("t".into()))], "waiting", "r1 may count queries"),
            (vec![on("r0", "draining", true, 0), down("r1", Status::Absent("refused".into()))], "drained", "nothing runs at r1"),
            (vec![down("r1", Status::Unreachable("t".into()))],                            "stopped",  "no replica answered"),
            (vec![on("r0", "draining", true, 0), ("r1".into(), Status::Answered, vec![])], "waiting",  "r1's config lacks the cluster"),
        ];
        for (rows, expected, why) in cases {
            let view = FleetView {
                replicas: rows
                    .into_iter()
                    .map(|(name, status, clusters)| Replica {
                        address: format!("{name}:1"),
                        name,
                        via: None,
                        status,
                        settled: true,
                        clusters,
                    })
                    .collect(),
            };
            let verdict = drain_verdict(&view, "blue");
            let got = match &verdict {
                DrainVerdict::Drained(_) => "drained",
                DrainVerdict::Waiting(_) => "waiting",
                DrainVerdict::Stopped(_) => "stopped",
            };
            assert_eq!(got, expected, "{why}: {verdict:?}");
        }
    }

    #[test]
    fn an_old_router_is_one_replica_named_by_its_address() {
        let mut view = FleetView::default();
        view.add_answer(
            "10.0.0.1:50051",
            ListClustersResponse {
                clusters: vec![cluster("blue", "active", false, 0, "healthy")],
                ..Default::default()
            },
        );
        let text = render(&view);
        assert!(text.lines().nth(1).unwrap().starts_with("10.0.0.1:50051  blue"), "{text}");
    }
}
