//! Raw config → [`Config`]: one check per section, each reporting every problem it finds, so a file
//! with several mistakes is fixed in one round. A section that needs another's result (the default
//! group needs the groups) is checked against what could be read; nothing is reported twice.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{RawConfig, RawCoordinatorTls, RawToken};
use super::secret::{Secret, weakness};
use super::tls::{CoordinatorTls, ListenTls};
use super::{
    ADMIN_TOKEN_ENV, Cluster, Config, CoordinatorUrl, Credentials, DEFAULT_ROUTING_HEADER, Group,
    GroupAccess, HealthSettings, MAX_FALLBACK_DEPTH, Overrides,
};
use crate::domain::rules::RuleSet;

/// A field path and a message.
pub(super) type FieldError = (String, String);

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push((field.into(), message.into()));
    }

    /// The value, or `None` with its problem recorded.
    fn ok<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.add(field, message)).ok()
    }
}

/// Checks every section; the config, or every problem found (in the order of the sections).
pub(super) fn validate(
    raw: RawConfig,
    file: &Path,
    overrides: &Overrides,
) -> Result<Config, Vec<FieldError>> {
    let mut problems = Problems::default();
    let p = &mut problems;
    let listen = listen(&raw, overrides, p);
    let listen_tls = listen_tls(&raw, file, p);
    let coordinator_tls = coordinator_tls(&raw, file, p);
    let routing_header = routing_header(&raw, p);
    let (clusters, mut groups) = clusters_and_groups(&raw, p);
    group_links(&raw, &mut groups, p);
    fallback_chains(&raw, &mut groups, p);
    let default_group = default_group(&raw, &groups, p);
    let health = health(raw.health, p);
    let admin_token = admin_token(&raw, overrides, p);
    let admin_listen = admin_listen(&raw, p);
    let envoy_auth = token_of("envoy_auth", raw.envoy_auth.as_ref(), overrides, p);
    let metrics_auth = token_of("metrics_auth", raw.metrics_auth.as_ref(), overrides, p);
    let coordinator_auth = coordinator_auth(&raw, overrides, p);
    affinity(&raw, p);
    let rules = rules(&raw, &groups, p);
    let url_prefix = url_prefix(&raw, p);
    if raw.max_sql_bytes == 0 {
        p.add("max_sql_bytes", "must be at least 1");
    }
    let metrics_listen = metrics_listen(&raw, p);
    let fleet = fleet(&raw, file, overrides, &admin_token, &listen_tls, p);
    let (
        Some(listen),
        Some(listen_tls),
        Some(coordinator_tls),
        Some(routing_header),
        Some(clusters),
        Some(default_group),
        Some(admin_token),
        Some(coordinator_auth),
        Some(rules),
        Some(url_prefix),
        Some(metrics_listen),
        Some(fleet),
        Some(admin_listen),
        Some(envoy_auth),
        Some(metrics_auth),
        true,
    ) = (
        listen,
        listen_tls,
        coordinator_tls,
        routing_header,
        clusters,
        default_group,
        admin_token,
        coordinator_auth,
        rules,
        url_prefix,
        metrics_listen,
        fleet,
        admin_listen,
        envoy_auth,
        metrics_auth,
        problems.0.is_empty(),
    )
    else {
        return Err(problems.0);
    };
    Ok(Config {
        listen,
        listen_tls,
        coordinator_tls,
        routing_header,
        default_group,
        clusters,
        groups,
        affinity: raw.affinity,
        query_log: raw.query_log,
        health,
        admin_token,
        admin_listen,
        envoy_auth,
        metrics_auth,
        coordinator_auth,
        rules: Arc::new(rules),
        rule_tests: raw.rule_tests,
        max_sql_bytes: raw.max_sql_bytes,
        jwt_user_claim: raw.jwt_user_claim,
        placement_from_sql: raw
            .placement_from_sql
            .unwrap_or(raw.new_query_routing == super::NewQueryRouting::Router),
        new_query_routing: raw.new_query_routing,
        url_prefix,
        metrics_listen,
        new_query_timeout: raw.new_query_timeout,
        fleet,
    })
}

