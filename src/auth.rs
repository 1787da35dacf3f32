//! The middleware: [`MtlsAuthLayer`], [`MtlsAuth`], [`ResponseFuture`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response, Uri};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::audit;
use crate::authorize::authorizer::{AuthContext, Authorizer, Decision, Verdict};
use crate::authorize::canonical::{PathNormalization, canonicalize, check_request_method};
use crate::identity::lookup::{Identity, authenticate, remove_forwarded, untrusted_forwarded};
use crate::identity::principal::Principal;
use crate::metrics::{self, RequestOutcome};
use crate::reject::{DefaultResponder, Rejection, RejectionFormat, Respond};

/// Applies [`MtlsAuth`]: 401 without a verified identity, 400 for a request spelled so that
/// readers may disagree on it, 403 when the authorizer denies.
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_mtls::{AllowAnyVerified, MtlsAuthLayer};
/// # use std::convert::Infallible;
/// # use http::{Request, Response};
/// # use http_body_util::Full;
/// # use bytes::Bytes;
///
/// let service = ServiceBuilder::new()
///     .layer(MtlsAuthLayer::new(AllowAnyVerified))
///     .service_fn(|req: Request<Full<Bytes>>| async move {
///         // Only reached with a verified client; its identity is in the extensions.
///         let principal = req.extensions().get::<tower_mtls::Principal>().cloned();
///         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("{principal:?}")))))
///     });
/// # let _ = service;
/// ```
///
/// There is no default authorizer: pass [`AllowAnyVerified`](crate::AllowAnyVerified) to let
/// every verified client through.
///
/// # What the authorizer sees
/// For every request, in this order:
///
/// 0. With [trusted proxies](crate::forwarded::TrustedProxies) configured on the acceptor: on
///    a connection that is not a proxy, the forwarded-certificate headers are removed from the
///    request (logged and counted); on a proxy's connection, the client is the certificate
///    the proxy forwarded, verified like a TLS peer's chain, and a missing, malformed or
///    unverifiable one is **401**.
/// 1. No verified, still valid identity: **401** (gRPC `UNAUTHENTICATED`).
/// 2. A method that is another spelling of a standard one (`delete`, `Get`): **400** (gRPC
///    `INVALID_ARGUMENT`). HTTP methods are case-sensitive, but some backends read them
///    case-insensitively, so a rule on `DELETE` would not see what they run.
/// 3. The path is canonicalized once, with the layer's
///    [`path_normalization`](Self::path_normalization) (strict by default; see
///    [`canonical`](crate::authorize::canonical)): a path that has no canonical form
///    (`/static/%70rivate`, `//admin`, `/a/../b`, `%2F`, `%00`, invalid or non-UTF-8
///    encodings...) gets **400** (gRPC `INVALID_ARGUMENT`).
/// 4. The authorizer decides on the canonical path ([`AuthContext::path`]); Deny is **403**
///    (gRPC `PERMISSION_DENIED`), Allow calls the inner service with the request unchanged
///    (the canonical path is only what the policy judges) and the [`Principal`] in its
///    extensions.
///
/// Each refusal emits one `tracing` event with the peer, the principal and the reason.
///
/// **Inside an axum `Router`**, the path judged is the request's full path: when axum's
/// `OriginalUri` extension is present (axum's `Router` adds it before `nest` and
/// `nest_service` strip their prefix), the layer reads the path from it. A layer on a router
/// nested at `/api` therefore sees `/api/admin`, and policies are written with full paths.
#[derive(Debug)]
pub struct MtlsAuthLayer<A, R = DefaultResponder> {
    authorizer: Arc<A>,
    responder: R,
    paths: PathNormalization,
}

impl<A, R: Clone> Clone for MtlsAuthLayer<A, R> {
    fn clone(&self) -> Self {
        MtlsAuthLayer {
            authorizer: self.authorizer.clone(),
            responder: self.responder.clone(),
            paths: self.paths,
        }
    }
}

impl<A: Authorizer> MtlsAuthLayer<A> {
    /// A layer that asks `authorizer` about every request from a verified client.
    pub fn new(authorizer: A) -> Self {
        MtlsAuthLayer {
            authorizer: Arc::new(authorizer),
            responder: DefaultResponder::default(),
            paths: PathNormalization::strict(),
        }
    }

    /// Always answer in `format` instead of choosing by content type.
    pub fn rejection_format(self, format: RejectionFormat) -> Self {
        self.responder(DefaultResponder::new(format))
    }
}

impl<A, R> MtlsAuthLayer<A, R> {
    /// Builds rejections with `responder` instead of the built-in one.
    pub fn responder<R2>(self, responder: R2) -> MtlsAuthLayer<A, R2> {
        MtlsAuthLayer {
            authorizer: self.authorizer,
            responder,
            paths: self.paths,
        }
    }

