//! Serving a tower service over mutual TLS with hyper-util (feature `hyper`).
//!
//! [`serve`] accepts TCP connections, runs each TLS handshake in its own task (so a stalled
//! client never holds up the accept loop), attaches the connection's [`ConnectionInfo`] to
//! every request, and serves HTTP/1.1 or HTTP/2 as the client negotiated.
//!
//! ```no_run
//! # async fn run(config: tower_mtls::MtlsConfig) -> std::io::Result<()> {
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::ServiceBuilder;
//! use tower_mtls::{AllowAnyVerified, MtlsAcceptor, MtlsAuthLayer, Principal};
//!
//! let service = ServiceBuilder::new()
//!     .layer(MtlsAuthLayer::new(AllowAnyVerified))
//!     .service_fn(|req: Request<hyper::body::Incoming>| async move {
//!         let who = req.extensions().get::<Principal>().map(|p| p.to_string());
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("hello {who:?}")))))
//!     });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! tower_mtls::hyper::serve(listener, MtlsAcceptor::new(config), service).await
//! # }
//! ```

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::server::TlsStream;
use tower_http::add_extension::AddExtension;
use tower_service::Service;

use crate::acceptor::MtlsAcceptor;
use crate::connection::ConnectionInfo;

/// Errors from serving one connection.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves one finished TLS connection: every request gets `info` in its extensions, and
/// HTTP/1.1 or HTTP/2 is spoken as the client chose.
pub async fn serve_connection<IO, S, B>(
    stream: TlsStream<IO>,
    info: ConnectionInfo,
    service: S,
) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let service = TowerToHyperService::new(AddExtension::new(service, info));
    auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await
}

/// Accepts connections from `listener` forever, serving each with `service` behind the
/// acceptor's TLS handshake. Returns only if the listener fails permanently.
pub async fn serve<S, B>(
    listener: TcpListener,
    acceptor: MtlsAcceptor,
    service: S,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_with_shutdown(listener, acceptor, service, std::future::pending()).await
}

/// Like [`serve`], until `shutdown` completes: then it stops accepting and returns once the
/// open connections have finished their in-flight requests.
pub async fn serve_with_shutdown<S, B, F>(
    listener: TcpListener,
    acceptor: MtlsAcceptor,
    service: S,
    shutdown: F,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning or dying.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let local = tcp.local_addr().ok();
            let Ok((stream, info)) = acceptor.accept_with_addrs(tcp, peer, local).await else {
                return; // already logged by the acceptor
            };
            let service = TowerToHyperService::new(AddExtension::new(service, info));
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
