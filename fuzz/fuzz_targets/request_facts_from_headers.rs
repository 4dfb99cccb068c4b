//! Feeds arbitrary request headers (`Name: value` lines; values are raw bytes, so not always UTF-8, as
//! Envoy's `raw_value` may be; a name starting with `~` is sent old-style in the `value` field) through
//! what the decide role does with a new statement's headers: the Envoy header map is read
//! (`header_pairs`), [`ClientRequest::from_headers`] reads the facts (Basic and JWT users, client tags,
//! session, prepared statements), the routing-group header is checked against the restricted group,
//! and the new-statement decision is taken on the headers alone (rules over the facts, matchers and CEL;
//! transaction pins; placement), as the decide role's tentative reply is.
//!
//! Checks, beyond not panicking: every non-pseudo header with a UTF-8 value is in the facts' headers,
//! lower-cased and in order, and no other; `X-Trino-User` wins over `Authorization`; list and session
//! items are trimmed and non-empty; a refused routing group is restricted and does not admit the
//! client; the decision names the same refused group; a statement placed in a group went to the
//! rule's group (or its fallback) when a rule matched, and every route names a configured cluster.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use trino_router::domain::client_request::ClientRequest;
use trino_router::domain::decision::new_statement::{
    GroupReason, NewStatement, Outcome, Placed, permitted_routing_group,
};
use trino_router::domain::statement::{Defaults, Limits, analyze_execute};
use trino_router::envoy::ext_proc::messages::header_pairs;
use trino_router::state::router::{Router, Stage};
use trino_router_fuzz::{fresh_router, header_lines, header_map};

fuzz_target!(|data: &[u8]| {
    static ROUTER: OnceLock<Arc<Router>> = OnceLock::new();
    // Nothing below records a decision or learns: one router serves every input.
    let router = ROUTER.get_or_init(|| fresh_router(false));
    let snapshot = router.snapshot();
    let config = &snapshot.config;

    let lines = header_lines(data);
    let map = header_map(lines.iter().map(|(name, value)| (name.as_str(), value.as_slice())));
    let claim = if data.first().is_some_and(|b| b % 2 == 1) { "email" } else { "sub" };
    let info = ClientRequest::from_headers(header_pairs(Some(&map)), claim);

    // The facts' headers: every header whose value Envoy sent as UTF-8, pseudo-headers left out.
    let expected: Vec<(String, String)> = lines
        .iter()
        .filter_map(|(name, value)| {
            let value = std::str::from_utf8(value).ok()?;
            Some((name.strip_prefix('~').unwrap_or(name).to_ascii_lowercase(), value.to_owned()))
        })
        .filter(|(name, _)| !name.starts_with(':'))
        .collect();
    assert_eq!(info.headers, expected);

    let last = |name: &str| info.headers.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.trim());
    if let Some(user) = last("x-trino-user").filter(|u| !u.is_empty()) {
        assert_eq!(info.user, user, "X-Trino-User wins");
    }
    for item in info.client_tags.iter().chain(info.session.iter().map(|(k, _)| k)) {
        assert!(!item.is_empty() && item.trim() == item && !item.contains(','), "{item:?}");
    }
    for field in [&info.routing_group, &info.catalog, &info.schema] {
        assert_eq!(field.trim(), field, "trimmed");
    }

    let requested = Some(info.routing_group.as_str()).filter(|g| !g.is_empty());
    let permitted = permitted_routing_group(config, requested, &info.user, &info.source);
    if let (Some(name), None) = (requested, permitted) {
        let group = config.group_named(name.trim()).expect("only a configured group is refused");
        let access = config.groups[group].allow.as_ref().expect("only a restricted group is refused");
        assert!(!access.admits(&info.user, &info.source));
    }

    let statement = NewStatement { request: &info, sql: None, may_look_up: false, trace_rules: false };
    let decision = router.decide_new_statement(&snapshot, &statement, Stage::Tentative);
    assert_eq!(decision.refused_routing_group.as_deref(), requested.filter(|_| permitted.is_none()));
    match decision.outcome {
        Outcome::Route { cluster, placed } => {
            assert!(cluster < config.clusters.len());
            if let (Placed::InGroup(placed), GroupReason::Rule(rule)) = (placed, decision.why) {
                let requested = config.rules.rules()[rule].group;
                assert_eq!(requested, decision.group);
                let group = &config.groups[requested];
                assert!(placed == requested || group.fallback.contains(&placed));
                assert!(config.groups[placed].members.contains(&cluster));
            }
        }
        Outcome::Refuse(refusal) => {
            let status = refusal.reply().status;
            assert!((400..600).contains(&status), "{refusal:?}");
        }
        Outcome::LookUp(id) => panic!("a lookup of {id} without the SQL"),
    }

    // `EXECUTE name` reads the prepared statement from its header: every name in it.
    for entry in info.prepared_statements.split(',') {
        let name = entry.split_once('=').map_or(entry, |(name, _)| name).trim();
        analyze_execute(&info.prepared_statements, name, &Defaults::default(), &Limits::default());
    }
});
