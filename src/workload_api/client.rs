//! The client: one HTTP/2 connection per `FetchX509SVID` stream, reconnected with backoff.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::crypto::CryptoProvider;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::material::{self, InvalidUpdate, SvidSelector, X509Material};
use super::pb;
use super::{Backoff, Endpoint, EndpointError};

/// The metadata every Workload API request carries; servers refuse requests without it
/// (`InvalidArgument`), which keeps browsers and other confused deputies from calling the agent.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// Events buffered between the connection task and the consumer. Small: the task waits for the
/// consumer rather than piling up updates that a later one replaces anyway.
const EVENT_BUFFER: usize = 8;

/// A Workload API client that streams X509-SVIDs, bundles and CRLs.
///
/// Configure it, then [`watch`](Self::watch): a background task connects, opens a
/// `FetchX509SVID` stream, validates every response and reports what happens as
/// [`WorkloadEvent`]s; when the agent is unreachable or the stream breaks, it reconnects after a
/// [`Backoff`] delay. Only responses that validate become [`WorkloadEvent::Updated`]; an invalid
/// one is [`WorkloadEvent::Refused`] and the consumer keeps what it had.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_mtls::workload_api::{SvidSelector, WorkloadApiClient, WorkloadEvent};
///
/// let mut events = WorkloadApiClient::from_env()?      // SPIFFE_ENDPOINT_SOCKET
///     .select_svid(SvidSelector::Hint("external".into()))
///     .watch();
/// while let Some(event) = events.recv().await {
///     match event {
///         WorkloadEvent::Updated(material) => {
///             println!("serving as {}", material.svid().spiffe_id());
///         }
///         WorkloadEvent::GaveUp(error) => return Err(error.into()),
///         other => println!("{other:?}"),
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct WorkloadApiClient {
    endpoint: Endpoint,
    backoff: Backoff,
    selector: SvidSelector,
    connect_timeout: Duration,
    first_response_timeout: Duration,
    provider: Arc<CryptoProvider>,
}

impl WorkloadApiClient {
    /// A client of the agent at `endpoint`, with the default [`Backoff`], the first SVID as the
    /// server's, a 10 s connect timeout and a 60 s first-response timeout.
    pub fn new(endpoint: Endpoint) -> Self {
        WorkloadApiClient {
            endpoint,
            backoff: Backoff::default(),
            selector: SvidSelector::First,
            connect_timeout: Duration::from_secs(10),
            first_response_timeout: Duration::from_secs(60),
            provider: Arc::new(crate::tls::provider::crypto_provider()),
        }
    }

    /// A client of the agent named by `SPIFFE_ENDPOINT_SOCKET`.
    pub fn from_env() -> Result<Self, EndpointError> {
        Endpoint::from_env().map(Self::new)
    }

    /// The reconnect delays.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Which SVID is the server's; a response without a matching one is refused.
    pub fn select_svid(mut self, selector: SvidSelector) -> Self {
        self.selector = selector;
        self
    }

    /// How long connecting (socket and HTTP/2 handshake) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a new stream may wait for its first response before the client gives up on it
    /// and reconnects: without this, an agent that accepts connections but never answers (hung,
    /// or not an agent) would stall the client silently. Agents answer only after attesting the
    /// workload, so this must exceed the attestation time: SPIRE's Kubernetes attestor polls the
    /// kubelet for up to 30 s by default. Once a stream has delivered a response, silence is
    /// normal (nothing changed) and is not timed.
    pub fn first_response_timeout(mut self, timeout: Duration) -> Self {
        self.first_response_timeout = timeout;
        self
    }

