//! One truth across router replicas: the operator's say over each cluster (drain, disable, enable, and
//! why) reaches every replica within a round trip and survives the restart of any or all of them,
//! without a database.
//!
//! - **Peers** (`fleet.peers`): addresses, or names that resolve to every replica (a Kubernetes headless
//!   Service), resolved again every round; a replica recognises itself among them by its process's
//!   random instance id.
//! - **Push and pull**: a change made here (an admin command) is written to the state file and sent to
//!   every peer at once before the command is answered ([`Fleet::push_now`]); and every
//!   `fleet.sync_interval` each replica exchanges its whole book with every peer ([`Fleet::round`]:
//!   `SyncOperatorState`, both sides keep the newer entry of each cluster), so a peer that missed a push
//!   has it within one interval of answering again, through any replica.
//! - **Durable**: the book is written to `fleet.state_file` on every change (by the fleet task, woken by
//!   the change; an admin command's own change before it is answered), read at start before anything
//!   is served.
//! - **Start**: a replica with peers or a state file reports NOT_SERVING on `grpc.health.v1` until it
//!   has heard from a settled peer, or from every peer there is (or nothing listens there), or
//!   `fleet.startup_wait` has passed ([`Fleet::settle`]). Only then does a change of `enabled:` in its
//!   config file since an entry was written override that entry.
//! - **Authenticated**: every call carries the admin token (and is made over TLS, with this replica's
//!   certificate when the peers require one, when the router's port speaks TLS).

mod peers;
pub mod state_file;
mod wire;

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;

use crate::operate::api::admin_client::AdminClient;
use crate::operate::api::{ListClustersRequest, OperatorState, ReplicaView};
use crate::state::router::Router;
pub use peers::Failure;
use peers::{Channels, Target, classify, with_token};

/// How often a starting replica asks again while it waits for its peers.
const SETTLE_RETRY: Duration = Duration::from_millis(250);

/// What this replica last heard from one peer address.
#[derive(Debug, Clone)]
pub struct PeerRecord {
    /// The configured peer the address came from.
    pub configured: String,
    /// Its replica name, once it answered.
    pub replica: Option<String>,
    /// This replica itself (it answered with our instance id): never called again.
    pub is_self: bool,
    pub status: PeerStatus,
    /// Why the last call failed.
    pub error: String,
    /// It had heard its own peers and state file when it last answered.
    pub settled: bool,
    /// When it last answered.
    pub last_answer: Option<Instant>,
    /// Its book was the same as ours after the last exchange.
    pub in_sync: bool,
}

/// A peer address's state as of the last call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerStatus {
    Ok,
    Absent,
    Unreachable,
}

impl PeerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerStatus::Ok => "ok",
            PeerStatus::Absent => "absent",
            PeerStatus::Unreachable => "unreachable",
        }
    }
}

/// What one exchange with every peer found.
#[derive(Debug, Default)]
pub struct Round {
    /// Peers that answered: (name, whether they were settled).
    pub answered: Vec<(String, bool)>,
    /// Peer addresses where nothing listens, and names that resolve to nothing.
    pub absent: Vec<String>,
    /// Peers that did not answer in time or failed: (address, why).
    pub unreachable: Vec<(String, String)>,
}

/// The replica's side of the fleet: its peers and its state file.
pub struct Fleet {
    router: Arc<Router>,
    /// This process (random): how a replica recognises itself among its peers' addresses.
    instance: u64,
    channels: Channels,
    peers: Mutex<BTreeMap<SocketAddr, PeerRecord>>,
    /// The book's generation last written to the state file, and the last failure to write it (logged
    /// once, not every second); one writer at a time.
    saved: tokio::sync::Mutex<(Option<u64>, Option<String>)>,
}

impl Fleet {
    pub fn new(router: Arc<Router>) -> Arc<Fleet> {
        let instance = std::collections::hash_map::RandomState::new().build_hasher().finish() | 1;
        Arc::new(Fleet {
            router,
            instance,
            channels: Channels::default(),
            peers: Mutex::new(BTreeMap::new()),
            saved: tokio::sync::Mutex::new((None, None)),
        })
    }

