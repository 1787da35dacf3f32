//! axum 0.8 integration (feature `axum`).
//!
//! - [`MtlsListener`] is an [`axum::serve::Listener`]: axum awaits `accept()` serially, and
//!   ours only hands out connections whose handshake already finished in its own task, so a
//!   stalled client cannot block the others.
//! - Serve with `into_make_service_with_connect_info::<ConnectionInfo>()` so that every
//!   request carries the connection's [`ConnectionInfo`]; [`MtlsAuthLayer`](crate::MtlsAuthLayer)
//!   finds it there exactly as on the other stacks.
//! - Extractors that cannot widen access: [`Principal`] is the principal an
//!   [`MtlsAuthLayer`](crate::MtlsAuthLayer) **allowed for this request**; on a route no layer
//!   covers it fails with 500 and an error event naming the route, rather than quietly meaning
//!   "any verified client". [`AnyVerifiedPrincipal`] says that explicitly: the connection's
//!   verified, still valid principal, with no layer and no policy (401 without one).
//!   [`ConnectionInfo`] is the connection; `Option<_>` of each is available too.
//! - [`serve`] serves a `Router` with the HTTP timeouts of [`HttpTimeouts`] (axum's own
//!   `serve` has none: no header-read timeout, idle connections kept forever), inserting
//!   `ConnectInfo<ConnectionInfo>` as `into_make_service_with_connect_info` would, so
//!   extractors and the layer work unchanged. Prefer it to `axum::serve`.
//!
//! ```no_run
//! # async fn run(config: tower_mtls::MtlsConfig) -> std::io::Result<()> {
//! use axum::{Router, routing::get};
//! use tower_mtls::axum::AnyVerifiedPrincipal;
//! use tower_mtls::{AllowAnyVerified, ConnectionInfo, MtlsAcceptor, MtlsAuthLayer, MtlsListener, Principal};
//!
//! async fn whoami(principal: Principal) -> String {
//!     principal.subject().to_string()
//! }
//!
//! let app = Router::new()
//!     .route("/whoami", get(whoami))
//!     .route_layer(MtlsAuthLayer::new(AllowAnyVerified)) // protects the routes above
//!     .route("/healthz", get(|| async { "ok" }))         // public
//!     // Not covered by the layer: `Principal` would fail here (500), so say what you mean.
//!     .route("/hello", get(|AnyVerifiedPrincipal(p): AnyVerifiedPrincipal| async move {
//!         format!("hello {}", p.subject())
//!     }));
//!
//! let listener = MtlsListener::bind("127.0.0.1:8443", MtlsAcceptor::new(config)).await?;
//! tower_mtls::axum::serve(listener, app).await;
//! // or, without HTTP timeouts:
//! // axum::serve(listener, app.into_make_service_with_connect_info::<ConnectionInfo>()).await
//! # Ok(())
//! # }
//! ```
//!
//! # Nested routers
//! axum's `nest` and `nest_service` strip their prefix from the URI before the nested
//! service (and the layers on it) see the request, but axum's `Router` first records the full
//! URI in the `OriginalUri` extension. [`MtlsAuthLayer`](crate::MtlsAuthLayer) judges the
//! path of `OriginalUri` when it is there, so a policy names full paths wherever the layer
//! sits: with `Router::new().nest("/api", api.layer(MtlsAuthLayer::new(policy)))`, a rule on
//! `/api/admin` covers `GET /api/admin`. (This crate turns on axum's `original-uri` feature,
//! one of axum's defaults.)

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

use crate::hyper::{HttpTimeouts, Server};
use crate::identity::connection::ConnectionInfo;
use crate::identity::lookup::{authenticate, connection_of, remove_forwarded, untrusted_forwarded};
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

