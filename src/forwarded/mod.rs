//! Client certificates forwarded by TLS-terminating proxies (nginx, haproxy, Envoy, RFC 9440
//! load balancers) in request headers.
//!
//! - [`TrustedProxies`] says which connections are proxies — matchers over the connection's
//!   own verified [`Principal`](crate::Principal) — and which format they forward in; give it
//!   to [`MtlsAcceptor::trusted_proxies`](crate::MtlsAcceptor::trusted_proxies). On those
//!   connections the forwarded chain is verified exactly like a direct client's and becomes the
//!   request's principal ([`Principal::forwarded_by`](crate::Principal::forwarded_by) names the
//!   proxy); on every other connection the headers are removed before the service sees them.
//! - [`ForwardedCertHeader`] reads a request's forwarded chain, leaf first, without verifying
//!   it (the formats: RFC 9440, Envoy's XFCC, nginx, haproxy).
//! - [`ForwardedRefusal`] says why a proxy's request got 401.
//!
//! ```
//! use http::HeaderMap;
//! use tower_mtls::forwarded::{ForwardedCertFormat, ForwardedCertHeader};
//!
//! let reader = ForwardedCertHeader::new(ForwardedCertFormat::Rfc9440).header_name("X-Client-Cert")?;
//! let names: Vec<&str> = reader.header_names().map(|name| name.as_str()).collect();
//! assert_eq!(names, ["x-client-cert", "x-client-cert-chain"]);
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-client-cert", "not-a-byte-sequence".parse()?);
//! assert!(reader.parse(&headers).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod cache;
pub(crate) mod format;
pub(crate) mod proxies;
pub(crate) mod refusal;
pub(crate) mod resolve;

pub use format::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_CHAIN_LEN, DecodeDetail, ForwardedCertError,
    ForwardedCertFormat, ForwardedCertHeader, ForwardedChain, ForwardedConfigError,
    ForwardedFingerprint, XfccSyntax,
};
pub use proxies::{CACHE_ENTRY_BYTES, DEFAULT_CACHE_MAX_BYTES, TrustedProxies};
pub use refusal::ForwardedRefusal;
