//! `trino-emulator`: a stand-in Trino coordinator for end-to-end tests and load benchmarks.
//!
//! It speaks the client protocol (`/v1/statement` queued → executing pages, cancel, query info, node
//! info) faithfully and strictly, as docs/trino-conformance.md says Trino does, row by row: by default as
//! the newest Trino it covers with Trino's default configuration, with flags for the other modes and
//! releases. Any query id, slug or token it did not issue is refused as Trino refuses it, so a misrouted
//! request fails loudly. Every row of an ordinary query names the emulator (`--name`), so a client can
//! tell which instance ran it.
//!
//! ```text
//! trino-emulator --name NAME [--listen HOST:PORT] [--coordinator-id XXXXX] [--queued-polls N]
//!                [--forget-after-secs S] [--max-queries N]
//!                [--forwarded reject|accept|ignore] [--process-forwarded] [--trino-version N]
//!                [--spooling-retrieval storage|coordinator-storage-redirect|coordinator-proxy]
//!                [--query-access all|owner]
//!                [--starting-seconds N] [--ui-password PASS] [--tls-cert FILE --tls-key FILE]
//! ```
//!
//! With `--tls-cert` and `--tls-key` it serves HTTPS (HTTP/1.1 over TLS, [`tls`]) instead of HTTP.
//!
//! A flag given twice takes its last value (so a harness may append `--listen 127.0.0.1:PORT` to its
//! defaults). The listening socket has `SO_REUSEADDR`, so an emulator restarted on the port of one that
//! was just killed binds at once even while old connections linger in TIME_WAIT. Connections have
//! `TCP_NODELAY`.
//!
//! Once bound it prints exactly one stdout line, `listening on IP:PORT`; logs go to stderr (`RUST_LOG`).
//! SIGTERM or SIGINT stops it (in-flight requests get up to 5 s; exit status 0).
//!
//! Modules: [`trino_version`] what differs between Trino releases, [`uri_compliance`] the paths Jetty
//! refuses, [`forwarded`] forwarded headers and external URIs, [`jersey`] the path resources are matched
//! on, [`auth`] users and query access, [`refusals`] how Trino spells refusals, [`query_id`] ids, [`slug`]
//! URI slugs, [`sql`] statement kinds and hints, [`session`] session
//! and transaction headers, [`plan`] what a query will answer, [`queries`] the per-query state machine,
//! [`results`] QueryResults JSON, [`rows`] the rows of data pages (rendered once per shape),
//! [`spooling`] the spooling protocol and its segments, [`registry`] the shared query map, [`node`]
//! health documents, node state and load statistics, [`ui`] web UI login sessions, [`http`] the axum
//! handlers, [`fault`] faults switched on at run time (hang, garbage, slow), [`tls`] the HTTPS listener.

mod auth;
mod fault;
mod forwarded;
mod http;
mod jersey;
mod node;
mod plan;
mod queries;
mod query_id;
mod refusals;
mod registry;
mod results;
mod rows;
mod session;
mod slug;
mod spooling;
mod sql;
mod tls;
mod trino_version;
mod ui;
mod uri_compliance;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::auth::QueryAccess;
use crate::http::{App, Counters};
use crate::node::NodeControl;
use crate::query_id::CoordinatorId;
use crate::registry::Registry;
use crate::rows::PageRows;
use crate::spooling::{Retrieval, Segments};
use crate::trino_version::Version;
use crate::ui::Sessions;

