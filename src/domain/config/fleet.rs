//! The `fleet` section: how router replicas find each other to share the operator's say (drain,
//! disable, enable), where each keeps it across restarts, and this replica's name.
//!
//! ```yaml
//! fleet:
//!   peers: [trino-router-headless.trino-router.svc.cluster.local:50051]  # HOST:PORT; a name: every address
//!   state_file: /var/lib/trino-router/operator-state.json
//!   sync_interval: 1s
//!   startup_wait: 10s
//! ```
//!
//! The replica's name comes from the environment (`TRINO_ROUTER_REPLICA`, else `HOSTNAME`, else the
//! machine's host name) and the state file may be given there too (`TRINO_ROUTER_STATE_FILE`): both
//! differ per replica while the config file is shared.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::tls::{ListenTls, PemFile};

/// The environment variable that names this replica (`serve --replica`).
pub const REPLICA_ENV: &str = "TRINO_ROUTER_REPLICA";
/// The environment variable that overrides `fleet.state_file` (`serve --state-file`).
pub const STATE_FILE_ENV: &str = "TRINO_ROUTER_STATE_FILE";

/// `fleet` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    #[serde(default)]
    pub(super) peers: Vec<String>,
    #[serde(default)]
    pub(super) state_file: Option<PathBuf>,
    #[serde(default = "default_sync_interval", deserialize_with = "duration")]
    pub(super) sync_interval: Duration,
    #[serde(default = "default_startup_wait", deserialize_with = "duration")]
    pub(super) startup_wait: Duration,
    #[serde(default)]
    pub(super) ca_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) tls_server_name: Option<String>,
}

impl Default for RawFleet {
    fn default() -> RawFleet {
        RawFleet {
            peers: Vec::new(),
            state_file: None,
            sync_interval: default_sync_interval(),
            startup_wait: default_startup_wait(),
            ca_file: None,
            tls_server_name: None,
        }
    }
}

fn default_sync_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_startup_wait() -> Duration {
    Duration::from_secs(10)
}

/// How this replica shares the operator's say with the others.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetSettings {
    /// This replica's name: the origin of its writes, its label in metrics and in `admin clusters`.
    pub replica: Arc<str>,
    /// The other replicas (this one may be among them: it recognises itself). A host name stands for
    /// every address it resolves to, resolved again on every round.
    pub peers: Vec<PeerAddress>,
    /// Where the book is kept across restarts; none: in memory only (a restarted replica then learns it
    /// from its peers).
    pub state_file: Option<PathBuf>,
    /// How often every peer's book is pulled (and this one's pushed) besides the push on every change.
    pub sync_interval: Duration,
    /// How long a starting replica waits for peers that do not answer before it serves with what it
    /// has (its state file, else the config's `enabled:`).
    pub startup_wait: Duration,
    /// TLS to the peers, when the router's own port speaks it (`listen_tls`).
    pub peer_tls: Option<PeerTls>,
}

impl FleetSettings {
    /// One replica on its own (no `fleet` section).
    pub fn alone(replica: Arc<str>) -> FleetSettings {
        FleetSettings {
            replica,
            peers: Vec::new(),
            state_file: None,
            sync_interval: default_sync_interval(),
            startup_wait: default_startup_wait(),
            peer_tls: None,
        }
    }
}

/// How a replica dials its peers over TLS: their CA, its own certificate (for peers that require client
/// certificates: the same as it serves with), and the name their certificates carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTls {
    pub ca: PemFile,
    pub identity: Option<(PemFile, PemFile)>,
    pub server_name: Option<String>,
}

/// A peer as configured: a host (name or IP) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddress {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl PeerAddress {
    /// `HOST:PORT`, `[IPv6]:PORT`.
    pub fn parse(text: &str) -> Result<PeerAddress, String> {
        let problem = || format!("`{text}` is not HOST:PORT (a host name or IP address, and a port)");
        let (host, port) = text.rsplit_once(':').ok_or_else(problem)?;
        let host = match host.strip_prefix('[') {
            Some(inner) => inner.strip_suffix(']').filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok()),
            None => Some(host).filter(|h| !h.contains(':')),
        }
        .ok_or_else(problem)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(problem)?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_'));
        if !host_ok {
            return Err(problem());
        }
        Ok(PeerAddress { host: host.to_owned(), port })
    }
}

