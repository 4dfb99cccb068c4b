//! `trino-load`: a load generator speaking the Trino client protocol, for benchmarking the router (through
//! Envoy) and the emulator.
//!
//! ```text
//! trino-load --url http://127.0.0.1:PORT [--url ...]   # virtual client i uses url[i % n]
//!            [--spread-header NAME=V1,V2,...]...       # client i sends NAME: V[i % n] on every request
//!            [--header NAME:VALUE]...                   # extra headers on every request
//!            [--connections 32] [--duration 10s] [--warmup 2s]
//!            --mix tiny|short|newquery|long|paged|large
//!            [--threads 1] [--json]
//! ```
//!
//! `--connections N` virtual clients (tokio tasks) each own exactly one keep-alive HTTP/1.1 connection
//! and run whole queries on it in a loop ([`client`]); every request carries `X-Trino-User: bench`. The
//! mixes are in [`mix`]. After the warmup, requests completing before the end are measured ([`stats`]);
//! the report (a table, or one JSON object with `--json`) goes to stdout, and so does nothing else.
//! `--threads 1` (the default) runs everything on one thread, the cheapest in CPU; more threads use a
//! multi-thread runtime. `cpu_s` is this process's CPU time (user + system) inside the measurement
//! window. Exit status: 0 after a run (errors are in the report), 2 for bad arguments.
//!
//! The JSON report (rates per second of the measured `duration_s`; 1 MB = 10^6 bytes of response bodies):
//!
//! ```text
//! {"scenario", "connections", "duration_s", "warmup_s", "queries", "queries_per_s", "requests",
//!  "requests_per_s", "followups", "followups_per_s", "bytes", "mb_per_s", "rows", "errors",
//!  "error_samples": [up to 3 messages], "connects",
//!  "latency_ms": {"post": {"count", "p50", "p90", "p99"}, "followup": {...}}, "cpu_s"}
//! ```
//!
//! `errors` counts non-2xx answers, transport errors, unreadable answers and answers with an `error`,
//! over the whole run (warmup included); `connects` is the TCP connections opened (= `connections`
//! unless some failed); `rows` the rows received in `data`.

mod client;
mod mix;
mod stats;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::client::{Client, Target};
use crate::mix::Mix;
use crate::stats::{Recorder, Run};

#[derive(Debug, Parser)]
#[command(name = "trino-load", version, about = "Load generator speaking the Trino client protocol")]
struct Cli {
    /// Server base URL (`http://host:port[/prefix]`); virtual client i uses url[i % n].
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// `NAME=V1,V2,...`: virtual client i sends header NAME with value V[i % n] on every request.
    #[arg(long = "spread-header")]
    spread_headers: Vec<String>,
    /// `NAME:VALUE`: an extra header on every request.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Virtual clients, each with one TCP connection of its own.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// How long to measure (after the warmup).
    #[arg(long, default_value = "10s", value_parser = duration)]
    duration: Duration,
    /// How long to run before measuring.
    #[arg(long, default_value = "2s", value_parser = duration)]
    warmup: Duration,
    #[arg(long, value_enum)]
    mix: Mix,
    /// Runtime threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// What every virtual client needs, checked before the run starts.
struct Setup {
    targets: Vec<Target>,
    /// Headers every client sends.
    common: HeaderMap,
    /// `(name, values)`: client i sends `values[i % len]`.
    spread: Vec<(HeaderName, Vec<HeaderValue>)>,
}

impl Setup {
    fn new(cli: &Cli) -> Result<Setup, String> {
        if cli.connections == 0 || cli.duration.is_zero() || cli.threads == 0 {
            return Err("--connections, --duration and --threads must be positive".to_owned());
        }
        let targets = cli.urls.iter().map(|u| Target::parse(u)).collect::<Result<_, _>>()?;
        let mut common = HeaderMap::new();
        common.insert("x-trino-user", HeaderValue::from_static("bench"));
        common.insert(http::header::USER_AGENT, HeaderValue::from_static("trino-load"));
        for header in &cli.headers {
            let (name, value) =
                header.split_once(':').ok_or_else(|| format!("--header {header:?}: expected NAME:VALUE"))?;
            common.append(header_name(name)?, header_value(value.trim())?);
        }
        let mut spread = Vec::new();
        for header in &cli.spread_headers {
            let (name, values) = header
                .split_once('=')
                .ok_or_else(|| format!("--spread-header {header:?}: expected NAME=V1,V2,..."))?;
            let values = values.split(',').map(|v| header_value(v.trim())).collect::<Result<_, _>>()?;
            spread.push((header_name(name)?, values));
        }
        Ok(Setup { targets, common, spread })
    }