/// How long in-flight requests may run after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The listen backlog (as tokio's `TcpListener::bind`).
const LISTEN_BACKLOG: u32 = 1024;
/// How often idle queries are looked for (at most; more often with a short `--forget-after-secs`).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(
    name = "trino-emulator",
    version,
    about = "A stand-in Trino coordinator for tests",
    args_override_self = true
)]
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
    /// Forget a query this many seconds after its last request (and a spooled segment this many seconds
    /// after it was issued).
    #[arg(long, default_value_t = 900)]
    forget_after_secs: u64,
    /// Keep at most this many queries (beyond it the oldest are forgotten, finished ones first).
    #[arg(long, default_value_t = 100_000)]
    max_queries: usize,
    /// Trino's `http-server.process-forwarded`: `reject` (Trino's default: 406 for any `X-Forwarded-*`
    /// header), `accept` (URIs follow X-Forwarded-Proto/Host/Port/Prefix and Forwarded), `ignore` (they are
    /// dropped unread).
    #[arg(long, value_enum, default_value_t = forwarded::Mode::Reject)]
    forwarded: forwarded::Mode,
    /// The same as `--forwarded accept` (Trino's `http-server.process-forwarded=true`).
    #[arg(long)]
    process_forwarded: bool,
    /// The Trino release to answer as (`/v1/info` fields, `infoUri`, `X-Forwarded-Prefix`).
    #[arg(long, default_value_t = Version::NEWEST)]
    trino_version: Version,
    /// Trino's `protocol.spooling.retrieval-mode`.
    #[arg(long, value_enum, default_value_t = Retrieval::Storage)]
    spooling_retrieval: Retrieval,
    /// Who may view and kill a query on `/v1/query` and `/ui/api/query`: `all` (Trino's default access
    /// control) or `owner` (403 for anyone but the user who submitted it).
    #[arg(long, value_enum, default_value_t = QueryAccess::All)]
    query_access: QueryAccess,
    /// `/v1/info` says `"starting": true` for this many seconds after start (`PUT /v1/emulator/starting`
    /// overrides it).
    #[arg(long, default_value_t = 0)]
    starting_seconds: u64,
    /// The password a web UI login (`POST /ui/login`) needs; without it any user name logs in.
    #[arg(long)]
    ui_password: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
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
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let listener = bind(&cli.listen).await?;
    let local = listener.local_addr()?;
    let coordinator_id = cli.coordinator_id.unwrap_or_else(CoordinatorId::random);
    let app = Arc::new(App {
        rows: PageRows::new(cli.name.as_str()),
        name: cli.name,
        coordinator_id: coordinator_id.clone(),
        registry: Registry::new(coordinator_id.clone(), cli.queued_polls),
        counters: Counters::default(),
        started: Instant::now(),
        node: NodeControl::new(Duration::from_secs(cli.starting_seconds)),
        sessions: Sessions::new(cli.ui_password),
        segments: Segments::new(Duration::from_secs(cli.forget_after_secs)),
        forwarded: if cli.process_forwarded { forwarded::Mode::Accept } else { cli.forwarded },
        version: cli.trino_version,
        retrieval: cli.spooling_retrieval,
        query_access: cli.query_access,
        scheme: if tls.is_some() { "https" } else { "http" },
        local_address: local.to_string(),
    });

    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {local}")?;
        stdout.flush()?;
    }
    tracing::info!(
        name = %app.name,
        %coordinator_id,
        %local,
        https = tls.is_some(),
        forwarded = app.forwarded.as_str(),
        trino_version = %app.version,
        spooling_retrieval = app.retrieval.as_str(),
        "trino-emulator ready"
    );

    let sweeper =
        tokio::spawn(sweep(app.clone(), Duration::from_secs(cli.forget_after_secs), cli.max_queries));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // TCP_NODELAY on every connection, as Trino's HTTP server (Jetty) sets it: a page goes out in
    // pieces (its rows array is not copied), and Nagle's algorithm would hold the last piece back until
    // the client's delayed ACK.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let stopped = async {
        let _ = stop_rx.await;
    };
    let server = match tls {
        None => tokio::spawn(
            axum::serve(listener, http::router(app)).with_graceful_shutdown(stopped).into_future(),
        ),
        Some(config) => tokio::spawn(
            axum::serve(tls::TlsListener::new(listener, config)?, http::router(app))
                .with_graceful_shutdown(stopped)
                .into_future(),
        ),
    };

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

/// Listens on the first address `listen` resolves to that binds, with `SO_REUSEADDR` set explicitly.
async fn bind(listen: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(listen).await? {
        match reusable_socket(addr).and_then(|socket| {
            socket.bind(addr)?;
            socket.listen(LISTEN_BACKLOG)
        }) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{listen}: no address to listen on"))
    }))
}

