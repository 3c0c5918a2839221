//! `prebuildd.v1.RunnerService` over gRPC: authenticates a remote runner by
//! its token, waits for its hello, and ties the stream to the runner's
//! [`crate::runner::remote::Session`] until either side ends it.

use crate::auth::Authenticator;
use crate::error::Error;
use crate::proto::prebuildd::v1::runner_service_server::RunnerService;
use crate::proto::prebuildd::v1::{attach_request, AttachRequest, AttachResponse};
use crate::service::Service;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// How long a runner may take to send its hello after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct GrpcRunnerService {
    service: Arc<Service>,
    auth: Arc<Authenticator>,
    /// Turns true when the server shuts down: open streams then end, so
    /// that a runner's connection does not hold up the exit.
    shutdown: CancellationToken,
}

impl GrpcRunnerService {
    pub fn new(service: Arc<Service>, auth: Arc<Authenticator>, shutdown: CancellationToken) -> Self {
        GrpcRunnerService { service, auth, shutdown }
    }
}

type Outgoing = Pin<Box<dyn Stream<Item = Result<AttachResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RunnerService for GrpcRunnerService {
    type AttachStream = Outgoing;

    async fn attach(&self, request: Request<Streaming<AttachRequest>>) -> Result<Response<Outgoing>, Status> {
        let header = request.metadata().get("authorization").map(|v| v.as_bytes());
        let runner_id = self.auth.authenticate_runner(&self.service.catalog(), header)?;
        if !self.service.runners().leads() {
            return Err(Error::Unavailable(
                "this replica does not lead the reconciler, so it has no work to give; the runner retries (through the load balancer, it reaches the leader)".into(),
            )
            .into());
        }
        let runner =
            self.service.runners().remote(&runner_id).ok_or_else(|| {
                Error::FailedPrecondition(format!("runner {runner_id} is configured but not started; see the server's log"))
            })?;

        let mut incoming = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, incoming.message()).await {
            Err(_) => return Err(Error::DeadlineExceeded("no hello within 10 s of connecting".into()).into()),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => return Err(Error::FailedPrecondition("the stream ended before the hello".into()).into()),
            Ok(Ok(Some(AttachRequest { message: Some(attach_request::Message::Hello(hello)) }))) => hello,
            Ok(Ok(Some(_))) => return Err(Error::FailedPrecondition("the first message must be the hello".into()).into()),
        };
        if hello.runner_id != runner_id {
            return Err(Error::PermissionDenied(format!(
                "this token belongs to runner {runner_id}, not to {:?}; check runner_id in the runner's config",
                hello.runner_id
            ))
            .into());
        }

        let (session, outbox) = runner.attach(hello).map_err(Status::from)?;
        let (ended_tx, ended) = tokio::sync::oneshot::channel::<Status>();
        // Reads the runner's messages until its stream ends or one fails;
        // the session (and with it the connection) ends with this task.
        tokio::spawn(async move {
            loop {
                match incoming.message().await {
                    Ok(Some(message)) => {
                        if let Err(error) = session.handle(message).await {
                            let _ = ended_tx.send(error.into());
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(runner = %runner_id, member = %session.member(), %status, "runner stream ended");
                        return;
                    }
                }
            }
        });

        let stopping = self.shutdown.clone().cancelled_owned();
        let messages = tokio_stream::wrappers::ReceiverStream::new(outbox).map(Ok);
        // After the messages (they end when the session does), a failure the
        // reader saw, if any, ends the call; a session ended by this side
        // (lost leadership, say) ends it at once.
        let mut ended = ended;
        let failure = futures::stream::once(async move { ended.try_recv() }).filter_map(|ended| async move { ended.ok().map(Err) });
        let outgoing = messages.chain(failure).take_until(stopping);
        Ok(Response::new(Box::pin(outgoing)))
    }
}
