//! trino-router: the routing decisions for Trino traffic, made for Envoy over ext_proc.
//!
//! Envoy carries every byte; the router answers, per request, which Trino cluster it goes to. The code
//! is layered, each layer a folder, and a module imports only from its own layer or the ones below it
//! (`tests/layers.rs` checks this, and that no two modules import each other, directly or in a circle):
//!
//! 1. [`domain`] — pure: the validated config, what a request and its SQL say, the routing rules, and
//!    the decisions themselves. A new statement is decided in [`domain::decision::new_statement`].
//! 2. [`state`] — the live state: learned query owners, each cluster's health and load, the published
//!    snapshot ([`state::router::Router`]), and what the router counts and logs about its decisions.
//! 3. [`coordinators`] — talking to coordinators: HTTP clients, the health poller, query lookups.
//! 4. [`envoy`] — talking to Envoy: ext_proc streams, route discovery (RDS), the bootstrap.
//! 5. [`operate`] — running it: the server, admin API and client, metrics endpoint and status page,
//!    config reload, `explain`, the command line.

pub mod coordinators;
pub mod domain;
pub mod envoy;
pub mod operate;
pub mod state;
