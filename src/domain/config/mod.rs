//! The router's configuration: YAML read once, checked once, and turned into a [`Config`] that the rest
//! of the router trusts without re-checking.
//!
//! Every problem is reported as a [`ConfigError`] naming the file, the field (as a path such as
//! `clusters[1].url`) and what is wrong, and every problem of a file that parses is reported at once
//! ([`ConfigErrors`]; [`validate`] checks section by section). Unknown fields are errors, so a typo
//! never silently changes routing; a file that does not parse (bad YAML, an unknown field, a wrong
//! type) is reported by its first problem.
//!
//! [`raw`] is the config as written; [`tls`] reads and checks the TLS files it names.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub mod fleet;
mod raw;
pub mod secret;
pub mod tls;
mod validate;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use crate::domain::config::tls::{CoordinatorTls, ListenTls};
use crate::domain::rules::RuleSet;
use raw::RawConfig;
pub use secret::Secret;

/// How many fallback steps a chain may take (`a → b → c` is two).
pub const MAX_FALLBACK_DEPTH: usize = 8;

/// The routing header Envoy routes on when the config names none.
pub const DEFAULT_ROUTING_HEADER: &str = "x-trino-cluster";

/// A configuration problem, located by file and field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Path of the offending field, e.g. `clusters[1].url`; empty for whole-file problems.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: field `{}`: {}", self.file.display(), self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one config file (at least one), in the order of its sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The first problem.
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }

    fn one(error: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![error])
    }
}

/// One problem a line.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The environment variable that holds the admin token when the config names no other.
pub const ADMIN_TOKEN_ENV: &str = "TRINO_ROUTER_ADMIN_TOKEN";

/// The gRPC metadata key that carries [`Config::envoy_auth`] on each ext_proc stream.
pub const ENVOY_AUTH_METADATA: &str = "x-trino-router-auth";

/// What the environment supplies after the file is read.
#[derive(Clone, Default)]
pub struct Overrides {
    /// Replaces `listen` (e.g. from `TRINO_ROUTER_LISTEN`).
    pub listen: Option<String>,
    /// Environment variables the config may name (`admin.token_env`, `coordinator_auth.password_env`),
    /// and this replica's name and state file (`fleet`).
    pub env: Vec<(String, String)>,
    /// The machine's host name, when the environment has no `HOSTNAME`.
    pub hostname: Option<String>,
}

/// Names the environment's variables, never their values (they hold tokens and passwords).
impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Overrides")
            .field("listen", &self.listen)
            .field("env (names only)", &names)
            .field("hostname", &self.hostname)
            .finish()
    }
}

impl Overrides {
    /// Overrides holding this process's environment.
    pub fn from_process_env(listen: Option<String>) -> Overrides {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned());
        Overrides { listen, env: std::env::vars().collect(), hostname }
    }

    /// This replica's name: `TRINO_ROUTER_REPLICA`, else `HOSTNAME`, else the machine's host name.
    pub fn replica(&self) -> Option<&str> {
        self.var(fleet::REPLICA_ENV)
            .or_else(|| self.var("HOSTNAME"))
            .or(self.hostname.as_deref().filter(|h| !h.is_empty()))
    }

    pub(super) fn var(&self, name: &str) -> Option<&str> {
        self.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The gRPC address: ext_proc and grpc.health.v1.
    pub listen: SocketAddr,
    /// TLS on the gRPC listener (mTLS with a client CA); none: plaintext HTTP/2.
    pub listen_tls: Option<ListenTls>,
    /// How the router's own calls (health polls, lookups) verify `https://` coordinators.
    pub coordinator_tls: CoordinatorTls,
    /// Lower-case name of the header Envoy routes on.
    pub routing_header: String,
    /// Index into [`Config::groups`] of the group that takes requests naming no known group.
    pub default_group: usize,
    /// In file order.
    pub clusters: Vec<Cluster>,
    /// Declared groups first (in `groups` order), then the others in order of first appearance in
    /// `clusters`.
    pub groups: Vec<Group>,
    pub affinity: AffinitySettings,
    pub query_log: QueryLog,
    pub health: HealthSettings,
    /// The token admin calls must carry; `None` refuses every admin call.
    pub admin_token: Option<Secret>,
    /// Where the admin service is served on a port of its own (`admin.listen`); none: on `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// The token every ext_proc stream must carry in its gRPC metadata ([`ENVOY_AUTH_METADATA`]); with
    /// it, a stream's role comes from its metadata only. None: any client of the port may open streams.
    pub envoy_auth: Option<Secret>,
    /// The bearer token `GET /metrics` and the status page ask for; none: open.
    pub metrics_auth: Option<Secret>,
    /// Credentials for the router's own calls to coordinators (load statistics).
    pub coordinator_auth: Option<Credentials>,
    /// Routing rules for new queries, compiled.
    pub rules: Arc<RuleSet>,
    /// Examples the rules must route as stated (`trino-router check` runs them).
    pub rule_tests: Vec<RuleTest>,
    /// SQL longer than this is not parsed for rules (its kind comes from its first keywords).
    pub max_sql_bytes: usize,
    /// The claim of a bearer JWT that names the user, when `X-Trino-User` is absent.
    pub jwt_user_claim: String,
    /// URL-carried placement: with a prefix such as `/_trino`, each new query is sent with
    /// `X-Forwarded-Prefix: {prefix}/{cluster}`, so a coordinator with `http-server.process-forwarded`
    /// builds every URI it hands out (nextUri, infoUri, spooled segments) under it; requests under that
    /// prefix go to the named cluster with the prefix stripped — no lookup at all.
    pub url_prefix: Option<String>,
    /// Where `GET /metrics` (Prometheus text) is served; none when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Read every new statement's SQL to place what it names: `CALL system.runtime.kill_query(...)`
    /// goes to the query's cluster, and `START TRANSACTION` is followed so that the transaction's later
    /// statements go to its cluster. Costs one more round trip per new query.
    pub placement_from_sql: bool,
    /// Who places new statements when Envoy gets its routes from the router (RDS): Envoy itself where
    /// the config lets it ([`NewQueryRouting::Envoy`]), or the router, every one.
    pub new_query_routing: NewQueryRouting,
    /// How long Envoy waits for a coordinator's answer to a new query (`POST /v1/statement`) before it
    /// answers 504 itself; zero waits forever. Trino answers a POST at once (the query runs later), so
    /// only a hung coordinator hits it: its client's retry then goes to another cluster.
    pub new_query_timeout: Duration,
    /// This replica's name and how it shares the operator's say with the other replicas.
    pub fleet: fleet::FleetSettings,
}