    /// How request paths are canonicalized before the authorizer sees them. The default,
    /// [`PathNormalization::strict`], refuses (400) every spelling that routers and file
    /// servers read differently; see [`canonical`](crate::authorize::canonical) for when the
    /// other settings are safe. Write policy patterns for the same settings
    /// ([`PathPattern::exact_with`](crate::authorize::PathPattern::exact_with) and its
    /// siblings).
    ///
    /// ```
    /// use tower_mtls::authorize::canonical::{EncodedUnreserved, MergeSlashes, PathNormalization};
    /// use tower_mtls::{AllowAnyVerified, MtlsAuthLayer};
    ///
    /// // In front of a file server that decodes and collapses paths itself (ServeDir).
    /// let layer = MtlsAuthLayer::new(AllowAnyVerified).path_normalization(
    ///     PathNormalization::strict()
    ///         .merge_slashes(MergeSlashes::Merge)
    ///         .encoded_unreserved(EncodedUnreserved::Decode),
    /// );
    /// # let _ = layer;
    /// ```
    pub fn path_normalization(mut self, paths: PathNormalization) -> Self {
        self.paths = paths;
        self
    }
}

impl<S, A, R: Clone> Layer<S> for MtlsAuthLayer<A, R> {
    type Service = MtlsAuth<S, A, R>;
    fn layer(&self, inner: S) -> Self::Service {
        MtlsAuth {
            inner,
            authorizer: self.authorizer.clone(),
            responder: self.responder.clone(),
            paths: self.paths,
        }
    }
}

/// Middleware that lets a request through only with a verified [`Principal`] that its
/// [`Authorizer`] allows; see [`MtlsAuthLayer`].
///
/// The identity comes from the [`ConnectionInfo`](crate::ConnectionInfo) in the request's
/// extensions, put there per connection; request headers are never looked at for identity,
/// except a [trusted proxy](crate::forwarded::TrustedProxies)'s forwarded certificate.
#[derive(Debug)]
pub struct MtlsAuth<S, A, R = DefaultResponder> {
    inner: S,
    authorizer: Arc<A>,
    responder: R,
    paths: PathNormalization,
}

impl<S: Clone, A, R: Clone> Clone for MtlsAuth<S, A, R> {
    fn clone(&self) -> Self {
        MtlsAuth {
            inner: self.inner.clone(),
            authorizer: self.authorizer.clone(),
            responder: self.responder.clone(),
            paths: self.paths,
        }
    }
}

impl<S, A: Authorizer> MtlsAuth<S, A> {
    /// Wraps `inner`: requests reach it only from a verified client that `authorizer` allows.
    pub fn new(inner: S, authorizer: A) -> Self {
        MtlsAuth {
            inner,
            authorizer: Arc::new(authorizer),
            responder: DefaultResponder::default(),
            paths: PathNormalization::strict(),
        }
    }

    /// The layer of this middleware: [`MtlsAuthLayer::new`].
    pub fn layer(authorizer: A) -> MtlsAuthLayer<A> {
        MtlsAuthLayer::new(authorizer)
    }
}

