//! The middleware: [`MtlsAuthLayer`], [`MtlsAuth`], [`ResponseFuture`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::audit;
use crate::authorize::authorizer::{AuthContext, Authorizer, Decision, Verdict};
use crate::identity::lookup::authenticate;
use crate::identity::principal::Principal;
use crate::reject::{DefaultResponder, Rejection, RejectionFormat, Respond};

/// Applies [`MtlsAuth`]: 401 without a verified identity, 403 when the authorizer denies.
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
#[derive(Debug)]
pub struct MtlsAuthLayer<A, R = DefaultResponder> {
    authorizer: Arc<A>,
    responder: R,
}

impl<A, R: Clone> Clone for MtlsAuthLayer<A, R> {
    fn clone(&self) -> Self {
        MtlsAuthLayer {
            authorizer: self.authorizer.clone(),
            responder: self.responder.clone(),
        }
    }
}

impl<A: Authorizer> MtlsAuthLayer<A> {
    /// A layer that asks `authorizer` about every request from a verified client.
    pub fn new(authorizer: A) -> Self {
        MtlsAuthLayer {
            authorizer: Arc::new(authorizer),
            responder: DefaultResponder::default(),
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
        }
    }
}

impl<S, A, R: Clone> Layer<S> for MtlsAuthLayer<A, R> {
    type Service = MtlsAuth<S, A, R>;
    fn layer(&self, inner: S) -> Self::Service {
        MtlsAuth {
            inner,
            authorizer: self.authorizer.clone(),
            responder: self.responder.clone(),
        }
    }
}

/// Middleware that lets a request through only with a verified [`Principal`] that its
/// [`Authorizer`] allows; see [`MtlsAuthLayer`].
///
/// The identity comes from the [`ConnectionInfo`](crate::ConnectionInfo) in the request's
/// extensions, put there per connection; request headers are never looked at for identity.
#[derive(Debug)]
pub struct MtlsAuth<S, A, R = DefaultResponder> {
    inner: S,
    authorizer: Arc<A>,
    responder: R,
}

impl<S: Clone, A, R: Clone> Clone for MtlsAuth<S, A, R> {
    fn clone(&self) -> Self {
        MtlsAuth {
            inner: self.inner.clone(),
            authorizer: self.authorizer.clone(),
            responder: self.responder.clone(),
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

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (connection, principal) = match authenticate(req.extensions()) {
            Ok(found) => found,
            Err(failure) => {
                audit::unauthenticated(&failure, req.method(), req.uri().path());
                let response = self
                    .responder
                    .respond(Rejection::Unauthenticated, req.headers());
                return ResponseFuture {
                    state: State::Rejected {
                        response: Some(response),
                    },
                };
            }
        };

        let verdict = self.authorizer.authorize(&AuthContext {
            principal,
            connection,
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
        });
        let principal = principal.clone();
        let peer = connection.peer_addr();
        match verdict {
            // Decided on the spot: call the readied inner service right here, with no state
            // machine holding the request in between.
            Verdict::Now(decision) => match decision {
                Decision::Allow { .. } => {
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

/// Logs a denial and builds its 403.
fn forbidden<R: Respond<B>, B, ReqBody>(
    responder: &R,
    peer: SocketAddr,
    principal: &Principal,
    reason: &str,
    request: &Request<ReqBody>,
) -> Response<B> {
    audit::forbidden(
        peer,
        principal,
        reason,
        request.method(),
        request.uri().path(),
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