/// `fleet` ([`super::fleet`]), with this replica's name and state file from the environment.
fn fleet(
    raw: &RawConfig,
    file: &Path,
    overrides: &Overrides,
    admin_token: &Option<Option<Secret>>,
    listen_tls: &Option<Option<ListenTls>>,
    p: &mut Problems,
) -> Option<super::fleet::FleetSettings> {
    let state_file = overrides.var(super::fleet::STATE_FILE_ENV).map(Path::new);
    let context = super::fleet::Context {
        resolve: &|path| resolve(file, path),
        replica: overrides.replica(),
        state_file,
        has_admin_token: matches!(admin_token, Some(Some(_))),
        listen_tls: listen_tls.as_ref().and_then(Option::as_ref),
    };
    super::fleet::validate(&raw.fleet, &context, &mut |field, message| p.add(field, message))
}

/// `listen` (or the environment's override).
fn listen(raw: &RawConfig, overrides: &Overrides, p: &mut Problems) -> Option<SocketAddr> {
    let text = overrides.listen.as_deref().unwrap_or(&raw.listen);
    let origin = if overrides.listen.is_some() { " (from the environment)" } else { "" };
    let parsed = text
        .parse()
        .map_err(|_| format!("`{text}`{origin} is not an address of the form HOST:PORT with an IP host"));
    p.ok("listen", parsed)
}

/// `listen_tls`: the files are read and checked now. Relative paths are relative to the config file.
fn listen_tls(raw: &RawConfig, file: &Path, p: &mut Problems) -> Option<Option<ListenTls>> {
    let Some(tls) = &raw.listen_tls else { return Some(None) };
    let cert = p.ok("listen_tls.cert_file", super::tls::read_certificates(&resolve(file, &tls.cert_file)));
    let key = p.ok("listen_tls.key_file", super::tls::read_private_key(&resolve(file, &tls.key_file)));
    let matches = match (&cert, &key) {
        (Some(cert), Some(key)) => p.ok("listen_tls.key_file", super::tls::check_key_matches(cert, key)),
        _ => None,
    };
    let client_ca = match &tls.client_ca_file {
        None => Some(None),
        Some(path) => p.ok("listen_tls.client_ca_file", super::tls::read_ca(&resolve(file, path))).map(Some),
    };
    matches?;
    Some(Some(ListenTls { cert: cert?, key: key?, client_ca: client_ca? }))
}

/// `coordinator_tls`.
fn coordinator_tls(raw: &RawConfig, file: &Path, p: &mut Problems) -> Option<CoordinatorTls> {
    match &raw.coordinator_tls {
        None => Some(CoordinatorTls::default()),
        Some(RawCoordinatorTls { ca_file: None, system_roots: Some(false) }) => {
            p.add(
                "coordinator_tls.system_roots",
                "without `ca_file` the system roots are the only CAs: set `ca_file`",
            );
            None
        }
        Some(tls) => {
            let ca = match &tls.ca_file {
                None => None,
                Some(path) => {
                    Some(p.ok("coordinator_tls.ca_file", super::tls::read_ca(&resolve(file, path)))?)
                }
            };
            Some(CoordinatorTls { ca, system_roots: tls.system_roots.unwrap_or(false) })
        }
    }
}

