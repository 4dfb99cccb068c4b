//! Config reading and validation: what loads, and every error named by file and field.

use super::validate::parse_url;
use super::*;

const EXAMPLE: &str = "
listen: 127.0.0.1:50051
routing_header: x-trino-cluster
default_group: adhoc
clusters:
  - name: trino-a
    url: http://127.0.0.1:18081
    group: adhoc
  - name: trino-b
    url: http://127.0.0.1:18082
    group: adhoc
  - name: trino-etl
    url: http://127.0.0.1:18083
    group: etl
";

/// The config, or its first error (the test of several errors at once is below).
fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(Path::new("router.yaml"), text, &Overrides::default()).map_err(|e| e.first().clone())
}

/// The error for `EXAMPLE` with `from` replaced by `to`, as `field: message`.
fn error_after(from: &str, to: &str) -> String {
    assert!(EXAMPLE.contains(from), "{from}");
    let e = load(&EXAMPLE.replacen(from, to, 1)).expect_err("must be rejected");
    assert_eq!(e.file, Path::new("router.yaml"));
    format!("{}: {}", e.field, e.message)
}

#[test]
fn example_loads() {
    let config = load(EXAMPLE).unwrap();
    assert_eq!(config.listen, "127.0.0.1:50051".parse().unwrap());
    assert_eq!(config.routing_header, "x-trino-cluster");
    assert_eq!(config.groups.len(), 2);
    assert_eq!(&*config.groups[config.default_group].name, "adhoc");
    assert_eq!(config.groups[config.default_group].members, vec![0, 1]);
    assert_eq!(config.groups[1].members, vec![2]);
    assert_eq!(&*config.clusters[2].envoy_cluster, "trino-etl");
    assert_eq!(config.clusters[0].url.to_string(), "http://127.0.0.1:18081");
    assert_eq!(config.affinity, AffinitySettings::default());
    assert_eq!(config.health, HealthSettings::default());
    assert_eq!(config.groups[0].fallback, Vec::<usize>::new());
}

#[test]
fn routing_header_defaults() {
    let config = load(&EXAMPLE.replace("routing_header: x-trino-cluster\n", "")).unwrap();
    assert_eq!(config.routing_header, DEFAULT_ROUTING_HEADER);
}

#[test]
fn envoy_cluster_overrides_header_value() {
    let text = EXAMPLE.replace(
        "    group: etl\n",
        "    group: etl\n    envoy_cluster: outbound|8080||trino-etl.data.svc.cluster.local\n",
    );
    let config = load(&text).unwrap();
    assert_eq!(&*config.clusters[2].envoy_cluster, "outbound|8080||trino-etl.data.svc.cluster.local");
    assert_eq!(&*config.clusters[2].name, "trino-etl");
}

#[test]
fn environment_overrides_listen() {
    let overrides = Overrides { listen: Some("127.0.0.1:0".into()), env: vec![], hostname: None };
    let config = Config::from_yaml(Path::new("r.yaml"), EXAMPLE, &overrides).unwrap();
    assert_eq!(config.listen.port(), 0);
    let overrides = Overrides { listen: Some("nonsense".into()), env: vec![], hostname: None };
    let e = Config::from_yaml(Path::new("r.yaml"), EXAMPLE, &overrides).unwrap_err();
    assert!(e.first().message.contains("from the environment"), "{e}");
}

