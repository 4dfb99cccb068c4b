//! The config as written: what serde reads from the YAML, before any check. Unknown fields are errors.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{AffinitySettings, DEFAULT_ROUTING_HEADER, HealthSettings, QueryLog, RuleTest, duration};
use crate::domain::rules::RawRule;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: String,
    #[serde(default)]
    pub(super) listen_tls: Option<RawListenTls>,
    #[serde(default)]
    pub(super) coordinator_tls: Option<RawCoordinatorTls>,
    #[serde(default = "default_routing_header")]
    pub(super) routing_header: String,
    pub(super) default_group: String,
    pub(super) clusters: Vec<RawCluster>,
    #[serde(default)]
    pub(super) affinity: AffinitySettings,
    #[serde(default)]
    pub(super) query_log: QueryLog,
    #[serde(default)]
    pub(super) groups: Vec<RawGroup>,
    #[serde(default)]
    pub(super) health: HealthSettings,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) coordinator_auth: Option<RawCredentials>,
    #[serde(default)]
    pub(super) rules: Vec<RawRule>,
    #[serde(default)]
    pub(super) rule_tests: Vec<RuleTest>,
    #[serde(default = "default_max_sql_bytes")]
    pub(super) max_sql_bytes: usize,
    #[serde(default = "default_jwt_user_claim")]
    pub(super) jwt_user_claim: String,
    /// Unset: on under `new_query_routing: router`, off under `envoy`.
    #[serde(default)]
    pub(super) placement_from_sql: Option<bool>,
    #[serde(default)]
    pub(super) new_query_routing: super::NewQueryRouting,
    #[serde(default)]
    pub(super) url_prefix: Option<String>,
    #[serde(default)]
    pub(super) metrics_listen: Option<String>,
    #[serde(default = "default_new_query_timeout", deserialize_with = "duration")]
    pub(super) new_query_timeout: Duration,
    #[serde(default)]
    pub(super) fleet: super::fleet::RawFleet,
    /// The token Envoy sends on every ext_proc stream (gRPC `initial_metadata`).
    #[serde(default)]
    pub(super) envoy_auth: Option<RawToken>,
    /// The bearer token `GET /metrics` and the status page ask for.
    #[serde(default)]
    pub(super) metrics_auth: Option<RawToken>,
}

pub(super) fn default_new_query_timeout() -> Duration {
    Duration::from_secs(10)
}

pub(super) fn default_max_sql_bytes() -> usize {
    64 * 1024
}

pub(super) fn default_jwt_user_claim() -> String {
    "sub".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub(super) name: String,
    #[serde(default)]
    pub(super) fallback: Vec<String>,
    #[serde(default)]
    pub(super) allow: Option<RawAllow>,
}

/// Who may ask for a group by `X-Trino-Routing-Group`: users by name, sources by regex.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllow {
    #[serde(default)]
    pub(super) users: Vec<String>,
    #[serde(default)]
    pub(super) sources: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) token: Option<String>,
    pub(super) token_env: Option<String>,
    /// A port of its own for the admin service (and the replicas' exchange); none: on `listen`.
    #[serde(default)]
    pub(super) listen: Option<String>,
}

/// A token, written in the file or named by an environment variable.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) token: Option<String>,
    pub(super) token_env: Option<String>,
}

/// `listen_tls`: the router's certificate and key; with `client_ca_file`, clients must present a
/// certificate signed by it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListenTls {
    pub(super) cert_file: PathBuf,
    pub(super) key_file: PathBuf,
    #[serde(default)]
    pub(super) client_ca_file: Option<PathBuf>,
}

/// `coordinator_tls`: the CA that signs coordinator certificates, and whether the system roots count too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCoordinatorTls {
    #[serde(default)]
    pub(super) ca_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) system_roots: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    pub(super) user: String,
    pub(super) password: Option<String>,
    pub(super) password_env: Option<String>,
}

pub(super) fn default_routing_header() -> String {
    DEFAULT_ROUTING_HEADER.to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) name: String,
    pub(super) url: String,
    pub(super) group: String,
    #[serde(default)]
    pub(super) envoy_cluster: Option<String>,
    #[serde(default = "default_weight")]
    pub(super) weight: f64,
    #[serde(default = "default_enabled")]
    pub(super) enabled: bool,
}

pub(super) fn default_weight() -> f64 {
    1.0
}

pub(super) fn default_enabled() -> bool {
    true
}
