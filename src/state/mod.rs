//! The live state: what the router has learned about where queries live ([`affinity`]), each cluster's
//! run-time state ([`cluster_state`]), the config and cluster state published together as one snapshot
//! ([`router`]), and what the router counts ([`metrics`]).

pub mod affinity;
pub mod cluster_state;
pub mod metrics;
pub mod router;
