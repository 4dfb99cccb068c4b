//! Why a new statement must run on one cluster — it belongs to a transaction that cluster started, or
//! it names a query running there — and how a transaction id names its cluster.
//!
//! Envoy (envoy-config's `response_headers_to_add`) prefixes every `X-Trino-Started-Transaction-Id` with
//! the Envoy cluster that answered, `{cluster}~{id}`, so the client's later `X-Trino-Transaction-Id`
//! names the cluster and any replica places it with no memory; the prefix is stripped for the
//! coordinator.

/// Why a new statement must run on one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// It carries `X-Trino-Transaction-Id` of a transaction that cluster started.
    Transaction,
    /// It names a query of that cluster (`CALL system.runtime.kill_query(...)`).
    NamedQuery,
}

/// Separates the Envoy cluster from Trino's own id in a transaction id as clients see it.
pub const TRANSACTION_CLUSTER_SEPARATOR: char = '~';

/// The transaction a request names by `X-Trino-Transaction-Id`: the trimmed value, unless empty or
/// `NONE` (what clients send outside a transaction).
pub fn named_transaction(header: Option<&str>) -> Option<&str> {
    header.map(str::trim).filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("NONE"))
}

/// `{envoy cluster}~{id}` → `(envoy cluster, id)`; the last separator counts (Envoy cluster names may
/// hold one, Trino's ids do not).
pub fn split_transaction_id(id: &str) -> Option<(&str, &str)> {
    id.rsplit_once(TRANSACTION_CLUSTER_SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids() {
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<(&'a str, &'a str)>);
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (None, None, None),
            (Some(""), None, None),
            (Some("NONE"), None, None),
            (Some("none"), None, None),
            (Some(" tx-1 "), Some("tx-1"), None),
            (Some("trino-a~tx-1"), Some("trino-a~tx-1"), Some(("trino-a", "tx-1"))),
            (Some("outbound|1||a~b~tx"), Some("outbound|1||a~b~tx"), Some(("outbound|1||a~b", "tx"))),
        ];
        for (header, named, split) in cases {
            assert_eq!(named_transaction(*header), *named, "{header:?}");
            assert_eq!(named.and_then(split_transaction_id), *split, "{header:?}");
        }
    }
}
