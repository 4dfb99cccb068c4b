//! The HTTP clients of the router's own calls to coordinators (health polls, load statistics, discovery
//! lookups): one per coordinator URL, so that each keeps its own connections (and, for the poller, its
//! web-UI session cookie), made afresh when what they trust (`coordinator_tls`) changes with a reload;
//! and how a failed call is described (a TLS failure named as such).

use std::collections::HashMap;

use crate::domain::config::tls::CoordinatorTls;

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
    } else if let Some(tls) = tls_failure(error) {
        format!("TLS handshake failed: {tls}")
    } else {
        error.to_string()
    }
}

/// Applies `tls` to an HTTP client for coordinators: which CAs it trusts for `https://` URLs.
pub fn coordinator_client(
    builder: reqwest::ClientBuilder,
    tls: &CoordinatorTls,
) -> Result<reqwest::ClientBuilder, String> {
    crate::domain::config::tls::install_crypto_provider();
    let Some(ca) = &tls.ca else {
        return Ok(builder);
    };
    let certs = crate::domain::config::tls::ca_certificates(ca)?
        .iter()
        .map(|der| reqwest::Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}`: {e}", ca.path.display()))?;
    Ok(if tls.system_roots { builder.tls_certs_merge(certs) } else { builder.tls_certs_only(certs) })
}

/// When `error` (or an error it wraps) is a TLS failure, what went wrong, e.g. `invalid peer
/// certificate: UnknownIssuer`.
pub fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An io::Error hides the error it wraps from `source()`: look inside.
        if let Some(inner) = error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
            && let Some(tls) = tls_failure(inner)
        {
            return Some(tls);
        }
        next = error.source();
    }
    None
}
