//! Identity and authorization from mutual TLS for tower services.
//!
//! `tower-mtls` takes the client certificate chain that rustls has **verified** during the
//! handshake, parses it once per connection into a [`Principal`], attaches it (inside a
//! [`ConnectionInfo`]) to every request of that connection, and lets [`MtlsAuthLayer`] answer
//! 401 when there is no verified identity and 403 when your [`Authorizer`] says no. Request
//! headers are never identity, and the authorizer judges the request's one canonical path, so
//! no other spelling of a denied resource walks past it (400 for spellings that routers and file
//! servers read differently; see [`authorize::canonical`]).
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
//! The crate follows the data path, one module per stage:
//!
//! - [`tls`]: the TLS side — [`MtlsConfig`] (secure defaults, files checked at build time),
//!   [`MtlsAcceptor`] (handshake → [`ConnectionInfo`], resumption checks,
//!   [`reload`](MtlsAcceptor::reload), [`watch_files`](MtlsAcceptor::watch_files)),
//!   [`MtlsListener`] (handshakes off the accept loop, ClientHello deadline and timeout, caps
//!   per client address and overall on handshakes and connections, counters).
//! - [`identity`]: who the client is — [`Principal`], names, [`SpiffeId`], roles, and the
//!   [`ConnectionInfo`] that every request of a connection carries.
//! - [`authorize`]: who may do what — the [`Authorizer`] trait and a toolkit (matchers, rules,
//!   caches, dry-run); [`policy`] reads rules from TOML (feature `policy`).
//! - [`forwarded`]: client certificates forwarded by TLS-terminating proxies, believed only from
//!   connections whose own certificate names a [trusted proxy](forwarded::TrustedProxies) and
//!   verified like direct ones; removed from everyone else's requests.
//! - [`MtlsAuthLayer`] ([`layer`]): 401 without a verified identity, 400 for a path without a
//!   canonical form, 403 when the authorizer says no; [`reject`] builds those responses.
//! - Stacks: [`hyper`] (`serve`, `Server`, HTTP timeouts, feature `hyper`), [`axum`] (`serve`,
//!   `Listener`, extractors, feature `axum`), [`tonic`] (`incoming`, `principal`, feature
//!   `tonic`); [`test_util`] (feature `test-util`) builds principals and requests for unit
//!   tests of your authorizers.
//!
//! # Features
//! | feature | what it adds | default |
//! |---|---|---|
//! | `aws-lc-rs` | aws-lc-rs as the rustls crypto provider | yes |
//! | `ring` | ring as the provider (aws-lc-rs wins when both are on) | |
//! | `hyper` | [`hyper::serve`]: hyper-util HTTP/1.1 + HTTP/2 server | |
//! | `axum` | `axum::serve` with the HTTP timeouts, `MtlsListener` as an axum 0.8 `Listener`, extractors (implies `hyper`) | |
//! | `tonic` | an incoming stream for tonic 0.14, request helpers | |
//! | `policy` | TOML policy files (serde, toml) | |
//! | `metrics` | [`metrics`]: counters, gauges and a histogram through the `metrics` facade | |
//! | `spiffe` | [`workload_api`]: X509-SVIDs and bundles from the SPIFFE Workload API | |
//! | `test-util` | [`test_util`] | |
//!
//! # Crypto provider
//! Every rustls object is built with an explicit provider ([`tls::crypto_provider`]):
//! aws-lc-rs (feature `aws-lc-rs`, default) or ring (feature `ring`); aws-lc-rs wins when both
//! are on.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!("tower-mtls needs a crypto provider: enable the `aws-lc-rs` or the `ring` feature");

mod audit;
mod auth;
pub mod authorize;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
pub mod forwarded;
#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub mod hyper;
pub mod identity;
pub mod metrics;
#[cfg(feature = "policy")]
#[cfg_attr(docsrs, doc(cfg(feature = "policy")))]
pub mod policy;
pub mod reject;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
#[cfg(test)]
mod testing;
pub mod tls;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;
#[cfg(feature = "spiffe")]
#[cfg_attr(docsrs, doc(cfg(feature = "spiffe")))]
pub mod workload_api;

pub use auth::MtlsAuthLayer;
pub use authorize::authorizer::{
    AllowAnyVerified, AuthContext, Authorizer, Decision, authorize_fn,
};
pub use identity::connection::ConnectionInfo;
pub use identity::principal::{Principal, PrincipalError};
pub use identity::spiffe_id::{SpiffeId, SpiffeIdError};
pub use tls::acceptor::MtlsAcceptor;
pub use tls::config::MtlsConfig;
pub use tls::config_error::ConfigError;
pub use tls::handshake_error::AcceptError;
pub use tls::listener::MtlsListener;

/// The service and response future of [`MtlsAuthLayer`], for naming their types.
pub mod layer {
    pub use crate::auth::{MtlsAuth, ResponseFuture};
}

/// The rustls types that appear in this crate's API.
pub use rustls;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// The one place the core learns of a stack: axum's `into_make_service_with_connect_info`
// wraps the `ConnectionInfo` it inserts in `ConnectInfo`, and axum's `Router` records the
// request's full URI in `OriginalUri` before `nest` strips a prefix; without axum nothing does.
#[cfg(feature = "axum")]
use axum::{connect_info_in as axum_connect_info, original_uri_in as axum_original_uri};

#[cfg(not(feature = "axum"))]
fn axum_connect_info(_: &http::Extensions) -> Option<&ConnectionInfo> {
    None
}

#[cfg(not(feature = "axum"))]
fn axum_original_uri(_: &http::Extensions) -> Option<&http::Uri> {
    None
}