/// Who places a new statement (`new_query_routing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NewQueryRouting {
    /// Envoy, from the routes the router serves over RDS: a route per routing group and header rule,
    /// the clusters of the group as weights the router updates from load, health and the operator's say
    /// at every poll ([`crate::domain::decision::native`]). Whatever Envoy cannot express (rules over
    /// the SQL or CEL, `placement_from_sql`, transactions, restricted groups, ...) still asks the router.
    /// With `envoy-config --static-routes` the router decides every new statement.
    Envoy,
    /// The router decides every new statement (per query: exact least-loaded placement, every new query
    /// counted and logged by the router).
    #[default]
    Router,
}

/// An example request and the group the rules must give it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTest {
    pub name: String,
    /// Request headers (`X-Trino-User`, `X-Trino-Source`, ...).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The statement's SQL text.
    #[serde(default)]
    pub sql: String,
    /// The group the request must get.
    pub expect_group: String,
    /// The rule that must match (`none`: no rule may match).
    #[serde(default)]
    pub expect_rule: Option<String>,
}

/// A user and password for a coordinator's web UI login.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = if self.password.is_some() { "<set>" } else { "<none>" };
        write!(f, "Credentials {{ user: {:?}, password: {password} }}", self.user)
    }
}

/// How the router polls coordinators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Time between two polls of a coordinator.
    #[serde(default = "HealthSettings::default_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// How long one poll may take.
    #[serde(default = "HealthSettings::default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Good polls in a row that bring an unhealthy coordinator back.
    #[serde(default = "HealthSettings::default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failed polls (timeouts, bad answers) in a row that make a coordinator unhealthy. A refused
    /// connection needs only one.
    #[serde(default = "HealthSettings::default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// What the router's 503 tells clients to wait before retrying, when no cluster can take a query.
    #[serde(default = "HealthSettings::default_retry_after", deserialize_with = "duration")]
    pub retry_after: Duration,
}

impl HealthSettings {
    fn default_interval() -> Duration {
        Duration::from_secs(1)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(1)
    }
    fn default_healthy_threshold() -> u32 {
        2
    }
    fn default_unhealthy_threshold() -> u32 {
        2
    }
    fn default_retry_after() -> Duration {
        Duration::from_secs(1)
    }
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            interval: Self::default_interval(),
            timeout: Self::default_timeout(),
            healthy_threshold: Self::default_healthy_threshold(),
            unhealthy_threshold: Self::default_unhealthy_threshold(),
            retry_after: Self::default_retry_after(),
        }
    }
}

/// A duration written as `1s`, `500ms`, `2m`.
pub(super) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration such as 500ms or 2s: {e}")))
}

/// One Trino cluster (one coordinator).
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: Arc<str>,
    /// The value written into the routing header: the Envoy cluster name.
    pub envoy_cluster: Arc<str>,
    pub group: Arc<str>,
    pub url: CoordinatorUrl,
    /// Relative capacity: a cluster of weight 2 takes twice the load of one of weight 1.
    pub weight: f64,
    /// `false`: the cluster starts disabled (no new queries) until an operator enables it.
    pub enabled: bool,
}

