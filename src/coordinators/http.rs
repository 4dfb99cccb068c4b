//! The HTTP clients of the router's own calls to coordinators (health polls, load statistics, discovery
//! lookups): one per coordinator URL, so that each keeps its own connections (and, for the poller, its
//! web-UI session cookie), made afresh when what they trust (`coordinator_tls`) changes with a reload.

use std::collections::HashMap;

use crate::domain::config::tls::{CoordinatorTls, coordinator_client};

/// The clients made so far, and the TLS settings they were made with.
pub struct CoordinatorClients {
    /// Whether the clients keep cookies.
    cookies: bool,
    tls: CoordinatorTls,
    by_base: HashMap<String, reqwest::Client>,
}

impl CoordinatorClients {
    pub fn new(cookies: bool) -> CoordinatorClients {
        CoordinatorClients { cookies, tls: CoordinatorTls::default(), by_base: HashMap::new() }
    }

    /// The client for the coordinator at `base`, trusting what `tls` says.
    pub fn client(&mut self, base: &str, tls: &CoordinatorTls) -> Result<reqwest::Client, String> {
        if self.tls != *tls {
            self.by_base.clear();
            self.tls = tls.clone();
        }
        if let Some(client) = self.by_base.get(base) {
            return Ok(client.clone());
        }
        let builder = reqwest::Client::builder()
            .cookie_store(self.cookies)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("trino-router/", env!("CARGO_PKG_VERSION")));
        let client = coordinator_client(builder, tls)?.build().map_err(|e| describe(&e))?;
        self.by_base.insert(base.to_owned(), client.clone());
        Ok(client)
    }
}

/// What went wrong with a call, in a few words: `timed out`, `TLS handshake failed: ...`, or the error.
pub fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if let Some(tls) = crate::domain::config::tls::tls_failure(error) {
        format!("TLS handshake failed: {tls}")
    } else {
        error.to_string()
    }
}
