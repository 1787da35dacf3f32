//! Serving a tower service over mutual TLS with hyper-util (feature `hyper`).
//!
//! [`serve`] takes the finished connections of an [`MtlsListener`] (which runs every TLS
//! handshake in its own task, so a stalled client never holds up the accept loop), attaches
//! the connection's [`ConnectionInfo`] to every request, and serves HTTP/1.1 or HTTP/2 as the
//! client negotiated. [`serve_with_shutdown`] adds graceful shutdown.
//!
//! ```no_run
//! # async fn run(config: tower_mtls::MtlsConfig) -> std::io::Result<()> {
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::ServiceBuilder;
//! use tower_mtls::{AllowAnyVerified, MtlsAcceptor, MtlsAuthLayer, MtlsListener, Principal};
//!
//! let service = ServiceBuilder::new()
//!     .layer(MtlsAuthLayer::new(AllowAnyVerified))
//!     .service_fn(|req: Request<hyper::body::Incoming>| async move {
//!         let who = req.extensions().get::<Principal>().map(|p| p.to_string());
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("hello {who:?}")))))
//!     });
//! let listener = MtlsListener::bind("127.0.0.1:8443", MtlsAcceptor::new(config)).await?;
//! tower_mtls::hyper::serve(listener, service).await;
//! # Ok(())
//! # }
//! ```

use std::error::Error as StdError;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tower_http::add_extension::AddExtension;
use tower_service::Service;

use crate::identity::connection::ConnectionInfo;
use crate::tls::accept_loop::{Accepted, Handoff};
use crate::tls::listener::MtlsListener;

/// Errors from serving one connection.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The services [`serve`] and [`serve_connection`] take: a cloneable tower service of hyper
/// requests whose futures can move between threads. Implemented for every such service.
pub trait HttpService<B>:
    Service<
        Request<Incoming>,
        Response = Response<B>,
        Error: Into<BoxError>,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
}

/// The response bodies [`serve`] can send. Implemented for every such body.
pub trait HttpBody: http_body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static {}

impl<B> HttpBody for B
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
}

/// Serves one finished TLS connection: every request gets `info` in its extensions, and
/// HTTP/1.1 or HTTP/2 is spoken as the client chose.
pub async fn serve_connection<IO, S, B>(
    stream: TlsStream<IO>,
    info: ConnectionInfo,
    service: S,
) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<B>,
    B: HttpBody,
{
    let service = TowerToHyperService::new(AddExtension::new(service, info));
    auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await
}

/// Serves every connection of `listener` with `service`, forever (or until the listener is
/// closed).
pub async fn serve<S, B>(listener: MtlsListener, service: S)
where
    S: HttpService<B>,
    B: HttpBody,
{
    serve_with_shutdown(listener, service, std::future::pending(), Duration::MAX).await
}

/// Like [`serve`], until `shutdown` completes: then the listener stops accepting, open
/// connections are asked to finish (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close` after the
/// current request), and any still open after `drain_timeout` are closed.
pub async fn serve_with_shutdown<S, B, F>(
    mut listener: MtlsListener,
    service: S,
    shutdown: F,
    drain_timeout: Duration,
) where
    S: HttpService<B>,
    B: HttpBody,
    F: Future<Output = ()>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (abort, aborted) = tokio::sync::watch::channel(false);
    let connection = Connection {
        builder: auto::Builder::new(TokioExecutor::new()),
        service,
    };
    match listener.take_accept_loop() {
        // The usual case: each connection is served by the task that ran its handshake.
        Some(accept_loop) => {
            // The service moves in (it need not be `Sync`); the shutdown signals are shared.
            let (graceful, aborted) = (&graceful, &aborted);
            let handoff = move || ServeConnection {
                connection: connection.clone(),
                watcher: graceful.watcher(),
                aborted: aborted.clone(),
                body: PhantomData,
            };
            accept_loop.run(handoff, shutdown).await;
        }
        // Somebody already took connections from this listener: keep taking them from it.
        None => {
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Some(accepted) = accepted else { break };
                        let serving = connection.clone().serve(graceful.watcher(), aborted.clone(), accepted);
                        tokio::spawn(serving);
                    }
                    () = &mut shutdown => break,
                }
            }
        }
    }
    listener.close();
    drop(listener);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; closing them");
        let _ = abort.send(true);
    }
}

/// Serves one finished connection in its handshake task (the listener's [`Handoff`] for
/// `serve`).
struct ServeConnection<S, B> {
    connection: Connection<S>,
    watcher: hyper_util::server::graceful::Watcher,
    aborted: tokio::sync::watch::Receiver<bool>,
    body: PhantomData<fn() -> B>,
}

impl<S, B> Handoff for ServeConnection<S, B>
where
    S: HttpService<B>,
    B: HttpBody,
{
    fn deliver(self, accepted: Accepted) -> impl Future<Output = ()> + Send {
        self.connection.serve(self.watcher, self.aborted, accepted)
    }
}

/// What serving one connection needs.
#[derive(Clone)]
struct Connection<S> {
    builder: auto::Builder<TokioExecutor>,
    service: S,
}

impl<S> Connection<S> {
    async fn serve<B>(
        self,
        watcher: hyper_util::server::graceful::Watcher,
        mut aborted: tokio::sync::watch::Receiver<bool>,
        (stream, info): Accepted,
    ) where
        S: HttpService<B>,
        B: HttpBody,
    {
        let peer = info.peer_addr();
        let service = TowerToHyperService::new(AddExtension::new(self.service, info));
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        tokio::select! {
            served = watcher.watch(conn) => {
                if let Err(err) = served {
                    tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
                }
            }
            // Past the drain timeout: drop the connection.
            _ = aborted.wait_for(|aborted| *aborted) => {}
        }
    }
}