    /// Before serving: reads the state file into the book (a file that cannot be read is logged loudly
    /// and ignored: the replica goes on as without one), and marks the book unsettled when there are
    /// peers or a file to hear from.
    pub fn load_state_file(&self) {
        let settings = self.router.snapshot().config.fleet.clone();
        if !settings.peers.is_empty() || settings.state_file.is_some() {
            self.router.operators().unsettle();
        }
        let Some(path) = &settings.state_file else { return };
        match state_file::load(path) {
            Ok(state_file::Loaded::Missing) => {
                tracing::info!(file = %path.display(), "no state file yet: the operator's say comes from the peers or the config");
            }
            Ok(state_file::Loaded::Entries(entries)) => {
                let count = entries.len();
                let changed = self.router.merge_operators(entries);
                tracing::info!(file = %path.display(), entries = count, clusters = ?changed, "read the state file");
                self.router.operators().set_file_read();
            }
            Err(error) => {
                tracing::error!(%error, "the state file cannot be used: going on without it (the peers' say, else the config's `enabled:`)");
            }
        }
    }

    /// This replica's book as the admin API sends it.
    pub fn state(&self) -> OperatorState {
        let operators = self.router.operators();
        OperatorState {
            replica: operators.replica().to_string(),
            instance: self.instance,
            settled: operators.settled(),
            entries: wire::to_wire(&operators.book()),
        }
    }

