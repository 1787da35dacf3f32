//! Identity and authorization from mutual TLS for tower services.
//!
//! `tower-mtls` takes the client certificate chain that rustls has **verified** during the
//! handshake, parses it once per connection into a [`Principal`], attaches it (inside a
//! [`ConnectionInfo`]) to every request of that connection, and lets [`MtlsAuthLayer`] answer
//! 401 when there is no verified identity and 403 when your [`Authorizer`] says no. Request
//! headers are never identity.
//!
//! ```no_run
//! # #[cfg(feature = "hyper")]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::ServiceBuilder;
//! use tower_mtls::{AuthContext, Decision, MtlsAcceptor, MtlsAuthLayer, MtlsConfig, MtlsListener, Principal};
//!
//! let tls = MtlsConfig::builder()
//!     .server_cert_pem_file("server.pem")
//!     .server_key_pem_file("server.key")
//!     .client_ca_pem_file("clients-ca.pem")
//!     .build()?;
//!
//! let admins_only = tower_mtls::authorize_fn(|ctx: &AuthContext<'_>| {
//!     if ctx.principal().organizational_units().any(|ou| ou == "admins") {
//!         Decision::allow("OU=admins")
//!     } else {
//!         Decision::deny("not an admin")
//!     }
//! });
//!
//! let service = ServiceBuilder::new()
//!     .layer(MtlsAuthLayer::new(admins_only))
//!     .service_fn(|req: Request<hyper::body::Incoming>| async move {
//!         let principal = req.extensions().get::<Principal>().cloned();
//!         let name = principal.as_ref().and_then(|p| p.common_name()).unwrap_or("?").to_owned();
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("hello {name}")))))
//!     });
//!
//! let listener = MtlsListener::bind("127.0.0.1:8443", MtlsAcceptor::new(tls)).await?;
//! tower_mtls::hyper::serve(listener, service).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Where things are
//! - TLS: [`MtlsConfig`] (secure defaults, files checked at build time), [`MtlsAcceptor`]
//!   (handshake → [`ConnectionInfo`], resumption checks, [`reload`](MtlsAcceptor::reload),
//!   [`watch_files`](MtlsAcceptor::watch_files)), [`MtlsListener`] (handshakes off the accept
//!   loop, timeout, in-flight cap, counters).
//! - Per request: [`MtlsAuthLayer`] with an [`Authorizer`]; ready-made authorization in
//!   [`authorize`] (matchers, rules, TOML policies, caches, dry-run).
//! - Stacks: [`hyper`] (`serve`, feature `hyper`), [`axum`] (`Listener`, extractors, feature
//!   `axum`), [`tonic`] (`incoming`, `principal`, feature `tonic`). All on by default; use
//!   `default-features = false` and pick.
//!
//! # Crypto provider
//! Every rustls object is built with an explicit provider ([`crypto_provider`]): aws-lc-rs
//! (feature `aws-lc-rs`, default) or ring (feature `ring`); aws-lc-rs wins when both are on.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!("tower-mtls needs a crypto provider: enable the `aws-lc-rs` or the `ring` feature");

mod acceptor;
pub mod authorize;
#[cfg(feature = "axum")]
pub mod axum;
pub mod config;
mod connection;
mod failure;
#[cfg(feature = "hyper")]
pub mod hyper;
pub mod layer;
pub mod listener;
pub mod name;
mod principal;
pub mod reject;
pub mod reload;
mod resumption;
pub mod roles;
pub mod spiffe;
mod stream;
#[cfg(feature = "tonic")]
pub mod tonic;
#[cfg(feature = "spiffe")]
pub mod workload_api;

pub use acceptor::{DEFAULT_HANDSHAKE_TIMEOUT, MtlsAcceptor};
pub use authorize::{
    AllowAnyVerified, AuthContext, Authorizer, Decision, IntoVerdict, Matcher, PolicyError, Reason,
    ReloadablePolicy, Rule, RuleSet, Verdict, allow_any_verified, authorize_fn,
};
pub use config::{
    ClientAuth, ConfigError, MtlsConfig, MtlsConfigBuilder, RevocationScope, TlsVersions,
    UnknownRevocation, crypto_provider,
};
pub use connection::{ConnectionInfo, StaleIdentity};
pub use failure::{AcceptError, HandshakeFailure, HandshakeStats};
pub use layer::{MtlsAuth, MtlsAuthLayer, ResponseFuture};
pub use listener::{MtlsListener, MtlsListenerBuilder};
pub use name::DistinguishedName;
pub use principal::{ExtendedKeyUsage, Principal, PrincipalError, SubjectAltName};
pub use reject::{Rejection, RejectionFormat};
pub use reload::ReloadWatcher;
pub use roles::{RoleMapper, Roles};
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use stream::MtlsStream;

/// The rustls types that appear in this crate's API.
pub use rustls;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
