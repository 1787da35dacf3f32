//! The [`Authorizer`](crate::Authorizer) trait: who may do what, decided per request from the verified identity.
//!
//! An authorizer sees the [`Principal`](crate::Principal), the
//! [`ConnectionInfo`](crate::ConnectionInfo) and the request's method, URI and headers, and
//! returns a [`Decision`](crate::Decision). Closures implement the trait, returning either a
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
//! - [`Matcher`]: conditions on typed identity fields — SPIFFE ID, SANs, subject attributes,
//!   issuer RDNs, pins, serial, roles — combined with [`any`], [`all`], [`not`],
//!   [`Matcher::and`], [`Matcher::or`], and explained by [`Matcher::explain`].
//! - [`RequestMatcher`] and [`PathPattern`]: method, path (exact, prefix, glob), gRPC method,
//!   matched against the request's canonical path ([`canonical`]: what the policy sees is what
//!   the application serves).
//! - [`Rule`] and [`RuleSet`]: DENY first, then ALLOW, deny when nothing matches; a `RuleSet`
//!   is an `Authorizer` and decides without allocating.
//! - [`ReloadablePolicy`]: a rule set replaced at runtime; with the `policy` feature, the
//!   rules come from a TOML file (see the `policy` module).
//! - [`DecisionCache`] for asynchronous authorizers, and [`Shadow`] to dry-run a policy next
//!   to the enforcing one.
//!
//! Role mappers, which turn a certificate into role names once per connection, are in
//! [`identity`](crate::identity).

pub(crate) mod authorizer;
pub(crate) mod cache;
pub mod canonical;
pub(crate) mod error;
pub(crate) mod matcher;
pub(crate) mod reason;
pub(crate) mod reloadable;
pub(crate) mod request;
pub(crate) mod rules;
pub(crate) mod shadow;

pub use authorizer::{IntoVerdict, Verdict, VerdictFuture};
pub use cache::{
    CacheStats, CachedDecision, DEFAULT_CAPACITY, DEFAULT_MAX_BYTES, DEFAULT_TTL, DecisionCache,
    ENTRY_BYTES, MethodAndPath, RequestClassifier,
};
pub use error::MatcherError;
pub use matcher::{MatchExplanation, Matcher, all, any, not};
pub use reason::Reason;
pub use reloadable::ReloadablePolicy;
pub use request::{PathPattern, RequestMatcher};
pub use rules::{Action, Explanation, NO_RULE_MATCHED, Rule, RuleSet, RuleSetError, Step};
pub use shadow::{Shadow, ShadowCounters, ShadowCounts, ShadowDecision};