#[test]
fn errors_name_the_field() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        ("routing_header: x-trino-cluster", "routing_header: x-trino-cluster\ncolour: blue", "colour"),
        ("    group: etl", "    group: etl\n    colour: 3", "clusters[2].colour: unknown field `colour`, expected one of `name`, `url`, `group`, `envoy_cluster`, `weight`, `enabled` at line 15"),
        ("url: http://127.0.0.1:18082", "url: ftp://127.0.0.1:18082", "clusters[1].url: `ftp://127.0.0.1:18082` is not a coordinator URL (the scheme"),
        ("url: http://127.0.0.1:18082", "url: 127.0.0.1:18082", "clusters[1].url:"),
        ("url: http://127.0.0.1:18082", "url: http://127.0.0.1:18082/trino", "clusters[1].url:"),
        ("url: http://127.0.0.1:18082", "url: http://u:p@127.0.0.1:18082", "clusters[1].url:"),
        ("url: http://127.0.0.1:18082", "url: 7", "clusters[1].url:"),
        ("default_group: adhoc", "default_group: nope", "default_group: no group is named `nope` (groups: adhoc, etl)"),
        ("clusters:\n", "groups: [{name: adhoc, fallback: [nope]}]\nclusters:\n", "groups[0].fallback[0]: no group is named `nope`"),
        ("clusters:\n", "groups: [{name: adhoc, fallback: [adhoc]}]\nclusters:\n", "groups[0].fallback[0]: a group cannot fall back to itself"),
        ("clusters:\n", "groups: [{name: adhoc, fallback: [etl, etl]}]\nclusters:\n", "groups[0].fallback[1]: `etl` is listed twice"),
        ("clusters:\n", "groups: [{name: adhoc}, {name: adhoc}]\nclusters:\n", "groups[1].name: group `adhoc` is declared twice"),
        ("clusters:\n", "groups: [{name: adhoc, fallbacks: [etl]}]\nclusters:\n", "groups[0].fallbacks: unknown field"),
        ("clusters:\n", "groups: [{name: etl, allow: {sources: ['(']}}]\nclusters:\n", "groups[0].allow.sources[0]: not a regex"),
        ("clusters:\n", "health: {interval: 10ms}\nclusters:\n", "health.interval: must be at least 100ms"),
        ("clusters:\n", "affinity: {discovery_timeout: 2s}\nclusters:\n", "affinity.discovery_timeout: must be between 10ms and 400ms"),
        ("clusters:\n", "url_prefix: _trino\nclusters:\n", "url_prefix: `_trino` is not a path prefix"),
        ("clusters:\n", "url_prefix: '/a b'\nclusters:\n", "url_prefix: `/a b` is not a path prefix"),
        ("clusters:\n", "url_prefix: /v1/x\nclusters:\n", "url_prefix: `/v1/x` would hide Trino's own paths"),
        ("clusters:\n", "health: {interval: soon}\nclusters:\n", "health.interval: `soon` is not a duration"),
        ("clusters:\n", "health: {healthy_threshold: 0}\nclusters:\n", "health.healthy_threshold: must be at least 1"),
        ("clusters:\n", "admin: {token: a, token_env: B}\nclusters:\n", "admin: set `token` or `token_env`, not both"),
        ("clusters:\n", "admin: {token_env: NOT_SET_ANYWHERE}\nclusters:\n", "admin.token_env: the environment variable `NOT_SET_ANYWHERE` is not set"),
        ("clusters:\n", "coordinator_auth: {user: ''}\nclusters:\n", "coordinator_auth.user: must not be empty"),
        ("    group: etl", "    group: etl\n    weight: 0", "clusters[2].weight: 0 is not a positive number"),
        ("    group: etl", "    group: etl\n    weight: -1.5", "clusters[2].weight: -1.5 is not a positive number"),
        ("    group: etl", "    group: etl\n    enabled: maybe", "clusters[2].enabled:"),
        ("listen: 127.0.0.1:50051", "listen: localhost", "listen: `localhost` is not an address"),
        ("name: trino-b", "name: trino-a", "clusters[1].name: `trino-a` names another cluster too"),
        ("name: trino-b", "name: \"\"", "clusters[1].name: must not be empty"),
        ("name: trino-b", "name: trino b", "clusters[1].name: `trino b` may only hold"),
        ("group: etl", "group: \"\"", "clusters[2].group: must not be empty"),
        ("routing_header: x-trino-cluster", "routing_header: x-envoy-cluster", "routing_header: `x-envoy-cluster` cannot carry"),
        ("routing_header: x-trino-cluster", "routing_header: x-trino-user", "routing_header: `x-trino-user` is a Trino protocol header"),
        ("routing_header: x-trino-cluster", "routing_header: \"bad header\"", "routing_header: `bad header` is not an HTTP header name"),
        ("clusters:\n", "affinity: {max_queries: 0}\nclusters:\n", "affinity.max_queries: must be at least 1"),
        ("clusters:\n", "affinity: {idle_expiry_seconds: 0}\nclusters:\n", "affinity.idle_expiry_seconds: must be at least 1"),
        ("clusters:\n", "affinity: {max_entries: 5}\nclusters:\n", "affinity.max_entries: unknown field `max_entries`"),
    ];
    for (from, to, expected) in cases {
        let got = error_after(from, to);
        assert!(got.starts_with(expected), "replacing {from:?} by {to:?}\n got: {got}\nwant: {expected}");
    }
}