/// What the section needs from the rest of the config.
pub(super) struct Context<'a> {
    /// A path as written in the config, made relative to the config file's directory.
    pub(super) resolve: &'a dyn Fn(&std::path::Path) -> PathBuf,
    pub(super) replica: Option<&'a str>,
    pub(super) state_file: Option<&'a std::path::Path>,
    pub(super) has_admin_token: bool,
    pub(super) listen_tls: Option<&'a ListenTls>,
}

/// Checks `fleet`; `add` records a problem (field, message).
pub(super) fn validate(
    raw: &RawFleet,
    context: &Context<'_>,
    add: &mut dyn FnMut(String, String),
) -> Option<FleetSettings> {
    let mut problems = 0;
    let mut report = |field: String, message: String| {
        problems += 1;
        add(field, message);
    };
    let replica = context.replica.unwrap_or("trino-router");
    if replica.is_empty()
        || replica.len() > 253
        || !replica.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
    {
        report(
            "fleet".into(),
            format!(
                "the replica name `{replica}` ({REPLICA_ENV} or the host name) may only hold ASCII letters, digits, `-`, `.`, `_` and `:`"
            ),
        );
    }
    let mut peers = Vec::with_capacity(raw.peers.len());
    for (i, text) in raw.peers.iter().enumerate() {
        match PeerAddress::parse(text) {
            Ok(peer) if peers.contains(&peer) => {
                report(format!("fleet.peers[{i}]"), format!("`{text}` is listed twice"))
            }
            Ok(peer) => peers.push(peer),
            Err(message) => report(format!("fleet.peers[{i}]"), message),
        }
    }
    if !raw.peers.is_empty() && !context.has_admin_token {
        report(
            "fleet.peers".into(),
            "replicas authenticate to each other with the admin token: configure admin.token (or token_env, or TRINO_ROUTER_ADMIN_TOKEN)".into(),
        );
    }
    if raw.sync_interval < Duration::from_millis(100) || raw.sync_interval > Duration::from_secs(60) {
        report("fleet.sync_interval".into(), "must be between 100ms and 60s".into());
    }
    if raw.startup_wait > Duration::from_secs(600) {
        report("fleet.startup_wait".into(), "must be at most 10m".into());
    }
    let peer_tls = match (context.listen_tls, raw.peers.is_empty()) {
        (Some(tls), false) => peer_tls(raw, context, tls, &mut report),
        _ => None,
    };
    if problems > 0 {
        return None;
    }
    let state_file = context
        .state_file
        .map(std::path::Path::to_owned)
        .or_else(|| raw.state_file.as_ref().map(|p| (context.resolve)(p)));
    Some(FleetSettings {
        replica: replica.into(),
        peers,
        state_file,
        sync_interval: raw.sync_interval,
        startup_wait: raw.startup_wait,
        peer_tls,
    })
}