    /// The crypto provider that checks each SVID's private key against its certificate
    /// (default: the crate's [`crypto_provider`](crate::tls::crypto_provider)).
    pub fn crypto_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = provider;
        self
    }

    /// The agent's endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Starts streaming. Must be called within a Tokio runtime; the task stops when the returned
    /// [`WorkloadEvents`] is dropped.
    pub fn watch(self) -> WorkloadEvents {
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let task = tokio::spawn(self.run(tx));
        WorkloadEvents {
            rx,
            task,
            latest: None,
        }
    }

    async fn run(self, tx: mpsc::Sender<WorkloadEvent>) {
        let mut attempt: u32 = 0;
        loop {
            let Ok(error) = self.stream_once(&tx, &mut attempt).await else {
                return;
            };
            if error.is_fatal() {
                let _ = tx.send(WorkloadEvent::GaveUp(error)).await;
                return;
            }
            if tx.send(WorkloadEvent::Disconnected(error)).await.is_err() {
                return;
            }
            attempt = attempt.saturating_add(1);
            let delay = self.backoff.delay(attempt);
            if tx
                .send(WorkloadEvent::Retrying { attempt, delay })
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// One connection and one stream, until it fails. `Err` when the consumer has gone away.
    async fn stream_once(
        &self,
        tx: &mpsc::Sender<WorkloadEvent>,
        attempt: &mut u32,
    ) -> Result<StreamError, ConsumerGone> {
        let (send_request, _connection) = match self.connect().await {
            Ok(connection) => connection,
            Err(error) => return Ok(error),
        };
        let mut client = pb::spiffe_workload_api_client::SpiffeWorkloadApiClient::with_origin(
            Http2Connection(send_request),
            http::Uri::from_static("http://localhost"),
        );
        let mut request = tonic::Request::new(pb::X509svidRequest {});
        request.metadata_mut().insert(
            SECURITY_HEADER,
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let deadline = tokio::time::Instant::now() + self.first_response_timeout;
        let timed_out = StreamError::FirstResponseTimeout {
            timeout: self.first_response_timeout,
        };
        let mut stream =
            match tokio::time::timeout_at(deadline, client.fetch_x509svid(request)).await {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => return Ok(StreamError::from_status(&status)),
                Err(_) => return Ok(timed_out),
            };
        send(tx, WorkloadEvent::Connected).await?;
        let mut first = Some(timed_out);
        // Agents may resend an unchanged response; within one stream it is reported once.
        let mut last_accepted: Option<pb::X509svidResponse> = None;
        loop {
            let next = match first.take() {
                Some(timed_out) => {
                    match tokio::time::timeout_at(deadline, stream.message()).await {
                        Ok(next) => next,
                        Err(_) => return Ok(timed_out),
                    }
                }
                None => stream.message().await,
            };
            let response = match next {
                Ok(Some(response)) => response,
                Ok(None) => return Ok(StreamError::Ended),
                Err(status) => return Ok(StreamError::from_status(&status)),
            };
            *attempt = 0;
            if last_accepted.as_ref() == Some(&response) {
                continue;
            }
            match material::from_response(&response, &self.selector, &self.provider) {
                Ok(material) => {
                    last_accepted = Some(response);
                    send(tx, WorkloadEvent::Updated(Arc::new(material))).await?;
                }
                Err(error) => send(tx, WorkloadEvent::Refused(error)).await?,
            }
        }
    }

    async fn connect(
        &self,
    ) -> Result<(http2::SendRequest<tonic::body::Body>, AbortOnDrop), StreamError> {
        let connecting = async {
            match &self.endpoint {
                Endpoint::Tcp(addr) => {
                    let io = tokio::net::TcpStream::connect(addr)
                        .await
                        .map_err(|source| self.connect_error(source))?;
                    // Requests are tiny and latency matters more than packet count.
                    let _ = io.set_nodelay(true);
                    handshake(io).await
                }
                #[cfg(unix)]
                Endpoint::Unix(path) => {
                    let io = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|source| self.connect_error(source))?;
                    handshake(io).await
                }
                #[cfg(not(unix))]
                Endpoint::Unix(_) => Err(StreamError::UnixUnsupported),
            }
        };
        tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .unwrap_or_else(|_| {
                Err(StreamError::ConnectTimeout {
                    endpoint: self.endpoint.clone(),
                    timeout: self.connect_timeout,
                })
            })
    }

    fn connect_error(&self, source: io::Error) -> StreamError {
        StreamError::Connect {
            endpoint: self.endpoint.clone(),
            source,
        }
    }
}

async fn handshake<T>(
    io: T,
) -> Result<(http2::SendRequest<tonic::body::Body>, AbortOnDrop), StreamError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (send_request, connection) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|error| StreamError::Handshake(Box::new(error)))?;
    // The connection's IO runs in its own task; its end shows up as the stream's error.
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((send_request, AbortOnDrop(task)))
}

async fn send(tx: &mpsc::Sender<WorkloadEvent>, event: WorkloadEvent) -> Result<(), ConsumerGone> {
    tx.send(event).await.map_err(|_| ConsumerGone)
}

/// The receiving side of [`WorkloadApiClient::watch`] was dropped.
struct ConsumerGone;

/// Aborts the connection task when the stream attempt that owns it ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// hyper's HTTP/2 client connection as the tower service tonic's generated client calls.
#[derive(Clone)]
struct Http2Connection(http2::SendRequest<tonic::body::Body>);

type ResponseFuture = Pin<
    Box<dyn Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>> + Send>,
>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Http2Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// What happened on the way to (or on) the Workload API stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum WorkloadEvent {
    /// A `FetchX509SVID` stream is open (the agent answered the call).
    Connected,
    /// A response validated: this is now the workload's complete material (what it lacks was
    /// removed). Within one stream, a response equal to the last accepted one is not reported
    /// again; the first one of every stream is.
    Updated(Arc<X509Material>),
    /// A response did not validate; keep using the previous material.
    Refused(InvalidUpdate),
    /// Connecting failed or the stream ended; [`Retrying`](Self::Retrying) follows.
    Disconnected(StreamError),
    /// The next attempt starts after `delay`; `attempt` counts consecutive failures (it starts
    /// again at 1 after a stream has delivered a response).
    Retrying {
        /// Consecutive failed attempts so far.
        attempt: u32,
        /// Wait before the next one.
        delay: Duration,
    },
    /// The agent answered with a code the specification says not to retry (`InvalidArgument`,
    /// `Unimplemented`); this is the last event.
    GaveUp(StreamError),
}