/// A path as written in the config, relative to the config file's directory.
fn resolve(file: &Path, path: &Path) -> std::path::PathBuf {
    match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

/// `routing_header`, lower-cased.
fn routing_header(raw: &RawConfig, p: &mut Problems) -> Option<String> {
    let header = raw.routing_header.to_ascii_lowercase();
    p.ok("routing_header", check_routing_header(&header)).map(|()| header)
}

/// `groups` (their names) and `clusters`: the clusters, and every group (declared ones first, then the
/// others in order of first appearance) with its members. Groups are made even when a cluster has
/// another problem, so that later sections are checked against them without false alarms.
fn clusters_and_groups(raw: &RawConfig, p: &mut Problems) -> (Option<Vec<Cluster>>, Vec<Group>) {
    let mut groups: Vec<Group> = Vec::new();
    for (i, declared) in raw.groups.iter().enumerate() {
        let field = format!("groups[{i}].name");
        if p.ok(field.clone(), check_name(&declared.name)).is_some()
            && groups.iter().any(|g| *g.name == *declared.name)
        {
            p.add(field, format!("group `{}` is declared twice", declared.name));
        }
        groups.push(Group {
            name: declared.name.as_str().into(),
            members: vec![],
            fallback: vec![],
            chain: vec![],
            allow: None,
        });
    }
    if raw.clusters.is_empty() {
        p.add("clusters", "at least one cluster is needed");
        return (None, groups);
    }
    let before = p.0.len();
    let mut clusters = Vec::with_capacity(raw.clusters.len());
    let mut names = HashSet::new();
    let mut header_values = HashSet::new();
    for (i, raw) in raw.clusters.iter().enumerate() {
        let at = |field: &str| format!("clusters[{i}].{field}");
        if p.ok(at("name"), check_name(&raw.name)).is_some() && !names.insert(raw.name.clone()) {
            p.add(at("name"), format!("`{}` names another cluster too", raw.name));
        }
        let group_ok = p.ok(at("group"), check_name(&raw.group)).is_some();
        let url = p.ok(at("url"), parse_url(&raw.url));
        let envoy_cluster = match &raw.envoy_cluster {
            Some(value) => p.ok(at("envoy_cluster"), check_header_value(value)).map(|()| value.clone()),
            None => Some(raw.name.clone()),
        };
        if let Some(value) = &envoy_cluster
            && !header_values.insert(value.clone())
        {
            p.add(
                at(if *value == raw.name { "name" } else { "envoy_cluster" }),
                format!("Envoy cluster `{value}` is used by another cluster too"),
            );
        }
        if !(raw.weight.is_finite() && raw.weight > 0.0) {
            p.add(at("weight"), format!("{} is not a positive number", raw.weight));
        }
        let group: Arc<str> = raw.group.as_str().into();
        if group_ok {
            match groups.iter_mut().find(|g| g.name == group) {
                Some(g) => g.members.push(i),
                None => groups.push(Group {
                    name: group.clone(),
                    members: vec![i],
                    fallback: vec![],
                    chain: vec![],
                    allow: None,
                }),
            }
        }
        if let (Some(url), Some(envoy_cluster)) = (url, envoy_cluster) {
            clusters.push(Cluster {
                name: raw.name.as_str().into(),
                envoy_cluster: envoy_cluster.into(),
                group,
                url,
                weight: raw.weight,
                enabled: raw.enabled,
            });
        }
    }
    ((p.0.len() == before).then_some(clusters), groups)
}

/// The declared groups' `fallback` and `allow`.
fn group_links(raw: &RawConfig, groups: &mut [Group], p: &mut Problems) {
    for (i, declared) in raw.groups.iter().enumerate() {
        let mut fallback = Vec::with_capacity(declared.fallback.len());
        for (j, name) in declared.fallback.iter().enumerate() {
            let field = format!("groups[{i}].fallback[{j}]");
            match groups.iter().position(|g| *g.name == **name) {
                None => p.add(field, format!("no group is named `{name}`")),
                Some(target) if *groups[target].name == *declared.name => {
                    p.add(field, "a group cannot fall back to itself")
                }
                Some(target) if fallback.contains(&target) => {
                    p.add(field, format!("`{name}` is listed twice"))
                }
                Some(target) => fallback.push(target),
            }
        }
        groups[i].fallback = fallback;
        if let Some(allow) = &declared.allow {
            let mut sources = Vec::with_capacity(allow.sources.len());
            for (j, source) in allow.sources.iter().enumerate() {
                let regex = regex::Regex::new(source).map_err(|e| format!("not a regex: {e}"));
                sources.extend(p.ok(format!("groups[{i}].allow.sources[{j}]"), regex));
            }
            groups[i].allow = Some(GroupAccess { users: allow.users.clone(), sources });
        }
    }
}

/// `default_group`: a group that has clusters or somewhere to fall back to.
fn default_group(raw: &RawConfig, groups: &[Group], p: &mut Problems) -> Option<usize> {
    if raw.clusters.is_empty() {
        return None; // reported with the clusters
    }
    let Some(index) = groups.iter().position(|g| *g.name == *raw.default_group) else {
        let known: BTreeSet<&str> = groups.iter().map(|g| &*g.name).collect();
        let known: Vec<&str> = known.into_iter().collect();
        p.add(
            "default_group",
            format!("no group is named `{}` (groups: {})", raw.default_group, known.join(", ")),
        );
        return None;
    };
    let group = &groups[index];
    let declared = raw.groups.iter().any(|g| *g.name == *group.name);
    if group.members.is_empty() && group.fallback.is_empty() && !declared {
        p.add("default_group", format!("group `{}` has no clusters and no fallback", group.name));
        return None;
    }
    placeable(groups, index).then_some(index) // a declared group's problem is reported with it
}

/// Whether some group of `group`'s chain has clusters.
fn placeable(groups: &[Group], group: usize) -> bool {
    groups[group].chain.iter().any(|&g| !groups[g].members.is_empty())
}

/// Every group's whole fallback chain ([`Group::chain`]): a chain that loops, one deeper than
/// [`MAX_FALLBACK_DEPTH`], and a declared group whose chain holds no cluster (no query of it could be
/// placed) are reported, each once.
fn fallback_chains(raw: &RawConfig, groups: &mut [Group], p: &mut Problems) {
    let names = |groups: &[Group], path: &[usize]| {
        path.iter().map(|&g| &*groups[g].name).collect::<Vec<_>>().join(" → ")
    };
    let links: Vec<Vec<usize>> = groups.iter().map(|g| g.fallback.clone()).collect();
    let cycles = fallback_cycles(&links);
    for cycle in &cycles {
        let mut path = cycle.clone();
        path.push(cycle[0]);
        p.add(
            format!("groups[{}].fallback", cycle[0]),
            format!("the fallback chain `{}` loops back on itself", names(groups, &path)),
        );
    }
    if cycles.is_empty() {
        let longest = longest_chains(&links);
        if let Some(path) =
            longest.iter().filter(|path| path.len() > MAX_FALLBACK_DEPTH + 1).max_by_key(|p| p.len())
        {
            p.add(
                format!("groups[{}].fallback", path[0]),
                format!(
                    "the fallback chain `{}` takes more than {MAX_FALLBACK_DEPTH} steps",
                    names(groups, path)
                ),
            );
        }
    }
    for group in 0..groups.len() {
        // Breadth first: a group's own fallbacks before theirs.
        let mut chain = vec![group];
        let mut at = 0;
        while at < chain.len() {
            for &next in &groups[chain[at]].fallback {
                if !chain.contains(&next) {
                    chain.push(next);
                }
            }
            at += 1;
        }
        groups[group].chain = chain;
    }
    for (i, declared) in raw.groups.iter().enumerate() {
        let Some(group) = groups.iter().position(|g| *g.name == *declared.name) else { continue };
        if group != i || placeable(groups, group) {
            continue; // a duplicate name is reported with the names
        }
        let names = |path: &[usize]| names(groups, path);
        let message = if groups[group].chain.len() == 1 {
            format!("group `{}` has no clusters and no fallback: no query of it can be placed", declared.name)
        } else {
            format!(
                "group `{}` has no clusters and neither has any group it falls back to (`{}`): no query \
                 of it can be placed",
                declared.name,
                names(&groups[group].chain)
            )
        };
        p.add(format!("groups[{i}]"), message);
    }
}

/// The loops among fallback links (`links[g]`: the groups `g` falls back to), each once, starting at its
/// lowest group index. Depth first with colours: a link back to a group on the current path closes a loop.
fn fallback_cycles(links: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        New,
        OnPath,
        Done,
    }
    fn visit(
        g: usize,
        links: &[Vec<usize>],
        colour: &mut [Colour],
        path: &mut Vec<usize>,
        found: &mut Vec<Vec<usize>>,
    ) {
        colour[g] = Colour::OnPath;
        path.push(g);
        for &next in &links[g] {
            match colour[next] {
                Colour::New => visit(next, links, colour, path, found),
                Colour::OnPath => {
                    let at = path.iter().position(|&h| h == next).unwrap_or(0);
                    let mut cycle = path[at..].to_vec();
                    let lowest = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                    cycle.rotate_left(lowest);
                    if !found.contains(&cycle) {
                        found.push(cycle);
                    }
                }
                Colour::Done => {}
            }
        }
        path.pop();
        colour[g] = Colour::Done;
    }
    let mut colour = vec![Colour::New; links.len()];
    let mut found = Vec::new();
    for g in 0..links.len() {
        if colour[g] == Colour::New {
            visit(g, links, &mut colour, &mut Vec::new(), &mut found);
        }
    }
    found
}

