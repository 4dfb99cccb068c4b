//! The router's configuration: YAML read once, checked once, and turned into a [`Config`] that the rest
//! of the router trusts without re-checking.
//!
//! Every problem is reported as a [`ConfigError`] naming the file, the field (as a path such as
//! `clusters[1].url`) and what is wrong. Unknown fields are errors, so a typo never silently changes
//! routing.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

pub mod tls;

#[cfg(test)]
pub(crate) mod testing;

use crate::domain::config::tls::{CoordinatorTls, ListenTls};
use crate::domain::rules::{RawRule, RuleSet};

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

/// The environment variable that holds the admin token when the config names no other.
pub const ADMIN_TOKEN_ENV: &str = "TRINO_ROUTER_ADMIN_TOKEN";

/// What the environment supplies after the file is read.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `listen` (e.g. from `TRINO_ROUTER_LISTEN`).
    pub listen: Option<String>,
    /// Environment variables the config may name (`admin.token_env`, `coordinator_auth.password_env`).
    pub env: Vec<(String, String)>,
}

impl Overrides {
    /// Overrides holding this process's environment.
    pub fn from_process_env(listen: Option<String>) -> Overrides {
        Overrides { listen, env: std::env::vars().collect() }
    }

    fn var(&self, name: &str) -> Option<&str> {
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
    pub admin_token: Option<String>,
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
    /// How long Envoy waits for a coordinator's answer to a new query (`POST /v1/statement`) before it
    /// answers 504 itself; zero waits forever. Trino answers a POST at once (the query runs later), so
    /// only a hung coordinator hits it: its client's retry then goes to another cluster.
    pub new_query_timeout: Duration,
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
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
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
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            field: String::new(),
            message: format!("cannot read the file: {e}"),
        })?;
        Self::from_yaml(path, &text, overrides)
    }

    /// Parses and validates YAML text; `file` only names the source in errors.
    pub fn from_yaml(file: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
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
            error(field, message)
        })?;
        raw.validate(file, overrides).map_err(|(field, message)| error(field, message))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: String,
    #[serde(default)]
    listen_tls: Option<RawListenTls>,
    #[serde(default)]
    coordinator_tls: Option<RawCoordinatorTls>,
    #[serde(default = "default_routing_header")]
    routing_header: String,
    default_group: String,
    clusters: Vec<RawCluster>,
    #[serde(default)]
    affinity: AffinitySettings,
    #[serde(default)]
    query_log: QueryLog,
    #[serde(default)]
    groups: Vec<RawGroup>,
    #[serde(default)]
    health: HealthSettings,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    coordinator_auth: Option<RawCredentials>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    rule_tests: Vec<RuleTest>,
    #[serde(default = "default_max_sql_bytes")]
    max_sql_bytes: usize,
    #[serde(default = "default_jwt_user_claim")]
    jwt_user_claim: String,
    #[serde(default = "default_enabled")]
    placement_from_sql: bool,
    #[serde(default)]
    url_prefix: Option<String>,
    #[serde(default)]
    metrics_listen: Option<String>,
    #[serde(default = "default_new_query_timeout", deserialize_with = "duration")]
    new_query_timeout: Duration,
}

fn default_new_query_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_sql_bytes() -> usize {
    64 * 1024
}

fn default_jwt_user_claim() -> String {
    "sub".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    #[serde(default)]
    fallback: Vec<String>,
    #[serde(default)]
    allow: Option<RawAllow>,
}

/// Who may ask for a group by `X-Trino-Routing-Group`: users by name, sources by regex.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    sources: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token: Option<String>,
    token_env: Option<String>,
}

/// `listen_tls`: the router's certificate and key; with `client_ca_file`, clients must present a
/// certificate signed by it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
}

/// `coordinator_tls`: the CA that signs coordinator certificates, and whether the system roots count too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoordinatorTls {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    system_roots: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    user: String,
    password: Option<String>,
    password_env: Option<String>,
}

fn default_routing_header() -> String {
    DEFAULT_ROUTING_HEADER.to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    url: String,
    group: String,
    #[serde(default)]
    envoy_cluster: Option<String>,
    #[serde(default = "default_weight")]
    weight: f64,
    #[serde(default = "default_enabled")]
    enabled: bool,
}

fn default_weight() -> f64 {
    1.0
}

fn default_enabled() -> bool {
    true
}

/// A field path and a message.
type FieldError = (String, String);

