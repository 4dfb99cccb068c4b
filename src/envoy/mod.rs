//! Talking to Envoy: the ext_proc streams that decide and learn ([`ext_proc`]), the routes served over
//! RDS ([`route_discovery`]), and the Envoy bootstrap that goes with a config ([`bootstrap`]).

pub mod bootstrap;
pub mod ext_proc;
pub mod route_discovery;