impl<S, A, R> MtlsAuth<S, A, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
    /// Consumes the middleware, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, A, R, ReqBody, ResBody> Service<Request<ReqBody>> for MtlsAuth<S, A, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    A: Authorizer,
    R: Respond<ResBody> + Clone,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, A, R, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // Forwarded-certificate headers from a connection that is not a trusted proxy never
        // reach the service (rare: the ordinary request pays two map lookups at most).
        if let Some(connection) = untrusted_forwarded(req.extensions(), req.headers()) {
            let connection = connection.clone();
            let (method, path) = (req.method().clone(), full_uri(&req).path().to_owned());
            remove_forwarded(&connection, req.headers_mut(), &method, &path);
        }
        // Everything borrowed from the request ends here, before the request moves on.
        let (verdict, principal, peer) = {
            let uri = full_uri(&req);
            let Identity {
                connection,
                principal,
                roles,
            } = match authenticate(req.extensions(), req.headers()) {
                Ok(found) => found,
                Err(failure) => {
                    metrics::request(RequestOutcome::Unauthenticated);
                    failure.report(req.method(), uri.path());
                    return rejected(
                        self.responder
                            .respond(Rejection::Unauthenticated, req.headers()),
                    );
                }
            };
            let peer = connection.peer_addr();
            let refused = |reason: &str| {
                metrics::request(RequestOutcome::BadRequest);
                audit::bad_request(peer, &principal, reason, req.method(), uri.path());
                rejected(self.responder.respond(Rejection::BadRequest, req.headers()))
            };
            if check_request_method(req.method()).is_err() {
                return refused(NONSTANDARD_METHOD);
            }
            let path = match canonicalize(uri.path(), &self.paths) {
                Ok(path) => path,
                Err(why) => return refused(why.as_str()),
            };
            let verdict = self.authorizer.authorize(&AuthContext {
                principal: &principal,
                roles: &roles,
                connection,
                method: req.method(),
                uri,
                path: &path,
                headers: req.headers(),
            });
            (verdict, principal.into_owned(), peer)
        };
        match verdict {
            // Decided on the spot: call the readied inner service right here, with no state
            // machine holding the request in between.
            Verdict::Now(decision) => match decision {
                Decision::Allow { .. } => {
                    metrics::request(RequestOutcome::Allowed);
                    let mut req = req;
                    req.extensions_mut().insert(principal);
                    ResponseFuture {
                        state: State::Calling {
                            future: self.inner.call(req),
                        },
                    }
                }
                Decision::Deny { reason } => ResponseFuture {
                    state: State::Rejected {
                        response: Some(forbidden(&self.responder, peer, &principal, &reason, &req)),
                    },
                },
            },
            Verdict::Later(decision) => {
                // Call the instance that `poll_ready` readied, later; leave a fresh clone here.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture {
                    state: State::Authorizing {
                        decision,
                        pending: Some(Pending {
                            inner,
                            request: req,
                            principal,
                            peer,
                            responder: self.responder.clone(),
                        }),
                    },
                }
            }
        }
    }
}

/// The reason logged for a request whose method is another spelling of a standard one.
const NONSTANDARD_METHOD: &str = "request method is a non-standard spelling of a standard method";

/// The request's full URI: inside an axum `Router`, the one before `nest` stripped a prefix.
fn full_uri<B>(request: &Request<B>) -> &Uri {
    crate::axum_original_uri(request.extensions()).unwrap_or(request.uri())
}

fn rejected<S, A, R, ReqBody>(response: S::Response) -> ResponseFuture<S, A, R, ReqBody>
where
    S: Service<Request<ReqBody>>,
    A: Authorizer,
{
    ResponseFuture {
        state: State::Rejected {
            response: Some(response),
        },
    }
}

/// Logs a denial and builds its 403.
fn forbidden<R: Respond<B>, B, ReqBody>(
    responder: &R,
    peer: SocketAddr,
    principal: &Principal,
    reason: &str,
    request: &Request<ReqBody>,
) -> Response<B> {
    metrics::request(RequestOutcome::Denied);
    audit::forbidden(
        peer,
        principal,
        reason,
        request.method(),
        full_uri(request).path(),
    );
    responder.respond(Rejection::Forbidden, request.headers())
}

struct Pending<S, R, ReqBody> {
    inner: S,
    request: Request<ReqBody>,
    principal: Principal,
    peer: SocketAddr,
    responder: R,
}

pin_project! {
    /// Response future of [`MtlsAuth`].
    pub struct ResponseFuture<S, A, R, ReqBody>
    where
        S: Service<Request<ReqBody>>,
        A: Authorizer,
    {
        #[pin]
        state: State<A::Future, S::Future, S, R, ReqBody, S::Response>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<AF, SF, S, R, ReqBody, Res> {
        Authorizing {
            #[pin]
            decision: AF,
            pending: Option<Pending<S, R, ReqBody>>,
        },
        Calling {
            #[pin]
            future: SF,
        },
        Rejected {
            response: Option<Res>,
        },
    }
}

impl<S, A, R, ReqBody, ResBody> Future for ResponseFuture<S, A, R, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    A: Authorizer,
    R: Respond<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Authorizing { decision, pending } => {
                    let decision = ready!(decision.poll(cx));
                    let Some(Pending {
                        mut inner,
                        mut request,
                        principal,
                        peer,
                        responder,
                    }) = pending.take()
                    else {
                        panic!("MtlsAuth ResponseFuture polled after completion");
                    };
                    match decision {
                        Decision::Allow { .. } => {
                            metrics::request(RequestOutcome::Allowed);
                            request.extensions_mut().insert(principal);
                            let future = inner.call(request);
                            state.set(State::Calling { future });
                        }
                        Decision::Deny { reason } => {
                            return Poll::Ready(Ok(forbidden(
                                &responder, peer, &principal, &reason, &request,
                            )));
                        }
                    }
                }
                StateProj::Calling { future } => return future.poll(cx),
                StateProj::Rejected { response } => {
                    let Some(response) = response.take() else {
                        panic!("MtlsAuth ResponseFuture polled after completion");
                    };
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}
