//! The coordinator's health documents (`GET /v1/info`, `/v1/info/state`, `/v1/status`, and the web UI's
//! `/ui/api/stats`), and the node state tests drive through the emulator-only endpoints.
//!
//! `/v1/info` has Trino's shape for the release the emulator answers as (`--trino-version`): `nodeVersion`,
//! `environment`, `coordinator`, `starting`, `uptime`, and from 477 also `nodeId`, `state` and
//! `coordinatorId` (Trino's `ServerInfo` record; rows N1, N2 of docs/trino-conformance.md). The node state
//! ([`NodeState`], Trino's `NodeState` names) starts ACTIVE and changes only by
//! `PUT /v1/emulator/state`; `starting` is true for the first `--starting-seconds` after start unless
//! `PUT /v1/emulator/starting` pinned it ([`NodeControl`]). Durations print like airlift's `Duration`
//! (`12.34s`, `1.50m`). `/ui/api/stats` has the fields of Trino's `ClusterStatsResource.ClusterStats`.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::trino_version::Version;

pub const ENVIRONMENT: &str = "emulator";

/// Trino's node states, as `/v1/info/state` spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Active,
    Inactive,
    Draining,
    Drained,
    ShuttingDown,
    Invalid,
}

impl NodeState {
    const ALL: [NodeState; 6] = [
        NodeState::Active,
        NodeState::Inactive,
        NodeState::Draining,
        NodeState::Drained,
        NodeState::ShuttingDown,
        NodeState::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "ACTIVE",
            NodeState::Inactive => "INACTIVE",
            NodeState::Draining => "DRAINING",
            NodeState::Drained => "DRAINED",
            NodeState::ShuttingDown => "SHUTTING_DOWN",
            NodeState::Invalid => "INVALID",
        }
    }

    /// A state from a JSON body: a JSON string naming a state exactly (`"SHUTTING_DOWN"`); a bare
    /// name without quotes is accepted too (surrounding whitespace ignored). Anything else: `None`.
    pub fn parse_body(body: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?.trim();
        let name = match serde_json::from_str::<Value>(text) {
            Ok(Value::String(name)) => name,
            Ok(_) => return None,
            Err(_) => text.to_owned(),
        };
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }

    fn index(self) -> u8 {
        Self::ALL.iter().position(|s| *s == self).map_or(0, |i| i as u8)
    }

    fn from_index(index: u8) -> Self {
        Self::ALL.get(usize::from(index)).copied().unwrap_or(NodeState::Active)
    }
}

/// The switchable parts of the node's health: its state and the `starting` flag. Lock-free (atomics):
/// every `POST /v1/statement` reads the state.
#[derive(Debug)]
pub struct NodeControl {
    state: AtomicU8,
    /// 0: `starting` follows the clock (`starting_for`); 1: pinned true; 2: pinned false.
    starting: AtomicU8,
    starting_for: Duration,
}

const STARTING_BY_CLOCK: u8 = 0;
const STARTING_TRUE: u8 = 1;
const STARTING_FALSE: u8 = 2;

impl NodeControl {
    /// ACTIVE, and `starting` for the first `starting_for` of uptime.
    pub fn new(starting_for: Duration) -> Self {
        Self {
            state: AtomicU8::new(NodeState::Active.index()),
            starting: AtomicU8::new(STARTING_BY_CLOCK),
            starting_for,
        }
    }

    pub fn state(&self) -> NodeState {
        NodeState::from_index(self.state.load(Ordering::Relaxed))
    }

    /// Sets the state; returns the previous one.
    pub fn set_state(&self, state: NodeState) -> NodeState {
        NodeState::from_index(self.state.swap(state.index(), Ordering::Relaxed))
    }

    /// Whether new queries are accepted (only when ACTIVE).
    pub fn accepts_queries(&self) -> bool {
        self.state() == NodeState::Active
    }

    /// `starting` after `uptime`.
    pub fn starting(&self, uptime: Duration) -> bool {
        match self.starting.load(Ordering::Relaxed) {
            STARTING_TRUE => true,
            STARTING_FALSE => false,
            _ => uptime < self.starting_for,
        }
    }

