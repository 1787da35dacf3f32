//! The [`Authorizer`] trait and what it sees and says: [`AuthContext`], [`Decision`],
//! [`Verdict`].

use std::future::{Future, IntoFuture, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Method, Uri};

use crate::authorize::reason::Reason;
use crate::identity::connection::ConnectionInfo;
use crate::identity::principal::Principal;
use crate::identity::roles::Roles;

/// What an [`Authorizer`] sees of one request.
///
/// [`path`](Self::path) is the request's **canonical** path, the one spelling of it that
/// policies match (see [`canonical`](crate::authorize::canonical)); [`uri`](Self::uri) is the
/// URI as the client sent it. Inside an axum `Router` both are the full ones, before `nest`
/// stripped a prefix.
#[derive(Debug)]
pub struct AuthContext<'a> {
    pub(crate) principal: &'a Principal,
    pub(crate) roles: &'a Roles,
    pub(crate) connection: &'a ConnectionInfo,
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a HeaderMap,
}

impl<'a> AuthContext<'a> {
    /// The verified client identity: the connection's, or, on a connection of a trusted
    /// proxy, the client the proxy forwarded ([`Principal::forwarded_by`] names the proxy).
    pub fn principal(&self) -> &'a Principal {
        self.principal
    }
    /// The TLS connection the request arrived on (a trusted proxy's, for a forwarded client).
    pub fn connection(&self) -> &'a ConnectionInfo {
        self.connection
    }
    /// The principal's roles (see [`RoleMapper`](crate::identity::RoleMapper)): the
    /// connection's, or those of the forwarded client.
    pub fn roles(&self) -> &'a Roles {
        self.roles
    }
    /// The request method, as sent: never another spelling of a standard method (`delete` is
    /// refused before the authorizer runs). A `HEAD` request is answered by the `GET`
    /// handler in axum: an authorizer that allows `GET` somewhere should treat `HEAD` alike
    /// (rules do).
    pub fn method(&self) -> &'a Method {
        self.method
    }
    /// The request URI as the client sent it (inside an axum `Router`: the full one, from
    /// axum's `OriginalUri`). Its path is *not* canonical: match [`path`](Self::path).
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }
    /// The canonical request path (for gRPC: `/package.Service/Method`): what policies
    /// match. Paths without a canonical form never reach an authorizer.
    pub fn path(&self) -> &'a str {
        self.path
    }
    /// For a gRPC path `/package.Service/Method`: `("package.Service", "Method")`.
    pub fn grpc_method(&self) -> Option<(&'a str, &'a str)> {
        let (service, method) = self.path.strip_prefix('/')?.split_once('/')?;
        if service.is_empty() || method.is_empty() || method.contains('/') {
            return None;
        }
        Some((service, method))
    }
    /// The request headers. Never identity: use them for request properties only.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }
}

/// The verdict of an [`Authorizer`], with a reason for the logs (never sent to the client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request may proceed.
    Allow {
        /// Why, for logs and `explain`.
        reason: Reason,
    },
    /// The request is refused with 403 / `PERMISSION_DENIED`.
    Deny {
        /// Why, for logs and `explain`.
        reason: Reason,
    },
}

impl Decision {
    /// Allow, with a reason. A `&'static str` or an `Arc<str>` reason costs no allocation.
    pub fn allow(reason: impl Into<Reason>) -> Self {
        Decision::Allow {
            reason: reason.into(),
        }
    }

    /// Deny, with a reason.
    pub fn deny(reason: impl Into<Reason>) -> Self {
        Decision::Deny {
            reason: reason.into(),
        }
    }