#[test]
fn groups_fallback_health_admin_and_auth() {
    let text = EXAMPLE.replace(
        "clusters:\n",
        "groups:\n  - {name: interactive, fallback: [adhoc]}\n  - {name: etl, fallback: [adhoc]}\n\
         health: {interval: 500ms, timeout: 250ms, healthy_threshold: 3, unhealthy_threshold: 4, retry_after: 2s}\n\
         admin: {token_env: MY_TOKEN}\n\
         coordinator_auth: {user: router, password_env: MY_PASSWORD}\n\
         clusters:\n",
    );
    let text = text.replace("    group: etl\n", "    group: etl\n    weight: 2.5\n    enabled: false\n");
    let overrides = Overrides {
        listen: None,
        env: vec![("MY_TOKEN".into(), "s3cret-admin-token-x".into()), ("MY_PASSWORD".into(), "pw".into())],
        hostname: None,
    };
    let config = Config::from_yaml(Path::new("r.yaml"), &text, &overrides).unwrap();
    let names: Vec<&str> = config.groups.iter().map(|g| &*g.name).collect();
    assert_eq!(names, ["interactive", "etl", "adhoc"]);
    assert_eq!(config.groups[0].members, Vec::<usize>::new());
    assert_eq!(config.groups[0].fallback, vec![2]);
    assert_eq!(config.groups[1].members, vec![2]);
    assert_eq!(config.groups[1].fallback, vec![2]);
    assert_eq!(config.groups[2].fallback, Vec::<usize>::new());
    assert_eq!(config.default_group, 2);
    assert_eq!(config.health.interval, Duration::from_millis(500));
    assert_eq!(config.health.retry_after, Duration::from_secs(2));
    assert_eq!((config.health.healthy_threshold, config.health.unhealthy_threshold), (3, 4));
    assert_eq!(config.admin_token.as_ref().map(Secret::expose), Some("s3cret-admin-token-x"));
    let auth = config.coordinator_auth.as_ref().unwrap();
    assert_eq!((auth.user.as_str(), auth.password.as_deref()), ("router", Some("pw")));
    assert!(!format!("{auth:?}").contains("pw"), "passwords stay out of logs");
    assert_eq!((config.clusters[2].weight, config.clusters[2].enabled), (2.5, false));
    assert_eq!((config.clusters[0].weight, config.clusters[0].enabled), (1.0, true));
}

#[test]
fn admin_token_defaults_to_its_environment_variable() {
    let none = load(EXAMPLE).unwrap();
    assert_eq!(none.admin_token, None);
    let overrides = Overrides {
        listen: None,
        env: vec![(ADMIN_TOKEN_ENV.into(), "env-admin-token-0001".into())],
        hostname: None,
    };
    let config = Config::from_yaml(Path::new("r.yaml"), EXAMPLE, &overrides).unwrap();
    assert_eq!(config.admin_token.as_ref().map(Secret::expose), Some("env-admin-token-0001"));
}

#[test]
fn default_group_needs_somewhere_to_go() {
    let text = EXAMPLE
        .replace("default_group: adhoc", "default_group: empty")
        .replace("clusters:\n", "groups: [{name: empty}]\nclusters:\n");
    let e = load(&text).unwrap_err();
    assert_eq!(e.field, "groups[0]", "reported with the group, once");
    assert!(e.message.contains("no clusters and no fallback"), "{e}");
}

#[test]
fn duplicate_envoy_cluster_is_rejected() {
    let text = EXAMPLE.replace("    group: etl\n", "    group: etl\n    envoy_cluster: trino-a\n");
    let e = load(&text).unwrap_err();
    assert_eq!(e.field, "clusters[2].envoy_cluster");
}

#[test]
fn missing_and_empty() {
    let e = load("listen: 127.0.0.1:1\ndefault_group: a\n").unwrap_err();
    assert!(e.message.contains("missing field `clusters`"), "{e}");
    let e = load("listen: 127.0.0.1:1\ndefault_group: a\nclusters: []\n").unwrap_err();
    assert_eq!(e.field, "clusters");
    let e = load("{{{").unwrap_err();
    assert!(e.to_string().starts_with("router.yaml: "), "{e}");
}

