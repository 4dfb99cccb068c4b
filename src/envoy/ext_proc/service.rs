//! The tonic glue of the ext_proc service: each `Process` call (one HTTP request in Envoy) becomes a
//! [`ProcessingStream`] — decode ([`super::messages`]), step the [`StreamMachine`], encode — fed by the
//! inbound messages, its replies streamed back in order; a lookup the machine asks for is made with
//! [`QueryLookup`] before reading on.
//!
//! No task is spawned per stream: the reply stream polls the inbound stream itself, so back-pressure is
//! natural and a stream costs one small state object. When the machine asks for a discovery lookup, the
//! reply stream polls that lookup before reading on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::messages::{decode, encode};
use super::stream::{Role, Step, StreamMachine};
use crate::coordinators::query_lookup::{Found, QueryLookup};
use crate::domain::config::ENVOY_AUTH_METADATA;
use crate::domain::query_id::QueryId;
use crate::envoy::protocol::ROLE_METADATA;
use crate::state::metrics::{METRICS, Safeguard};
use crate::state::router::Router;

/// One stream at the protobuf level: each message decoded, fed to the machine, its reply encoded.
pub struct ProcessingStream {
    machine: StreamMachine,
}

impl ProcessingStream {
    /// A stream of `role`; when its metadata named no role, a stream whose first message is an answer
    /// learns (see [`ProcessingStream::role_known`]).
    pub fn new(router: Arc<Router>, role: Role) -> ProcessingStream {
        ProcessingStream { machine: StreamMachine::new(router, role, false) }
    }

    /// A stream whose role came from its metadata (or must, with `envoy_auth`): its first message does
    /// not change it.
    pub fn role_known(router: Arc<Router>, role: Role) -> ProcessingStream {
        ProcessingStream { machine: StreamMachine::new(router, role, true) }
    }

    /// Feeds one message from Envoy.
    pub fn on_message(&mut self, message: ProcessingRequest) -> Step<Box<ProcessingResponse>> {
        self.machine.on_message(decode(message)).map(|reply| Box::new(encode(reply)))
    }

    /// After a [`Step::Locate`] lookup: decide again with what was found.
    pub fn resume(&mut self, found: Found) -> Step<Box<ProcessingResponse>> {
        self.machine.resume(found).map(|reply| Box::new(encode(reply)))
    }
}

/// The `envoy.service.ext_proc.v3.ExternalProcessor` service.
pub struct ExtProcService {
    router: Arc<Router>,
    lookup: Arc<QueryLookup>,
}

impl ExtProcService {
    pub fn new(router: Arc<Router>, lookup: Arc<QueryLookup>) -> ExtProcService {
        ExtProcService { router, lookup }
    }
}

#[tonic::async_trait]
impl ExternalProcessor for ExtProcService {
    type ProcessStream = Replies;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Replies>, Status> {
        let metadata = request.metadata();
        let authenticated = self.router.snapshot().config.envoy_auth.clone();
        if let Some(expected) = &authenticated {
            let presented = metadata.get(ENVOY_AUTH_METADATA).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !expected.matches(presented) {
                METRICS.safeguard(Safeguard::UnauthenticatedStream);
                tracing::debug!("an ext_proc stream without the envoy_auth token: refused");
                return Err(Status::unauthenticated(format!(
                    "this router takes ext_proc streams only with its envoy_auth token in the gRPC metadata \
                     `{ENVOY_AUTH_METADATA}` (envoy-config writes it)"
                )));
            }
        }
        let named = metadata.get(ROLE_METADATA).and_then(|v| v.to_str().ok());
        let role = Role::from_metadata(named);
        METRICS.stream_opened(role.as_str());
        // With envoy_auth, the role is what Envoy's config says, never what the stream's first message
        // suggests.
        let role_known = named.is_some() || authenticated.is_some();
        let machine = if role_known {
            ProcessingStream::role_known(self.router.clone(), role)
        } else {
            ProcessingStream::new(self.router.clone(), role)
        };
        Ok(Response::new(Replies {
            role,
            inbound: request.into_inner(),
            machine,
            router: self.router.clone(),
            lookups: self.lookup.clone(),
            lookup: None,
            done: false,
        }))
    }
}

/// The replies of one stream, produced as Envoy's messages arrive.
pub struct Replies {
    role: Role,
    inbound: Streaming<ProcessingRequest>,
    machine: ProcessingStream,
    router: Arc<Router>,
    lookups: Arc<QueryLookup>,
    /// A lookup the machine waits for.
    lookup: Option<Pin<Box<dyn Future<Output = Found> + Send>>>,
    done: bool,
}

impl Replies {
    /// Acts on a step; `Some` ends this poll with an item (or the end of the stream).
    fn step(
        &mut self,
        step: Step<Box<ProcessingResponse>>,
    ) -> Option<Poll<Option<Result<ProcessingResponse, Status>>>> {
        match step {
            Step::Reply(reply) => Some(Poll::Ready(Some(Ok(*reply)))),
            Step::Quiet => None,
            Step::Finish => {
                self.done = true;
                None
            }
            Step::Locate(query, user) => {
                self.lookup = Some(find_owner(self.lookups.clone(), self.router.clone(), query, user));
                None
            }
        }
    }
}

/// The lookup of `query`, as a future the reply stream polls.
fn find_owner(
    lookups: Arc<QueryLookup>,
    router: Arc<Router>,
    query: QueryId,
    user: Option<String>,
) -> Pin<Box<dyn Future<Output = Found> + Send>> {
    Box::pin(async move { lookups.find_owner(&router, &query, user.as_deref()).await })
}

impl Stream for Replies {
    type Item = Result<ProcessingResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while !this.done {
            if let Some(lookup) = this.lookup.as_mut() {
                let found = ready!(lookup.as_mut().poll(cx));
                this.lookup = None;
                let step = this.machine.resume(found);
                match this.step(step) {
                    Some(poll) => return poll,
                    None => continue,
                }
            }
            match ready!(Pin::new(&mut this.inbound).poll_next(cx)) {
                Some(Ok(message)) => {
                    let step = this.machine.on_message(message);
                    if let Some(poll) = this.step(step) {
                        return poll;
                    }
                }
                Some(Err(status)) => {
                    // Envoy reset the stream (client gone, timeout): nothing left to answer.
                    tracing::debug!(%status, "ext_proc stream ended with an error");
                    METRICS.stream_failed(this.role.as_str());
                    this.done = true;
                }
                None => this.done = true,
            }
        }
        Poll::Ready(None)
    }
}
