//! What a run measured: each virtual client fills its own [`Recorder`] (no sharing, no locks); the
//! recorders are merged at the end and turned into the report (a table, or one JSON object).
//!
//! Throughput and latency count only requests that complete inside the measurement window (after the
//! warmup, before the end). Errors count over the whole run, warmup included: an error is a finding
//! whenever it happens.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// How many error messages a report keeps.
const ERROR_SAMPLES: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Post,
    Followup,
}

/// One virtual client's figures (and, merged, the run's).
pub struct Recorder {
    from: Instant,
    end: Instant,
    post: Histogram<u64>,
    followup: Histogram<u64>,
    pub queries: u64,
    pub bytes: u64,
    pub rows: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// TCP connections opened (one per client unless a connection failed).
    pub connects: u64,
}

/// Latencies in microseconds, from 1 µs to an hour, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Recorder {
    pub fn new(from: Instant, end: Instant) -> Self {
        Self {
            from,
            end,
            post: histogram(),
            followup: histogram(),
            queries: 0,
            bytes: 0,
            rows: 0,
            errors: 0,
            error_samples: Vec::new(),
            connects: 0,
        }
    }

    fn in_window(&self, at: Instant) -> bool {
        at >= self.from && at < self.end
    }

    /// A request sent at `sent` whose whole answer (`bytes` of body, `rows` rows) arrived at `done`.
    pub fn request(&mut self, kind: Kind, sent: Instant, done: Instant, bytes: usize, rows: u64) {
        if !self.in_window(done) {
            return;
        }
        let micros = u64::try_from(done.duration_since(sent).as_micros()).unwrap_or(u64::MAX).max(1);
        let histogram = match kind {
            Kind::Post => &mut self.post,
            Kind::Followup => &mut self.followup,
        };
        histogram.saturating_record(micros);
        self.bytes += bytes as u64;
        self.rows += rows;
    }

    /// A query's final page arrived at `done`.
    pub fn query_done(&mut self, done: Instant) {
        if self.in_window(done) {
            self.queries += 1;
        }
    }

    pub fn error(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(message());
        }
    }

    pub fn merge(&mut self, other: &Recorder) {
        self.post.add(&other.post).expect("histograms of equal bounds");
        self.followup.add(&other.followup).expect("histograms of equal bounds");
        self.queries += other.queries;
        self.bytes += other.bytes;
        self.rows += other.rows;
        self.errors += other.errors;
        self.connects += other.connects;
        for sample in &other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(sample.clone());
            }
        }
    }
}

