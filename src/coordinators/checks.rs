//! The router's questions to coordinators about single queries ([`crate::state::router::Check`]): is a
//! coordinator id claimed for a second cluster really used there, and is a query a client asks about
//! really running on the cluster its id names. One task answers them, at most
//! [`MAX_CONCURRENT_CHECKS`] at a time; the router queues at most a bounded number and asks about each
//! query at most once per [`crate::state::router::CHECK_INTERVAL`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;

use crate::coordinators::query_lookup::QueryLookup;
use crate::state::metrics::{METRICS, Safeguard};
use crate::state::router::{Check, Router};

/// Checks under way at once, at most.
pub const MAX_CONCURRENT_CHECKS: usize = 16;

/// How long one check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers the router's checks until `inbox` closes.
pub async fn answer(router: Arc<Router>, lookup: Arc<QueryLookup>, mut inbox: Receiver<Check>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_CHECKS));
    while let Some(check) = inbox.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (router, lookup) = (router.clone(), lookup.clone());
        tokio::spawn(async move {
            let snapshot = router.snapshot();
            let known = match snapshot.cluster_by_name(&check.cluster) {
                Some(cluster) => lookup.knows(&snapshot, cluster, &check.query, CHECK_TIMEOUT).await,
                None => Some(false),
            };
            // No clear answer: not confirmed (asked again after the check interval, if it comes up).
            if known == Some(false) {
                METRICS.safeguard(Safeguard::UnverifiedClaim);
            }
            router.checked(check, known);
            drop(permit);
        });
    }
}