/// A coordinator's base URL, split into what Envoy's cluster and the router's own calls need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for CoordinatorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// A routing group: the clusters that may take a new query of that group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: Arc<str>,
    /// Indices into [`Config::clusters`], in file order; empty only for a declared group that lends its
    /// queries to its fallbacks.
    pub members: Vec<usize>,
    /// Indices into [`Config::groups`]: where its new queries go, in order, when none of its own
    /// clusters can take them.
    pub fallback: Vec<usize>,
    /// Indices into [`Config::groups`]: every group a new query of this one may be placed in, in the
    /// order they are tried: the group itself, its fallbacks, then their fallbacks (breadth first, each
    /// group once). Validation guarantees at least one of them has clusters.
    pub chain: Vec<usize>,
    /// Who may ask for this group by `X-Trino-Routing-Group`; `None`: anyone. Rules are the operator's
    /// and may send queries here regardless.
    pub allow: Option<GroupAccess>,
}

/// The users and sources that may ask for a restricted group.
#[derive(Debug, Clone)]
pub struct GroupAccess {
    pub users: Vec<String>,
    pub sources: Vec<regex::Regex>,
}

/// Equal when they admit the same users and the same source patterns.
impl PartialEq for GroupAccess {
    fn eq(&self, other: &GroupAccess) -> bool {
        self.users == other.users
            && self
                .sources
                .iter()
                .map(regex::Regex::as_str)
                .eq(other.sources.iter().map(regex::Regex::as_str))
    }
}

impl GroupAccess {
    /// Whether a client with this user and source may ask for the group.
    pub fn admits(&self, user: &str, source: &str) -> bool {
        self.users.iter().any(|u| u == user) || self.sources.iter().any(|s| s.is_match(source))
    }
}

/// What the router logs of each new query (one info line, target `trino_router::queries`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryLog {
    /// Log each new query's id: the learn filter then reads every first answer (one more message per
    /// new query), and the line is written once the id is known.
    #[serde(default)]
    pub query_ids: bool,
    /// Include the SQL text (off by default: statements may carry secrets).
    #[serde(default)]
    pub sql: bool,
}

/// How much query-id → cluster memory the router keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffinitySettings {
    /// The most query ids remembered at once; the least recently used go first.
    #[serde(default = "AffinitySettings::default_max_queries")]
    pub max_queries: u64,
    /// A query id not seen for this long is forgotten.
    #[serde(default = "AffinitySettings::default_idle_expiry_seconds")]
    pub idle_expiry_seconds: u64,
    /// How long the router asks the clusters about a query it cannot place before answering 404. It
    /// must fit in Envoy's 0.5 s message timeout.
    #[serde(default = "AffinitySettings::default_discovery_timeout", deserialize_with = "duration")]
    pub discovery_timeout: Duration,
}

impl AffinitySettings {
    fn default_max_queries() -> u64 {
        100_000
    }
    fn default_idle_expiry_seconds() -> u64 {
        3_600
    }
    fn default_discovery_timeout() -> Duration {
        Duration::from_millis(300)
    }
}

impl Default for AffinitySettings {
    fn default() -> Self {
        Self {
            max_queries: Self::default_max_queries(),
            idle_expiry_seconds: Self::default_idle_expiry_seconds(),
            discovery_timeout: Self::default_discovery_timeout(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::one(ConfigError {
                file: path.to_owned(),
                field: String::new(),
                message: format!("cannot read the file: {e}"),
            })
        })?;
        Self::from_yaml(path, &text, overrides)
    }

    /// Parses and validates YAML text; `file` only names the source in errors.
    pub fn from_yaml(file: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigErrors> {
        let error = |field: String, message: String| ConfigError { file: file.to_owned(), field, message };
        let deserializer = serde_norway::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            // The YAML error may repeat the path of the enclosing value; the field is named already.
            let message = e.into_inner().to_string();
            let message = match message.split_once(": ") {
                Some((prefix, rest)) if !prefix.contains(' ') && field.starts_with(prefix) => rest.to_owned(),
                _ => message,
            };
            ConfigErrors::one(error(field, message))
        })?;
        validate::validate(raw, file, overrides).map_err(|problems| {
            ConfigErrors(problems.into_iter().map(|(field, message)| error(field, message)).collect())
        })
    }

    /// The cluster with this name, if the config has it.
    pub fn cluster_named(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| &*c.name == name)
    }

    /// The index of the cluster with this name.
    pub fn cluster_index(&self, name: &str) -> Option<usize> {
        self.clusters.iter().position(|c| &*c.name == name)
    }

    /// The index of the cluster whose routing-header value (Envoy cluster name) is `value`.
    pub fn cluster_by_envoy_cluster(&self, value: &str) -> Option<usize> {
        self.clusters.iter().position(|c| &*c.envoy_cluster == value)
    }

    /// The path prefix that names `clusters[cluster]` under URL-carried placement (`{url_prefix}/{name}`).
    pub fn cluster_prefix(&self, cluster: usize) -> Option<String> {
        self.url_prefix.as_ref().map(|prefix| format!("{prefix}/{}", self.clusters[cluster].name))
    }

    /// The group with this name, if the config has it.
    pub fn group_named(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| &*g.name == name)
    }
}