#[test]
fn tls_files_are_read_and_checked() {
    use crate::domain::config::tls::testing::TestPki;
    let pki = TestPki::new("config");
    let router = pki.issue("router", &["127.0.0.1", "router.example.com"]);
    let other = pki.issue("other", &["other.example.com"]);
    let garbage = pki.write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64 at all\n");
    let empty = pki.write("empty.pem", "no PEM here\n");
    let missing = pki.path("missing.pem");
    let p = |path: &std::path::Path| path.display().to_string();
    let with = |tls: &str| EXAMPLE.replace("clusters:\n", &format!("{tls}\nclusters:\n"));
    let good = format!(
        "listen_tls: {{cert_file: '{}', key_file: '{}', client_ca_file: '{}'}}\n\
         coordinator_tls: {{ca_file: '{}'}}",
        p(&router.cert),
        p(&router.key),
        p(&pki.ca),
        p(&pki.ca)
    );
    let config = load(&with(&good)).unwrap();
    let tls = config.listen_tls.as_ref().unwrap();
    assert_eq!(
        (tls.cert.path.as_path(), tls.key.path.as_path()),
        (router.cert.as_path(), router.key.as_path())
    );
    assert!(tls.client_ca.is_some());
    assert!(!format!("{tls:?}").contains("PRIVATE KEY"), "keys stay out of logs");
    assert_eq!(config.coordinator_tls.ca.as_ref().unwrap().path, pki.ca);
    assert!(!config.coordinator_tls.system_roots);
    assert_eq!(load(EXAMPLE).unwrap().listen_tls, None);

    // Relative paths are relative to the config file.
    let relative = "listen_tls: {cert_file: router.pem, key_file: router-key.pem}";
    let config = Config::from_yaml(&pki.path("router.yaml"), &with(relative), &Overrides::default()).unwrap();
    assert_eq!(config.listen_tls.unwrap().cert.path, router.cert);

    let listen = |cert: &std::path::Path, key: &std::path::Path| {
        format!("listen_tls: {{cert_file: '{}', key_file: '{}'}}", p(cert), p(key))
    };
    #[rustfmt::skip]
    let cases: Vec<(String, String)> = vec![
        (listen(&missing, &router.key), format!("listen_tls.cert_file: cannot read `{}`: No such file", p(&missing))),
        (listen(&router.cert, &missing), format!("listen_tls.key_file: cannot read `{}`", p(&missing))),
        (listen(&garbage, &router.key), format!("listen_tls.cert_file: `{}` is not PEM", p(&garbage))),
        (listen(&empty, &router.key), format!("listen_tls.cert_file: `{}` holds no PEM certificate", p(&empty))),
        (listen(&router.cert, &empty), format!("listen_tls.key_file: `{}` holds no PEM private key", p(&empty))),
        (listen(&router.cert, &router.cert), format!("listen_tls.key_file: `{}` holds no PEM private key", p(&router.cert))),
        (listen(&router.cert, &other.key), format!("listen_tls.key_file: the key in `{}` does not belong to the certificate in `{}`", p(&other.key), p(&router.cert))),
        (format!("listen_tls: {{cert_file: '{}'}}", p(&router.cert)), "listen_tls: missing field `key_file`".to_owned()),
        ("listen_tls: {cert_file: a, key_file: b, ca_file: c}".to_owned(), "listen_tls.ca_file: unknown field `ca_file`".to_owned()),
        (format!("coordinator_tls: {{ca_file: '{}'}}", p(&missing)), format!("coordinator_tls.ca_file: cannot read `{}`", p(&missing))),
        (format!("coordinator_tls: {{ca_file: '{}'}}", p(&router.key)), format!("coordinator_tls.ca_file: `{}` holds no PEM certificate", p(&router.key))),
        ("coordinator_tls: {system_roots: false}".to_owned(), "coordinator_tls.system_roots: without `ca_file`".to_owned()),
    ];
    for (tls, expected) in &cases {
        let e = load(&with(tls)).expect_err(tls);
        let got = format!("{}: {}", e.field, e.message);
        assert!(got.starts_with(expected.as_str()), "with {tls}\n got: {got}\nwant: {expected}");
    }
    let bad_client_ca = format!(
        "listen_tls: {{cert_file: '{}', key_file: '{}', client_ca_file: '{}'}}",
        p(&router.cert),
        p(&router.key),
        p(&empty)
    );
    let e = load(&with(&bad_client_ca)).unwrap_err();
    assert_eq!(e.field, "listen_tls.client_ca_file", "{e}");
    assert!(e.to_string().starts_with("router.yaml: field `listen_tls.client_ca_file`: "), "{e}");
}