/// For each group, its longest chain of fallback links (the group first), in links without loops.
fn longest_chains(links: &[Vec<usize>]) -> Vec<Vec<usize>> {
    fn longest(g: usize, links: &[Vec<usize>], memo: &mut Vec<Option<Vec<usize>>>) -> Vec<usize> {
        if let Some(known) = &memo[g] {
            return known.clone();
        }
        let mut best = Vec::new();
        for &next in &links[g] {
            let path = longest(next, links, memo);
            if path.len() > best.len() {
                best = path;
            }
        }
        best.insert(0, g);
        memo[g] = Some(best.clone());
        best
    }
    let mut memo = vec![None; links.len()];
    (0..links.len()).map(|g| longest(g, links, &mut memo)).collect()
}

/// `health`.
fn health(health: HealthSettings, p: &mut Problems) -> HealthSettings {
    if health.interval < Duration::from_millis(100) {
        p.add("health.interval", "must be at least 100ms");
    }
    if health.timeout < Duration::from_millis(10) {
        p.add("health.timeout", "must be at least 10ms");
    }
    if health.healthy_threshold == 0 {
        p.add("health.healthy_threshold", "must be at least 1");
    }
    if health.unhealthy_threshold == 0 {
        p.add("health.unhealthy_threshold", "must be at least 1");
    }
    health
}