/// TLS to the peers: their CA (`fleet.ca_file`, else the listener's client CA), this replica's
/// certificate when the peers require one.
fn peer_tls(
    raw: &RawFleet,
    context: &Context<'_>,
    tls: &ListenTls,
    report: &mut dyn FnMut(String, String),
) -> Option<PeerTls> {
    let ca = match (&raw.ca_file, &tls.client_ca) {
        (Some(path), _) => match super::tls::read_ca(&(context.resolve)(path)) {
            Ok(ca) => ca,
            Err(message) => {
                report("fleet.ca_file".into(), message);
                return None;
            }
        },
        (None, Some(client_ca)) => client_ca.clone(),
        (None, None) => {
            report(
                "fleet.ca_file".into(),
                "the peers speak TLS (listen_tls): name the CA that signed the replicas' certificates".into(),
            );
            return None;
        }
    };
    let identity = tls.client_ca.as_ref().map(|_| (tls.cert.clone(), tls.key.clone()));
    Some(PeerTls { ca, identity, server_name: raw.tls_server_name.clone() })
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Overrides};
    use super::*;

    const BASE: &str =
        "listen: 127.0.0.1:1\ndefault_group: a\nclusters: [{name: a, url: 'http://127.0.0.1:9', group: a}]\n";

    fn load(extra: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let overrides = Overrides {
            listen: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            hostname: Some("node-7".into()),
        };
        Config::from_yaml(
            std::path::Path::new("/etc/router/router.yaml"),
            &format!("{BASE}{extra}"),
            &overrides,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn settings_and_where_the_name_and_file_come_from() {
        let alone = load("", &[]).unwrap().fleet;
        assert_eq!((&*alone.replica, alone.peers.len(), alone.state_file.clone()), ("node-7", 0, None));
        assert_eq!(
            (alone.sync_interval, alone.startup_wait),
            (Duration::from_secs(1), Duration::from_secs(10))
        );
        let text = "admin: {token: admin-token-for-tests-0001}\nfleet: {peers: ['10.0.0.1:50051', 'peers.svc:50051'], state_file: state/op.json, sync_interval: 500ms}\n";
        let fleet = load(text, &[("HOSTNAME", "pod-1")]).unwrap().fleet;
        assert_eq!(&*fleet.replica, "pod-1", "HOSTNAME before the machine's name");
        assert_eq!(fleet.peers[1], PeerAddress { host: "peers.svc".into(), port: 50051 });
        assert_eq!(
            fleet.state_file,
            Some(PathBuf::from("/etc/router/state/op.json")),
            "relative to the config file"
        );
        assert_eq!(fleet.sync_interval, Duration::from_millis(500));
        let env = [(REPLICA_ENV, "router-0"), ("HOSTNAME", "pod-1"), (STATE_FILE_ENV, "/data/r0.json")];
        let fleet = load(text, &env).unwrap().fleet;
        assert_eq!((&*fleet.replica, fleet.state_file), ("router-0", Some(PathBuf::from("/data/r0.json"))));
    }

    #[test]
    fn problems_name_their_field() {
        #[rustfmt::skip]
        let cases: &[(&str, &str)] = &[
            ("fleet: {peers: ['10.0.0.1:50051']}\n",                         "field `fleet.peers`: replicas authenticate to each other with the admin token"),
            ("admin: {token: admin-token-for-tests-0001}\nfleet: {peers: ['a:1', 'nonsense']}\n",     "field `fleet.peers[1]`: `nonsense` is not HOST:PORT"),
            ("admin: {token: admin-token-for-tests-0001}\nfleet: {peers: ['a:1', 'a:1']}\n",          "field `fleet.peers[1]`: `a:1` is listed twice"),
            ("fleet: {sync_interval: 10ms}\n",                                "field `fleet.sync_interval`: must be between 100ms and 60s"),
            ("fleet: {startup_wait: 1h}\n",                                   "field `fleet.startup_wait`: must be at most 10m"),
            ("fleet: {peer: ['a:1']}\n",                                      "unknown field `peer`"),
        ];
        for (extra, expected) in cases {
            let error = load(extra, &[]).unwrap_err();
            assert!(error.contains(expected), "{extra}: {error}");
        }
        let error = load("", &[(REPLICA_ENV, "bad name")]).unwrap_err();
        assert!(error.contains("the replica name `bad name`"), "{error}");
    }

    #[test]
    fn peer_addresses() {
        #[rustfmt::skip]
        let cases: &[(&str, Option<(&str, u16)>)] = &[
            ("10.0.0.5:50051",                           Some(("10.0.0.5", 50051))),
            ("trino-router-headless.ns.svc:50051",       Some(("trino-router-headless.ns.svc", 50051))),
            ("[::1]:50051",                              Some(("::1", 50051))),
            ("localhost:1",                              Some(("localhost", 1))),
            ("::1:50051",                                None),
            ("[nonsense]:1",                             None),
            ("router",                                   None),
            ("router:0",                                 None),
            ("router:65536",                             None),
            (":50051",                                   None),
            ("http://router:50051",                      None),
            ("router /x:1",                              None),
        ];
        for (text, want) in cases {
            let got = PeerAddress::parse(text).ok();
            assert_eq!(got.as_ref().map(|p| (p.host.as_str(), p.port)), *want, "{text}");
            if let Some(peer) = got {
                assert_eq!(PeerAddress::parse(&peer.to_string()), Ok(peer), "round trip of {text}");
            }
        }
    }
}