    /// Whether this is [`Decision::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The name of the rule that decided, shared (see [`Reason::rule`]).
    pub(crate) fn rule_name(&self) -> Option<&Arc<str>> {
        match self {
            Decision::Allow { reason } | Decision::Deny { reason } => reason.rule_name(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow { reason } | Decision::Deny { reason } => reason,
        }
    }
}

impl IntoFuture for Decision {
    type Output = Decision;
    type IntoFuture = Ready<Decision>;
    fn into_future(self) -> Self::IntoFuture {
        ready(self)
    }
}

/// What [`Authorizer::authorize`] returns: a decision made on the spot, or a future of one.
///
/// Synchronous authorizers answer [`Verdict::Now`], and the layer then calls the inner service
/// straight from `call`, with no state machine in between; asynchronous ones answer
/// [`Verdict::Later`].
#[derive(Debug)]
pub enum Verdict<F> {
    /// Decided.
    Now(Decision),
    /// Deciding: the future resolves to the decision.
    Later(F),
}

/// `.await` a verdict (wrappers that always wait use this).
impl<F: Future<Output = Decision>> IntoFuture for Verdict<F> {
    type Output = Decision;
    type IntoFuture = VerdictFuture<F>;
    fn into_future(self) -> VerdictFuture<F> {
        VerdictFuture {
            state: match self {
                Verdict::Now(decision) => VerdictState::Now {
                    decision: Some(decision),
                },
                Verdict::Later(future) => VerdictState::Later { future },
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// A [`Verdict`] as a future: what `.await` on a `Verdict` runs, for wrappers of
    /// authorizers that always wait (a decision made on the spot is ready at once).
    pub struct VerdictFuture<F> {
        #[pin]
        state: VerdictState<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = VerdictStateProj]
    enum VerdictState<F> {
        Now { decision: Option<Decision> },
        Later { #[pin] future: F },
    }
}

impl<F: Future<Output = Decision>> Future for VerdictFuture<F> {
    type Output = Decision;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        match self.project().state.project() {
            VerdictStateProj::Now { decision } => match decision.take() {
                Some(decision) => Poll::Ready(decision),
                None => panic!("VerdictFuture polled after completion"),
            },
            VerdictStateProj::Later { future } => future.poll(cx),
        }
    }
}

/// What a closure authorizer may return: a [`Decision`] (decided on the spot) or a future of
/// one.
///
/// It exists only to name that choice in the bounds of [`authorize_fn`](crate::authorize_fn)
/// and of the closure implementation of [`Authorizer`](crate::Authorizer); it is sealed
/// (implemented for those two and nothing else), so you never implement or call it.
pub trait IntoVerdict: sealed::Sealed {
    /// The future, when deciding takes one.
    type Future: Future<Output = Decision>;
    /// The verdict.
    fn into_verdict(self) -> Verdict<Self::Future>;
}

mod sealed {
    use super::Decision;

    // The sealed-trait pattern: public so it can bound a public trait, unnameable outside.
    #[allow(unreachable_pub)]
    pub trait Sealed {}

    impl Sealed for Decision {}
    impl<F: Future<Output = Decision>> Sealed for F {}
}

impl IntoVerdict for Decision {
    type Future = Ready<Decision>;
    fn into_verdict(self) -> Verdict<Ready<Decision>> {
        Verdict::Now(self)
    }
}

impl<F: Future<Output = Decision>> IntoVerdict for F {
    type Future = F;
    fn into_verdict(self) -> Verdict<F> {
        Verdict::Later(self)
    }
}

/// Decides whether a verified client may make a request.
///
/// Implemented by closures `Fn(&AuthContext<'_>) -> R` where `R` is a [`Decision`] or a future
/// of one (see [`authorize_fn`] for type inference), by [`AllowAnyVerified`], the rule sets and
/// policies of this module, and by `Arc`s of authorizers.
///
/// ```
/// use std::future::Ready;
/// use tower_mtls::{AuthContext, Authorizer, Decision};
/// use tower_mtls::authorize::Verdict;
///
/// /// Only clients whose certificate carries a SPIFFE ID.
/// struct WorkloadsOnly;
///
/// impl Authorizer for WorkloadsOnly {
///     type Future = Ready<Decision>; // never used: this one always decides on the spot
///     fn authorize(&self, ctx: &AuthContext<'_>) -> Verdict<Self::Future> {
///         Verdict::Now(match ctx.principal().spiffe_id() {
///             Some(_) => Decision::allow("workload"),
///             None => Decision::deny("no SPIFFE ID"),
///         })
///     }
/// }
/// ```
pub trait Authorizer {
    /// The future of a decision that is not made on the spot.
    type Future: Future<Output = Decision>;

    /// Decides for one request: [`Verdict::Now`] when it can (no allocation, no future), or
    /// [`Verdict::Later`] with a future that copied what it needs from `ctx`.
    fn authorize(&self, ctx: &AuthContext<'_>) -> Verdict<Self::Future>;
}

impl<F, R> Authorizer for F
where
    F: Fn(&AuthContext<'_>) -> R,
    R: IntoVerdict,
{
    type Future = R::Future;
    fn authorize(&self, ctx: &AuthContext<'_>) -> Verdict<Self::Future> {
        self(ctx).into_verdict()
    }
}

impl<A: Authorizer + ?Sized> Authorizer for Arc<A> {
    type Future = A::Future;
    fn authorize(&self, ctx: &AuthContext<'_>) -> Verdict<Self::Future> {
        (**self).authorize(ctx)
    }
}

/// Helps the compiler see a closure as an [`Authorizer`] without annotating its argument.
pub fn authorize_fn<F, R>(f: F) -> F
where
    F: Fn(&AuthContext<'_>) -> R,
    R: IntoVerdict,
{
    f
}

/// Allows every client whose certificate verified. There is no default authorizer: choosing
/// this one is the explicit statement that any certificate from your CAs may do anything.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAnyVerified;

impl Authorizer for AllowAnyVerified {
    type Future = Ready<Decision>;
    fn authorize(&self, _ctx: &AuthContext<'_>) -> Verdict<Self::Future> {
        Verdict::Now(Decision::allow("any verified client"))
    }
}
