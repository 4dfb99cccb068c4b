//! Talking to Envoy: the ext_proc streams that decide and learn ([`ext_proc`]), the routes served over
//! RDS ([`route_discovery`]), the Envoy bootstrap that goes with a config ([`bootstrap`]), the names
//! both sides agree on ([`protocol`]); where Envoy dials the router replicas ([`router_address`]); the paths of a new statement
//! ([`statement_route`]); Envoy's own answers, Trino-shaped ([`local_reply`]).

pub mod bootstrap;
pub mod ext_proc;
pub mod local_reply;
pub mod protocol;
pub mod route_discovery;
pub mod router_address;
pub mod statement_route;