    /// Pins `starting` to `value` (from then on the clock no longer matters).
    pub fn set_starting(&self, value: bool) {
        self.starting.store(if value { STARTING_TRUE } else { STARTING_FALSE }, Ordering::Relaxed);
    }
}

/// Who the node is, for `/v1/info` from Trino 477 on.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    pub node_id: &'a str,
    pub coordinator_id: &'a str,
    pub state: NodeState,
}

/// `GET /v1/info` as `version` answers it.
pub fn info(version: Version, uptime: Duration, starting: bool, identity: Identity<'_>) -> Value {
    let mut info = json!({
        "nodeVersion": {"version": version.to_string()},
        "environment": ENVIRONMENT,
        "coordinator": true,
        "starting": starting,
        "uptime": succinct(uptime),
    });
    if version.publishes_node_identity() {
        info["nodeId"] = Value::from(identity.node_id);
        info["state"] = Value::from(identity.state.as_str());
        info["coordinatorId"] = Value::from(identity.coordinator_id);
    }
    info
}

pub fn processors() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

pub fn status(version: Version, node_id: &str, address: &str, uptime: Duration) -> Value {
    let processors = processors();
    json!({
        "nodeId": node_id,
        "nodeVersion": {"version": version.to_string()},
        "environment": ENVIRONMENT,
        "coordinator": true,
        "uptime": succinct(uptime),
        "externalAddress": address,
        "internalAddress": address,
        "memoryInfo": {"availableProcessors": processors},
        "processors": processors,
        "processCpuLoad": 0.0,
        "systemCpuLoad": 0.0,
        "heapUsed": 0,
        "heapAvailable": 0,
        "nonHeapUsed": 0,
    })
}

/// Query counts for `/ui/api/stats`, as [`crate::registry::Registry::load`] finds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Not yet dispatched (QUEUED), not canceled.
    pub queued: u64,
    /// Dispatched and not yet finished, failed or canceled (RUNNING).
    pub running: u64,
    /// Rows served by every query still known (done or not).
    pub input_rows: u64,
}

/// `GET /ui/api/stats`: Trino's `ClusterStats`. The emulator is one node, coordinator and worker at once
/// (`node-scheduler.include-coordinator=true`), counted as active only while ACTIVE; it has no drivers
/// of its own, so each running query counts as one; memory, bytes and CPU are zero.
pub fn cluster_stats(load: &Load, state: NodeState) -> Value {
    let active = u64::from(state == NodeState::Active);
    json!({
        "runningQueries": load.running,
        "blockedQueries": 0,
        "queuedQueries": load.queued,
        "activeCoordinators": active,
        "activeWorkers": active,
        "runningDrivers": load.running,
        "totalAvailableProcessors": processors(),
        "reservedMemory": 0.0,
        "totalInputRows": load.input_rows,
        "totalInputBytes": 0,
        "totalCpuTimeSecs": 0,
    })
}