#[test]
fn url_forms() {
    #[rustfmt::skip]
    let cases: &[(&str, bool, &str, u16)] = &[
        ("http://trino.example.com", false, "trino.example.com", 80),
        ("https://trino.example.com", true, "trino.example.com", 443),
        ("http://trino:8080/", false, "trino", 8080),
        ("http://[::1]:8080", false, "::1", 8080),
    ];
    for (text, tls, host, port) in cases {
        let url = parse_url(text).unwrap();
        assert_eq!((url.tls, url.host.as_str(), url.port), (*tls, *host, *port), "{text}");
    }
    assert_eq!(parse_url("http://[::1]:8080").unwrap().to_string(), "http://[::1]:8080");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = EXAMPLE
        .replace("listen: 127.0.0.1:50051", "listen: localhost")
        .replace("url: http://127.0.0.1:18082", "url: ftp://127.0.0.1:18082")
        .replace("    group: etl\n", "    group: etl\n    weight: 0\n")
        .replace("clusters:\n", "health: {interval: 10ms, healthy_threshold: 0}\nurl_prefix: /v1\nrules: [{name: a, when: 'true', group: nope}, {name: b, group: etl}]\nclusters:\n");
    let errors = Config::from_yaml(Path::new("router.yaml"), &text, &Overrides::default()).unwrap_err();
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "listen",
            "clusters[1].url",
            "clusters[2].weight",
            "health.interval",
            "health.healthy_threshold",
            "rules[0].group",
            "rules[1].when",
            "url_prefix",
        ],
        "{errors}"
    );
    let shown = errors.to_string();
    assert_eq!(shown.lines().count(), 8, "one problem a line:\n{shown}");
    assert!(shown.lines().all(|l| l.starts_with("router.yaml: field `")), "{shown}");
    // A group whose clusters had problems is still a group: no second, false alarm for it.
    let text = EXAMPLE.replace("url: http://127.0.0.1:18083", "url: nope");
    let errors = Config::from_yaml(Path::new("router.yaml"), &text, &Overrides::default()).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
}

/// Groups with `groups_yaml` declared over clusters `a1` (group a) … as `clusters` says (one group name
/// a cluster), default group `default`: every problem as `field: message`, one a line.
fn chain_errors(groups_yaml: &str, clusters: &[&str], default: &str) -> Result<Config, String> {
    let clusters: String = clusters
        .iter()
        .enumerate()
        .map(|(i, g)| format!("  - {{name: c{i}, url: 'http://127.0.0.1:{}', group: {g}}}\n", 1 + i))
        .collect();
    let text = format!(
        "listen: 127.0.0.1:1\ndefault_group: {default}\ngroups: {groups_yaml}\nclusters:\n{clusters}"
    );
    Config::from_yaml(Path::new("r.yaml"), &text, &Overrides::default())
        .map_err(|e| e.0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("\n"))
}

#[test]
fn fallback_chains_are_followed_to_the_end() {
    #[rustfmt::skip]
    let cases: &[(&str, &[&str], &str, &str)] = &[
        // groups, clusters' groups, default group → every problem (empty: valid)
        ("[{name: a, fallback: [b]}, {name: b, fallback: [c]}]", &["c"], "a", ""),
        ("[{name: a, fallback: [b]}, {name: b, fallback: [a]}]", &["c"], "a",
         "groups[0].fallback: the fallback chain `a → b → a` loops back on itself\n\
          groups[0]: group `a` has no clusters and neither has any group it falls back to (`a → b`): no query of it can be placed\n\
          groups[1]: group `b` has no clusters and neither has any group it falls back to (`b → a`): no query of it can be placed"),
        ("[{name: a, fallback: [b]}, {name: b, fallback: [c]}, {name: c, fallback: [a]}]", &["a"], "a",
         "groups[0].fallback: the fallback chain `a → b → c → a` loops back on itself"),
        ("[{name: a, fallback: [b]}, {name: b}]", &["c"], "c",
         "groups[0]: group `a` has no clusters and neither has any group it falls back to (`a → b`): no query of it can be placed\n\
          groups[1]: group `b` has no clusters and no fallback: no query of it can be placed"),
        ("[{name: a}]", &["c"], "a", "groups[0]: group `a` has no clusters and no fallback: no query of it can be placed"),
        ("[{name: g0, fallback: [g1]}, {name: g1, fallback: [g2]}, {name: g2, fallback: [g3]}, {name: g3, fallback: [g4]}, \
          {name: g4, fallback: [g5]}, {name: g5, fallback: [g6]}, {name: g6, fallback: [g7]}, {name: g7, fallback: [g8]}, \
          {name: g8, fallback: [g9]}]", &["g9"], "g9",
         "groups[0].fallback: the fallback chain `g0 → g1 → g2 → g3 → g4 → g5 → g6 → g7 → g8 → g9` takes more than 8 steps"),
        ("[{name: g1, fallback: [g2]}, {name: g2, fallback: [g3]}, {name: g3, fallback: [g4]}, \
          {name: g4, fallback: [g5]}, {name: g5, fallback: [g6]}, {name: g6, fallback: [g7]}, {name: g7, fallback: [g8]}, \
          {name: g8, fallback: [g9]}]", &["g9"], "g1", ""),
    ];
    for (groups, clusters, default, want) in cases {
        let got = chain_errors(groups, clusters, default).err().unwrap_or_default();
        assert_eq!(got, *want, "{groups}");
    }
}

