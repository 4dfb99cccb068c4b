//! The names Envoy's configuration ([`super::bootstrap`]) and the router's ext_proc streams
//! ([`super::ext_proc`]) must agree on: the filters, how a stream says which filter it comes from, and
//! where the decide filter leaves its note for the learn filter.

/// Name of the ext_proc filter that decides where each request goes.
pub const DECIDE_FILTER: &str = "trino-router.decide";
/// Name of the ext_proc filter that learns the owner of each new query.
pub const LEARN_FILTER: &str = "trino-router.learn";

/// The gRPC metadata key that tells the router which filter a stream comes from.
pub const ROLE_METADATA: &str = "x-trino-router-role";

/// The dynamic-metadata namespace in which the decide filter leaves the learn filter its note.
pub const NOTE_NAMESPACE: &str = "trino-router";

/// The Envoy attribute the learn filter sends with an answer's headers: the Envoy cluster that answered
/// (for new statements Envoy placed by itself, where the decide filter left no note).
pub const LEARN_CLUSTER_ATTRIBUTE: &str = "xds.cluster_name";