impl RawConfig {
    fn validate(self, file: &Path, overrides: &Overrides) -> Result<Config, FieldError> {
        let listen_text = overrides.listen.as_deref().unwrap_or(&self.listen);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            let origin = if overrides.listen.is_some() { " (from the environment)" } else { "" };
            (
                "listen".to_owned(),
                format!("`{listen_text}`{origin} is not an address of the form HOST:PORT with an IP host"),
            )
        })?;

        // Relative paths are relative to the config file's directory.
        let resolve = |path: &Path| match file.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        };
        let listen_tls = match &self.listen_tls {
            None => None,
            Some(raw) => {
                let cert = crate::domain::config::tls::read_certificates(&resolve(&raw.cert_file))
                    .map_err(|m| ("listen_tls.cert_file".to_owned(), m))?;
                let key = crate::domain::config::tls::read_private_key(&resolve(&raw.key_file))
                    .map_err(|m| ("listen_tls.key_file".to_owned(), m))?;
                crate::domain::config::tls::check_key_matches(&cert, &key)
                    .map_err(|m| ("listen_tls.key_file".to_owned(), m))?;
                let client_ca = match &raw.client_ca_file {
                    None => None,
                    Some(path) => Some(
                        crate::domain::config::tls::read_ca(&resolve(path))
                            .map_err(|m| ("listen_tls.client_ca_file".to_owned(), m))?,
                    ),
                };
                Some(ListenTls { cert, key, client_ca })
            }
        };
        let coordinator_tls = match &self.coordinator_tls {
            None => CoordinatorTls::default(),
            Some(RawCoordinatorTls { ca_file: None, system_roots: Some(false) }) => {
                return Err((
                    "coordinator_tls.system_roots".to_owned(),
                    "without `ca_file` the system roots are the only CAs: set `ca_file`".to_owned(),
                ));
            }
            Some(raw) => CoordinatorTls {
                ca: match &raw.ca_file {
                    None => None,
                    Some(path) => Some(
                        crate::domain::config::tls::read_ca(&resolve(path))
                            .map_err(|m| ("coordinator_tls.ca_file".to_owned(), m))?,
                    ),
                },
                system_roots: raw.system_roots.unwrap_or(false),
            },
        };

        let routing_header = self.routing_header.to_ascii_lowercase();
        check_routing_header(&routing_header).map_err(|m| ("routing_header".to_owned(), m))?;

        if self.clusters.is_empty() {
            return Err(("clusters".to_owned(), "at least one cluster is needed".to_owned()));
        }
        let mut clusters = Vec::with_capacity(self.clusters.len());
        let mut groups: Vec<Group> = Vec::new();
        for (i, declared) in self.groups.iter().enumerate() {
            check_name(&declared.name).map_err(|m| (format!("groups[{i}].name"), m))?;
            if groups.iter().any(|g| *g.name == *declared.name) {
                return Err((
                    format!("groups[{i}].name"),
                    format!("group `{}` is declared twice", declared.name),
                ));
            }
            groups.push(Group {
                name: declared.name.as_str().into(),
                members: vec![],
                fallback: vec![],
                allow: None,
            });
        }
        let mut names = HashSet::new();
        let mut header_values = HashSet::new();
        for (i, raw) in self.clusters.into_iter().enumerate() {
            let at = |field: &str| format!("clusters[{i}].{field}");
            check_name(&raw.name).map_err(|m| (at("name"), m))?;
            if !names.insert(raw.name.clone()) {
                return Err((at("name"), format!("`{}` names another cluster too", raw.name)));
            }
            check_name(&raw.group).map_err(|m| (at("group"), m))?;
            let url = parse_url(&raw.url).map_err(|m| (at("url"), m))?;
            let envoy_cluster = match raw.envoy_cluster {
                Some(value) => {
                    check_header_value(&value).map_err(|m| (at("envoy_cluster"), m))?;
                    value
                }
                None => raw.name.clone(),
            };
            if !header_values.insert(envoy_cluster.clone()) {
                return Err((
                    at(if envoy_cluster == raw.name { "name" } else { "envoy_cluster" }),
                    format!("Envoy cluster `{envoy_cluster}` is used by another cluster too"),
                ));
            }
            if !(raw.weight.is_finite() && raw.weight > 0.0) {
                return Err((at("weight"), format!("{} is not a positive number", raw.weight)));
            }
            let group: Arc<str> = raw.group.into();
            match groups.iter_mut().find(|g| g.name == group) {
                Some(g) => g.members.push(i),
                None => groups.push(Group {
                    name: group.clone(),
                    members: vec![i],
                    fallback: vec![],
                    allow: None,
                }),
            }
            clusters.push(Cluster {
                name: raw.name.into(),
                envoy_cluster: envoy_cluster.into(),
                group,
                url,
                weight: raw.weight,
                enabled: raw.enabled,
            });
        }

        for (i, declared) in self.groups.iter().enumerate() {
            let mut fallback = Vec::with_capacity(declared.fallback.len());
            for (j, name) in declared.fallback.iter().enumerate() {
                let field = format!("groups[{i}].fallback[{j}]");
                let target = groups
                    .iter()
                    .position(|g| *g.name == **name)
                    .ok_or_else(|| (field.clone(), format!("no group is named `{name}`")))?;
                if *groups[target].name == *declared.name {
                    return Err((field, "a group cannot fall back to itself".to_owned()));
                }
                if fallback.contains(&target) {
                    return Err((field, format!("`{name}` is listed twice")));
                }
                fallback.push(target);
            }
            groups[i].fallback = fallback;
            if let Some(allow) = &declared.allow {
                let mut sources = Vec::with_capacity(allow.sources.len());
                for (j, source) in allow.sources.iter().enumerate() {
                    let regex = regex::Regex::new(source).map_err(|e| {
                        (format!("groups[{i}].allow.sources[{j}]"), format!("not a regex: {e}"))
                    })?;
                    sources.push(regex);
                }
                groups[i].allow = Some(GroupAccess { users: allow.users.clone(), sources });
            }
        }

        let default_group = groups.iter().position(|g| *g.name == *self.default_group).ok_or_else(|| {
            let known: BTreeSet<&str> = groups.iter().map(|g| &*g.name).collect();
            let known: Vec<&str> = known.into_iter().collect();
            (
                "default_group".to_owned(),
                format!("no group is named `{}` (groups: {})", self.default_group, known.join(", ")),
            )
        })?;
        let group = &groups[default_group];
        if group.members.is_empty() && group.fallback.is_empty() {
            return Err((
                "default_group".to_owned(),
                format!("group `{}` has no clusters and no fallback", group.name),
            ));
        }

        let health = self.health;
        if health.interval < Duration::from_millis(100) {
            return Err(("health.interval".to_owned(), "must be at least 100ms".to_owned()));
        }
        if health.timeout < Duration::from_millis(10) {
            return Err(("health.timeout".to_owned(), "must be at least 10ms".to_owned()));
        }
        if health.healthy_threshold == 0 {
            return Err(("health.healthy_threshold".to_owned(), "must be at least 1".to_owned()));
        }
        if health.unhealthy_threshold == 0 {
            return Err(("health.unhealthy_threshold".to_owned(), "must be at least 1".to_owned()));
        }

        let admin_token = match (self.admin.token, self.admin.token_env) {
            (Some(_), Some(_)) => {
                return Err(("admin".to_owned(), "set `token` or `token_env`, not both".to_owned()));
            }
            (Some(token), None) if token.is_empty() => {
                return Err(("admin.token".to_owned(), "must not be empty".to_owned()));
            }
            (Some(token), None) => Some(token),
            (None, Some(name)) => Some(overrides.var(&name).map(str::to_owned).ok_or_else(|| {
                ("admin.token_env".to_owned(), format!("the environment variable `{name}` is not set"))
            })?),
            (None, None) => overrides.var(ADMIN_TOKEN_ENV).map(str::to_owned),
        };

        let coordinator_auth = match self.coordinator_auth {
            None => None,
            Some(raw) => {
                if raw.user.is_empty() {
                    return Err(("coordinator_auth.user".to_owned(), "must not be empty".to_owned()));
                }
                let password = match (raw.password, raw.password_env) {
                    (Some(_), Some(_)) => {
                        return Err((
                            "coordinator_auth".to_owned(),
                            "set `password` or `password_env`, not both".to_owned(),
                        ));
                    }
                    (Some(password), None) => Some(password),
                    (None, Some(name)) => Some(overrides.var(&name).map(str::to_owned).ok_or_else(|| {
                        (
                            "coordinator_auth.password_env".to_owned(),
                            format!("the environment variable `{name}` is not set"),
                        )
                    })?),
                    (None, None) => None,
                };
                Some(Credentials { user: raw.user, password })
            }
        };

        if self.affinity.max_queries == 0 {
            return Err(("affinity.max_queries".to_owned(), "must be at least 1".to_owned()));
        }
        if !(Duration::from_millis(10)..=Duration::from_millis(400))
            .contains(&self.affinity.discovery_timeout)
        {
            return Err((
                "affinity.discovery_timeout".to_owned(),
                "must be between 10ms and 400ms (it must fit in Envoy's 0.5s message timeout)".to_owned(),
            ));
        }
        if self.affinity.idle_expiry_seconds == 0 {
            return Err(("affinity.idle_expiry_seconds".to_owned(), "must be at least 1".to_owned()));
        }

        let rules = RuleSet::compile(&self.rules, |name| groups.iter().position(|g| *g.name == *name))?;
        for (i, test) in self.rule_tests.iter().enumerate() {
            if !groups.iter().any(|g| *g.name == *test.expect_group) {
                return Err((
                    format!("rule_tests[{i}].expect_group"),
                    format!("no group is named `{}`", test.expect_group),
                ));
            }
        }
        let url_prefix = match self.url_prefix {
            None => None,
            Some(prefix) => {
                let prefix = prefix.trim_end_matches('/').to_owned();
                let segment_ok = |s: &str| {
                    !s.is_empty()
                        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                };
                if !prefix.starts_with('/') || !prefix[1..].split('/').all(segment_ok) {
                    return Err((
                        "url_prefix".to_owned(),
                        format!("`{prefix}` is not a path prefix such as /_trino"),
                    ));
                }
                if ["/v1", "/ui"].iter().any(|p| prefix == *p || prefix.starts_with(&format!("{p}/"))) {
                    return Err((
                        "url_prefix".to_owned(),
                        format!("`{prefix}` would hide Trino's own paths"),
                    ));
                }
                Some(prefix)
            }
        };
        if self.max_sql_bytes == 0 {
            return Err(("max_sql_bytes".to_owned(), "must be at least 1".to_owned()));
        }
        let metrics_listen = match self.metrics_listen {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
                (
                    "metrics_listen".to_owned(),
                    format!("`{text}` is not an address of the form HOST:PORT with an IP host"),
                )
            })?),
        };

        Ok(Config {
            listen,
            listen_tls,
            coordinator_tls,
            routing_header,
            default_group,
            clusters,
            groups,
            affinity: self.affinity,
            query_log: self.query_log,
            health,
            admin_token,
            coordinator_auth,
            rules: Arc::new(rules),
            rule_tests: self.rule_tests,
            max_sql_bytes: self.max_sql_bytes,
            jwt_user_claim: self.jwt_user_claim,
            placement_from_sql: self.placement_from_sql,
            url_prefix,
            metrics_listen,
            new_query_timeout: self.new_query_timeout,
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > 128 {
        return Err("must be at most 128 characters".to_owned());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(format!("`{name}` may only hold ASCII letters, digits, `-`, `_` and `.`"));
    }
    Ok(())
}

fn check_header_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("`{value}` must be printable ASCII without spaces"));
    }
    Ok(())
}