#[test]
fn a_chain_lists_every_group_once_breadth_first() {
    let groups =
        "[{name: a, fallback: [b, c]}, {name: b, fallback: [d]}, {name: c, fallback: [d]}, {name: d}]";
    let config = chain_errors(groups, &["d", "c"], "a").unwrap();
    let chain = |g: &str| -> Vec<&str> {
        let group = &config.groups[config.group_named(g).unwrap()];
        group.chain.iter().map(|&i| &*config.groups[i].name).collect()
    };
    assert_eq!(chain("a"), ["a", "b", "c", "d"]);
    assert_eq!(chain("b"), ["b", "d"]);
    assert_eq!(chain("d"), ["d"]);
}

#[test]
fn weak_tokens_are_refused_and_secrets_stay_out_of_debug() {
    #[rustfmt::skip]
    let cases: &[(&str, &str)] = &[
        ("admin: {token: change-me}", "admin.token: `change-me` is an example value, not a secret"),
        ("admin: {token: short}", "admin.token: a token of 5 characters is too short: use at least 16"),
        ("envoy_auth: {token: change-me}", "envoy_auth.token: `change-me` is an example value"),
        ("envoy_auth: {}", "envoy_auth: set `token` or `token_env`"),
        ("metrics_auth: {token: abc}", "metrics_auth.token: a token of 3 characters is too short"),
        ("admin: {listen: nowhere}", "admin.listen: `nowhere` is not an address"),
    ];
    for (section, want) in cases {
        let got = error_after("clusters:\n", &format!("{section}\nclusters:\n"));
        assert!(got.starts_with(want), "{section}\n got: {got}\nwant: {want}");
    }
    let from_env =
        Overrides { env: vec![(ADMIN_TOKEN_ENV.into(), "change-me".into())], ..Overrides::default() };
    let e = Config::from_yaml(Path::new("r.yaml"), EXAMPLE, &from_env).unwrap_err();
    assert!(e.to_string().contains("TRINO_ROUTER_ADMIN_TOKEN") && e.to_string().contains("change-me"), "{e}");

    let text = EXAMPLE.replace(
        "clusters:\n",
        "admin: {token: admin-secret-0123456789, listen: '127.0.0.1:0'}\nenvoy_auth: {token_env: ENVOY_TOKEN}\n\
         metrics_auth: {token: metrics-secret-0123456789}\nclusters:\n",
    );
    let overrides = Overrides {
        env: vec![
            ("ENVOY_TOKEN".into(), "envoy-secret-0123456789".into()),
            ("OTHER".into(), "env-value-xyz".into()),
        ],
        ..Overrides::default()
    };
    let config = Config::from_yaml(Path::new("r.yaml"), &text, &overrides).unwrap();
    assert_eq!(config.envoy_auth.as_ref().map(Secret::expose), Some("envoy-secret-0123456789"));
    assert_eq!(config.admin_listen, Some("127.0.0.1:0".parse().unwrap()));
    let printed = format!("{config:?} {overrides:?}");
    for secret in ["admin-secret", "envoy-secret", "metrics-secret", "env-value-xyz"] {
        assert!(!printed.contains(secret), "{secret} in Debug: {printed}");
    }
    assert!(printed.contains("ENVOY_TOKEN"), "names of variables are shown: {printed}");
}
