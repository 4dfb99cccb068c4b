//! The live state: what the router has learned about where queries live ([`affinity`]), each cluster's
//! run-time state ([`cluster_state`]), the config and cluster state published together as one snapshot
//! ([`router`]), what the router counts ([`metrics`]), and what it writes about each decision
//! ([`telemetry`]).

pub mod affinity;
pub mod cluster_state;
pub mod metrics;
pub mod operator_store;
pub mod router;
pub mod telemetry;
