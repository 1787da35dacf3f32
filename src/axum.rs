//! axum 0.8 integration (feature `axum`).
//!
//! - [`MtlsListener`] is an [`axum::serve::Listener`]: axum awaits `accept()` serially, and
//!   ours only hands out connections whose handshake already finished in its own task, so a
//!   stalled client cannot block the others.
//! - Serve with `into_make_service_with_connect_info::<ConnectionInfo>()` so that every
//!   request carries the connection's [`ConnectionInfo`]; [`MtlsAuthLayer`](crate::MtlsAuthLayer)
//!   finds it there exactly as on the other stacks.
//! - [`Principal`] and [`ConnectionInfo`] are extractors; `Option<Principal>` too.
//! - [`serve`] serves a `Router` with the HTTP timeouts of [`HttpTimeouts`] (axum's own
//!   `serve` has none: no header-read timeout, idle connections kept forever), inserting
//!   `ConnectInfo<ConnectionInfo>` as `into_make_service_with_connect_info` would, so
//!   extractors and the layer work unchanged. Prefer it to `axum::serve`.
//!
//! ```no_run
//! # async fn run(config: tower_mtls::MtlsConfig) -> std::io::Result<()> {
//! use axum::{Router, routing::get};
//! use tower_mtls::{AllowAnyVerified, ConnectionInfo, MtlsAcceptor, MtlsAuthLayer, MtlsListener, Principal};
//!
//! async fn whoami(principal: Principal) -> String {
//!     principal.subject().to_string()
//! }
//!
//! let app = Router::new()
//!     .route("/whoami", get(whoami))
//!     .route_layer(MtlsAuthLayer::new(AllowAnyVerified)) // protects the routes above
//!     .route("/healthz", get(|| async { "ok" }));        // public
//!
//! let listener = MtlsListener::bind("127.0.0.1:8443", MtlsAcceptor::new(config)).await?;
//! tower_mtls::axum::serve(listener, app).await;
//! // or, without HTTP timeouts:
//! // axum::serve(listener, app.into_make_service_with_connect_info::<ConnectionInfo>()).await
//! # Ok(())
//! # }
//! ```

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use http::request::Parts;

use bytes::Bytes;

use crate::audit;
use crate::hyper::{HttpTimeouts, Server};
use crate::identity::connection::ConnectionInfo;
use crate::identity::lookup::{authenticate, connection_of};
use crate::identity::principal::Principal;
use crate::reject::{self, Rejection, RejectionBody};
use crate::tls::listener::MtlsListener;
use crate::tls::stream::MtlsStream;

impl Listener for MtlsListener {
    type Io = MtlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match MtlsListener::accept(self).await {
            Some((stream, info)) => {
                let peer = info.peer_addr();
                (MtlsStream::new(stream, info), peer)
            }
            // Closed: axum's loop has nothing more to accept; park it.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(MtlsListener::local_addr(self))
    }
}

/// Serves `router` on `listener` with the default [`HttpTimeouts`]; every request carries
/// `ConnectInfo<ConnectionInfo>`. Await it, or set options first:
///
/// ```no_run
/// # async fn run(listener: tower_mtls::MtlsListener, app: axum::Router) {
/// use std::time::Duration;
/// use tower_mtls::hyper::HttpTimeouts;
///
/// tower_mtls::axum::serve(listener, app)
///     .timeouts(HttpTimeouts::default().idle_timeout(Duration::from_secs(30)))
///     .with_graceful_shutdown(async { let _ = tokio::signal::ctrl_c().await; }, Duration::from_secs(10))
///     .await;
/// # }
/// ```
pub fn serve(listener: MtlsListener, router: Router) -> Serve {
    Serve {
        server: Server::new(listener),
        router,
    }
}

/// The future of [`serve`] and its options.
#[must_use = "does nothing unless awaited"]
#[derive(Debug)]
pub struct Serve {
    server: Server,
    router: Router,
}

impl Serve {
    /// Uses `timeouts` instead of the defaults.
    pub fn timeouts(mut self, timeouts: HttpTimeouts) -> Self {
        self.server = self.server.timeouts(timeouts);
        self
    }

    /// Serves until `shutdown` completes, then drains: see
    /// [`serve_with_shutdown`](crate::hyper::serve_with_shutdown).
    pub async fn with_graceful_shutdown<F>(self, shutdown: F, drain_timeout: Duration)
    where
        F: Future<Output = ()>,
    {
        let router = self.router;
        self.server
            .run(
                move |info: &ConnectionInfo| {
                    tower_http::add_extension::AddExtension::new(
                        router.clone(),
                        ConnectInfo(info.clone()),
                    )
                },
                shutdown,
                drain_timeout,
            )
            .await
    }
}

impl IntoFuture for Serve {
    type Output = ();
    type IntoFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.with_graceful_shutdown(std::future::pending(), Duration::MAX))
    }
}

/// Where `into_make_service_with_connect_info::<ConnectionInfo>()` puts the connection: the
/// crate's one lookup of a request's connection asks here when the plain extension is missing.
pub(crate) fn connect_info_in(extensions: &http::Extensions) -> Option<&ConnectionInfo> {
    extensions
        .get::<axum::extract::ConnectInfo<ConnectionInfo>>()
        .map(|info| &info.0)
}

impl RejectionBody for Body {
    fn from_static(bytes: &'static [u8]) -> Self {
        Body::from(Bytes::from_static(bytes))
    }
    fn empty() -> Self {
        Body::empty()
    }
}

impl Connected<IncomingStream<'_, MtlsListener>> for ConnectionInfo {
    fn connect_info(stream: IncomingStream<'_, MtlsListener>) -> Self {
        stream.io().info().clone()
    }
}

/// The 401 the [`Principal`] extractor answers with: the same response as the layer's.
#[derive(Debug)]
pub struct PrincipalRejection {
    grpc: bool,
}

impl IntoResponse for PrincipalRejection {
    fn into_response(self) -> Response {
        if self.grpc {
            reject::grpc_response::<Body>(Rejection::Unauthenticated)
        } else {
            reject::http_response::<Body>(Rejection::Unauthenticated)
        }
    }
}

/// The verified principal: the one [`MtlsAuthLayer`](crate::MtlsAuthLayer) put in the request
/// after authorizing it, or, on routes without the layer, the connection's own (still
/// re-checked for expiry and revocation). No verified identity → 401.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = PrincipalRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        match authenticate(&parts.extensions) {
            Ok((_, principal)) => Ok(principal.clone()),
            Err(failure) => {
                audit::unauthenticated(&failure, &parts.method, parts.uri.path());
                Err(PrincipalRejection {
                    grpc: reject::is_grpc(&parts.headers),
                })
            }
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(Some(principal.clone()));
        }
        Ok(authenticate(&parts.extensions)
            .ok()
            .map(|(_, principal)| principal.clone()))
    }
}

/// The connection the request arrived on. Missing (500) only when the server was not started
/// with `into_make_service_with_connect_info::<ConnectionInfo>()` or another stack of this crate.
impl<S: Send + Sync> FromRequestParts<S> for ConnectionInfo {
    type Rejection = (http::StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        connection_of(&parts.extensions).cloned().ok_or((
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "no ConnectionInfo: serve with into_make_service_with_connect_info::<ConnectionInfo>()",
        ))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for ConnectionInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(connection_of(&parts.extensions).cloned())
    }
}
