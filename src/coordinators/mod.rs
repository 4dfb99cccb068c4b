//! Talking to coordinators: the HTTP clients of the router's own calls ([`http`]), the health and load
//! poller ([`poller`]), the lookup of a query no one has placed ([`query_lookup`]), and the checks of
//! what clients and learn streams claim about single queries ([`checks`]).

pub mod checks;
pub mod http;
pub mod poller;
pub mod query_lookup;
