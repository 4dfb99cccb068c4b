//! Talking to coordinators: the HTTP clients of the router's own calls ([`http`]), the health and load
//! poller ([`poller`]), and the lookup of a query no one has placed ([`query_lookup`]).

pub mod http;
pub mod poller;
pub mod query_lookup;