/// `admin`: the token, from the file or the environment (`TRINO_ROUTER_ADMIN_TOKEN` when it names none).
fn admin_token(raw: &RawConfig, overrides: &Overrides, p: &mut Problems) -> Option<Option<Secret>> {
    let token = RawToken { token: raw.admin.token.clone(), token_env: raw.admin.token_env.clone() };
    if token.token.is_none() && token.token_env.is_none() {
        let Some(value) = overrides.var(ADMIN_TOKEN_ENV) else { return Some(None) };
        let weak =
            weakness(value).map(|why| format!("(from the environment variable `{ADMIN_TOKEN_ENV}`) {why}"));
        return match weak {
            Some(why) => {
                p.add("admin.token", why);
                None
            }
            None => Some(Some(Secret::new(value))),
        };
    }
    token_of("admin", Some(&token), overrides, p)
}

/// A token section (`admin`, `envoy_auth`, `metrics_auth`): `token` or `token_env`, strong enough.
fn token_of(
    section: &str,
    raw: Option<&RawToken>,
    overrides: &Overrides,
    p: &mut Problems,
) -> Option<Option<Secret>> {
    let Some(raw) = raw else { return Some(None) };
    let (field, value) = match (&raw.token, &raw.token_env) {
        (Some(_), Some(_)) => {
            p.add(section, "set `token` or `token_env`, not both");
            return None;
        }
        (None, None) => {
            p.add(section, "set `token` or `token_env`");
            return None;
        }
        (Some(token), None) if token.is_empty() => {
            p.add(format!("{section}.token"), "must not be empty");
            return None;
        }
        (Some(token), None) => (format!("{section}.token"), token.clone()),
        (None, Some(name)) => {
            let token = overrides.var(name).map(str::to_owned);
            let field = format!("{section}.token_env");
            let value =
                p.ok(field.clone(), token.ok_or(format!("the environment variable `{name}` is not set")))?;
            (field, value)
        }
    };
    match weakness(&value) {
        Some(why) => {
            p.add(field, why);
            None
        }
        None => Some(Some(Secret::new(value))),
    }
}

/// `admin.listen`.
fn admin_listen(raw: &RawConfig, p: &mut Problems) -> Option<Option<SocketAddr>> {
    let Some(text) = &raw.admin.listen else { return Some(None) };
    let parsed =
        text.parse().map_err(|_| format!("`{text}` is not an address of the form HOST:PORT with an IP host"));
    p.ok("admin.listen", parsed).map(Some)
}

/// `coordinator_auth`: the user, and the password from the file or the environment.
fn coordinator_auth(raw: &RawConfig, overrides: &Overrides, p: &mut Problems) -> Option<Option<Credentials>> {
    let Some(auth) = &raw.coordinator_auth else { return Some(None) };
    let user_ok = !auth.user.is_empty();
    if !user_ok {
        p.add("coordinator_auth.user", "must not be empty");
    }
    let password = match (&auth.password, &auth.password_env) {
        (Some(_), Some(_)) => {
            p.add("coordinator_auth", "set `password` or `password_env`, not both");
            None
        }
        (Some(password), None) => Some(Some(password.clone())),
        (None, Some(name)) => {
            let password = overrides.var(name).map(str::to_owned);
            let password = password.ok_or(format!("the environment variable `{name}` is not set"));
            p.ok("coordinator_auth.password_env", password).map(Some)
        }
        (None, None) => Some(None),
    };
    user_ok.then_some(())?;
    Some(Some(Credentials { user: auth.user.clone(), password: password? }))
}

