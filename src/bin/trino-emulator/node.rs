//! The coordinator's health documents: `GET /v1/info`, `/v1/info/state` and `/v1/status`.
//!
//! `/v1/info` is exactly Trino's shape (no coordinator id: trino#23910 was not merged). The emulator is
//! always ACTIVE and never `starting`. Durations print like airlift's `Duration` (`12.34s`, `1.50m`).

use std::time::Duration;

use serde_json::{Value, json};

/// The version string every emulator reports.
pub const VERSION: &str = "476-emulator";
pub const ENVIRONMENT: &str = "emulator";

pub fn info(uptime: Duration) -> Value {
    json!({
        "nodeVersion": {"version": VERSION},
        "environment": ENVIRONMENT,
        "coordinator": true,
        "starting": false,
        "uptime": succinct(uptime),
    })
}

pub fn status(node_id: &str, address: &str, uptime: Duration) -> Value {
    let processors = std::thread::available_parallelism().map_or(1, usize::from);
    json!({
        "nodeId": node_id,
        "nodeVersion": {"version": VERSION},
        "environment": ENVIRONMENT,
        "coordinator": true,
        "uptime": succinct(uptime),
        "externalAddress": address,
        "internalAddress": address,
        "memoryInfo": {"availableProcessors": processors},
        "processors": processors,
        "processCpuLoad": 0.0,
        "systemCpuLoad": 0.0,
        "heapUsed": 0,
        "heapAvailable": 0,
        "nonHeapUsed": 0,
    })
}

/// airlift's `Duration.convertToMostSuccinctTimeUnit().toString()`: two decimals, largest unit ≥ 1.
pub fn succinct(d: Duration) -> String {
    let nanos = d.as_nanos() as f64;
    const UNITS: [(&str, f64); 7] =
        [("d", 86_400e9), ("h", 3_600e9), ("m", 60e9), ("s", 1e9), ("ms", 1e6), ("us", 1e3), ("ns", 1.0)];
    let (unit, size) = UNITS.into_iter().find(|(_, size)| nanos >= *size).unwrap_or(("ns", 1.0));
    format!("{:.2}{unit}", nanos / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succinct_durations() {
        for (d, expected) in [
            (Duration::ZERO, "0.00ns"),
            (Duration::from_nanos(1500), "1.50us"),
            (Duration::from_millis(250), "250.00ms"),
            (Duration::from_millis(12_340), "12.34s"),
            (Duration::from_secs(90), "1.50m"),
            (Duration::from_secs(7200), "2.00h"),
            (Duration::from_secs(86_400 * 3), "3.00d"),
        ] {
            assert_eq!(succinct(d), expected, "{d:?}");
        }
    }

    #[test]
    fn info_shape() {
        let v = info(Duration::from_secs(1));
        assert_eq!(v["nodeVersion"]["version"], VERSION);
        assert_eq!((v["coordinator"].clone(), v["starting"].clone()), (json!(true), json!(false)));
        assert_eq!(v["uptime"], "1.00s");
    }
}
