//! `trino-router`: wiring of the command line to the library. No decisions live here.

use std::process::ExitCode;

use clap::Parser;
use trino_router::cli::{Cli, Command, LogFormat};
use trino_router::config::Config;
use trino_router::envoy_bootstrap::{Addresses, bootstrap_yaml};
use trino_router::server::{ConfigSource, Server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match config.load() {
            Ok(loaded) => {
                println!(
                    "{}: ok ({} clusters in {} groups)",
                    config.config.display(),
                    loaded.clusters.len(),
                    loaded.groups.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::EnvoyConfig { config, listen, admin, mut routers } => match config.load() {
            Ok(loaded) => {
                if routers.is_empty() {
                    routers.push(loaded.listen);
                }
                if routers.iter().any(|r| r.port() == 0) {
                    return fail(
                        "the router's gRPC port is 0: pass --router HOST:PORT (or TRINO_ROUTER_LISTEN)",
                    );
                }
                print!("{}", bootstrap_yaml(&loaded, &Addresses { listen, admin, routers }));
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
            match runtime().block_on(trino_router::admin_client::run(&connection, &action)) {
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
    let server =
        Server::bind(config, Some(source)).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = server.local_addr()?;
    // The one line on stdout: scripts and tests wait for it to learn the real port.
    println!("listening on {addr}");
    tracing::info!(%addr, clusters, "serving ext_proc, admin and grpc.health.v1");
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
