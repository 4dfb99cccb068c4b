//! `trino-router`: wiring of the command line to the library. No decisions live here.

use std::process::ExitCode;

use clap::Parser;
use trino_router::domain::config::Config;
use trino_router::envoy::bootstrap::{Addresses, RouteSource, bootstrap_yaml, check_tls};
use trino_router::operate::cli::{Cli, Command, LogFormat};
use trino_router::operate::server::{ConfigSource, Server};

// The SQL analysis and the gRPC stack allocate many small, short-lived objects: mimalloc cut the
// router's CPU per new query (see benches/datapath-results.md) compared with glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config.load() {
            Ok(loaded) => {
                let results = trino_router::operate::explain::run_rule_tests(&loaded);
                let failed = results.iter().filter(|(_, r)| r.is_err()).count();
                for (name, result) in &results {
                    match result {
                        Ok(()) => println!("rule test {name:?}: ok"),
                        Err(e) => println!("rule test {name:?}: FAILED: {e}"),
                    }
                }
                if failed > 0 {
                    return fail(format!(
                        "{}: {failed} of {} rule tests failed",
                        config.config.display(),
                        results.len()
                    ));
                }
                println!(
                    "{}: ok ({} clusters in {} groups, {} rules, {} rule tests passed)",
                    config.config.display(),
                    loaded.clusters.len(),
                    loaded.groups.len(),
                    loaded.rules.rules().len(),
                    results.len()
                );
                if let Some(line) = trino_router::operate::explain::native_placement(&loaded) {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Explain { config, headers, user, source, sql, sql_file } => {
            let loaded = match config.load() {
                Ok(loaded) => loaded,
                Err(e) => return fail(e),
            };
            let sql = match (sql, sql_file) {
                (Some(sql), _) => sql,
                (None, Some(path)) => match std::fs::read_to_string(&path) {
                    Ok(sql) => sql,
                    Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
                },
                (None, None) => {
                    let mut sql = String::new();
                    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sql) {
                        return fail(format!("cannot read the SQL from standard input: {e}"));
                    }
                    sql
                }
            };
            let mut pairs: Vec<(String, String)> =
                vec![(":method".into(), "POST".into()), (":path".into(), "/v1/statement".into())];
            for header in &headers {
                match header.split_once(':') {
                    Some((name, value)) => pairs.push((name.trim().to_owned(), value.trim().to_owned())),
                    None => return fail(format!("--header {header:?}: expected `Name: value`")),
                }
            }
            pairs.extend(user.map(|u| ("x-trino-user".to_owned(), u)));
            pairs.extend(source.map(|s| ("x-trino-source".to_owned(), s)));
            let request = trino_router::domain::client_request::ClientRequest::from_headers(
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                &loaded.jwt_user_claim,
            );
            print!("{}", trino_router::operate::explain::explain(&loaded, &request, &sql));
            ExitCode::SUCCESS
        }
        Command::EnvoyConfig { config, listen, admin, mut routers, static_routes, tls } => {
            match config.load() {
                Ok(loaded) => {
                    let tls = tls.envoy_tls();
                    if let Err(e) = check_tls(&loaded, &tls) {
                        return fail(e);
                    }
                    if routers.is_empty() {
                        routers.push(loaded.listen.into());
                    }
                    if routers.iter().any(|r| r.port() == 0) {
                        return fail(
                            "the router's gRPC port is 0: pass --router HOST:PORT (or TRINO_ROUTER_LISTEN)",
                        );
                    }
                    let routes = if static_routes { RouteSource::Static } else { RouteSource::Discovered };
                    print!(
                        "{}",
                        bootstrap_yaml(&loaded, &Addresses { listen, admin, routers }, routes, &tls)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Kubernetes(args) => match trino_router::operate::kubernetes_manifests::render(&args) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Serve { config, log_format } => {
            init_logs(log_format);
            let loaded = match config.load() {
                Ok(loaded) => loaded,
                Err(e) => return fail(e),
            };
            let source = ConfigSource { path: config.config.clone(), overrides: config.overrides() };
            match runtime().block_on(serve(loaded, source)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Admin { connection, action } => {
            match runtime().block_on(trino_router::operate::admin_client::run(&connection, &action)) {
                Ok(output) => {
                    print!("{output}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

async fn serve(config: Config, source: ConfigSource) -> Result<(), Box<dyn std::error::Error>> {
    let listen = config.listen;
    let clusters = config.clusters.len();
    let config_tls = config.listen_tls.clone();
    let envoy_auth = config.envoy_auth.is_some();
    let server =
        Server::bind(config, Some(source)).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = server.local_addr()?;
    if let Some(metrics) = server.metrics_addr() {
        println!("metrics on {metrics}");
    }
    if let Some(admin) = server.admin_addr() {
        println!("admin on {admin}");
    }
    // The one line on stdout: scripts and tests wait for it to learn the real port.
    println!("listening on {addr}");
    let tls = match &config_tls {
        None => "off",
        Some(tls) if tls.client_ca.is_some() => "mTLS (client certificates required)",
        Some(_) => "TLS",
    };
    tracing::info!(%addr, clusters, tls, "serving ext_proc, admin and grpc.health.v1");
    if !envoy_auth && config_tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
        tracing::warn!(
            "any client that reaches {addr} can open ext_proc streams and teach the router: set envoy_auth \
             (or listen_tls with client_ca_file) unless only Envoy can reach this port"
        );
    }
    server.run(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: stopping"),
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("trino-router: {error}");
    ExitCode::FAILURE
}
