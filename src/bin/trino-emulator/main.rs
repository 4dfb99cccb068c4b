//! `trino-emulator`: a stand-in Trino coordinator for end-to-end tests and load benchmarks.
//!
//! It speaks the client protocol (`/v1/statement` queued → executing pages, cancel, query info, node
//! info) faithfully and strictly: any query id, slug or token it did not issue gets 404, so a misrouted
//! request fails loudly. Every row of an ordinary query names the emulator (`--name`), so a client can
//! tell which instance ran it.
//!
//! ```text
//! trino-emulator --name NAME [--listen HOST:PORT] [--coordinator-id XXXXX] [--queued-polls N]
//!                [--forget-after-secs S] [--max-queries N] [--process-forwarded]
//! ```
//!
//! Once bound it prints exactly one stdout line, `listening on IP:PORT`; logs go to stderr (`RUST_LOG`).
//! SIGTERM or SIGINT stops it (in-flight requests get up to 5 s).
//!
//! Modules: [`query_id`] ids, [`slug`] URI slugs, [`sql`] statement kinds and hints, [`session`] session
//! and transaction headers, [`plan`] what a query will answer, [`queries`] the per-query state machine,
//! [`results`] QueryResults JSON, [`registry`] the shared query map, [`node`] health documents, [`http`]
//! the axum handlers.

mod http;
mod node;
mod plan;
mod queries;
mod query_id;
mod registry;
mod results;
mod session;
mod slug;
mod sql;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::http::{App, Counters};
use crate::query_id::CoordinatorId;
use crate::registry::Registry;

/// How long in-flight requests may run after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often idle queries are looked for (at most; more often with a short `--forget-after-secs`).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(name = "trino-emulator", version, about = "A stand-in Trino coordinator for tests")]
struct Cli {
    /// This instance's name: the `cluster` column of every result row, and the node id.
    #[arg(long)]
    name: String,
    /// Address to listen on (port 0: any free port; the bound one is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The 5-character coordinator id ending every query id (default: random, as Trino).
    #[arg(long)]
    coordinator_id: Option<CoordinatorId>,
    /// Queued GETs before a query is dispatched to executing (0 acts as 1).
    #[arg(long, default_value_t = 1)]
    queued_polls: u32,
    /// Forget a query this many seconds after its last request.
    #[arg(long, default_value_t = 900)]
    forget_after_secs: u64,
    /// Keep at most this many queries (beyond it the oldest are forgotten, finished ones first).
    #[arg(long, default_value_t = 100_000)]
    max_queries: usize,
    /// Honour X-Forwarded-Proto/Host/Port/Prefix when building URIs (Trino's
    /// `http-server.process-forwarded`).
    #[arg(long)]
    process_forwarded: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the tokio runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "trino-emulator failed");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(&cli.listen).await?;
    let local = listener.local_addr()?;
    let coordinator_id = cli.coordinator_id.unwrap_or_else(CoordinatorId::random);
    let app = Arc::new(App {
        name: cli.name,
        coordinator_id: coordinator_id.clone(),
        registry: Registry::new(coordinator_id.clone(), cli.queued_polls),
        counters: Counters::default(),
        started: Instant::now(),
        process_forwarded: cli.process_forwarded,
        local_address: local.to_string(),
    });

    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {local}")?;
        stdout.flush()?;
    }
    tracing::info!(name = %app.name, %coordinator_id, %local, "trino-emulator ready");

    let sweeper =
        tokio::spawn(sweep(app.clone(), Duration::from_secs(cli.forget_after_secs), cli.max_queries));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, http::router(app))
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future(),
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(());
    sweeper.abort();
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(result)) => result,
        Ok(Err(join_error)) => Err(std::io::Error::other(join_error)),
        Err(_) => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; exiting anyway");
            Ok(())
        }
    }
}

/// Periodically forgets queries idle for longer than `max_idle`, and the oldest beyond `max_queries`.
async fn sweep(app: Arc<App>, max_idle: Duration, max_queries: usize) {
    let period = (max_idle / 4).clamp(Duration::from_secs(1), SWEEP_EVERY);
    let mut every = tokio::time::interval(period);
    loop {
        every.tick().await;
        let forgotten = app.registry.forget(Instant::now(), max_idle, max_queries);
        if forgotten > 0 {
            tracing::debug!(forgotten, "forgot idle queries");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
