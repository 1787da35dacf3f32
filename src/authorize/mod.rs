//! The [`Authorizer`] trait: who may do what, decided per request from the verified identity.
//!
//! An authorizer sees the [`Principal`], the [`ConnectionInfo`] and the request's method, URI
//! and headers, and returns a [`Decision`]. Closures implement the trait, returning either a
//! `Decision` (synchronous: no allocation, no boxing) or a future of one (asynchronous: a
//! permission-store lookup).
//!
//! ```
//! use tower_mtls::{AuthContext, Decision, MtlsAuthLayer};
//!
//! // Synchronous: admins may do anything, others may only read.
//! let layer = MtlsAuthLayer::new(tower_mtls::authorize_fn(|ctx: &AuthContext<'_>| {
//!     if ctx.principal().organizational_units().any(|ou| ou == "admins") {
//!         Decision::allow("admin")
//!     } else if ctx.method() == http::Method::GET {
//!         Decision::allow("read-only")
//!     } else {
//!         Decision::deny("writes need OU=admins")
//!     }
//! }));
//!
//! // Asynchronous: copy what the lookup needs out of the context, then await.
//! let store_layer = MtlsAuthLayer::new(tower_mtls::authorize_fn(|ctx: &AuthContext<'_>| {
//!     let fingerprint = *ctx.principal().fingerprint_sha256();
//!     async move {
//!         let allowed = lookup(fingerprint).await;
//!         if allowed { Decision::allow("in store") } else { Decision::deny("not in store") }
//!     }
//! }));
//! # async fn lookup(_: [u8; 32]) -> bool { true }
//! ```
//!
//! # The toolkit
//! - [`Matcher`] ([`matchers`]): conditions on typed identity fields — SPIFFE ID, SANs,
//!   subject attributes, issuer RDNs, pins, serial, roles — combined with [`any`], [`all`],
//!   [`not`], [`Matcher::and`], [`Matcher::or`], and explained by [`Matcher::explain`].
//! - [`RequestMatcher`] and [`PathPattern`] ([`request`]): method, path (exact, prefix, glob),
//!   gRPC method.
//! - [`Rule`] and [`RuleSet`] ([`rules`]): DENY first, then ALLOW, deny when nothing matches; a
//!   `RuleSet` is an `Authorizer` and decides without allocating.
//! - [`RuleSet::from_toml_str`] ([`policy`]): the same rules from a policy file, every problem
//!   reported; [`ReloadablePolicy`] ([`reload`]) swaps them at runtime.
//! - Role conventions ([`roles`]), a [`DecisionCache`] for asynchronous authorizers
//!   ([`cache`]), and [`Shadow`] to dry-run a policy next to the enforcing one ([`shadow`]).

pub mod cache;
pub mod canonical;
pub mod combinators;
pub mod matchers;
pub mod policy;
pub mod reason;
pub mod reload;
pub mod request;
pub mod roles;
pub mod rules;
pub mod shadow;
#[cfg(test)]
mod testing;

pub use cache::{CacheStats, CachedDecision, DecisionCache, MethodAndPath, RequestClassifier};
pub use combinators::{MatchExplanation, all, any, not};
pub use matchers::{Matcher, MatcherError};
pub use policy::{PolicyError, PolicyErrorKind, PolicyProblem, RuleLocation};
pub use reason::Reason;
pub use reload::ReloadablePolicy;
pub use request::{PathPattern, RequestMatcher};
pub use roles::{KubernetesRoles, OrganizationalUnitRoles, SpiffeServiceAccountRoles};
pub use rules::{
    Action, DOT_SEGMENT_PATH, DuplicateRuleName, Explanation, NO_RULE_MATCHED, Rule, RuleSet, Step,
};
pub use shadow::{Shadow, ShadowCounters, ShadowCounts, ShadowDecision};

use std::future::{Future, IntoFuture, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Method, Uri};

use crate::connection::ConnectionInfo;
use crate::principal::Principal;

/// What an [`Authorizer`] sees of one request.
#[derive(Debug)]
pub struct AuthContext<'a> {
    pub(crate) principal: &'a Principal,
    pub(crate) connection: &'a ConnectionInfo,
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
}

impl<'a> AuthContext<'a> {
    /// The verified client identity.
    pub fn principal(&self) -> &'a Principal {
        self.principal
    }
    /// The TLS connection the request arrived on.
    pub fn connection(&self) -> &'a ConnectionInfo {
        self.connection
    }
    /// The connection's roles (see [`RoleMapper`](crate::RoleMapper)).
    pub fn roles(&self) -> &'a crate::Roles {
        self.connection.roles()
    }
    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.method
    }
    /// The request URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }
    /// The request path (for gRPC: `/package.Service/Method`).
    pub fn path(&self) -> &'a str {
        self.uri.path()
    }
    /// For a gRPC path `/package.Service/Method`: `("package.Service", "Method")`.
    pub fn grpc_method(&self) -> Option<(&'a str, &'a str)> {
        let (service, method) = self.uri.path().strip_prefix('/')?.split_once('/')?;
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
    /// A [`Verdict`] as a future.
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

/// What a closure authorizer may return: a [`Decision`] (synchronous) or a future of one.
pub trait IntoVerdict {
    /// The future, when deciding takes one.
    type Future: Future<Output = Decision>;
    /// The verdict.
    fn into_verdict(self) -> Verdict<Self::Future>;
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
/// use tower_mtls::{AuthContext, Authorizer, Decision, Verdict};
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

/// Shorthand for [`AllowAnyVerified`].
pub fn allow_any_verified() -> AllowAnyVerified {
    AllowAnyVerified
}