/// Why a Workload API stream could not be opened or ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The socket could not be connected (agent down, socket missing, permission denied).
    #[error("cannot connect to the Workload API at {endpoint}: {source}")]
    Connect {
        /// The agent's endpoint.
        endpoint: Endpoint,
        /// The OS's answer.
        #[source]
        source: io::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("no connection to the Workload API at {endpoint} within {timeout:?}")]
    ConnectTimeout {
        /// The agent's endpoint.
        endpoint: Endpoint,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The agent did not send a first response within the first-response timeout.
    #[error("no response from the Workload API within {timeout:?}")]
    FirstResponseTimeout {
        /// The configured timeout.
        timeout: Duration,
    },
    /// A `unix:` endpoint on a platform without Unix domain sockets.
    #[error("unix: endpoints are not supported on this platform")]
    UnixUnsupported,
    /// The HTTP/2 handshake with the agent failed.
    #[error("HTTP/2 handshake with the Workload API failed: {0}")]
    Handshake(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// `PermissionDenied`: the agent has no identity for this workload (not registered yet, or
    /// its entries were removed). The specification: stop using the SVIDs, retry with backoff.
    #[error("the Workload API has no identity for this workload: {message}")]
    NoIdentity {
        /// The agent's message (SPIRE: "no identity issued").
        message: String,
    },
    /// Any other gRPC status, transport failures included (`Unavailable`, `Unknown`, ...).
    #[error("the Workload API answered {code:?}: {message}")]
    Status {
        /// The gRPC code.
        code: tonic::Code,
        /// The message.
        message: String,
    },
    /// The agent ended the stream without an error.
    #[error("the Workload API ended the stream")]
    Ended,
}

impl StreamError {
    fn from_status(status: &tonic::Status) -> Self {
        let message = status.message().chars().take(512).collect();
        match status.code() {
            tonic::Code::PermissionDenied => StreamError::NoIdentity { message },
            code => StreamError::Status { code, message },
        }
    }

    /// Whether the specification says not to retry: `InvalidArgument` (the client broke the
    /// protocol, e.g. no security header) and `Unimplemented`.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            StreamError::Status {
                code: tonic::Code::InvalidArgument | tonic::Code::Unimplemented,
                ..
            }
        )
    }
}

/// The events of a [`WorkloadApiClient`], in order. A [`Stream`](futures_core::Stream), and
/// [`recv`](Self::recv) for callers without stream combinators.
///
/// Material advances only as events are consumed: read them continuously (a task that applies
/// each [`WorkloadEvent::Updated`]). Dropping this stops the client and closes its connection.
#[derive(Debug)]
pub struct WorkloadEvents {
    rx: mpsc::Receiver<WorkloadEvent>,
    task: JoinHandle<()>,
    latest: Option<Arc<X509Material>>,
}

impl WorkloadEvents {
    /// The next event; `None` after [`WorkloadEvent::GaveUp`].
    pub async fn recv(&mut self) -> Option<WorkloadEvent> {
        std::future::poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// The material of the last [`WorkloadEvent::Updated`] consumed so far: the last good one.
    /// Refused updates and broken streams leave it alone; so does `PermissionDenied`
    /// ([`StreamError::NoIdentity`]), after which the specification wants the SVIDs no longer
    /// used: that decision is the consumer's.
    pub fn latest(&self) -> Option<&Arc<X509Material>> {
        self.latest.as_ref()
    }

    fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<WorkloadEvent>> {
        let event = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(WorkloadEvent::Updated(material))) = &event {
            self.latest = Some(Arc::clone(material));
        }
        event
    }
}

impl futures_core::Stream for WorkloadEvents {
    type Item = WorkloadEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_next_event(cx)
    }
}

impl Drop for WorkloadEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_errors() {
        let denied =
            StreamError::from_status(&tonic::Status::permission_denied("no identity issued"));
        assert!(
            matches!(&denied, StreamError::NoIdentity { message } if message == "no identity issued")
        );
        assert!(!denied.is_fatal());
        for code in [tonic::Code::InvalidArgument, tonic::Code::Unimplemented] {
            assert!(StreamError::from_status(&tonic::Status::new(code, "x")).is_fatal());
        }
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::Unknown,
            tonic::Code::Internal,
        ] {
            assert!(!StreamError::from_status(&tonic::Status::new(code, "x")).is_fatal());
        }
        let long = StreamError::from_status(&tonic::Status::unavailable("x".repeat(10_000)));
        assert!(matches!(long, StreamError::Status { message, .. } if message.len() == 512));
        assert!(!StreamError::Ended.is_fatal());
    }
}
