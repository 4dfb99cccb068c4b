//! Where Envoy dials the router replicas (`envoy-config --router`), and how Envoy finds them.
//!
//! A replica is an IP address and port (`10.0.0.5:50051`, `[::1]:50051`), or a host name and port
//! (`trino-router-headless:50051`) that resolves to every replica — a Kubernetes headless Service. Envoy
//! must see each replica as its own endpoint: its own gRPC health check, its own outlier ejection, its own
//! share of streams. So a cluster of addresses only is STATIC, and a cluster with a name is STRICT_DNS,
//! where every address the name resolves to (IPv4 and IPv6: `ALL`) becomes an endpoint, and the set is
//! resolved again every 5 s as replicas come and go. (A name resolved to a Service's one virtual IP would
//! hide the replicas behind it: point `--router` at a headless Service.)

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde_json::{Value, json};

/// A router replica (or every replica behind a name) as Envoy dials it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterAddress {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl RouterAddress {
    pub fn port(&self) -> u16 {
        match self {
            RouterAddress::Ip(addr) => addr.port(),
            RouterAddress::Name { port, .. } => *port,
        }
    }

    /// An unspecified address (`0.0.0.0`, `::`) is dialled on loopback; names are dialled as they are.
    pub fn dialable(&self) -> RouterAddress {
        match self {
            RouterAddress::Ip(addr) => RouterAddress::Ip(match addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => {
                    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
                }
                IpAddr::V6(ip) if ip.is_unspecified() => {
                    SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
                }
                _ => *addr,
            }),
            name => name.clone(),
        }
    }

    /// Envoy's `address` for this replica.
    pub fn envoy_address(&self) -> Value {
        let (address, port) = match self.dialable() {
            RouterAddress::Ip(addr) => (addr.ip().to_string(), addr.port()),
            RouterAddress::Name { host, port } => (host, port),
        };
        json!({ "socket_address": { "address": address, "port_value": port } })
    }
}

/// How Envoy's cluster of router replicas finds its endpoints: STATIC for addresses only; STRICT_DNS as
/// soon as one is a name (an address in a STRICT_DNS cluster stays one endpoint).
pub fn discovery(routers: &[RouterAddress]) -> Value {
    if routers.iter().all(|r| matches!(r, RouterAddress::Ip(_))) {
        return json!({ "type": "STATIC" });
    }
    json!({
        "type": "STRICT_DNS",
        // Every address of every name: a dual-stack replica is then two endpoints, each health-checked.
        // The name is resolved again every 5 s (Envoy's default; `dns_refresh_rate` is deprecated in 1.40):
        // a replica that starts is found within about that of its DNS record (a headless Service lists
        // ready pods only); one that stops is already out through its failed health checks.
        "dns_lookup_family": "ALL",
    })
}

impl From<SocketAddr> for RouterAddress {
    fn from(addr: SocketAddr) -> Self {
        RouterAddress::Ip(addr)
    }
}

impl fmt::Display for RouterAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterAddress::Ip(addr) => addr.fmt(f),
            RouterAddress::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for RouterAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(RouterAddress::Ip(addr));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("{text:?}: expected HOST:PORT (an IP address or a host name, and a port)"));
        };
        let port: u16 = port.parse().map_err(|_| format!("{text:?}: {port:?} is not a port number"))?;
        if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
            return Err(format!("{text:?}: write an IPv6 address in brackets, e.g. [::1]:{port}"));
        }
        if !is_host_name(host) {
            return Err(format!(
                "{text:?}: {host:?} is not a host name (letters, digits, '-' and '.'; labels of 1 to 63 characters)"
            ));
        }
        Ok(RouterAddress::Name { host: host.to_owned(), port })
    }
}

/// A DNS host name (RFC 1123): dot-separated labels of letters, digits and inner hyphens; a trailing dot
/// (fully qualified) is allowed.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_names() {
        let name = |host: &str, port| RouterAddress::Name { host: host.into(), port };
        let table: &[(&str, Result<RouterAddress, &str>)] = &[
            ("10.0.0.5:50051", Ok(RouterAddress::Ip("10.0.0.5:50051".parse().unwrap()))),
            ("[::1]:50051", Ok(RouterAddress::Ip("[::1]:50051".parse().unwrap()))),
            ("trino-router-headless:50051", Ok(name("trino-router-headless", 50051))),
            (
                "trino-router-headless.trino-router.svc.cluster.local.:1",
                Ok(name("trino-router-headless.trino-router.svc.cluster.local.", 1)),
            ),
            ("localhost:9", Ok(name("localhost", 9))),
            ("trino-router", Err("expected HOST:PORT")),
            ("trino-router:http", Err("not a port number")),
            ("trino-router:70000", Err("not a port number")),
            ("::1:50051", Err("in brackets")),
            ("[::1:50051", Err("in brackets")),
            (":50051", Err("not a host name")),
            ("bad_name:1", Err("not a host name")),
            ("-bad:1", Err("not a host name")),
            ("a..b:1", Err("not a host name")),
        ];
        for (text, want) in table {
            match (text.parse::<RouterAddress>(), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn round_trips_and_dials_unspecified_on_loopback() {
        for text in ["10.0.0.5:50051", "[::1]:50051", "trino-router-headless:50051"] {
            assert_eq!(text.parse::<RouterAddress>().unwrap().to_string(), text);
        }
        let any: RouterAddress = "0.0.0.0:7".parse().unwrap();
        assert_eq!(any.dialable().to_string(), "127.0.0.1:7");
        let any6: RouterAddress = "[::]:7".parse().unwrap();
        assert_eq!(any6.envoy_address()["socket_address"]["address"], "::1");
        let named: RouterAddress = "r:7".parse().unwrap();
        assert_eq!(named.envoy_address(), json!({ "socket_address": { "address": "r", "port_value": 7 } }));
    }

    #[test]
    fn a_name_makes_the_cluster_strict_dns() {
        let ips: Vec<RouterAddress> = vec!["127.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()];
        assert_eq!(discovery(&ips), json!({ "type": "STATIC" }));
        let mixed: Vec<RouterAddress> = vec!["127.0.0.1:1".parse().unwrap(), "r:2".parse().unwrap()];
        let strict = discovery(&mixed);
        assert_eq!(strict["type"], "STRICT_DNS");
        assert_eq!(strict["dns_lookup_family"], "ALL", "every replica address is an endpoint");
    }
}
