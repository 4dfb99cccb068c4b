//! The command line: what each subcommand takes. Parsing only; `main.rs` wires the commands up.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::config::{Config, ConfigErrors, Overrides};
use crate::envoy::bootstrap::{EnvoyTls, RouterTls};
use crate::envoy::router_address::RouterAddress;

#[derive(Debug, Parser)]
#[command(
    name = "trino-router",
    version,
    about = "Routing decisions for Trino traffic, as an Envoy external processor"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the ext_proc gRPC service (and grpc.health.v1) until SIGTERM or Ctrl-C.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "TRINO_ROUTER_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Validate a config file: exit 0, or exit 1 naming the file, the field and the problem.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print an Envoy bootstrap (YAML) for a config: listener, ext_proc filters, routes and clusters.
    EnvoyConfig {
        #[command(flatten)]
        config: ConfigArgs,
        /// Envoy's Trino listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Envoy's admin interface.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// A router replica's gRPC address as Envoy dials it, or a name that resolves to every replica (a
        /// headless Service: each address becomes an endpoint); repeat for several [default: the config's
        /// `listen`].
        #[arg(long = "router", value_name = "HOST:PORT")]
        routers: Vec<RouterAddress>,
        /// Write the routes into the bootstrap instead of having the router serve them (RDS): no
        /// learned follow-up routes, so every request asks the router.
        #[arg(long)]
        static_routes: bool,
        #[command(flatten)]
        tls: EnvoyTlsArgs,
    },
    /// Dry run: show the facts the rules see for a request, each rule tried, and where a new query goes.
    Explain {
        #[command(flatten)]
        config: ConfigArgs,
        /// A request header, `Name: value` (repeatable), e.g. `X-Trino-User: alice`.
        #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// Shorthand for `--header 'X-Trino-User: USER'`.
        #[arg(long)]
        user: Option<String>,
        /// Shorthand for `--header 'X-Trino-Source: SOURCE'`.
        #[arg(long)]
        source: Option<String>,
        /// The SQL text [default: read from standard input].
        #[arg(long, conflicts_with = "sql_file")]
        sql: Option<String>,
        /// Read the SQL from this file.
        #[arg(long, value_name = "FILE")]
        sql_file: Option<PathBuf>,
    },
    /// Print Kubernetes objects that put the router behind Istio's ingress gateway or Envoy Gateway.
    Kubernetes(crate::operate::kubernetes_manifests::KubernetesArgs),
    /// Ask a running router: list clusters, drain, undrain, disable, enable, locate a query.
    Admin {
        #[command(flatten)]
        connection: AdminConnection,
        #[command(subcommand)]
        action: AdminAction,
    },
}

