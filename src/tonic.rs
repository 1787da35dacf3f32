//! tonic 0.14 integration (feature `tonic`).
//!
//! [`incoming`] turns an [`MtlsListener`] into the stream `Server::serve_with_incoming` wants;
//! its IO implements tonic's `Connected` with our [`ConnectionInfo`], which tonic puts into
//! every request, so the same [`MtlsAuthLayer`](crate::MtlsAuthLayer) works in
//! `Server::builder().layer(..)`. Rejections are gRPC statuses (`UNAUTHENTICATED`,
//! `PERMISSION_DENIED`), trailers-only. [`principal`] reads the identity in a handler.
//!
//! ```no_run
//! # async fn run(config: tower_mtls::MtlsConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use tower_mtls::{AuthContext, Decision, MtlsAcceptor, MtlsAuthLayer, MtlsListener};
//!
//! // Authorize by gRPC service and method.
//! let authz = tower_mtls::authorize_fn(|ctx: &AuthContext<'_>| match ctx.grpc_method() {
//!     Some(("grpc.health.v1.Health", "Check")) => Decision::allow("health check"),
//!     _ if ctx.principal().organizational_units().any(|ou| ou == "admins") => Decision::allow("admin"),
//!     _ => Decision::deny("admins only"),
//! });
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! let listener = MtlsListener::bind("127.0.0.1:50051", MtlsAcceptor::new(config)).await?;
//! tonic::transport::Server::builder()
//!     .layer(MtlsAuthLayer::new(authz))
//!     .add_service(health)
//!     .serve_with_incoming(tower_mtls::tonic::incoming(listener))
//!     .await?;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::transport::server::Connected;

use crate::identity::connection::ConnectionInfo;
use crate::identity::principal::Principal;
use crate::reject::RejectionBody;
use crate::tls::listener::MtlsListener;
use crate::tls::stream::MtlsStream;

impl RejectionBody for tonic::body::Body {
    fn from_static(bytes: &'static [u8]) -> Self {
        tonic::body::Body::new(http_body_util::Full::new(Bytes::from_static(bytes)))
    }
    fn empty() -> Self {
        tonic::body::Body::default()
    }
}

impl<IO> Connected for MtlsStream<IO> {
    type ConnectInfo = ConnectionInfo;
    fn connect_info(&self) -> ConnectionInfo {
        self.info().clone()
    }
}

/// The stream of connections `Server::serve_with_incoming` takes; see [`incoming`].
#[derive(Debug)]
pub struct Incoming {
    listener: MtlsListener,
}

/// Wraps `listener` for `tonic::transport::Server::serve_with_incoming`.
pub fn incoming(listener: MtlsListener) -> Incoming {
    Incoming { listener }
}

impl futures_core::Stream for Incoming {
    type Item = Result<MtlsStream, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.listener)
            .poll_next(cx)
            .map(|next| next.map(|(stream, info)| Ok(MtlsStream::new(stream, info))))
    }
}

/// The authorized principal of a request that passed [`MtlsAuthLayer`](crate::MtlsAuthLayer).
pub fn principal<T>(request: &tonic::Request<T>) -> Option<&Principal> {
    request.extensions().get::<Principal>()
}

/// The connection a request arrived on.
pub fn connection_info<T>(request: &tonic::Request<T>) -> Option<&ConnectionInfo> {
    request.extensions().get::<ConnectionInfo>()
}