    /// What this replica last heard from each peer address (itself left out).
    pub fn peers(&self) -> Vec<(SocketAddr, PeerRecord)> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.iter().filter(|(_, r)| !r.is_self).map(|(a, r)| (*a, r.clone())).collect()
    }

    /// Writes the book to the state file if it changed since last written (and there is a file).
    pub async fn persist(&self) {
        let Some(path) = self.router.snapshot().config.fleet.state_file.clone() else { return };
        let mut saved = self.saved.lock().await;
        let generation = self.router.operators().generation();
        if saved.0 == Some(generation) {
            return;
        }
        let book = self.router.operators().book();
        let replica = self.router.operators().replica().to_string();
        let written = tokio::task::spawn_blocking(move || state_file::save(&path, &replica, &book))
            .await
            .unwrap_or_else(|e| Err(format!("the state file writer failed: {e}")));
        match written {
            Ok(()) => {
                if saved.1.take().is_some() {
                    tracing::info!("the state file is written again");
                }
                saved.0 = Some(generation);
            }
            Err(error) if saved.1.as_deref() != Some(error.as_str()) => {
                tracing::error!(%error, "could not write the state file: a restart of every replica at once would forget the operator's last say");
                saved.1 = Some(error);
            }
            Err(error) => tracing::debug!(%error, "still cannot write the state file"),
        }
    }

    /// A peer's call (`SyncOperatorState`): keeps what is newer of its book and answers with this
    /// replica's book at once; a change wakes the fleet task, which writes the state file (a slow disk
    /// never holds up the answer, nor routing, which follows the book in memory).
    pub async fn receive(&self, state: OperatorState) -> Result<OperatorState, Status> {
        if state.instance == self.instance {
            return Ok(self.state());
        }
        let (entries, refused) = wire::from_wire(&state)
            .map_err(|problem| Status::invalid_argument(format!("operator state refused: {problem}")))?;
        if !refused.is_empty() {
            tracing::warn!(peer = state.replica, ?refused, "entries from a peer left out");
        }
        if state.replica == **self.router.operators().replica() {
            tracing::error!(
                replica = state.replica,
                "two replicas have the same name: give each its own (TRINO_ROUTER_REPLICA)"
            );
        }
        self.router.merge_operators(entries);
        Ok(self.state())
    }

    /// Makes one call to every peer address but this replica's own, all at once.
    async fn call_peers<'t, T, F, Fut>(
        &self,
        targets: &'t [Target],
        call: F,
    ) -> Vec<(&'t Target, Result<T, Failure>)>
    where
        F: Fn(AdminClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let tls = self.router.snapshot().config.fleet.peer_tls.clone();
        let known_self: Vec<SocketAddr> = {
            let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            peers.iter().filter(|(_, r)| r.is_self).map(|(a, _)| *a).collect()
        };
        let asked: Vec<&Target> = targets.iter().filter(|t| !known_self.contains(&t.addr)).collect();
        let calls = asked.iter().map(|&target| {
            let pending =
                self.channels.get(target, tls.as_ref()).map(|channel| call(AdminClient::new(channel)));
            async move {
                match pending {
                    Ok(answer) => {
                        answer.await.map(tonic::Response::into_inner).map_err(|status| classify(&status))
                    }
                    Err(why) => Err(Failure::Unreachable(why)),
                }
            }
        });
        let answers = futures_util::future::join_all(calls).await;
        asked.into_iter().zip(answers).collect()
    }

    /// One exchange with every peer: sends this book, keeps what is newer of each answer.
    pub async fn round(&self) -> Round {
        let snapshot = self.router.snapshot();
        let settings = &snapshot.config.fleet;
        if settings.peers.is_empty() {
            return Round::default();
        }
        let (targets, unresolved) = peers::resolve(&settings.peers).await;
        self.channels.keep_only(&targets);
        let mut round = Round { absent: unresolved, ..Round::default() };
        let token = snapshot.config.admin_token.as_ref().map(|t| t.expose().to_owned()).unwrap_or_default();
        let mine = self.state();
        let answers = self
            .call_peers(&targets, |mut client| {
                let request = with_token(mine.clone(), &token);
                async move { client.sync_operator_state(request).await }
            })
            .await;
        for (target, answer) in answers {
            self.record(target, answer, &mut round);
        }
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|addr, _| targets.iter().any(|t| t.addr == *addr));
        round
    }

    /// Keeps what one peer answered (merging its book), and notes how it went.
    fn record(&self, target: &Target, answer: Result<OperatorState, Failure>, round: &mut Round) {
        let previous = {
            let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            peers.get(&target.addr).cloned()
        };
        let mut record = previous.clone().unwrap_or(PeerRecord {
            configured: target.configured.to_string(),
            replica: None,
            is_self: false,
            status: PeerStatus::Unreachable,
            error: String::new(),
            settled: false,
            last_answer: None,
            in_sync: false,
        });
        match answer {
            Ok(state) if state.instance == self.instance => {
                tracing::debug!(addr = %target.addr, "this replica is among its own peers' addresses");
                record.is_self = true;
                record.status = PeerStatus::Ok;
            }
            Ok(state) => match wire::from_wire(&state) {
                Ok((entries, refused)) => {
                    if !refused.is_empty() {
                        tracing::warn!(peer = state.replica, ?refused, "entries from a peer left out");
                    }
                    self.router.merge_operators(entries);
                    let ours = wire::to_wire(&self.router.operators().book());
                    record.in_sync = ours == state.entries;
                    record.replica = Some(state.replica.clone());
                    record.status = PeerStatus::Ok;
                    record.error.clear();
                    record.settled = state.settled;
                    record.last_answer = Some(Instant::now());
                    round.answered.push((state.replica, state.settled));
                }
                Err(problem) => {
                    record.status = PeerStatus::Unreachable;
                    record.error = format!("its operator state was refused: {problem}");
                    round.unreachable.push((target.addr.to_string(), record.error.clone()));
                }
            },
            Err(failure) => {
                record.status = match failure {
                    Failure::Absent(_) => PeerStatus::Absent,
                    Failure::Unreachable(_) => PeerStatus::Unreachable,
                };
                record.error = failure.message().to_owned();
                match failure {
                    Failure::Absent(_) => round.absent.push(target.addr.to_string()),
                    Failure::Unreachable(why) => round.unreachable.push((target.addr.to_string(), why)),
                }
            }
        }
        log_change(target, previous.as_ref(), &record);
        crate::state::metrics::METRICS.fleet_exchange(record.status.as_str());
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).insert(target.addr, record);
    }

    /// After a change made here: written to the state file and sent to every peer, both at once. Returns
    /// the peers that took it and those that did not answer (they pull it within `fleet.sync_interval` of
    /// answering again).
    pub async fn push_now(&self) -> (Vec<String>, Vec<String>) {
        let ((), round) = tokio::join!(self.persist(), self.round());
        let reached = round.answered.into_iter().map(|(name, _)| name).collect();
        let missed = round.unreachable.into_iter().map(|(addr, why)| format!("{addr} ({why})")).collect();
        (reached, missed)
    }

    /// Waits, before the replica reports SERVING, until its book is as complete as it can know: a
    /// settled peer answered, or every peer answered or is absent, or `fleet.startup_wait` passed (then
    /// it serves with its state file, else the config's `enabled:`, and says so loudly).
    pub async fn settle(&self) {
        let operators = self.router.operators();
        if operators.settled() {
            return;
        }
        let wait = self.router.snapshot().config.fleet.startup_wait;
        let started = Instant::now();
        loop {
            let round = self.round().await;
            let settled_peer =
                round.answered.iter().find(|(_, settled)| *settled).map(|(name, _)| name.clone());
            if let Some(peer) = settled_peer {
                tracing::info!(
                    from = peer,
                    answered = round.answered.len(),
                    entries = operators.book().len(),
                    "operator state settled: from a settled peer"
                );
                break;
            }
            if round.unreachable.is_empty() {
                let source = if !round.answered.is_empty() {
                    "from every peer (all starting)"
                } else if operators.file_read() {
                    "from the state file (no peer running)"
                } else {
                    "no peer running and no state file: the config's `enabled:`"
                };
                tracing::info!(
                    source,
                    answered = round.answered.len(),
                    absent = round.absent.len(),
                    entries = operators.book().len(),
                    "operator state settled"
                );
                break;
            }
            if started.elapsed() >= wait {
                let from = if operators.file_read() {
                    "its state file"
                } else {
                    "the config's `enabled:` (no state file)"
                };
                tracing::error!(
                    waited = ?wait,
                    unreachable = ?round.unreachable,
                    "peers did not answer: serving with {from}; a drain made through another replica since is not known here until a peer answers"
                );
                break;
            }
            tokio::time::sleep(SETTLE_RETRY).await;
        }
        operators.set_settled();
        // The fleet task writes the state file (a slow disk does not hold up SERVING).
        self.router.reconcile_with_config();
    }

    /// Forever (the server aborts it): on every change, write the file and push; every
    /// `fleet.sync_interval`, exchange books with every peer.
    pub async fn run(self: Arc<Self>) {
        loop {
            let interval = self.router.snapshot().config.fleet.sync_interval;
            tokio::select! {
                _ = self.router.operators().changed().notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
            self.persist().await;
            let round = self.round().await;
            crate::state::metrics::METRICS.fleet_peers(
                round.answered.len(),
                round.absent.len(),
                round.unreachable.len(),
            );
            self.persist().await;
        }
    }

    /// Every peer's own view of the clusters (`ListClusters` without `fleet`), asked at once.
    pub async fn views(&self) -> Vec<ReplicaView> {
        let snapshot = self.router.snapshot();
        let settings = &snapshot.config.fleet;
        let (targets, unresolved) = peers::resolve(&settings.peers).await;
        let token = snapshot.config.admin_token.as_ref().map(|t| t.expose().to_owned()).unwrap_or_default();
        let answers = self
            .call_peers(&targets, |mut client| {
                let request = with_token(ListClustersRequest { fleet: false }, &token);
                async move { client.list_clusters(request).await }
            })
            .await;
        let mut views: Vec<ReplicaView> = Vec::new();
        for (target, answer) in answers {
            let view = match answer {
                Ok(list) if list.replica == **self.router.operators().replica() => continue,
                Ok(list) => ReplicaView {
                    replica: list.replica,
                    address: target.addr.to_string(),
                    status: "ok".into(),
                    error: String::new(),
                    settled: list.settled,
                    clusters: list.clusters,
                },
                Err(failure) => ReplicaView {
                    address: target.addr.to_string(),
                    status: match failure {
                        Failure::Absent(_) => "absent".into(),
                        Failure::Unreachable(_) => "unreachable".into(),
                    },
                    error: failure.message().to_owned(),
                    ..ReplicaView::default()
                },
            };
            views.push(view);
        }
        views.extend(unresolved.into_iter().map(|why| ReplicaView {
            address: why.split_once(": ").map_or(why.clone(), |(a, _)| a.to_owned()),
            status: "absent".into(),
            error: why,
            ..ReplicaView::default()
        }));
        views
    }
}

/// One log line when a peer's status changes (not one a second while it stays down).
fn log_change(target: &Target, previous: Option<&PeerRecord>, now: &PeerRecord) {
    if now.is_self || previous.is_some_and(|p| p.status == now.status && p.replica == now.replica) {
        return;
    }
    let peer = now.replica.as_deref().unwrap_or("?");
    match now.status {
        PeerStatus::Ok => tracing::info!(addr = %target.addr, peer, settled = now.settled, "peer answered"),
        PeerStatus::Absent => tracing::info!(addr = %target.addr, error = now.error, "no peer listens there"),
        PeerStatus::Unreachable => {
            tracing::warn!(addr = %target.addr, peer, error = now.error, "peer does not answer")
        }
    }
}

#[cfg(test)]
mod tests;