/// How to reach a router's admin API.
#[derive(Debug, Args)]
pub struct AdminConnection {
    /// A router replica's gRPC address; repeat (or separate with commas) for several. A host name is
    /// resolved to every address it has (a headless Service: every replica). Each replica also answers
    /// for its peers (`fleet.peers`), so one address shows the whole fleet.
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:50051",
        env = "TRINO_ROUTER_ADDRESS",
        value_delimiter = ','
    )]
    pub server: Vec<String>,
    /// The admin token.
    #[arg(long, env = "TRINO_ROUTER_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// With an https:// address: the CA (PEM) that signed the router's certificate [default: the system
    /// roots].
    #[arg(long, value_name = "FILE", env = "TRINO_ROUTER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// With an https:// address: this client's certificate (PEM), for a router that requires one
    /// (`listen_tls.client_ca_file`).
    #[arg(long, value_name = "FILE", env = "TRINO_ROUTER_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of --cert-file.
    #[arg(long, value_name = "FILE", env = "TRINO_ROUTER_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// The name the router's certificate must carry [default: the host of the address].
    #[arg(long, value_name = "NAME", env = "TRINO_ROUTER_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminAction {
    /// List clusters with health, operator state, load and queries in flight: one row per replica and
    /// cluster, with disagreements between replicas flagged under the table.
    Clusters {
        /// Only the replicas named by --server, not their peers.
        #[arg(long)]
        local: bool,
    },
    /// Stop sending new queries to a cluster (every replica); its queries finish.
    Drain {
        name: String,
        /// Wait until no replica counts a query in flight there, then report it.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Why (shown with the cluster's state on every replica).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Take new queries again.
    Undrain {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Take no new queries (a standby).
    Disable {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Take new queries (when healthy).
    Enable {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Which cluster runs a query.
    Locate { query_id: String },
}

/// How Envoy speaks TLS to the router and checks `https://` coordinators. Paths are as Envoy sees them.
#[derive(Debug, Args)]
pub struct EnvoyTlsArgs {
    /// The CA (PEM) that signed the router's certificate: Envoy dials the router over TLS (needed when
    /// the config has `listen_tls`).
    #[arg(long, value_name = "FILE")]
    pub router_ca: Option<PathBuf>,
    /// The name the router's certificate must carry, also sent as SNI [default: any name the CA signed].
    #[arg(long, value_name = "NAME", requires = "router_ca")]
    pub router_server_name: Option<String>,
    /// Envoy's certificate (PEM) for a router that requires client certificates
    /// (`listen_tls.client_ca_file`).
    #[arg(long, value_name = "FILE", requires_all = ["router_ca", "router_client_key"])]
    pub router_client_cert: Option<PathBuf>,
    /// The private key (PEM) of --router-client-cert.
    #[arg(long, value_name = "FILE", requires = "router_client_cert")]
    pub router_client_key: Option<PathBuf>,
    /// The CA (PEM) Envoy checks `https://` coordinators against [default: the config's
    /// `coordinator_tls.ca_file`, made absolute].
    #[arg(long, value_name = "FILE")]
    pub coordinator_ca: Option<PathBuf>,
}

impl EnvoyTlsArgs {
    pub fn envoy_tls(&self) -> EnvoyTls {
        EnvoyTls {
            router: self.router_ca.as_ref().map(|ca| RouterTls {
                ca: ca.clone(),
                server_name: self.router_server_name.clone(),
                client_cert: self.router_client_cert.clone().zip(self.router_client_key.clone()),
            }),
            coordinator_ca: self.coordinator_ca.clone(),
        }
    }
}

/// Where the config comes from.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The router config (YAML).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Replaces the config's `listen` address.
    #[arg(long, value_name = "HOST:PORT", env = "TRINO_ROUTER_LISTEN")]
    pub router_listen: Option<String>,
    /// This replica's name (metrics, `admin clusters`, the origin of its operator changes)
    /// [default: HOSTNAME, else the machine's host name].
    #[arg(long, value_name = "NAME", env = "TRINO_ROUTER_REPLICA")]
    pub replica: Option<String>,
    /// Replaces the config's `fleet.state_file` (each replica keeps its own).
    #[arg(long, value_name = "FILE", env = "TRINO_ROUTER_STATE_FILE")]
    pub state_file: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        Config::load(&self.config, &self.overrides())
    }

    /// What the environment supplies to this config (read again on every reload).
    pub fn overrides(&self) -> Overrides {
        let mut overrides = Overrides::from_process_env(self.router_listen.clone());
        // The flags win over the environment variables of the same name (clap read those already).
        let flags = [
            (crate::domain::config::fleet::REPLICA_ENV, self.replica.clone()),
            (
                crate::domain::config::fleet::STATE_FILE_ENV,
                self.state_file.as_ref().map(|p| p.display().to_string()),
            ),
        ];
        for (name, value) in flags {
            if let Some(value) = value {
                overrides.env.retain(|(k, _)| k != name);
                overrides.env.push((name.to_owned(), value));
            }
        }
        overrides
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn envoy_config_defaults() {
        let cli = Cli::try_parse_from(["trino-router", "envoy-config", "--config", "r.yaml"]).unwrap();
        let Command::EnvoyConfig { listen, admin, routers, .. } = cli.command else { panic!() };
        assert_eq!((listen.port(), admin.port(), routers), (8080, 9901, vec![]));
        let args = [
            "trino-router",
            "envoy-config",
            "--config",
            "r",
            "--router",
            "127.0.0.1:1",
            "--router",
            "127.0.0.1:2",
        ];
        let Command::EnvoyConfig { routers, .. } = Cli::try_parse_from(args).unwrap().command else {
            panic!()
        };
        assert_eq!(routers.len(), 2);
    }

    #[test]
    fn envoy_config_tls_options() {
        let parse = |extra: &[&str]| {
            let args = ["trino-router", "envoy-config", "--config", "r"].iter().chain(extra).copied();
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::EnvoyConfig { tls, .. } => tls.envoy_tls(),
                _ => panic!(),
            })
        };
        assert_eq!(parse(&[]).unwrap(), EnvoyTls::default());
        let tls = parse(&[
            "--router-ca",
            "/ca.pem",
            "--router-client-cert",
            "/envoy.pem",
            "--router-client-key",
            "/envoy-key.pem",
            "--router-server-name",
            "router.example.com",
        ])
        .unwrap();
        let router = tls.router.unwrap();
        assert_eq!(router.client_cert, Some(("/envoy.pem".into(), "/envoy-key.pem".into())));
        assert_eq!(router.server_name.as_deref(), Some("router.example.com"));
        assert!(
            parse(&["--router-client-cert", "/e.pem", "--router-client-key", "/k.pem"]).is_err(),
            "needs a CA"
        );
        assert!(
            parse(&["--router-ca", "/ca.pem", "--router-client-cert", "/e.pem"]).is_err(),
            "needs its key"
        );
    }
}
