//! The router's configuration: YAML read once, checked once, and turned into a [`Config`] that the rest
//! of the router trusts without re-checking.
//!
//! Every problem is reported as a [`ConfigError`] naming the file, the field (as a path such as
//! `clusters[1].url`) and what is wrong. Unknown fields are errors, so a typo never silently changes
//! routing.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

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

/// What the environment may override after the file is read.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `listen` (e.g. from `TRINO_ROUTER_LISTEN`).
    pub listen: Option<String>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The gRPC address: ext_proc and grpc.health.v1.
    pub listen: SocketAddr,
    /// Lower-case name of the header Envoy routes on.
    pub routing_header: String,
    /// Index into [`Config::groups`] of the group that takes requests naming no known group.
    pub default_group: usize,
    /// In file order.
    pub clusters: Vec<Cluster>,
    /// In order of first appearance in `clusters`.
    pub groups: Vec<Group>,
    pub affinity: AffinitySettings,
}

/// One Trino cluster (one coordinator).
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: Arc<str>,
    /// The value written into the routing header: the Envoy cluster name.
    pub envoy_cluster: Arc<str>,
    pub group: Arc<str>,
    pub url: CoordinatorUrl,
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
    /// Indices into [`Config::clusters`], in file order; never empty.
    pub members: Vec<usize>,
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
}

impl AffinitySettings {
    fn default_max_queries() -> u64 {
        100_000
    }
    fn default_idle_expiry_seconds() -> u64 {
        3_600
    }
}

impl Default for AffinitySettings {
    fn default() -> Self {
        Self {
            max_queries: Self::default_max_queries(),
            idle_expiry_seconds: Self::default_idle_expiry_seconds(),
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
        raw.validate(overrides).map_err(|(field, message)| error(field, message))
    }

    /// The cluster with this name, if the config has it.
    pub fn cluster_named(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| &*c.name == name)
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
    #[serde(default = "default_routing_header")]
    routing_header: String,
    default_group: String,
    clusters: Vec<RawCluster>,
    #[serde(default)]
    affinity: AffinitySettings,
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
}

/// A field path and a message.
type FieldError = (String, String);

impl RawConfig {
    fn validate(self, overrides: &Overrides) -> Result<Config, FieldError> {
        let listen_text = overrides.listen.as_deref().unwrap_or(&self.listen);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            let origin = if overrides.listen.is_some() { " (from the environment)" } else { "" };
            (
                "listen".to_owned(),
                format!("`{listen_text}`{origin} is not an address of the form HOST:PORT with an IP host"),
            )
        })?;

        let routing_header = self.routing_header.to_ascii_lowercase();
        check_routing_header(&routing_header).map_err(|m| ("routing_header".to_owned(), m))?;

        if self.clusters.is_empty() {
            return Err(("clusters".to_owned(), "at least one cluster is needed".to_owned()));
        }
        let mut clusters = Vec::with_capacity(self.clusters.len());
        let mut groups: Vec<Group> = Vec::new();
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
            let group: Arc<str> = raw.group.into();
            match groups.iter_mut().find(|g| g.name == group) {
                Some(g) => g.members.push(i),
                None => groups.push(Group { name: group.clone(), members: vec![i] }),
            }
            clusters.push(Cluster { name: raw.name.into(), envoy_cluster: envoy_cluster.into(), group, url });
        }

        let default_group = groups.iter().position(|g| *g.name == *self.default_group).ok_or_else(|| {
            let known: BTreeMap<&str, ()> = groups.iter().map(|g| (&*g.name, ())).collect();
            let known: Vec<&str> = known.into_keys().collect();
            (
                "default_group".to_owned(),
                format!(
                    "no cluster is in group `{}` (groups with clusters: {})",
                    self.default_group,
                    known.join(", ")
                ),
            )
        })?;

        if self.affinity.max_queries == 0 {
            return Err(("affinity.max_queries".to_owned(), "must be at least 1".to_owned()));
        }
        if self.affinity.idle_expiry_seconds == 0 {
            return Err(("affinity.idle_expiry_seconds".to_owned(), "must be at least 1".to_owned()));
        }

        Ok(Config { listen, routing_header, default_group, clusters, groups, affinity: self.affinity })
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
        let overrides = Overrides { listen: Some("127.0.0.1:0".into()) };
        let config = Config::from_yaml(Path::new("r.yaml"), EXAMPLE, &overrides).unwrap();
        assert_eq!(config.listen.port(), 0);
        let overrides = Overrides { listen: Some("nonsense".into()) };
        let e = Config::from_yaml(Path::new("r.yaml"), EXAMPLE, &overrides).unwrap_err();
        assert!(e.message.contains("from the environment"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("routing_header: x-trino-cluster", "routing_header: x-trino-cluster\ncolour: blue", "colour"),
            ("    group: etl", "    group: etl\n    weight: 3", "clusters[2].weight: unknown field `weight`, expected one of `name`, `url`, `group`, `envoy_cluster` at line 15"),
            ("url: http://127.0.0.1:18082", "url: ftp://127.0.0.1:18082", "clusters[1].url: `ftp://127.0.0.1:18082` is not a coordinator URL (the scheme"),
            ("url: http://127.0.0.1:18082", "url: 127.0.0.1:18082", "clusters[1].url:"),
            ("url: http://127.0.0.1:18082", "url: http://127.0.0.1:18082/trino", "clusters[1].url:"),
            ("url: http://127.0.0.1:18082", "url: http://u:p@127.0.0.1:18082", "clusters[1].url:"),
            ("url: http://127.0.0.1:18082", "url: 7", "clusters[1].url:"),
            ("default_group: adhoc", "default_group: nope", "default_group: no cluster is in group `nope` (groups with clusters: adhoc, etl)"),
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