    fn client(&self, index: usize, sql: &Bytes, record: Recorder, end: Instant) -> Client {
        let mut headers = self.common.clone();
        for (name, values) in &self.spread {
            headers.insert(name.clone(), values[index % values.len()].clone());
        }
        let target = self.targets[index % self.targets.len()].clone();
        Client::new(target, headers, sql.clone(), record, end)
    }
}

/// `10s`, `1.5s`, `500ms`, `2m` (humantime), or a bare number of seconds.
fn duration(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}")),
        Err(_) => humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}")),
    }
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::try_from(name.trim()).map_err(|e| format!("header name {name:?}: {e}"))
}

fn header_value(value: &str) -> Result<HeaderValue, String> {
    HeaderValue::try_from(value).map_err(|e| format!("header value {value:?}: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let setup = match Setup::new(&cli) {
        Ok(setup) => setup,
        Err(message) => {
            eprintln!("trino-load: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(cli.threads).enable_all().build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("trino-load: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (run, total) = runtime.block_on(load(&cli, &setup));
    if cli.json {
        println!("{}", stats::to_json(&run, &total));
    } else {
        print!("{}", stats::to_table(&run, &total));
    }
    ExitCode::SUCCESS
}

async fn load(cli: &Cli, setup: &Setup) -> (Run, Recorder) {
    let start = Instant::now();
    let from = start + cli.warmup;
    let end = from + cli.duration;
    let sql = Bytes::from_static(cli.mix.sql().as_bytes());
    let clients: Vec<_> = (0..cli.connections)
        .map(|i| tokio::spawn(setup.client(i, &sql, Recorder::new(from, end), end).run()))
        .collect();
    tokio::time::sleep_until(from.into()).await;
    let cpu_from = cpu_seconds();
    tokio::time::sleep_until(end.into()).await;
    let cpu_s = cpu_seconds() - cpu_from;
    let mut total = Recorder::new(from, end);
    for client in clients {
        match client.await {
            Ok(record) => total.merge(&record),
            Err(e) => total.error(|| format!("virtual client failed: {e}")),
        }
    }
    let run = Run {
        scenario: cli.mix.name(),
        connections: cli.connections,
        duration: cli.duration,
        warmup: cli.warmup,
        cpu_s,
    };
    (run, total)
}

/// This process's CPU time so far (user + system, all threads), from `/proc/self/stat`; 0 if unreadable.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime are 14, 15.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = fields.get(11..13).map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    ticks as f64 / clock_ticks_per_second() as f64
}

/// `AT_CLKTCK` from the process's auxiliary vector (the unit of `/proc/*/stat` times); 100 if unknown.
fn clock_ticks_per_second() -> u64 {
    const AT_CLKTCK: u64 = 17;
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    let word = |b: &[u8]| b.try_into().map_or(0, u64::from_ne_bytes);
    auxv.chunks_exact(16)
        .find(|pair| word(&pair[..8]) == AT_CLKTCK)
        .map(|pair| word(&pair[8..]))
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from([&["trino-load", "--mix", "short"], args].concat()).unwrap()
    }

    #[test]
    fn clients_spread_over_urls_and_header_values() {
        let cli = cli(&[
            "--url",
            "http://127.0.0.1:1",
            "--url",
            "http://127.0.0.1:2",
            "--spread-header",
            "X-Trino-Routing-Group=a,b,c",
            "--header",
            "X-Trino-Source: bench-tool",
        ]);
        assert_eq!(
            (cli.connections, cli.duration, cli.warmup),
            (32, Duration::from_secs(10), Duration::from_secs(2))
        );
        let setup = Setup::new(&cli).unwrap();
        assert_eq!(setup.common["x-trino-source"], "bench-tool");
        assert_eq!(setup.common["x-trino-user"], "bench");
        let values: Vec<_> = (0..4).map(|i| setup.spread[0].1[i % 3].to_str().unwrap().to_owned()).collect();
        assert_eq!(values, ["a", "b", "c", "a"]);
        assert_eq!(setup.targets.len(), 2);
    }

    #[test]
    fn durations() {
        for (text, ms) in [("10s", 10_000), ("1.5s", 1500), ("250ms", 250), ("2", 2000), ("0.5", 500)] {
            assert_eq!(duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        assert!(duration("-1").is_err() && duration("soon").is_err());
    }

    #[test]
    fn bad_arguments_are_refused() {
        for args in [
            &["--url", "http://x:1", "--header", "no-colon"][..],
            &["--url", "http://x:1", "--spread-header", "no-equals"],
            &["--url", "http://x:1", "--connections", "0"],
            &["--url", "ftp://x:1"],
        ] {
            assert!(Setup::new(&cli(args)).is_err(), "{args:?}");
        }
    }

    #[test]
    fn cpu_time_is_readable() {
        assert!(clock_ticks_per_second() >= 100);
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_seconds() > 0.0);
    }
}