/// A TCP socket for `addr`'s family with `SO_REUSEADDR`.
fn reusable_socket(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

/// Periodically forgets queries idle for longer than `max_idle`, the oldest beyond `max_queries`, and
/// expired spooled segments.
async fn sweep(app: Arc<App>, max_idle: Duration, max_queries: usize) {
    let period = (max_idle / 4).clamp(Duration::from_secs(1), SWEEP_EVERY);
    let mut every = tokio::time::interval(period);
    loop {
        every.tick().await;
        // Forgetting hundreds of thousands of queries takes a while: not on a worker of the runtime.
        let shared = app.clone();
        let forgotten = tokio::task::spawn_blocking(move || {
            shared.registry.forget(Instant::now(), max_idle, max_queries)
        })
        .await
        .unwrap_or(0);
        if forgotten > 0 {
            tracing::debug!(forgotten, "forgot idle queries");
        }
        let expired = app.segments.expire(Instant::now());
        if expired > 0 {
            tracing::debug!(expired, "forgot expired spooled segments");
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn flags_parse_and_the_last_one_wins() {
        let cli = Cli::try_parse_from([
            "trino-emulator",
            "--name",
            "a",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:8080",
            "--starting-seconds",
            "7",
            "--ui-password",
            "pw",
        ])
        .unwrap();
        assert_eq!(
            (cli.listen.as_str(), cli.starting_seconds, cli.ui_password.as_deref()),
            ("127.0.0.1:8080", 7, Some("pw"))
        );
        let cli = Cli::try_parse_from(["trino-emulator", "--name", "a"]).unwrap();
        assert_eq!((cli.starting_seconds, cli.ui_password, cli.tls_cert), (0, None, None));
        assert!(
            Cli::try_parse_from(["trino-emulator", "--name", "a", "--tls-cert", "c.pem"]).is_err(),
            "needs its key"
        );
        assert!(Cli::try_parse_from(["trino-emulator", "--name", "a", "--starting-seconds", "-1"]).is_err());
    }

    // conformance: F1, F2, F3
    #[test]
    fn defaults_are_trinos_and_the_modes_are_flags() {
        let cli = Cli::try_parse_from(["trino-emulator", "--name", "a"]).unwrap();
        assert_eq!(
            (
                cli.forwarded,
                cli.process_forwarded,
                cli.trino_version,
                cli.spooling_retrieval,
                cli.query_access
            ),
            (forwarded::Mode::Reject, false, Version::NEWEST, Retrieval::Storage, QueryAccess::All)
        );
        for (mode, expected) in [
            ("reject", forwarded::Mode::Reject),
            ("accept", forwarded::Mode::Accept),
            ("ignore", forwarded::Mode::Ignore),
        ] {
            let cli = Cli::try_parse_from(["trino-emulator", "--name", "a", "--forwarded", mode]).unwrap();
            assert_eq!(cli.forwarded, expected);
        }
        let cli = Cli::try_parse_from([
            "trino-emulator",
            "--name",
            "a",
            "--forwarded",
            "accept",
            "--process-forwarded",
            "--trino-version",
            "457",
            "--spooling-retrieval",
            "coordinator-proxy",
            "--query-access",
            "owner",
        ])
        .unwrap();
        assert_eq!(
            (cli.process_forwarded, cli.trino_version.number(), cli.spooling_retrieval, cli.query_access),
            (true, 457, Retrieval::CoordinatorProxy, QueryAccess::Owner)
        );
        for bad in
            [["--forwarded", "true"], ["--trino-version", "440"], ["--spooling-retrieval", "worker-proxy"]]
        {
            assert!(
                Cli::try_parse_from(["trino-emulator", "--name", "a", bad[0], bad[1]]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn listener_rebinds_a_port_in_time_wait() {
        let listener = bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(reusable_socket(addr).unwrap().reuseaddr().unwrap());
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server_side, _) = listener.accept().await.unwrap();
        // The server closes first, so its side of the connection ends in TIME_WAIT on `addr`.
        drop(server_side);
        assert_eq!(client.read(&mut [0u8; 1]).await.unwrap(), 0);
        drop(client);
        drop(listener);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if cfg!(target_os = "linux") {
            // Without SO_REUSEADDR the port is still taken (this is what the flag is for).
            let plain = tokio::net::TcpSocket::new_v4().unwrap();
            plain.set_reuseaddr(false).unwrap();
            assert_eq!(
                plain.bind(addr).unwrap_err().kind(),
                std::io::ErrorKind::AddrInUse,
                "expected a TIME_WAIT socket on {addr}"
            );
        }
        let again = bind(&addr.to_string()).await.expect("rebinding with SO_REUSEADDR");
        assert_eq!(again.local_addr().unwrap(), addr);
    }

    #[tokio::test]
    async fn bind_reports_unusable_addresses() {
        assert!(bind("not an address").await.is_err());
        let taken = bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        assert_eq!(bind(&addr.to_string()).await.unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
    }
}