/// `affinity`.
fn affinity(raw: &RawConfig, p: &mut Problems) {
    if raw.affinity.max_queries == 0 {
        p.add("affinity.max_queries", "must be at least 1");
    }
    if !(Duration::from_millis(10)..=Duration::from_millis(400)).contains(&raw.affinity.discovery_timeout) {
        p.add(
            "affinity.discovery_timeout",
            "must be between 10ms and 400ms (it must fit in Envoy's 0.5s message timeout)",
        );
    }
    if raw.affinity.idle_expiry_seconds == 0 {
        p.add("affinity.idle_expiry_seconds", "must be at least 1");
    }
}

/// `rules` (compiled) and `rule_tests` (the groups they expect exist).
fn rules(raw: &RawConfig, groups: &[Group], p: &mut Problems) -> Option<RuleSet> {
    let compiled = RuleSet::compile(&raw.rules, |name| groups.iter().position(|g| *g.name == *name));
    for (i, test) in raw.rule_tests.iter().enumerate() {
        if !groups.iter().any(|g| *g.name == *test.expect_group) {
            p.add(
                format!("rule_tests[{i}].expect_group"),
                format!("no group is named `{}`", test.expect_group),
            );
        }
    }
    compiled.map_err(|errors| p.0.extend(errors)).ok()
}

/// `url_prefix`, without a trailing slash.
fn url_prefix(raw: &RawConfig, p: &mut Problems) -> Option<Option<String>> {
    let Some(prefix) = &raw.url_prefix else { return Some(None) };
    let prefix = prefix.trim_end_matches('/').to_owned();
    let segment_ok = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if !prefix.starts_with('/') || !prefix[1..].split('/').all(segment_ok) {
        p.add("url_prefix", format!("`{prefix}` is not a path prefix such as /_trino"));
        return None;
    }
    if ["/v1", "/ui"].iter().any(|t| prefix == *t || prefix.starts_with(&format!("{t}/"))) {
        p.add("url_prefix", format!("`{prefix}` would hide Trino's own paths"));
        return None;
    }
    Some(Some(prefix))
}

/// `metrics_listen`.
fn metrics_listen(raw: &RawConfig, p: &mut Problems) -> Option<Option<SocketAddr>> {
    let Some(text) = &raw.metrics_listen else { return Some(None) };
    let parsed =
        text.parse().map_err(|_| format!("`{text}` is not an address of the form HOST:PORT with an IP host"));
    p.ok("metrics_listen", parsed).map(Some)
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > 128 {
        return Err("must be at most 128 characters".to_owned());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(format!("`{name}` may only hold ASCII letters, digits, `-`, `_` and `.`"));
    }
    Ok(())
}

fn check_header_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("`{value}` must be printable ASCII without spaces"));
    }
    Ok(())
}

fn check_routing_header(name: &str) -> Result<(), String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("`{name}` is not an HTTP header name"));
    }
    if name.starts_with("x-envoy-") || matches!(name, "host" | "content-length" | "transfer-encoding") {
        return Err(format!("`{name}` cannot carry the routing decision (Envoy reserves it)"));
    }
    if name.starts_with("x-trino-") && name != DEFAULT_ROUTING_HEADER {
        return Err(format!("`{name}` is a Trino protocol header; pick a name of your own"));
    }
    Ok(())
}

/// Parses `http(s)://HOST[:PORT][/]` — a coordinator is addressed by its origin only.
pub(super) fn parse_url(text: &str) -> Result<CoordinatorUrl, String> {
    let bad = |why: &str| format!("`{text}` is not a coordinator URL ({why}); expected http://HOST:PORT");
    let uri: http::Uri = text.parse().map_err(|_| bad("cannot be parsed"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(_) => return Err(bad("the scheme must be http or https")),
        None => return Err(bad("no scheme")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials do not belong in the URL"));
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a path or query is not supported"));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(CoordinatorUrl { tls, host: host.to_owned(), port })
}