/// The request's full URI, recorded by the outermost axum `Router` before any `nest` stripped
/// a prefix: the layer judges this path when it is there.
pub(crate) fn original_uri_in(extensions: &http::Extensions) -> Option<&http::Uri> {
    extensions
        .get::<axum::extract::OriginalUri>()
        .map(|original| &original.0)
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

/// Why the [`Principal`] or [`AnyVerifiedPrincipal`] extractor failed: no principal that an
/// [`MtlsAuthLayer`](crate::MtlsAuthLayer) allowed (500: the route is not behind a layer), or
/// no verified client (401, the layer's own response).
#[derive(Debug)]
pub struct PrincipalRejection {
    kind: RejectionKind,
    grpc: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RejectionKind {
    NotAuthorizedByLayer,
    Unauthenticated,
}

impl PrincipalRejection {
    /// The status the client gets: 500 for a route no layer covers, 401 without a verified
    /// client (for gRPC requests, HTTP 200 with `grpc-status` 13 or 16).
    pub fn status(&self) -> http::StatusCode {
        match self.kind {
            RejectionKind::NotAuthorizedByLayer => http::StatusCode::INTERNAL_SERVER_ERROR,
            RejectionKind::Unauthenticated => http::StatusCode::UNAUTHORIZED,
        }
    }
}

/// The body of the 500: nothing about the cause, which is in the log.
const INTERNAL_ERROR_JSON: &str =
    r#"{"type":"about:blank","title":"Internal Server Error","status":500}"#;

impl IntoResponse for PrincipalRejection {
    fn into_response(self) -> Response {
        match (self.kind, self.grpc) {
            (RejectionKind::Unauthenticated, true) => {
                reject::grpc_response::<Body>(Rejection::Unauthenticated)
            }
            (RejectionKind::Unauthenticated, false) => {
                reject::http_response::<Body>(Rejection::Unauthenticated)
            }
            (RejectionKind::NotAuthorizedByLayer, true) => (
                [
                    ("content-type", "application/grpc"),
                    ("grpc-status", "13"),
                    ("grpc-message", "internal error"),
                ],
                Body::empty(),
            )
                .into_response(),
            (RejectionKind::NotAuthorizedByLayer, false) => (
                http::StatusCode::INTERNAL_SERVER_ERROR,
                [("content-type", "application/problem+json")],
                INTERNAL_ERROR_JSON,
            )
                .into_response(),
        }
    }
}

/// The principal an [`MtlsAuthLayer`](crate::MtlsAuthLayer) **allowed for this request**.
///
/// On a route that no layer covers (the classic slip: a route added after `route_layer`) there
/// is no such principal, and the extractor fails with **500** and one `error` event naming the
/// method and path, instead of handing out the connection's principal, which would silently
/// mean "any verified client" on that route. 500 rather than 401 because the client did
/// nothing wrong: the router is misconfigured, and a 401 would hide that among ordinary
/// refusals. Use [`AnyVerifiedPrincipal`] where any verified client is meant.
///
/// `Option<Principal>` is `None` on such routes, without an event.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = PrincipalRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let path = original_uri_in(&parts.extensions)
            .unwrap_or(&parts.uri)
            .path();
        tracing::error!(
            method = %parts.method,
            path,
            "Principal extractor on a route no MtlsAuthLayer covers: answering 500; put the route \
             behind the layer, or extract AnyVerifiedPrincipal to accept any verified client"
        );
        Err(PrincipalRejection {
            kind: RejectionKind::NotAuthorizedByLayer,
            grpc: reject::is_grpc(&parts.headers),
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

/// Any client whose certificate verified, with **no authorization**: the connection's
/// principal, re-checked for expiry and reloads like the layer does, whether or not an
/// [`MtlsAuthLayer`](crate::MtlsAuthLayer) covers the route. No verified identity → 401 (the
/// layer's response, and one event).
///
/// The name is the point: a handler that takes it says, in its signature, that every verified
/// client may call it. Where a policy should decide, put the route behind the layer and take
/// [`Principal`].
///
/// ```
/// use tower_mtls::axum::AnyVerifiedPrincipal;
///
/// async fn hello(AnyVerifiedPrincipal(principal): AnyVerifiedPrincipal) -> String {
///     format!("hello {}", principal.subject())
/// }
/// # let _ = hello;
/// ```
#[derive(Clone, Debug)]
pub struct AnyVerifiedPrincipal(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for AnyVerifiedPrincipal {
    type Rejection = PrincipalRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        strip_untrusted_forwarded(parts);
        match authenticate(&parts.extensions, &parts.headers) {
            Ok(identity) => Ok(AnyVerifiedPrincipal(identity.principal.into_owned())),
            Err(failure) => {
                let path = original_uri_in(&parts.extensions)
                    .unwrap_or(&parts.uri)
                    .path();
                failure.report(&parts.method, path);
                Err(PrincipalRejection {
                    kind: RejectionKind::Unauthenticated,
                    grpc: reject::is_grpc(&parts.headers),
                })
            }
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for AnyVerifiedPrincipal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        strip_untrusted_forwarded(parts);
        Ok(authenticate(&parts.extensions, &parts.headers)
            .ok()
            .map(|identity| AnyVerifiedPrincipal(identity.principal.into_owned())))
    }
}

/// On a route no layer covers, the extractor still keeps forwarded-certificate headers of a
/// connection that is not a trusted proxy from the handler.
fn strip_untrusted_forwarded(parts: &mut Parts) {
    if let Some(connection) = untrusted_forwarded(&parts.extensions, &parts.headers) {
        let connection = connection.clone();
        let path = original_uri_in(&parts.extensions)
            .unwrap_or(&parts.uri)
            .path()
            .to_owned();
        remove_forwarded(&connection, &mut parts.headers, &parts.method, &path);
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
