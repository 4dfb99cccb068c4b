//! The pure domain: facts about a request and its SQL, the validated config, the routing rules, and the
//! decisions over them. No tokio, tonic, protobuf or metrics here: everything is testable in one-line
//! table rows. (The config is read from files once; nothing else does I/O.)
//!
//! Where a new statement goes is decided in one function, [`decision::new_statement::decide`]; every
//! other request in [`decision::follow_up`].

pub mod client_request;
pub mod config;
pub mod decision;
pub mod discovery;
pub mod health;
pub mod operator_state;
pub mod pin;
pub mod query_id;
pub mod refusal;
pub mod rules;
pub mod statement;
pub mod target;