/// The run's settings, as the report names them.
pub struct Run {
    pub scenario: &'static str,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// CPU seconds this process used inside the measurement window.
    pub cpu_s: f64,
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn latency(histogram: &Histogram<u64>) -> Value {
    let at = |q: f64| if histogram.is_empty() { 0.0 } else { millis(histogram.value_at_quantile(q)) };
    json!({ "count": histogram.len(), "p50": at(0.50), "p90": at(0.90), "p99": at(0.99) })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The report as one JSON object.
pub fn to_json(run: &Run, total: &Recorder) -> Value {
    let secs = run.duration.as_secs_f64();
    let rate = |n: u64| round3(n as f64 / secs);
    let followups = total.followup.len();
    let requests = total.post.len() + followups;
    json!({
        "scenario": run.scenario,
        "connections": run.connections,
        "duration_s": round3(secs),
        "warmup_s": round3(run.warmup.as_secs_f64()),
        "queries": total.queries,
        "queries_per_s": rate(total.queries),
        "requests": requests,
        "requests_per_s": rate(requests),
        "followups": followups,
        "followups_per_s": rate(followups),
        "bytes": total.bytes,
        "mb_per_s": round3(total.bytes as f64 / 1e6 / secs),
        "rows": total.rows,
        "errors": total.errors,
        "error_samples": total.error_samples,
        "connects": total.connects,
        "latency_ms": { "post": latency(&total.post), "followup": latency(&total.followup) },
        "cpu_s": round3(run.cpu_s),
    })
}

/// The report as a small table for people.
pub fn to_table(run: &Run, total: &Recorder) -> String {
    let v = to_json(run, total);
    let n = |key: &str| v[key].as_u64().unwrap_or(0);
    let x = |key: &str| v[key].as_f64().unwrap_or(0.0);
    let mut out = format!(
        "trino-load: mix {}, {} connections, {:.1} s measured after {:.1} s warmup\n",
        run.scenario,
        run.connections,
        x("duration_s"),
        x("warmup_s")
    );
    for (name, count, rate) in [
        ("queries", "queries", "queries_per_s"),
        ("requests", "requests", "requests_per_s"),
        ("follow-ups", "followups", "followups_per_s"),
    ] {
        out += &format!("  {name:<12} {:>12} {:>12.1}/s\n", n(count), x(rate));
    }
    out +=
        &format!("  {:<12} {:>12} {:>12.3} MB/s  ({} rows)\n", "bytes", n("bytes"), x("mb_per_s"), n("rows"));
    out += &format!("  {:<12} {:>12}   ({} TCP connections)\n", "errors", n("errors"), n("connects"));
    for sample in &total.error_samples {
        out += &format!("    {sample}\n");
    }
    out += &format!("  {:<12} {:>12} {:>10} {:>10} {:>10}\n", "latency ms", "count", "p50", "p90", "p99");
    for (name, key) in [("POST", "post"), ("follow-up", "followup")] {
        let l = &v["latency_ms"][key];
        let q = |p: &str| l[p].as_f64().unwrap_or(0.0);
        let count = l["count"].as_u64().unwrap_or(0);
        out +=
            &format!("  {name:<12} {count:>12} {:>10.3} {:>10.3} {:>10.3}\n", q("p50"), q("p90"), q("p99"));
    }
    out += &format!("  {:<12} {:>12.3} s (trino-load, measured window)\n", "cpu", x("cpu_s"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_window_counts_but_every_error_does() {
        let t0 = Instant::now();
        let from = t0 + Duration::from_secs(1);
        let end = from + Duration::from_secs(2);
        let mut a = Recorder::new(from, end);
        a.request(Kind::Post, t0, t0 + Duration::from_millis(500), 100, 0); // warmup
        a.request(Kind::Post, from, from + Duration::from_micros(1500), 200, 0);
        a.request(Kind::Followup, from, from + Duration::from_micros(1900), 300, 7);
        a.request(Kind::Followup, end, end + Duration::from_millis(1), 400, 0); // after the end
        a.query_done(from + Duration::from_micros(1900));
        a.query_done(end);
        a.error(|| "first".to_owned());
        let mut b = Recorder::new(from, end);
        for i in 0..4 {
            b.error(|| format!("b{i}"));
        }
        a.merge(&b);
        let run = Run {
            scenario: "short",
            connections: 2,
            duration: Duration::from_secs(2),
            warmup: Duration::from_secs(1),
            cpu_s: 0.5,
        };
        let v = to_json(&run, &a);
        assert_eq!(
            (v["queries"].as_u64(), v["requests"].as_u64(), v["followups"].as_u64(), v["bytes"].as_u64()),
            (Some(1), Some(2), Some(1), Some(500))
        );
        assert_eq!((v["requests_per_s"].as_f64(), v["mb_per_s"].as_f64()), (Some(1.0), Some(0.0)));
        assert_eq!(v["rows"], 7);
        assert_eq!(v["errors"], 5);
        assert_eq!(v["error_samples"], json!(["first", "b0", "b1"]));
        assert_eq!(v["latency_ms"]["post"]["count"], 1);
        assert_eq!(v["latency_ms"]["post"]["p50"], 1.5);
        assert_eq!(v["latency_ms"]["followup"]["p99"], 1.9);
        let table = to_table(&run, &a);
        assert!(table.contains("follow-up") && table.contains("first"), "{table}");
    }
}
