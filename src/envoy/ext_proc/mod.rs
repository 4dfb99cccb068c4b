//! Envoy's external-processing protocol: the gRPC service ([`service`]), the per-stream state machine
//! ([`stream`]) and the message conversions ([`messages`]).

pub mod messages;
pub mod service;
pub mod stream;
