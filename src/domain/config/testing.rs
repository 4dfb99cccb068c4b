//! Config fixtures for unit tests: the configs tests share, and one way to read a test's own.

use std::path::Path;

use super::{Config, Overrides};

/// A config from YAML text; panics with the error when it is not valid.
pub fn config(yaml: &str) -> Config {
    Config::from_yaml(Path::new("t.yaml"), yaml, &Overrides::default())
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// One cluster `a` in group `adhoc`.
pub const ONE_CLUSTER: &str = "
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: a, url: 'http://127.0.0.1:1', group: adhoc}
";

/// Two clusters of the default group `adhoc` and one of `etl` with an Envoy cluster name of its own:
/// what the ext_proc stream tests route with.
pub const TWO_GROUPS: &str = "
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-b, url: 'http://127.0.0.1:2', group: adhoc}
  - {name: trino-etl, url: 'http://127.0.0.1:3', group: etl, envoy_cluster: 'outbound|1||etl'}
";

/// One cluster of the default group `adhoc` and one of `etl`: a base for configs with rules.
pub const ADHOC_AND_ETL: &str = "
listen: 127.0.0.1:1
default_group: adhoc
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-etl, url: 'http://127.0.0.1:3', group: etl}
";

/// The decision tables' config. Groups (by index): 0 etl (falls back to adhoc), 1 BI (falls back to
/// etl, then adhoc), 2 vault (admits only user `vault_bot` and sources `^airflow`), 3 adhoc (the
/// default). Clusters: 0 trino-a, 1 trino-b (adhoc), 2 trino-etl, 3 trino-etl2 (etl), 4 trino-bi (BI),
/// 5 trino-vault (vault; Envoy cluster `outbound|6||vault`). Rules: `writes` (inserts → etl, with a
/// header), `dashboards` (sources `^superset` → BI), `vault-bot` (user `vault_bot` → vault), and
/// `broken` (a CEL condition that always fails: no match).
pub const DECISIONS: &str = r#"
listen: 127.0.0.1:50051
default_group: adhoc
groups:
  - {name: etl, fallback: [adhoc]}
  - {name: BI, fallback: [etl, adhoc]}
  - {name: vault, allow: {users: [vault_bot], sources: ['^airflow']}}
clusters:
  - {name: trino-a, url: 'http://127.0.0.1:1', group: adhoc}
  - {name: trino-b, url: 'http://127.0.0.1:2', group: adhoc}
  - {name: trino-etl, url: 'http://127.0.0.1:3', group: etl}
  - {name: trino-etl2, url: 'http://127.0.0.1:4', group: etl}
  - {name: trino-bi, url: 'http://127.0.0.1:5', group: BI}
  - {name: trino-vault, url: 'http://127.0.0.1:6', group: vault, envoy_cluster: 'outbound|6||vault'}
rules:
  - {name: writes, when: 'statement.kind == "insert"', group: etl, set_headers: {X-Trino-Client-Tags: etl-write}}
  - {name: dashboards, match: {source: {regex: '^superset'}}, group: BI}
  - {name: vault-bot, match: {user: vault_bot}, group: vault}
  - {name: broken, when: 'request.nonexistent == "x"', group: BI}
"#;

/// A default group `front` that falls back to `middle`, which falls back to `back`: only `back` (and
/// `side`, which nothing falls back to) have clusters. Clusters: 0 back-1, 1 back-2 (back), 2 side-1.
pub const CHAIN: &str = "
listen: 127.0.0.1:1
default_group: front
groups:
  - {name: front, fallback: [middle]}
  - {name: middle, fallback: [back]}
clusters:
  - {name: back-1, url: 'http://127.0.0.1:1', group: back}
  - {name: back-2, url: 'http://127.0.0.1:2', group: back}
  - {name: side-1, url: 'http://127.0.0.1:3', group: side}
";