fn check_routing_header(name: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("`{name}` is not an HTTP header name"));
    }
    if name.starts_with("x-envoy-") || matches!(name, "host" | "content-length" | "transfer-encoding") {
        return Err(format!("`{name}` cannot carry the routing decision (Envoy reserves it)"));
    }
    if name.starts_with("x-trino-") && name != DEFAULT_ROUTING_HEADER {
        return Err(format!("`{name}` is a Trino protocol header; pick a name of your own"));
    }
    Ok(())
}

/// Parses `http(s)://HOST[:PORT][/]` — a coordinator is addressed by its origin only.
fn parse_url(text: &str) -> Result<CoordinatorUrl, String> {
    let bad = |why: &str| format!("`{text}` is not a coordinator URL ({why}); expected http://HOST:PORT");
    let uri: http::Uri = text.parse().map_err(|_| bad("cannot be parsed"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(_) => return Err(bad("the scheme must be http or https")),
        None => return Err(bad("no scheme")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials do not belong in the URL"));
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a path or query is not supported"));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(CoordinatorUrl { tls, host: host.to_owned(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "
listen: 127.0.0.1:50051
routing_header: x-trino-cluster
default_group: adhoc
clusters:
  - name: trino-a
    url: http://127.0.0.1:18081
    group: adhoc
  - name: trino-b
    url: http://127.0.0.1:18082
    group: adhoc
  - name: trino-etl
    url: http://127.0.0.1:18083
    group: etl
";

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(Path::new("router.yaml"), text, &Overrides::default())
    }

    /// The error for `EXAMPLE` with `from` replaced by `to`, as `field: message`.
    fn error_after(from: &str, to: &str) -> String {
        assert!(EXAMPLE.contains(from), "{from}");
        let e = load(&EXAMPLE.replacen(from, to, 1)).expect_err("must be rejected");
        assert_eq!(e.file, Path::new("router.yaml"));
        format!("{}: {}", e.field, e.message)
    }

    #[test]
    fn example_loads() {
        let config = load(EXAMPLE).unwrap();
        assert_eq!(config.listen, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(config.routing_header, "x-trino-cluster");
        assert_eq!(config.groups.len(), 2);
        assert_eq!(&*config.groups[config.default_group].name, "adhoc");
        assert_eq!(config.groups[config.default_group].members, vec![0, 1]);
        assert_eq!(config.groups[1].members, vec![2]);
        assert_eq!(&*config.clusters[2].envoy_cluster, "trino-etl");
        assert_eq!(config.clusters[0].url.to_string(), "http://127.0.0.1:18081");
        assert_eq!(config.affinity, AffinitySettings::default());
        assert_eq!(config.health, HealthSettings::default());
        assert_eq!(config.groups[0].fallback, Vec::<usize>::new());
    }

    #[test]
    fn routing_header_defaults() {
        let config = load(&EXAMPLE.replace("routing_header: x-trino-cluster\n", "")).unwrap();
        assert_eq!(config.routing_header, DEFAULT_ROUTING_HEADER);
    }

    #[test]
    fn envoy_cluster_overrides_header_value() {
        let text = EXAMPLE.replace(
            "    group: etl\n",
            "    group: etl\n    envoy_cluster: outbound|8080||trino-etl.data.svc.cluster.local\n",
        );
        let config = load(&text).unwrap();
        assert_eq!(&*config.clusters[2].envoy_cluster, "outbound|8080||trino-etl.data.svc.cluster.local");
        assert_eq!(&*config.clusters[2].name, "trino-etl");
    }

    #[test]
    fn environment_overrides_listen() {
        let overrides = Overrides { listen: Some("127.0.0.1:0".into()), env: vec![] };
        let config = Config::from_yaml(Path::new("r.yaml"), EXAMPLE, &overrides).unwrap();
        assert_eq!(config.listen.port(), 0);
        let overrides = Overrides { listen: Some("nonsense".into()), env: vec![] };
        let e = Config::from_yaml(Path::new("r.yaml"), EXAMPLE, &overrides).unwrap_err();
        assert!(e.message.contains("from the environment"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("routing_header: x-trino-cluster", "routing_header: x-trino-cluster\ncolour: blue", "colour"),
            ("    group: etl", "    group: etl\n    colour: 3", "clusters[2].colour: unknown field `colour`, expected one of `name`, `url`, `group`, `envoy_cluster`, `weight`, `enabled` at line 15"),
            ("url: http://127.0.0.1:18082", "url: ftp://127.0.0.1:18082", "clusters[1].url: `ftp://127.0.0.1:18082` is not a coordinator URL (the scheme"),
            ("url: http://127.0.0.1:18082", "url: 127.0.0.1:18082", "clusters[1].url:"),
            ("url: http://127.0.0.1:18082", "url: http://127.0.0.1:18082/trino", "clusters[1].url:"),
            ("url: http://127.0.0.1:18082", "url: http://u:p@127.0.0.1:18082", "clusters[1].url:"),
            ("url: http://127.0.0.1:18082", "url: 7", "clusters[1].url:"),
            ("default_group: adhoc", "default_group: nope", "default_group: no group is named `nope` (groups: adhoc, etl)"),
            ("clusters:\n", "groups: [{name: adhoc, fallback: [nope]}]\nclusters:\n", "groups[0].fallback[0]: no group is named `nope`"),
            ("clusters:\n", "groups: [{name: adhoc, fallback: [adhoc]}]\nclusters:\n", "groups[0].fallback[0]: a group cannot fall back to itself"),
            ("clusters:\n", "groups: [{name: adhoc, fallback: [etl, etl]}]\nclusters:\n", "groups[0].fallback[1]: `etl` is listed twice"),
            ("clusters:\n", "groups: [{name: adhoc}, {name: adhoc}]\nclusters:\n", "groups[1].name: group `adhoc` is declared twice"),
            ("clusters:\n", "groups: [{name: adhoc, fallbacks: [etl]}]\nclusters:\n", "groups[0].fallbacks: unknown field"),
            ("clusters:\n", "groups: [{name: etl, allow: {sources: ['(']}}]\nclusters:\n", "groups[0].allow.sources[0]: not a regex"),
            ("clusters:\n", "health: {interval: 10ms}\nclusters:\n", "health.interval: must be at least 100ms"),
            ("clusters:\n", "affinity: {discovery_timeout: 2s}\nclusters:\n", "affinity.discovery_timeout: must be between 10ms and 400ms"),
            ("clusters:\n", "url_prefix: _trino\nclusters:\n", "url_prefix: `_trino` is not a path prefix"),
            ("clusters:\n", "url_prefix: '/a b'\nclusters:\n", "url_prefix: `/a b` is not a path prefix"),
            ("clusters:\n", "url_prefix: /v1/x\nclusters:\n", "url_prefix: `/v1/x` would hide Trino's own paths"),
            ("clusters:\n", "health: {interval: soon}\nclusters:\n", "health.interval: `soon` is not a duration"),
            ("clusters:\n", "health: {healthy_threshold: 0}\nclusters:\n", "health.healthy_threshold: must be at least 1"),
            ("clusters:\n", "admin: {token: a, token_env: B}\nclusters:\n", "admin: set `token` or `token_env`, not both"),
            ("clusters:\n", "admin: {token_env: NOT_SET_ANYWHERE}\nclusters:\n", "admin.token_env: the environment variable `NOT_SET_ANYWHERE` is not set"),
            ("clusters:\n", "coordinator_auth: {user: ''}\nclusters:\n", "coordinator_auth.user: must not be empty"),
            ("    group: etl", "    group: etl\n    weight: 0", "clusters[2].weight: 0 is not a positive number"),
            ("    group: etl", "    group: etl\n    weight: -1.5", "clusters[2].weight: -1.5 is not a positive number"),
            ("    group: etl", "    group: etl\n    enabled: maybe", "clusters[2].enabled:"),
            ("listen: 127.0.0.1:50051", "listen: localhost", "listen: `localhost` is not an address"),
            ("name: trino-b", "name: trino-a", "clusters[1].name: `trino-a` names another cluster too"),
            ("name: trino-b", "name: \"\"", "clusters[1].name: must not be empty"),
            ("name: trino-b", "name: trino b", "clusters[1].name: `trino b` may only hold"),
            ("group: etl", "group: \"\"", "clusters[2].group: must not be empty"),
            ("routing_header: x-trino-cluster", "routing_header: x-envoy-cluster", "routing_header: `x-envoy-cluster` cannot carry"),
            ("routing_header: x-trino-cluster", "routing_header: x-trino-user", "routing_header: `x-trino-user` is a Trino protocol header"),
            ("routing_header: x-trino-cluster", "routing_header: \"bad header\"", "routing_header: `bad header` is not an HTTP header name"),
            ("clusters:\n", "affinity: {max_queries: 0}\nclusters:\n", "affinity.max_queries: must be at least 1"),
            ("clusters:\n", "affinity: {idle_expiry_seconds: 0}\nclusters:\n", "affinity.idle_expiry_seconds: must be at least 1"),
            ("clusters:\n", "affinity: {max_entries: 5}\nclusters:\n", "affinity.max_entries: unknown field `max_entries`"),
        ];
        for (from, to, expected) in cases {
            let got = error_after(from, to);
            assert!(got.starts_with(expected), "replacing {from:?} by {to:?}\n got: {got}\nwant: {expected}");
        }
    }

    #[test]
    fn groups_fallback_health_admin_and_auth() {
        let text = EXAMPLE.replace(
            "clusters:\n",
            "groups:\n  - {name: interactive, fallback: [adhoc]}\n  - {name: etl, fallback: [adhoc]}\n\
             health: {interval: 500ms, timeout: 250ms, healthy_threshold: 3, unhealthy_threshold: 4, retry_after: 2s}\n\
             admin: {token_env: MY_TOKEN}\n\
             coordinator_auth: {user: router, password_env: MY_PASSWORD}\n\
             clusters:\n",
        );
        let text = text.replace("    group: etl\n", "    group: etl\n    weight: 2.5\n    enabled: false\n");
        let overrides = Overrides {
            listen: None,
            env: vec![("MY_TOKEN".into(), "s3cret".into()), ("MY_PASSWORD".into(), "pw".into())],
        };
        let config = Config::from_yaml(Path::new("r.yaml"), &text, &overrides).unwrap();
        let names: Vec<&str> = config.groups.iter().map(|g| &*g.name).collect();
        assert_eq!(names, ["interactive", "etl", "adhoc"]);
        assert_eq!(config.groups[0].members, Vec::<usize>::new());
        assert_eq!(config.groups[0].fallback, vec![2]);
        assert_eq!(config.groups[1].members, vec![2]);
        assert_eq!(config.groups[1].fallback, vec![2]);
        assert_eq!(config.groups[2].fallback, Vec::<usize>::new());
        assert_eq!(config.default_group, 2);
        assert_eq!(config.health.interval, Duration::from_millis(500));
        assert_eq!(config.health.retry_after, Duration::from_secs(2));
        assert_eq!((config.health.healthy_threshold, config.health.unhealthy_threshold), (3, 4));
        assert_eq!(config.admin_token.as_deref(), Some("s3cret"));
        let auth = config.coordinator_auth.as_ref().unwrap();
        assert_eq!((auth.user.as_str(), auth.password.as_deref()), ("router", Some("pw")));
        assert!(!format!("{auth:?}").contains("pw"), "passwords stay out of logs");
        assert_eq!((config.clusters[2].weight, config.clusters[2].enabled), (2.5, false));
        assert_eq!((config.clusters[0].weight, config.clusters[0].enabled), (1.0, true));
    }

    #[test]
    fn admin_token_defaults_to_its_environment_variable() {
        let none = load(EXAMPLE).unwrap();
        assert_eq!(none.admin_token, None);
        let overrides = Overrides { listen: None, env: vec![(ADMIN_TOKEN_ENV.into(), "t".into())] };
        let config = Config::from_yaml(Path::new("r.yaml"), EXAMPLE, &overrides).unwrap();
        assert_eq!(config.admin_token.as_deref(), Some("t"));
    }

    #[test]
    fn default_group_needs_somewhere_to_go() {
        let text = EXAMPLE
            .replace("default_group: adhoc", "default_group: empty")
            .replace("clusters:\n", "groups: [{name: empty}]\nclusters:\n");
        let e = load(&text).unwrap_err();
        assert_eq!(e.field, "default_group");
        assert!(e.message.contains("no clusters and no fallback"), "{e}");
    }

    #[test]
    fn duplicate_envoy_cluster_is_rejected() {
        let text = EXAMPLE.replace("    group: etl\n", "    group: etl\n    envoy_cluster: trino-a\n");
        let e = load(&text).unwrap_err();
        assert_eq!(e.field, "clusters[2].envoy_cluster");
    }

    #[test]
    fn missing_and_empty() {
        let e = load("listen: 127.0.0.1:1\ndefault_group: a\n").unwrap_err();
        assert!(e.message.contains("missing field `clusters`"), "{e}");
        let e = load("listen: 127.0.0.1:1\ndefault_group: a\nclusters: []\n").unwrap_err();
        assert_eq!(e.field, "clusters");
        let e = load("{{{").unwrap_err();
        assert!(e.to_string().starts_with("router.yaml: "), "{e}");
    }

    #[test]
    fn tls_files_are_read_and_checked() {
        use crate::domain::config::tls::testing::TestPki;
        let pki = TestPki::new("config");
        let router = pki.issue("router", &["127.0.0.1", "router.example.com"]);
        let other = pki.issue("other", &["other.example.com"]);
        let garbage = pki.write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64 at all\n");
        let empty = pki.write("empty.pem", "no PEM here\n");
        let missing = pki.path("missing.pem");
        let p = |path: &std::path::Path| path.display().to_string();
        let with = |tls: &str| EXAMPLE.replace("clusters:\n", &format!("{tls}\nclusters:\n"));
        let good = format!(
            "listen_tls: {{cert_file: '{}', key_file: '{}', client_ca_file: '{}'}}\n\
             coordinator_tls: {{ca_file: '{}'}}",
            p(&router.cert),
            p(&router.key),
            p(&pki.ca),
            p(&pki.ca)
        );
        let config = load(&with(&good)).unwrap();
        let tls = config.listen_tls.as_ref().unwrap();
        assert_eq!(
            (tls.cert.path.as_path(), tls.key.path.as_path()),
            (router.cert.as_path(), router.key.as_path())
        );
        assert!(tls.client_ca.is_some());
        assert!(!format!("{tls:?}").contains("PRIVATE KEY"), "keys stay out of logs");
        assert_eq!(config.coordinator_tls.ca.as_ref().unwrap().path, pki.ca);
        assert!(!config.coordinator_tls.system_roots);
        assert_eq!(load(EXAMPLE).unwrap().listen_tls, None);

        // Relative paths are relative to the config file.
        let relative = "listen_tls: {cert_file: router.pem, key_file: router-key.pem}";
        let config =
            Config::from_yaml(&pki.path("router.yaml"), &with(relative), &Overrides::default()).unwrap();
        assert_eq!(config.listen_tls.unwrap().cert.path, router.cert);

        let listen = |cert: &std::path::Path, key: &std::path::Path| {
            format!("listen_tls: {{cert_file: '{}', key_file: '{}'}}", p(cert), p(key))
        };
        #[rustfmt::skip]
        let cases: Vec<(String, String)> = vec![
            (listen(&missing, &router.key), format!("listen_tls.cert_file: cannot read `{}`: No such file", p(&missing))),
            (listen(&router.cert, &missing), format!("listen_tls.key_file: cannot read `{}`", p(&missing))),
            (listen(&garbage, &router.key), format!("listen_tls.cert_file: `{}` is not PEM", p(&garbage))),
            (listen(&empty, &router.key), format!("listen_tls.cert_file: `{}` holds no PEM certificate", p(&empty))),
            (listen(&router.cert, &empty), format!("listen_tls.key_file: `{}` holds no PEM private key", p(&empty))),
            (listen(&router.cert, &router.cert), format!("listen_tls.key_file: `{}` holds no PEM private key", p(&router.cert))),
            (listen(&router.cert, &other.key), format!("listen_tls.key_file: the key in `{}` does not belong to the certificate in `{}`", p(&other.key), p(&router.cert))),
            (format!("listen_tls: {{cert_file: '{}'}}", p(&router.cert)), "listen_tls: missing field `key_file`".to_owned()),
            ("listen_tls: {cert_file: a, key_file: b, ca_file: c}".to_owned(), "listen_tls.ca_file: unknown field `ca_file`".to_owned()),
            (format!("coordinator_tls: {{ca_file: '{}'}}", p(&missing)), format!("coordinator_tls.ca_file: cannot read `{}`", p(&missing))),
            (format!("coordinator_tls: {{ca_file: '{}'}}", p(&router.key)), format!("coordinator_tls.ca_file: `{}` holds no PEM certificate", p(&router.key))),
            ("coordinator_tls: {system_roots: false}".to_owned(), "coordinator_tls.system_roots: without `ca_file`".to_owned()),
        ];
        for (tls, expected) in &cases {
            let e = load(&with(tls)).expect_err(tls);
            let got = format!("{}: {}", e.field, e.message);
            assert!(got.starts_with(expected.as_str()), "with {tls}\n got: {got}\nwant: {expected}");
        }
        let bad_client_ca = format!(
            "listen_tls: {{cert_file: '{}', key_file: '{}', client_ca_file: '{}'}}",
            p(&router.cert),
            p(&router.key),
            p(&empty)
        );
        let e = load(&with(&bad_client_ca)).unwrap_err();
        assert_eq!(e.field, "listen_tls.client_ca_file", "{e}");
        assert!(e.to_string().starts_with("router.yaml: field `listen_tls.client_ca_file`: "), "{e}");
    }

    #[test]
    fn url_forms() {
        #[rustfmt::skip]
        let cases: &[(&str, bool, &str, u16)] = &[
            ("http://trino.example.com", false, "trino.example.com", 80),
            ("https://trino.example.com", true, "trino.example.com", 443),
            ("http://trino:8080/", false, "trino", 8080),
            ("http://[::1]:8080", false, "::1", 8080),
        ];
        for (text, tls, host, port) in cases {
            let url = parse_url(text).unwrap();
            assert_eq!((url.tls, url.host.as_str(), url.port), (*tls, *host, *port), "{text}");
        }
        assert_eq!(parse_url("http://[::1]:8080").unwrap().to_string(), "http://[::1]:8080");
    }
}