/// airlift's `Duration.convertToMostSuccinctTimeUnit().toString()`: two decimals, largest unit ≥ 1.
pub fn succinct(d: Duration) -> String {
    let nanos = d.as_nanos() as f64;
    const UNITS: [(&str, f64); 7] =
        [("d", 86_400e9), ("h", 3_600e9), ("m", 60e9), ("s", 1e9), ("ms", 1e6), ("us", 1e3), ("ns", 1.0)];
    let (unit, size) = UNITS.into_iter().find(|(_, size)| nanos >= *size).unwrap_or(("ns", 1.0));
    format!("{:.2}{unit}", nanos / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succinct_durations() {
        for (d, expected) in [
            (Duration::ZERO, "0.00ns"),
            (Duration::from_nanos(1500), "1.50us"),
            (Duration::from_millis(250), "250.00ms"),
            (Duration::from_millis(12_340), "12.34s"),
            (Duration::from_secs(90), "1.50m"),
            (Duration::from_secs(7200), "2.00h"),
            (Duration::from_secs(86_400 * 3), "3.00d"),
        ] {
            assert_eq!(succinct(d), expected, "{d:?}");
        }
    }

    // conformance: N1, N2
    #[test]
    fn info_shape_by_version() {
        let identity = Identity { node_id: "east", coordinator_id: "k2m3n", state: NodeState::Draining };
        let v = info("476".parse().unwrap(), Duration::from_secs(1), false, identity);
        assert_eq!(
            v,
            json!({
                "nodeVersion": {"version": "476"},
                "environment": ENVIRONMENT,
                "coordinator": true,
                "starting": false,
                "uptime": "1.00s",
            })
        );
        for version in ["477", "483"] {
            let v = info(version.parse().unwrap(), Duration::ZERO, true, identity);
            assert_eq!(v["nodeVersion"]["version"], version);
            assert_eq!(
                (&v["nodeId"], &v["state"], &v["coordinatorId"], &v["starting"]),
                (&json!("east"), &json!("DRAINING"), &json!("k2m3n"), &json!(true)),
                "{version}"
            );
        }
    }

    // conformance: N3
    #[test]
    fn state_bodies() {
        for (body, expected) in [
            (&b"\"SHUTTING_DOWN\""[..], Some(NodeState::ShuttingDown)),
            (b" \"ACTIVE\"\n", Some(NodeState::Active)),
            (b"\"DRAINING\"", Some(NodeState::Draining)),
            (b"\"DRAINED\"", Some(NodeState::Drained)),
            (b"\"INACTIVE\"", Some(NodeState::Inactive)),
            (b"\"INVALID\"", Some(NodeState::Invalid)),
            (b"SHUTTING_DOWN", Some(NodeState::ShuttingDown)),
            (b"\"shutting_down\"", None),
            (b"\"BOGUS\"", None),
            (b"\"\"", None),
            (b"", None),
            (b"1", None),
            (b"[\"ACTIVE\"]", None),
            (b"\xff", None),
        ] {
            assert_eq!(NodeState::parse_body(body), expected, "{:?}", String::from_utf8_lossy(body));
        }
        for state in NodeState::ALL {
            assert_eq!(NodeState::from_index(state.index()), state);
            assert_eq!(NodeState::parse_body(format!("\"{}\"", state.as_str()).as_bytes()), Some(state));
        }
    }

    #[test]
    fn node_control() {
        let control = NodeControl::new(Duration::from_secs(5));
        assert_eq!(control.state(), NodeState::Active);
        assert!(control.accepts_queries());
        assert_eq!(control.set_state(NodeState::ShuttingDown), NodeState::Active);
        assert_eq!(control.state(), NodeState::ShuttingDown);
        assert!(!control.accepts_queries());
        control.set_state(NodeState::Draining);
        assert!(!control.accepts_queries());
        control.set_state(NodeState::Active);
        assert!(control.accepts_queries());

        assert!(control.starting(Duration::from_secs(4)));
        assert!(!control.starting(Duration::from_secs(5)));
        control.set_starting(true);
        assert!(control.starting(Duration::from_secs(60)));
        control.set_starting(false);
        assert!(!control.starting(Duration::ZERO));
        assert!(!NodeControl::new(Duration::ZERO).starting(Duration::ZERO));
    }

    #[test]
    fn stats_shape() {
        let load = Load { queued: 2, running: 3, input_rows: 40 };
        let v = cluster_stats(&load, NodeState::Active);
        assert_eq!(
            (&v["runningQueries"], &v["queuedQueries"], &v["blockedQueries"], &v["totalInputRows"]),
            (&json!(3), &json!(2), &json!(0), &json!(40))
        );
        assert_eq!((&v["activeCoordinators"], &v["activeWorkers"]), (&json!(1), &json!(1)));
        assert!(v["reservedMemory"].is_f64() && v["totalAvailableProcessors"].as_u64() >= Some(1));
        for key in ["runningDrivers", "totalInputBytes", "totalCpuTimeSecs"] {
            assert!(v[key].is_u64(), "{key}");
        }
        let v = cluster_stats(&load, NodeState::ShuttingDown);
        assert_eq!((&v["activeCoordinators"], &v["runningQueries"]), (&json!(0), &json!(3)));
    }
}
